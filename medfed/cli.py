"""The ``medfed`` command: ``synth``, ``validate``, ``run``, ``pretrain``, ``report``, ``predict``, ``score``,
``classify-reports``, ``evaluate-reports``, ``flower-certs``, ``nnunet``.

Bad input ends in a message naming the file, case and reason and a non-zero exit code, never a
traceback: exit 1 for data problems, 2 for config/usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from medfed import __version__
from medfed.errors import ConfigError, DataProblems, MedfedError, Problem, errors_only
from medfed.io import atomic_write_text
from medfed.synth import GENERATORS, MODALITIES, SCALES, write_federations

EXIT_PROBLEMS = 1
LABELS_WIDTH = 48  # the validate table's labels column is cut after this many characters (`--json` has all)
EXIT_USAGE = 2


def _number(kind: type, low: float, high: float | None = None) -> Callable[[str], float]:
    """argparse type: a ``kind`` number >= ``low`` (with ``high``: strictly between them); else a usage error."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value >= low if high is None else low < value < high):
            rule = f">= {low}" if high is None else f"strictly between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} {rule}, "
                                             f"got {text!r}")
        return value
    return parse


def _path(kind: str) -> Callable[[str], Path]:
    """argparse type: ``in``: an existing file; ``out``: a file to write; ``dir``: a folder to write (made when
    missing: no existing file may stand where it or a parent folder goes)."""
    def parse(text: str) -> Path:
        path = Path(text)
        if kind != "dir" and path.is_dir():
            raise argparse.ArgumentTypeError(f"must be a file, but {path} is a directory")
        if kind == "in" and not path.is_file():
            raise argparse.ArgumentTypeError(f"file not found: {path}")
        nearest = next((p for p in (path, *path.parents) if p.exists()), None)  # must be a folder, or the file
        if nearest is not None and not nearest.is_dir() and (kind == "dir" or nearest != path):
            raise argparse.ArgumentTypeError(f"must be a directory, but {path} is a file" if nearest == path
                                             else f"{path}: {nearest} is a file, not a directory")
        return path
    return parse


def _print_problems(problems: list[Problem], header: str) -> None:
    errors = sum(p.is_error for p in problems)
    print(f"\n{header}: {errors} problem(s), {len(problems) - errors} warning(s)", file=sys.stderr)
    by_site: dict[str, list[Problem]] = {}
    for problem in problems:
        by_site.setdefault(problem.site, []).append(problem)
    for site, site_problems in by_site.items():
        print(f"  site {site}:", file=sys.stderr)
        for p in site_problems:
            where = ", ".join(x for x in (f"case {p.case}" if p.case else "", f"file {p.file}" if p.file else "") if x)
            tag = "" if p.is_error else "warning: "
            print(f"    - {tag}{where + ': ' if where else ''}{p.reason}", file=sys.stderr)


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


def validate_configs(
    configs: Sequence[Path], progress: bool = True, allow_duplicates: bool = False
) -> tuple[list, list[Problem]]:
    """Load every federation leniently and validate every case; return (federations, all problems and warnings)."""
    from medfed.sites import load_federation

    federations, problems = [], []
    for config in configs:
        federation = load_federation(config, strict=False)
        federations.append(federation)
        problems.extend(federation.validate(progress=progress, allow_duplicates=allow_duplicates))
    return federations, problems


def cmd_synth(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    modalities = args.only or list(MODALITIES)
    configs = write_federations(args.out, scale=args.scale, seed=args.seed, modalities=modalities)
    for modality, path in configs.items():
        print(f"{modality:>13}: {path}")
    print(f"wrote {len(configs)} synthetic federation(s) at scale {args.scale!r} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    federations, problems = validate_configs(args.configs, progress=not args.no_progress,
                                             allow_duplicates=args.allow_duplicates)
    print(site_table(federations).to_string(index=False))
    if args.json:
        payload = [p.__dict__ for p in problems]
        atomic_write_text(Path(args.json), json.dumps(payload, indent=2))  # creates the folder
    errors = errors_only(problems)
    if problems:
        _print_problems(problems, "validation failed" if errors else "validation passed with warnings")
    if errors:
        return EXIT_PROBLEMS
    n_sites = sum(len(f) for f in federations)
    print(f"\nOK: {len(federations)} federation(s), {n_sites} site(s), no problems"
          + (f", {len(problems)} warning(s)" if problems else ""))
    return 0


def default_experiments() -> list[Path]:
    """The demo experiment configs ``tasks/demo_*.yaml`` of this checkout (or of the working directory)."""
    import medfed

    for folder in (Path(medfed.__file__).resolve().parents[1] / "tasks", Path("tasks")):
        found = sorted(folder.glob("demo_*.yaml"))
        if found:
            return found
    raise ConfigError("no experiment config given and no tasks/demo_*.yaml found; pass CONFIG paths")


def cmd_run(args: argparse.Namespace) -> int:
    from medfed.demo import default_data_dir, ensure_demo
    from medfed.fl.experiment import run_experiment, uses_demo
    from medfed.fl.sweep import combine, expand, markdown_table, table_metrics

    started = time.perf_counter()
    configs = list(args.configs) or default_experiments()
    data_dir = Path(args.data) if args.data else default_data_dir()
    exit_code = 0
    expanded: list[tuple[Path, Path]] = []  # (experiment config, output root)
    sweeps = []
    for config in configs:
        family = expand(Path(config), Path(args.out))
        if family is None:
            expanded.append((Path(config), Path(args.out)))
            continue
        sweep, name, variants = family
        root = Path(args.out) / name
        expanded += [(path, root) for _, path in variants]
        sweeps.append((sweep, root, [(value, root / f"{name}-{value}") for value, _ in variants]))
    for config, out_root in expanded:
        demo: dict[str, Path] = {}
        modality = uses_demo(config)
        if modality is not None:
            print(f"{config}: demo federation {modality!r} under {data_dir / args.scale} (generated when missing)")
            demo = ensure_demo(data_dir, scale=args.scale, seed=args.seed, modalities=(modality,))
        if args.engine == "inprocess":
            result = run_experiment(
                config, out_root, demo_configs=demo, resume=args.resume, progress=not args.no_progress,
                overrides={"rounds": args.rounds} if args.rounds is not None else None, validate=True,
                seeds=args.seeds,
            )
        else:  # the same experiment on Flower: SuperLink + one SuperNode per site on this machine, or simulation
            from medfed.integrations.flower.engine import run_experiment_on_flower

            if args.seeds is not None:
                raise ConfigError(f"--seeds with --engine {args.engine}: multi-seed runs use the in-process engine")
            result = run_experiment_on_flower(config, out_root, args.engine, demo_configs=demo, rounds=args.rounds,
                                              resume=args.resume, progress=not args.no_progress)
        seeds = f", mean ± SD over seeds {', '.join(map(str, sorted(result.metrics['seed'].unique())))}" \
            if "seed" in result.metrics else ""
        print(f"\n== {result.name}: {result.primary_metric} on each site's test split "
              f"(own model for local_only; n<k: too few cases to show{seeds}) ==")
        print(result.summary.to_string())
        if "centralised" in result.summary.columns:
            print("   centralised pools every site's images: an upper-bound reference, not privacy-preserving")
        for failure in result.failures:
            print(f"   round {failure['round']}: site {failure['site']} dropped from {failure['method']} "
                  f"({failure['error']})")
        for method, message in result.stopped.items():
            print(f"   {method} STOPPED: {message}", file=sys.stderr)
            exit_code = EXIT_PROBLEMS
        layout = "seed-<s>/predictions/, seed-<s>/runs/<method>/rounds.jsonl" if "seed" in result.metrics else \
            "predictions/, runs/<method>/rounds.jsonl"
        print(f"   results: {result.out}/metrics.csv, {layout}")
        if len(result.metrics):
            _report([result.out], None, _report_options(args))
    for sweep, root, runs in sweeps:
        table = combine(sweep, root, runs)
        if len(table):
            print(f"\n== sweep over {sweep.parameter}: pooled test values [95% CI] ==")
            print(markdown_table(table, sweep.parameter, metrics=table_metrics(runs)))
            print(f"   sweep table: {root / 'sweep.csv'}, {root / 'sweep.md'}")
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    return exit_code


def cmd_pretrain(args: argparse.Namespace) -> int:
    from medfed.config import resolve_path
    from medfed.demo import default_data_dir, ensure_demo, ensure_demo_pool
    from medfed.ssl.pretrain import demo_source, load_pretrain, run_pretraining

    for config_path in args.configs:
        config = load_pretrain(config_path)
        source = demo_source(config)
        data_dir = Path(args.data) if args.data else default_data_dir()
        if source is not None and source[0] == "pool":
            federation = ensure_demo_pool(data_dir, source[1], scale=args.scale)
        elif source is not None:
            federation = ensure_demo(data_dir, scale=args.scale, modalities=(source[1],))[source[1]]
        else:
            federation = resolve_path(config.federation, Path(config_path).parent)
        checkpoint = run_pretraining(config_path, args.out, federation_file=federation,
                                     progress=not args.no_progress)
        summary = json.loads((checkpoint.parent / "pretrain.json").read_text())
        losses = summary["loss_by_round"]
        print(f"{config.name}: {config.task.kind} ({config.where}) loss {losses[0]:.4f} -> {losses[-1]:.4f} over "
              f"{len(losses)} rounds in {summary['seconds']:.0f} s; encoder checkpoint: {checkpoint}")
    return 0


def _seed_list(text: str) -> list[int]:
    """``0,1,2``: distinct integers."""
    from medfed.fl.config import check_seeds

    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return check_seeds([int(p) for p in parts])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}" if parts and all(_is_int(p) for p in parts)
                                         else f"expected distinct integer seeds like 0,1,2, got {text!r}") from None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _margin(text: str) -> tuple[str, float]:
    """``METRIC=DELTA`` with a positive number."""
    metric, _, value = text.partition("=")
    try:
        delta = float(value)
    except ValueError:
        delta = float("nan")
    if not metric or not delta > 0:
        raise argparse.ArgumentTypeError(f"expected METRIC=DELTA with DELTA > 0, got {text!r}")
    return metric.strip(), delta


def _report_options(args: argparse.Namespace):
    from medfed.report import ReportOptions

    return ReportOptions(
        baselines=tuple(args.baseline or ()), n_resamples=args.resamples, confidence=args.confidence,
        ci_method=args.ci, correction=args.correction, seed=args.report_seed, min_ci_cases=args.min_ci_cases,
        meta_ci=args.meta_ci, margins=tuple(args.margin or ()),
    )


def _report(run_dirs: list[Path], out: Path | None, options) -> None:
    from medfed.report import write_report

    result = write_report(run_dirs, out, options)
    comparisons = result.analysis.comparisons if result.across_seeds is None else result.across_seeds
    if len(comparisons):
        comparisons = comparisons[comparisons["site"] != "pooled"]  # per-site comparisons (the corrected family)
    tested = int(comparisons["p_value"].notna().sum()) if len(comparisons) else 0
    significant = int((comparisons["p_adjusted"] < 0.05).sum()) if len(comparisons) else 0
    if result.seeds is not None:
        print(f"   report: {result.html} (across seeds {', '.join(map(str, result.seeds))}: {tested} seed-averaged "
              f"comparisons tested, {significant} significant after {options.correction} correction; numbers in "
              "across_seeds.csv, meta_analysis.csv, comparisons.csv and per_site.csv with a seed column; each "
              "seed's own report in seed-<s>/report.html)")
        return
    print(f"   report: {result.html} ({tested} paired comparisons tested, {significant} significant after "
          f"{options.correction} correction; numbers in per_site.csv, comparisons.csv, meta_analysis.csv, "
          "calibration.csv, summary.json, summary.md)")


def cmd_report(args: argparse.Namespace) -> int:
    _report(list(args.run_dirs), args.out, _report_options(args))
    return 0


def _convergence_scores(specs: Sequence[str], profiles_path: Path | None) -> dict[str, float]:
    """``TEAM=NUMBER`` or ``TEAM=RUN_DIR`` (scored from its rounds log with the timing profiles)."""
    from medfed.challenge.convergence import TimingProfiles, run_convergence
    from medfed.config import read_yaml, validate_model

    profiles = TimingProfiles()
    if profiles_path is not None:
        profiles = validate_model(TimingProfiles, read_yaml(profiles_path), str(profiles_path))
    scores = {}
    for spec in specs:
        team, sep, value = spec.partition("=")
        if not sep:
            raise ConfigError(f"--convergence {spec!r}: expected TEAM=SCORE or TEAM=RUN_DIR")
        try:
            scores[team] = float(value)
        except ValueError:
            result = run_convergence(Path(value), profiles)
            for note in result.notes:
                print(f"   {team}: {note}", file=sys.stderr)
            scores[team] = result.score
            print(f"   {team}: convergence score {result.score:.4f} ({result.rounds_counted} rounds within "
                  f"{result.t_max:.0f} s simulated)")
    return scores


def cmd_score(args: argparse.Namespace) -> int:
    from medfed.challenge.case_metrics import EmptyRules
    from medfed.challenge.scoring import ScoringOptions, score
    from medfed.challenge.submissions import parse_submissions
    from medfed.sites import load_federation

    submissions = parse_submissions(args.submissions)
    convergence = _convergence_scores(args.convergence or (), args.profiles) if args.convergence else None
    options = ScoringOptions(
        split=args.split, ranking=args.ranking, rules=EmptyRules(one_empty_hd95=args.hd95_penalty),
        missing_hd95=args.missing_hd95, n_resamples=args.resamples, seed=args.seed, alpha=args.alpha,
        convergence=convergence)
    federation = load_federation(args.sites)
    out = args.out or Path("reports") / f"score-{federation.name}"
    result = score(federation, submissions, out, options, progress=not args.no_progress)
    print(f"\n== {options.ranking} ranking of {len(submissions)} submission(s) on {result.summary['cases']} case(s) ==")
    stability = result.stability.set_index("team")
    for _, row in result.ranking.final.iterrows():
        s = stability.loc[row["team"]]
        print(f"  {int(row['rank']):>2}  {row['team']:<20} score {row['score']:.3f}   bootstrap rank "
              f"{s['median_rank']:g} [{s['rank_low']:g}, {s['rank_high']:g}], P(rank 1) {s['p_first']:.2f}")
    if len(result.problems):
        print(f"  {len(result.problems)} prediction problem(s), each scored worst: {out / 'problems.csv'}")
    print(f"   leaderboard: {out / 'leaderboard.html'} (tables: per_case.csv, per_institution.csv, ranking.csv, "
          f"rank_stability.csv, significance.csv)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from medfed.challenge.predict import write_predictions
    from medfed.demo import default_data_dir, ensure_demo
    from medfed.fl.experiment import uses_demo

    modality = uses_demo(args.config)
    demo = ensure_demo(Path(args.data) if args.data else default_data_dir(), modalities=(modality,)) if modality else None
    written = write_predictions(args.config, args.method, args.out, split=args.split, reports=args.reports,
                                demo_configs=demo, progress=not args.no_progress)
    print(f"{written} label map(s) of {args.method} written to {args.out}")
    return 0


def _backend_options(pairs: Sequence[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` pairs (numbers and booleans parsed as YAML) -> backend keyword options."""
    import yaml

    options: dict[str, object] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {pair!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


def cmd_classify_reports(args: argparse.Namespace) -> int:
    from medfed.text.backends import build_backend
    from medfed.text.labels_out import label_table, read_reports_csv
    from medfed.text.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(args.taxonomy)
    reports = read_reports_csv(args.reports, args.id_column, args.text_column, args.language_column, args.language)
    backend = build_backend(args.backend, taxonomy, **_backend_options(args.option))
    if args.fit is not None:
        train = pd.read_csv(args.fit, dtype=str, keep_default_na=False)
        missing = [c for c in (args.id_column, *taxonomy.names) if c not in train.columns]
        if missing:
            raise ConfigError(f"{args.fit}: missing column(s) {', '.join(missing)}")
        labelled = read_reports_csv(args.fit, args.id_column, args.text_column, args.language_column, args.language)
        backend.fit(labelled, train[[args.id_column, *taxonomy.names]].rename(columns={args.id_column: "report_id"}))
    started = time.perf_counter()
    predictions = backend.predict(reports)
    seconds = time.perf_counter() - started
    table = label_table(taxonomy, predictions, args.id_column, args.backend)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    unparsable = int((predictions["status"] != "ok").sum())
    print(f"{len(reports)} report(s) labelled by {args.backend} in {seconds:.1f} s "
          f"({len(reports) / max(seconds, 1e-9):.0f}/s){f'; {unparsable} unparsable' if unparsable else ''}: {args.out}")
    for label in taxonomy.names:
        counts = table[label].value_counts(dropna=False)
        shown = ", ".join(f"{'blank' if pd.isna(k) else int(k)}: {v}" for k, v in counts.items())
        print(f"   {label}: {shown}")
    return 0


def cmd_evaluate_reports(args: argparse.Namespace) -> int:
    from medfed.text.evaluate import run_report_experiment

    for config in args.configs:
        run = run_report_experiment(config, args.out, progress=not args.no_progress)
        print(f"\n== {run.out.name}: F1 (macro over labels) on each site's test reports ==")
        print(run.summary.to_string())
        print("   seconds per backend (train / predict): "
              + "; ".join(f"{k} {v['train']:.0f} / {v['predict']:.0f}" for k, v in run.seconds.items()))
        _report([run.out], None, _report_options(args))
    return 0


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("report statistics")
    group.add_argument("--baseline", action="append", metavar="METHOD",
                       help="method every other method is compared with (repeatable; default: local_only and fedavg)")
    group.add_argument("--resamples", type=_number(int, 100), default=1000,
                       help="bootstrap resamples, >= 100 (default 1000)")
    group.add_argument("--confidence", type=_number(float, 0, 1), default=0.95, help="CI level (default 0.95)")
    group.add_argument("--ci", choices=("bca", "percentile"), default="bca", help="bootstrap CI method")
    group.add_argument("--correction", choices=("holm", "bh", "none"), default="holm",
                       help="multiple-comparison correction across sites x comparisons (default holm)")
    group.add_argument("--report-seed", type=_number(int, 0), default=0, help="seed of the bootstrap resamples")
    group.add_argument("--min-ci-cases", type=_number(int, 2), default=10,
                       help="fewest test cases for a CI or test (default 10)")
    group.add_argument("--margin", action="append", type=_margin, metavar="METRIC=DELTA",
                       help="non-inferiority / equivalence margin of a compared metric, e.g. auroc=0.02 (repeatable; "
                            "adds p_noninferiority and p_equivalence to comparisons.csv and meta_analysis.csv)")
    group.add_argument("--meta-ci", choices=("hksj", "wald"), default="hksj",
                       help="CI of the random-effects meta-analysis across sites (meta_analysis.csv): "
                            "Hartung-Knapp-Sidik-Jonkman (default; few sites) or Wald")


def cmd_flower_certs(args: argparse.Namespace) -> int:
    try:
        from medfed.integrations.flower.certificates import write_credentials
    except ImportError as err:  # cryptography comes with flwr
        raise ConfigError(f"flower-certs needs medfed[flower] (pip install 'medfed[flower]'): {err}") from err
    files = write_credentials(args.out, args.host, args.node, days=args.days, overwrite=args.overwrite)
    print(f"SuperLink (keep ca.key offline): --ssl-ca-certfile {files.ca_certificate} "
          f"--ssl-certfile {files.server_certificate} --ssl-keyfile {files.server_key} --enable-supernode-auth")
    print(f"every hospital and the flwr connection (root-certificates): {files.ca_certificate}")
    for node in args.node:
        print(f"{node}: flwr supernode register {files.public_key(node)} <connection> --name {node}; its SuperNode: "
              f"--auth-supernode-private-key {files.node_keys[node]}")
    return 0


def cmd_nnunet(args: argparse.Namespace) -> int:
    try:
        from medfed.integrations.nnunet import commands
    except ImportError as err:
        raise ConfigError(f"medfed nnunet needs nnU-Net: pip install -c constraints.txt 'medfed[nnunet]' ({err})") from err
    if args.nnunet_command == "export":
        for d in commands.export(args.sites, args.out, args.dataset_id, args.name, args.per_site,
                                 progress=not args.no_progress):
            print(f"{d.folder}: {d.training} training case(s), {d.test} test case(s) from {', '.join(d.sites)}")
        print("next: nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres --verify_dataset_integrity "
              f"(with nnUNet_raw={args.out})")
    elif args.nnunet_command == "plan":
        plans = commands.plan(args.sites, args.out, args.dataset_id, args.name, args.planner, args.gpu_memory,
                              args.bins, progress=not args.no_progress)
        print(f"federated nnU-Net plans: {plans} (use as task.model: {{name: nnunet, plans: {plans}}})")
    else:
        done = commands.import_predictions(args.sites, args.predictions, args.out, args.split, args.site)
        print(f"{done['written']} label map(s) written to {done['out']} (score them with medfed score)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medfed", description="Federated learning benchmarks for medical imaging.")
    parser.add_argument("--version", action="version", version=f"medfed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write deterministic synthetic federations in the real on-disk formats")
    synth.add_argument("--out", required=True, type=_path("dir"), help="output folder (data + sites/*.yaml configs)")
    synth.add_argument("--scale", choices=SCALES, default="demo")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--only", nargs="+", choices=list(GENERATORS),
                       help=f"federations to write (default: {', '.join(MODALITIES)})")
    synth.set_defaults(func=cmd_synth)

    validate = sub.add_parser("validate", help="check every case of every site; list every problem at once")
    validate.add_argument("configs", nargs="+", type=Path, help="federation config(s), e.g. sites/brain_mri.yaml")
    validate.add_argument("--json", type=Path, help="also write the problems as JSON here")
    validate.add_argument("--allow-duplicates", action="store_true",
                          help="report identical images in train and test as warnings, not errors")
    validate.add_argument("--no-progress", action="store_true")
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="the main job: train and compare methods on federations (demo ones by default)")
    run.add_argument("configs", nargs="*", type=Path,
                     help="experiment config(s), e.g. tasks/demo_brain_mri.yaml; default: tasks/demo_*.yaml")
    run.add_argument("--data", help="data folder for the demo federations (default $MEDFED_DATA or ./data)")
    run.add_argument("--scale", choices=SCALES, default="demo", help="size of generated demo federations")
    run.add_argument("--seed", type=int, default=0, help="seed of generated demo federations")
    run.add_argument("--out", default="reports", type=_path("dir"),
                     help="output folder; each experiment writes <out>/<name>/")
    run.add_argument("--resume", action="store_true", help="continue killed runs from their last finished round")
    run.add_argument("--rounds", type=_number(int, 1), help="override training.rounds, >= 1 (e.g. 1 for a smoke test)")
    run.add_argument("--seeds", type=_seed_list, metavar="S[,S...]",
                     help="run every method under each seed, e.g. 0,1,2 (replaces the config's seeds; "
                          "one seed-<s>/ run each, plus metrics.csv with a seed column)")
    run.add_argument("--engine", choices=("inprocess", "flower", "flower-sim"), default="inprocess",
                     help="inprocess (default); flower: a Flower SuperLink and one SuperNode per site on this "
                          "machine (loopback); flower-sim: Flower's Simulation Engine (Ray; medfed[flower-sim])")
    run.add_argument("--no-progress", action="store_true")
    _add_report_options(run)
    run.set_defaults(func=cmd_run)

    pretrain = sub.add_parser("pretrain", help="self-supervised pretraining (SimCLR 2D, masked volumes 3D), central or federated")
    pretrain.add_argument("configs", nargs="+", type=Path, help="pretraining config(s), e.g. tasks/ssl_*.yaml")
    pretrain.add_argument("--data", help="data folder for the demo federations (default $MEDFED_DATA or ./data)")
    pretrain.add_argument("--scale", choices=SCALES, default="demo", help="size of generated demo federations")
    pretrain.add_argument("--out", default="reports", type=_path("dir"),
                          help="output folder; each config writes <out>/<name>/")
    pretrain.add_argument("--no-progress", action="store_true")
    pretrain.set_defaults(func=cmd_pretrain)

    report = sub.add_parser("report", help="per-site statistics and an HTML report of run directories")
    report.add_argument("run_dirs", nargs="+", type=Path,
                        help="run directories written by `medfed run` (several on one federation are merged)")
    report.add_argument("--out", type=_path("dir"), help="report folder (default: the run directory; needed when merging)")
    _add_report_options(report)
    report.set_defaults(func=cmd_report)

    predict = sub.add_parser("predict", help="write a trained segmentation run's label maps as a challenge submission")
    predict.add_argument("config", type=Path, help="experiment config the run was trained with")
    predict.add_argument("--method", required=True, help="method (label) whose final model predicts")
    predict.add_argument("--out", required=True, type=_path("dir"), help="submission folder (<ID>_seg.nii.gz files)")
    predict.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    predict.add_argument("--reports", default="reports", help="where `medfed run` wrote the run (default reports)")
    predict.add_argument("--data", help="data folder for the demo federations (default $MEDFED_DATA or ./data)")
    predict.add_argument("--no-progress", action="store_true")
    predict.set_defaults(func=cmd_predict)

    scoring = sub.add_parser("score", help="challenge scoring: evaluate submissions at each site, FeTS-style ranking, "
                                           "leaderboard.html")
    scoring.add_argument("sites", type=Path, help="federation config holding the ground truth")
    scoring.add_argument("submissions", nargs="+", help="TEAM=FOLDER (or FOLDER: team = folder name) of label maps")
    scoring.add_argument("--out", type=_path("dir"), help="scoring folder (default reports/score-<federation>)")
    scoring.add_argument("--split", choices=("test", "val", "train", "all"), default="test",
                         help="cases scored at each site (default test)")
    scoring.add_argument("--ranking", choices=("fets2", "fets1", "aggregate"), default="fets2",
                         help="fets2: rank per institution then average (default); fets1: per-case ranks with the "
                              "convergence score; aggregate: mean metrics then rank")
    scoring.add_argument("--convergence", action="append", metavar="TEAM=SCORE|RUN_DIR",
                         help="task-1 convergence score of a team, or the medfed run directory to compute it from")
    scoring.add_argument("--profiles", type=Path, help="timing profiles YAML for convergence scores "
                                                       "(e.g. sites/profiles/fets_timing.yaml)")
    scoring.add_argument("--hd95-penalty", type=_number(float, 0), default=374.0,
                         help="HD95 (mm) when a structure is empty in exactly one of truth and prediction (374)")
    scoring.add_argument("--missing-hd95", type=_number(float, 0), default=1000.0,
                         help="HD95 a missing or unscorable case counts as in the ranking (1000)")
    scoring.add_argument("--resamples", type=_number(int, 1), default=1000, help="bootstrap resamples of the ranking (1000)")
    scoring.add_argument("--alpha", type=_number(float, 0, 1), default=0.05, help="significance level of the pairwise tests")
    scoring.add_argument("--seed", type=_number(int, 0), default=0, help="seed of the bootstrap")
    scoring.add_argument("--no-progress", action="store_true")
    scoring.set_defaults(func=cmd_score)

    classify = sub.add_parser("classify-reports", help="label free-text radiology reports with a taxonomy "
                                                       "(rules, embedding or llm); writes a CheXpert-style label table")
    classify.add_argument("--taxonomy", required=True, type=_path("in"), help="taxonomy YAML (labels, definitions, values)")
    classify.add_argument("--reports", required=True, type=_path("in"), help="CSV of reports: id, text, optional language")
    classify.add_argument("--out", required=True, type=_path("out"),
                          help="label table CSV (the chest X-ray adapter's input)")
    classify.add_argument("--backend", choices=("rules", "embedding", "llm"), default="rules")
    classify.add_argument("--option", action="append", metavar="KEY=VALUE",
                          help="backend option, e.g. model_path=/models/medgemma-4b-it for llm")
    classify.add_argument("--fit", type=_path("in"), help="labelled reports CSV (id, text, one column per label) to train "
                                                   "the backend on first (embedding heads, llm LoRA)")
    classify.add_argument("--id-column", default="Path", help="id column, copied to the output (default Path)")
    classify.add_argument("--text-column", default="text")
    classify.add_argument("--language-column", default="language", help="per-report language (ISO 639-1)")
    classify.add_argument("--language", default="en", help="language of reports without one (default en)")
    classify.set_defaults(func=cmd_classify_reports)

    evaluate = sub.add_parser("evaluate-reports", help="compare report backends on a report federation (per-site, "
                                                       "per-label F1 with CIs; writes a run directory and its report)")
    evaluate.add_argument("configs", nargs="+", type=Path, help="report experiment config(s), e.g. tasks/reports_*.yaml")
    evaluate.add_argument("--out", default="reports", type=_path("dir"),
                          help="output folder; each experiment writes <out>/<name>/")
    evaluate.add_argument("--no-progress", action="store_true")
    _add_report_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate_reports)

    certs = sub.add_parser("flower-certs", help="TLS certificates and SuperNode keys for a Flower deployment "
                                                "(a CA, the SuperLink's certificate, one key pair per hospital)")
    certs.add_argument("out", type=_path("dir"), help="folder to write ca.crt, ca.key, server.pem, server.key, keys/")
    certs.add_argument("--host", action="append", required=True,
                       help="the SuperLink's host name or IP address as SuperNodes dial it (repeatable)")
    certs.add_argument("--node", action="append", default=[],
                       help="also make this node's key pair (repeatable; for trials: in production each hospital "
                            "runs `ssh-keygen -t ecdsa -b 384` itself and sends only the .pub)")
    certs.add_argument("--days", type=_number(int, 1), default=3650, help="validity of the certificates (default 3650)")
    certs.add_argument("--overwrite", action="store_true", help="replace existing files (a new CA for everyone)")
    certs.set_defaults(func=cmd_flower_certs)

    nnunet = sub.add_parser("nnunet", help="nnU-Net v2: export a segmentation federation in its raw format, "
                                          "federated fingerprint and plans, predictions back to submissions")
    nn_sub = nnunet.add_subparsers(dest="nnunet_command", required=True)
    nn_export = nn_sub.add_parser("export", help="write the sites as nnU-Net raw dataset(s) (hashed case ids)")
    nn_plan = nn_sub.add_parser("plan", help="each site's fingerprint (statistics only), merged; nnU-Net's planner "
                                             "on it: one plans file for the federation")
    for command in (nn_export, nn_plan):
        command.add_argument("sites", type=Path, help="federation config (sites/*.yaml) of BraTS/FeTS sites")
        command.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id (1-999)")
        command.add_argument("--name", required=True, help="dataset name: Dataset<ID>_<NAME>")
        command.add_argument("--no-progress", action="store_true")
    nn_export.add_argument("--out", type=_path("dir"), default=Path("nnUNet_raw"),
                           help="nnU-Net raw folder (default nnUNet_raw)")
    nn_export.add_argument("--per-site", action="store_true", help="one dataset per site (ids ID, ID+1, ...)")
    nn_plan.add_argument("--out", type=_path("dir"), default=Path("reports") / "nnunet", help="folder for the plans")
    nn_plan.add_argument("--planner", default="ExperimentPlanner",
                         help="nnU-Net planner class (ExperimentPlanner, nnUNetPlannerResEncM, ...)")
    nn_plan.add_argument("--gpu-memory", type=_number(float, 0), help="GPU memory target of the planner in GB (default: the "
                                                         "planner's own, 8 for ExperimentPlanner)")
    nn_plan.add_argument("--bins", type=_number(int, 1), default=10_000, help="intensity histogram bins per channel")
    nn_import = nn_sub.add_parser("import-predictions", help="nnU-Net predicted label maps -> BraTS submission "
                                                           "files for medfed score")
    nn_import.add_argument("sites", type=Path)
    nn_import.add_argument("predictions", type=Path, help="folder of <case id>.nii.gz from nnUNetv2_predict")
    nn_import.add_argument("--out", type=_path("dir"), required=True, help="submission folder to write")
    nn_import.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    nn_import.add_argument("--site", action="append", help="only this site's cases (repeatable; default all)")
    nnunet.set_defaults(func=cmd_nnunet)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (argparse's usage errors too: 2, message printed)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (2), --help and --version (0)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except DataProblems as err:
        _print_problems(err.problems, "data problems")
        return EXIT_PROBLEMS
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except MedfedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    except OSError as err:  # a file or folder that cannot be read or written; the message names it
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
