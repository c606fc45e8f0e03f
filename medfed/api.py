"""What each ``medfed`` command does, as Python functions: the CLI parses arguments and calls these.

    from medfed.api import run_experiments, validate_configs, classify_reports

    runs = run_experiments(["tasks/demo_chest_xray.yaml"], out="reports", rounds=2)
    print(runs.outcomes[0].result.summary)                   # primary metric per site and method
    federations, problems = validate_configs(["sites/my_hospitals.yaml"])
    labelled = classify_reports("tasks/report_taxonomy_chest.yaml", "reports.csv", "labels.csv")

Each function returns what it computed and wrote (every file atomically); none prints, and bad input raises
medfed's errors (:class:`~medfed.errors.ConfigError`, :class:`~medfed.errors.DataProblems`), which the CLI turns
into messages and exit codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from medfed.errors import ConfigError, Problem

LABELS_WIDTH = 48  # the validate table's labels column is cut after this many characters (`--json` has all)


# ----------------------------------------------------------------------------- validate
class Validation(NamedTuple):
    """Every federation read leniently, and every problem and warning found in it."""

    federations: list[Any]
    problems: list[Problem]


def validate_configs(configs: Sequence[Path | str], progress: bool = True,
                     allow_duplicates: bool = False) -> Validation:
    """Load every federation leniently and read every case of every site; all problems at once."""
    from medfed.sites import load_federation

    federations, problems = [], []
    for config in configs:
        federation = load_federation(config, strict=False)
        federations.append(federation)
        problems.extend(federation.validate(progress=progress, allow_duplicates=allow_duplicates))
    return Validation(federations, problems)


def site_table(federations: Sequence) -> pd.DataFrame:
    """One row per site: counts per split, the split unit and its groups, the most cases in one group, and the
    primary label's counts and prevalence per split; counts below each site's min_count are suppressed."""
    rows = []
    for fed in federations:
        for site in fed:
            summary = site.summary()
            row = {"federation": fed.name, "site": site.name, "modality": site.modality, "cases": summary["cases"]}
            row.update(summary["splits"])
            row["unit"] = summary["split_unit"]
            row["groups"] = summary["groups"]
            row["max/group"] = summary["max_cases_per_group"]
            label = site.primary_label
            if label:
                counts = summary["labels"].get(label, {})
                text = f"{label}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
                row["labels"] = text if len(text) <= LABELS_WIDTH else text[: text.rfind(",", 0, LABELS_WIDTH)] + ", ..."
                prevalence = summary.get("prevalence", {})
                if prevalence:
                    row["prevalence train/val/test"] = "/".join(prevalence.get(s, "-") for s in ("train", "val", "test"))
            pops = summary["metadata"].get("population")
            if pops:
                row["population"] = ", ".join(f"{k}={v}" for k, v in pops.items())
            rows.append(row)
    return pd.DataFrame(rows).fillna("")


# ----------------------------------------------------------------------------- run
def default_experiments() -> list[Path]:
    """The demo experiment configs ``tasks/demo_*.yaml`` of this checkout (or of the working directory)."""
    import medfed

    for folder in (Path(medfed.__file__).resolve().parents[1] / "tasks", Path("tasks")):
        found = sorted(folder.glob("demo_*.yaml"))
        if found:
            return found
    raise ConfigError("no experiment config given and no tasks/demo_*.yaml found; pass CONFIG paths")


def demo_federations(config: Path | str, data: Path | str | None = None, scale: str = "demo",
                     seed: int = 0) -> dict[str, Path]:
    """The demo federation an experiment config asks for (``federation: demo:<modality>``), written under
    ``data`` (default ``$MEDFED_DATA`` or ``./data``) when missing; ``{}`` for a config with its own federation."""
    from medfed.demo import default_data_dir, ensure_demo
    from medfed.fl.experiment import uses_demo

    modality = uses_demo(config)
    if modality is None:
        return {}
    return ensure_demo(Path(data) if data else default_data_dir(), scale=scale, seed=seed, modalities=(modality,))


@dataclass
class RunOutcome:
    """One experiment's result (:class:`~medfed.fl.experiment.ExperimentResult`) and its report, if written."""

    config: Path
    result: Any
    report: Any = None


@dataclass
class SweepOutcome:
    """A sweep's combined table (pooled test values with CIs per swept value), written to ``root``."""

    parameter: str
    root: Path
    table: pd.DataFrame
    metrics: list[str]


@dataclass
class Runs:
    outcomes: list[RunOutcome] = field(default_factory=list)
    sweeps: list[SweepOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def stopped(self) -> bool:
        """Whether some method of some experiment stopped (too few updates, a site failing again and again)."""
        return any(o.result.stopped for o in self.outcomes)


def run_experiments(
    configs: Sequence[Path | str] = (),
    *,
    out: Path | str = "reports",
    data: Path | str | None = None,
    scale: str = "demo",
    demo_seed: int = 0,
    resume: bool = False,
    rounds: int | None = None,
    seeds: Sequence[int] | None = None,
    engine: str = "inprocess",
    progress: bool = True,
    report_options: Any = None,
    write_reports: bool = True,
    on_start: Callable[[Path, str | None], None] | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> Runs:
    """Train and evaluate each experiment config (default: the demo experiments), expanding sweep configs into
    their variants, on the in-process engine or on Flower (``engine``: ``flower``, ``flower-sim``); write each
    run directory under ``out`` and, with ``write_reports``, its report (``report_options``: a
    :class:`~medfed.report.ReportOptions`, default options when None). ``on_outcome`` is called after each
    experiment (the CLI prints its table then), ``on_start`` before it with the demo modality it uses (or None)."""
    from medfed.fl.experiment import run_experiment, uses_demo
    from medfed.fl.sweep import combine, expand, table_metrics

    if engine not in ("inprocess", "flower", "flower-sim"):
        raise ConfigError(f"unknown engine {engine!r}; use inprocess, flower or flower-sim")
    if seeds is not None and engine != "inprocess":
        raise ConfigError(f"--seeds with --engine {engine}: multi-seed runs use the in-process engine")
    started = time.perf_counter()
    runs = Runs()
    expanded: list[tuple[Path, Path]] = []  # (experiment config, output root)
    sweeps = []
    for config in [Path(c) for c in configs] or default_experiments():
        family = expand(config, Path(out))
        if family is None:
            expanded.append((config, Path(out)))
            continue
        sweep, name, variants = family
        root = Path(out) / name
        expanded += [(path, root) for _, path in variants]
        sweeps.append((sweep, root, [(value, root / f"{name}-{value}") for value, _ in variants]))
    for config, out_root in expanded:
        if on_start is not None:
            on_start(config, uses_demo(config))
        demo = demo_federations(config, data, scale, demo_seed)
        overrides = {"rounds": rounds} if rounds is not None else None
        if engine == "inprocess":
            result = run_experiment(config, out_root, demo_configs=demo, resume=resume, progress=progress,
                                    overrides=overrides, validate=True, seeds=seeds)
        else:  # SuperLink + one SuperNode per site on this machine, or Flower's simulation engine
            from medfed.integrations.flower.engine import run_experiment_on_flower

            result = run_experiment_on_flower(config, out_root, engine, demo_configs=demo, rounds=rounds,
                                              resume=resume, progress=progress)
        outcome = RunOutcome(config, result)
        if write_reports and len(result.metrics):
            outcome.report = write_run_report([result.out], None, report_options)
        runs.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    for sweep, root, variants in sweeps:
        table = combine(sweep, root, variants)
        if len(table):
            runs.sweeps.append(SweepOutcome(sweep.parameter, root, table, table_metrics(variants)))
    runs.seconds = time.perf_counter() - started
    return runs


def write_run_report(run_dirs: Sequence[Path | str], out: Path | str | None = None, options: Any = None) -> Any:
    """``medfed report``: the report of one run directory (or several merged into ``out``); returns
    :func:`medfed.report.write_report`'s result."""
    from medfed.report import ReportOptions, write_report

    return write_report([Path(d) for d in run_dirs], Path(out) if out is not None else None,
                        options if options is not None else ReportOptions())


# ----------------------------------------------------------------------------- pretrain and predict
@dataclass
class Pretrained:
    name: str
    checkpoint: Path
    summary: dict[str, Any]
    config: Any


def pretrain_encoders(configs: Sequence[Path | str], *, out: Path | str = "reports", data: Path | str | None = None,
                      scale: str = "demo", progress: bool = True,
                      on_pretrained: Callable[[Pretrained], None] | None = None) -> list[Pretrained]:
    """``medfed pretrain``: self-supervised pretraining of each config on its federation (a demo federation or
    demo pool is written when missing); returns each encoder checkpoint and its ``pretrain.json``."""
    import json

    from medfed.config import resolve_path
    from medfed.demo import default_data_dir, ensure_demo, ensure_demo_pool
    from medfed.ssl.pretrain import demo_source, load_pretrain, run_pretraining

    done = []
    for config_path in configs:
        config = load_pretrain(config_path)
        source = demo_source(config)
        data_dir = Path(data) if data else default_data_dir()
        if source is not None and source[0] == "pool":
            federation = ensure_demo_pool(data_dir, source[1], scale=scale)
        elif source is not None:
            federation = ensure_demo(data_dir, scale=scale, modalities=(source[1],))[source[1]]
        else:
            federation = resolve_path(config.federation, Path(config_path).parent)
        checkpoint = run_pretraining(config_path, out, federation_file=federation, progress=progress)
        summary = json.loads((checkpoint.parent / "pretrain.json").read_text())
        done.append(Pretrained(config.name, checkpoint, summary, config))
        if on_pretrained is not None:
            on_pretrained(done[-1])
    return done


def predict_labels(config: Path | str, method: str, out: Path | str, *, split: str = "test",
                   reports: Path | str | None = None, data: Path | str | None = None, progress: bool = True) -> int:
    """``medfed predict``: the final model of ``method`` (trained by ``config``) writes a label map per case of
    ``split``; returns how many were written."""
    from medfed.challenge.predict import write_predictions

    demo = demo_federations(config, data) or None
    return write_predictions(config, method, out, split=split, reports=reports, demo_configs=demo, progress=progress)


# ----------------------------------------------------------------------------- challenge scoring
@dataclass
class Convergence:
    """Each team's task-1 convergence score and how it was obtained (one line per team)."""

    scores: dict[str, float]
    notes: list[str]


def convergence_scores(specs: Sequence[str], profiles_path: Path | str | None = None) -> Convergence:
    """``TEAM=NUMBER`` or ``TEAM=RUN_DIR`` (scored from its rounds log with the timing profiles)."""
    from medfed.challenge.convergence import TimingProfiles, run_convergence
    from medfed.config import read_yaml, validate_model

    profiles = TimingProfiles()
    if profiles_path is not None:
        profiles = validate_model(TimingProfiles, read_yaml(profiles_path), str(profiles_path))
    scores, notes = {}, []
    for spec in specs:
        team, sep, value = spec.partition("=")
        if not sep:
            raise ConfigError(f"--convergence {spec!r}: expected TEAM=SCORE or TEAM=RUN_DIR")
        try:
            scores[team] = float(value)
        except ValueError:
            result = run_convergence(Path(value), profiles)
            notes += [f"{team}: {note}" for note in result.notes]
            scores[team] = result.score
            notes.append(f"{team}: convergence score {result.score:.4f} ({result.rounds_counted} rounds within "
                         f"{result.t_max:.0f} s simulated)")
    return Convergence(scores, notes)


def score_submissions(sites: Path | str, submissions: Sequence[str], out: Path | str | None = None,
                      options: Any = None, progress: bool = True) -> Any:
    """``medfed score``: every site scores every submission (``TEAM=FOLDER`` or ``FOLDER``) on its own cases,
    then the FeTS-style ranking and ``leaderboard.html`` in ``out`` (default ``reports/score-<federation>``)."""
    from medfed.challenge.scoring import ScoringOptions, score
    from medfed.challenge.submissions import parse_submissions
    from medfed.sites import load_federation

    parsed = parse_submissions(list(submissions))
    federation = load_federation(sites)
    target = Path(out) if out is not None else Path("reports") / f"score-{federation.name}"
    return score(federation, parsed, target, options or ScoringOptions(), progress=progress)


# ----------------------------------------------------------------------------- radiology reports
@dataclass
class ClassifiedReports:
    """The label table written (one row per report, one column per taxonomy label) and how it went."""

    out: Path
    table: pd.DataFrame
    labels: list[str]
    reports: int
    unparsable: int
    seconds: float


def classify_reports(
    taxonomy: Path | str,
    reports: Path | str,
    out: Path | str,
    *,
    backend: str = "rules",
    options: Mapping[str, Any] | None = None,
    fit: Path | str | None = None,
    id_column: str = "Path",
    text_column: str = "text",
    language_column: str = "language",
    language: str = "en",
) -> ClassifiedReports:
    """``medfed classify-reports``: label each report of the CSV ``reports`` with the taxonomy's labels by
    ``backend`` (``rules``, ``embedding``, ``llm``; trained first on the labelled CSV ``fit`` when given), and
    write the CheXpert-style table the chest X-ray adapter reads to ``out`` (atomically)."""
    from medfed.io import atomic_write_text
    from medfed.text.backends import build_backend
    from medfed.text.labels_out import label_table, read_reports_csv
    from medfed.text.taxonomy import load_taxonomy

    parsed = load_taxonomy(taxonomy)
    texts = read_reports_csv(reports, id_column, text_column, language_column, language)
    model = build_backend(backend, parsed, **dict(options or {}))
    if fit is not None:
        train = pd.read_csv(fit, dtype=str, keep_default_na=False)
        missing = [c for c in (id_column, *parsed.names) if c not in train.columns]
        if missing:
            raise ConfigError(f"{fit}: missing column(s) {', '.join(missing)}")
        labelled = read_reports_csv(fit, id_column, text_column, language_column, language)
        model.fit(labelled, train[[id_column, *parsed.names]].rename(columns={id_column: "report_id"}))
    started = time.perf_counter()
    predictions = model.predict(texts)
    seconds = time.perf_counter() - started
    table = label_table(parsed, predictions, id_column, backend)
    atomic_write_text(Path(out), table.to_csv(index=False))
    return ClassifiedReports(Path(out), table, list(parsed.names), len(texts),
                             int((predictions["status"] != "ok").sum()), seconds)


__all__ = [
    "ClassifiedReports", "Convergence", "Pretrained", "RunOutcome", "Runs", "SweepOutcome", "Validation",
    "classify_reports", "convergence_scores", "default_experiments", "demo_federations", "predict_labels",
    "pretrain_encoders", "run_experiments", "score_submissions", "site_table", "validate_configs",
    "write_run_report",
]
