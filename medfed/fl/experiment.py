"""Run one experiment config: every method on one federation, then the cross-site evaluation.

It writes the run directory ``<out>/<experiment name>/`` through the run ledger (layout in
:mod:`medfed.fl.ledger.run_dir`; each method's checkpoint and round log in :mod:`medfed.fl.ledger.rounds`).

Every final model is evaluated on every site (the cross-site matrix) and on the pooled test set. For
local-only, the model ``own`` stands for "each site's own local model on its own cases".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError
from tqdm.auto import tqdm

from medfed.config import resolve_path
from medfed.errors import ConfigError, DataProblems, MedfedError, errors_only
from medfed.fl.config import (
    DEMO_PREFIX,
    ExperimentConfig,
    build_strategies,
    check_seeds,
    federation_path,
    load_experiment,
    run_order,
)
from medfed.fl.evaluation import EvalDatasets, evaluate_models, metric_table
from medfed.fl.ledger import RunDirectory, RunStopped, resolved_config
from medfed.fl.runner import MethodRunner
from medfed.fl.scenario import (
    apply_conditions,
    identity_assignment,
    split_server,
    with_server_benchmark,
)
from medfed.fl.step import mean_step_ratio
from medfed.fl.strategies.local_only import local_key
from medfed.fl.summary import OWN_MODEL
from medfed.partition import (
    dirichlet_label_skew,
    iid,
    quantity_skew,
    read_partition,
    site_names,
)
from medfed.sites.federation import Federation, load_federation
from medfed.sites.partitioned import repartition
from medfed.tasks import build_task
from medfed.tasks.models import load_initial_weights


@dataclass
class ExperimentResult:
    name: str
    out: Path
    metrics: pd.DataFrame
    summary: pd.DataFrame
    primary_metric: str
    stopped: dict[str, str] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)


def draw_partition(config: ExperimentConfig, federation: Federation, config_dir: Path) -> pd.Series:
    """``case_id -> site`` for ``config.partition`` over every case of ``federation`` (seeded)."""
    spec = config.partition
    assert spec is not None
    if spec.method == "file":
        return read_partition(resolve_path(str(spec.file), config_dir))
    cases = federation.case_table()
    seed = config.seed if spec.seed is None else spec.seed
    names = site_names(int(spec.n_sites or 0), spec.prefix)
    try:
        ids, groups = cases["case_id"].tolist(), cases["group"].tolist()  # whole groups move: no patient in two sites
        if spec.method == "iid":
            drawn = iid(ids, len(names), seed=seed, groups=groups)
        elif spec.method == "quantity_skew":
            drawn = quantity_skew(ids, len(names), spec.alpha, spec.min_size, seed, groups=groups)
        else:
            label = spec.label or (config.task.labels[0] if getattr(config.task, "labels", None) else None)
            if label is None or label not in cases:
                raise ValueError(f"label {label!r} is not a label column of the federation "
                                 f"(columns: {', '.join(map(str, cases.columns))}); set partition.label")
            drawn = dirichlet_label_skew(ids, cases[label].tolist(), len(names), spec.alpha, spec.min_size, seed,
                                         groups=groups)
    except ValueError as err:
        raise ConfigError(f"partition ({spec.method}): {err}") from None
    default = site_names(len(names))  # the partitioners name sites site-1..N; use the configured prefix
    return drawn.map(dict(zip(default, names, strict=True)))


def init_refusals(task: Any, config: ExperimentConfig, source: Path | str) -> list[str]:
    """Why a method's pretrained-weights file (``init``) does not fit the task's model, one line per method; checked
    before any output is written."""
    refusals = []
    for method in config.methods:
        if method.init is not None:
            try:
                load_initial_weights(task.build_model(0), dict(method.init), method.label)
            except MedfedError as err:
                refusals.append(f"{source}: methods: {method.label}: init: {err}")
    return refusals


def check_federation(task: Any, federation: Federation) -> None:
    """Every site must suit the task; all problems are reported at once."""
    problems = [p for site in federation for p in task.check_site(site)]
    if problems:
        raise DataProblems(problems)


def run_experiment(
    config_path: Path | str,
    out_root: Path | str = "reports",
    *,
    demo_configs: dict[str, Path] | None = None,
    resume: bool = False,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    validate: bool = False,
    seeds: Sequence[int] | None = None,
) -> ExperimentResult:
    """Train every method of the experiment at ``config_path`` and write its run directory under ``out_root``.

    ``overrides`` replaces ``training`` fields (e.g. ``{"rounds": 1}``); ``validate`` reads every case of
    every site first and reports all problems at once (:class:`DataProblems`) before any training. ``seeds`` (or
    the config's ``seeds``) runs the experiment once per seed (:func:`medfed.fl.multiseed.run_seeds`), loading the
    federation once.
    """
    config_path = Path(config_path)
    config = with_training_overrides(load_experiment(config_path), overrides, config_path)
    if seeds is not None:
        try:
            config = config.model_copy(update={"seeds": check_seeds(list(seeds))})
        except ValueError as err:
            raise ConfigError(f"--seeds: {err}") from None
    fed_file = federation_path(config, config_path.parent, demo_configs)
    federation = load_federation(fed_file, strict=not validate)
    if validate:
        problems = errors_only(federation.validate(progress=progress))
        if problems:
            raise DataProblems(problems)
    if config.seeds is not None:
        from medfed.fl.multiseed import run_seeds

        return run_seeds(config, config_path, fed_file, federation, Path(out_root) / config.name, resume=resume,
                         progress=progress)
    return run_loaded(config, config_path, fed_file, federation, Path(out_root) / config.name, resume=resume,
                      progress=progress)


def with_training_overrides(config: ExperimentConfig, overrides: dict[str, Any] | None,
                            source: Path) -> ExperimentConfig:
    """``config`` with ``training`` fields replaced, validated like the config file (model_copy alone would accept
    rounds=-1)."""
    if not overrides:
        return config
    try:
        training = type(config.training).model_validate({**config.training.model_dump(), **overrides})
    except ValidationError as err:
        raise ConfigError(f"{source}: training overrides {overrides}: {err.errors()[0]['msg']}") from None
    return config.model_copy(update={"training": training})


def run_loaded(
    config: ExperimentConfig,
    config_path: Path,
    fed_file: Path,
    federation: Federation,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> ExperimentResult:
    """One seed (``config.seed``) of an experiment whose federation is loaded: train every method, evaluate every
    final model on every site, write the run directory ``out``."""
    task = build_task(config.task)
    assignment = None
    if config.partition is not None:
        assignment = draw_partition(config, federation, config_path.parent)
    partition = assignment
    server_site = None
    if config.server_benchmark is not None:
        base = assignment if assignment is not None else identity_assignment(federation)
        assignment = with_server_benchmark(task, federation, base, config.server_benchmark, config.seed)
    if assignment is not None:
        order = None if config.partition is not None else federation.site_names
        sites, server_site = split_server(repartition(federation.sites, assignment, federation.name))
        if order is not None:
            sites = sorted(sites, key=lambda s: order.index(s.name))
        suffix = f"-{config.partition.method}" if config.partition is not None else ""
        federation = Federation(f"{federation.name}{suffix}", sites, config=federation.config, source=federation.source)
    federation = apply_conditions(federation, config.site_conditions, config.seed)
    check_federation(task, federation)
    strategies = build_strategies(config, str(config_path))
    refusals = [f"{config_path}: methods: {label}: {reason}" for label, strategy in strategies.items()
                if (reason := strategy.check_task(task)) is not None]
    refusals += [f"{config_path}: methods: {label}: needs a benchmark set held by the server; add "
                 "`server_benchmark: {cases: N}` to the experiment (or use reliability: client)"
                 for label, strategy in strategies.items()
                 if strategy.needs_server_benchmark() and server_site is None]
    refusals += [f"{config_path}: site_conditions: {site}: label_flip has no effect on anomaly target "
                 "'corruption' (every training image is normal); poison the data with `corruption` instead"
                 for site, spec in config.site_conditions.items()
                 if spec.adversary is not None and spec.adversary.kind == "label_flip"
                 and getattr(config.task, "target", None) == "corruption"]
    refusals += init_refusals(task, config, config_path)
    if refusals:
        raise ConfigError("\n".join(refusals))
    run_dir = RunDirectory(out)
    resuming = run_dir.prepare(resolved_config(config, fed_file), resume)
    run_dir.write_sites(federation, config.site_conditions)
    if partition is not None:
        run_dir.write_partition(partition)

    sites = list(federation)
    names = [s.name for s in sites]
    min_counts = {s.name: s.min_count for s in sites}
    pooled_min = max(min_counts.values())
    eval_data = EvalDatasets(task, sites)
    adversaries = {site: spec.adversary for site, spec in config.site_conditions.items() if spec.adversary is not None}
    benchmark = task.train_dataset(server_site) if server_site is not None else None
    inits = {m.label: m.init for m in config.methods if m.init is not None}
    targets = {m.label: m.match_target for m in config.methods if m.match_target is not None}
    frames: dict[str, pd.DataFrame] = {}
    stopped: dict[str, str] = {}
    failures: list[dict[str, Any]] = []
    logs: dict[str, list[dict[str, Any]]] = {}
    for label in run_order(config):
        strategy = strategies[label]
        if label in targets:
            strategy, reason = matched_strategy(config, label, targets[label], logs, str(config_path))
            if strategy is None:
                stopped[label] = reason
                tqdm.write(f"[{config.name}] {reason}")
                continue
        runner = MethodRunner(label, task, sites, strategy, config.training, config.seed, run_dir.method_dir(label),
                              eval_datasets=eval_data, progress=progress, adversaries=adversaries,
                              server_benchmark=benchmark, init=inits.get(label))
        try:
            result = runner.run(resume=resuming)
        except RunStopped as err:
            stopped[label] = str(err)
            tqdm.write(f"[{config.name}] {err}")
            continue
        logs[label] = result.rounds
        if label in targets:  # what the step-matched method ran with, beside its round log
            run_dir.write_matched_step(label, {
                "matched": targets[label], "server_learning_rate": getattr(strategy, "server_learning_rate", None),
                "rounds_of_matched": len(logs[targets[label]])})
        failures += [dict(f, method=label) for f in result.failures]
        bar = tqdm(total=len(result.models) * len(names), desc=f"{label}: evaluate", unit="site", leave=False,
                   disable=None if progress else True)  # None: off when not a terminal
        records = evaluate_models(task, runner_model(task, config), result.models, names, eval_data, bar)
        bar.close()
        if any(m == local_key(n) for m in result.models for n in names):
            own = pd.concat([records[(records["model"] == local_key(n)) & (records["site"] == n)] for n in names])
            records = pd.concat([records, own.assign(model=OWN_MODEL)], ignore_index=True)
        run_dir.write_predictions(label, records)
        frames[label] = metric_table(task, records, label, min_counts, pooled_min)
    ordered = [frames[m.label] for m in config.methods if m.label in frames]  # the config's order, as before
    metrics = pd.concat(ordered, ignore_index=True) if ordered else pd.DataFrame()
    summary = run_dir.write_results(metrics, task.primary_metric)
    return ExperimentResult(config.name, out, metrics, summary, task.primary_metric, stopped, failures)


def matched_strategy(config: ExperimentConfig, label: str, target: str, logs: Mapping[str, list[dict[str, Any]]],
                     source: str) -> tuple[Any, str]:
    """The strategy of step-matched method ``label``: its ``server_learning_rate`` is ``target``'s mean logged
    ``step_ratio`` (:func:`medfed.fl.step.mean_step_ratio`; the run writes it to ``runs/<label>/matched_step.json``).
    ``(None, reason)`` when ``target`` stopped or logged no step ratio."""
    if target not in logs:
        return None, f"{label}: not run, since {target} (whose step length it matches) stopped"
    rate = mean_step_ratio(logs[target])
    if rate is None or not rate > 0:
        return None, (f"{label}: not run, since {target} logged no step ratio (it has no global model, or FedAvg "
                      "never moved); match a method with a global step")
    strategy = build_strategies(config, source, matched={label: rate})[label]
    tqdm.write(f"[{config.name}] {label}: server_learning_rate {rate:.4f} = mean step ratio of {target}")
    return strategy, ""


def runner_model(task: Any, config: ExperimentConfig) -> Any:
    """A model object to load evaluated weights into."""
    from medfed.seeding import derive_seed

    return task.build_model(derive_seed(config.seed, "init"))


def uses_demo(config_path: Path | str) -> str | None:
    """The demo modality an experiment config asks for, if any (without validating the rest)."""
    from medfed.config import read_yaml

    federation = str(read_yaml(config_path).get("federation", ""))
    return federation[len(DEMO_PREFIX):] if federation.startswith(DEMO_PREFIX) else None
