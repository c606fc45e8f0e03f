"""One method of an experiment trained over a Flower Grid (the ServerApp's main): read the run config and the experiment,
refuse what only an in-process run can do, prepare the run directory through the run ledger, connect the sites, let
Flower drive :class:`~medfed.integrations.flower.server.MedfedStrategy`, then evaluate the final models on every site."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from flwr.app import (
    Context,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from medfed.errors import ConfigError
from medfed.fl.config import (
    ExperimentConfig,
    build_strategies,
    federation_path,
    load_experiment,
)
from medfed.fl.ledger import (
    MethodResult,
    RunDirectory,
    RunStopped,
    resolved_config,
)
from medfed.integrations.flower.final_report import _RemoteSite, write_final_report
from medfed.integrations.flower.server import MedfedStrategy
from medfed.integrations.flower.settings import ServerSettings
from medfed.tasks import build_task

logger = logging.getLogger("medfed.flower")


# ----------------------------------------------------------------------------- the run
@dataclass
class FlowerRun:
    """What :func:`run_server` did: the method's result (None when it stopped), Flower's result, and where."""

    experiment: str
    method: str
    out: Path
    result: MethodResult | None
    flower: Result | None = None
    stopped: str | None = None
    metrics: pd.DataFrame | None = None
    eval_failed: list[dict[str, Any]] = field(default_factory=list)


def check_flower_experiment(config: ExperimentConfig, source: str) -> None:
    """Refuse what only an in-process simulation can do, before anything runs."""
    refusals = []
    if config.partition is not None:
        refusals.append("partition: re-partitioning pools every case first; over Flower each hospital keeps its own data")
    if config.site_conditions:
        refusals.append("site_conditions: simulated corruptions and adversaries belong to in-process runs")
    if config.server_benchmark is not None:
        refusals.append("server_benchmark: it is drawn from the sites' cases, which never leave them over Flower")
    if refusals:
        raise ConfigError("\n".join(f"{source}: {r}" for r in refusals))


def run_flower_method(grid: Grid, settings: ServerSettings) -> FlowerRun:
    """Train ``settings.method`` of ``settings.experiment`` over ``grid``; the body of :func:`run_server`."""
    path = settings.experiment
    config = load_experiment(path)
    if settings.rounds > 0:
        config = config.model_copy(update={"training": config.training.model_copy(update={"rounds": settings.rounds})})
    check_flower_experiment(config, str(path))
    labels = [m.label for m in config.methods]
    label = settings.method or (labels[0] if len(labels) == 1 else "")
    if label not in labels:
        raise ConfigError(f"{path}: run config `method` must name one of the experiment's methods "
                          f"({', '.join(labels)}), got {settings.method!r}")
    spec = next(m for m in config.methods if m.label == label)
    task = build_task(config.task)
    method = build_strategies(config, str(path))[label]
    reason = method.check_task(task)
    if reason is None and method.needs_server_benchmark():
        reason = "needs a benchmark set held by the server, which a Flower run has not: use reliability: client"
    if reason is not None:
        raise ConfigError(f"{path}: methods: {label}: {reason}")
    try:
        fed_file: Path | str = federation_path(config, path.parent, None)
    except ConfigError:
        fed_file = config.federation  # a demo federation: only its name is recorded
    out = settings.out / config.name
    run_dir = RunDirectory(out)
    run_dir.prepare(resolved_config(config, fed_file), settings.resume, keep_methods=True)  # one method per flwr run
    strategy = MedfedStrategy(
        label, method, task, config.training, config.seed, run_dir.method_dir(label),
        task_spec=config.task.model_dump(mode="json"), method_params=spec.params, clients=settings.sites,
        min_nodes=settings.min_nodes, init=spec.init, per_tensor=settings.per_tensor,
        round_timeout=settings.round_timeout, query_timeout=settings.query_timeout)
    strategy.connect(grid, settings.connect_timeout)
    run_dir.write_sites([_RemoteSite(strategy.site_info[s]) for s in strategy.clients if s in strategy.site_info], {})
    rounds = strategy.begin(settings.resume)
    run = FlowerRun(config.name, label, out, None)
    if rounds > 0:
        try:
            run.flower = strategy.start(grid, strategy._arrays(strategy.global_weights), num_rounds=rounds,
                                        timeout=settings.round_timeout)
        except RunStopped as err:
            run.stopped = str(err)
            logger.warning("[%s] %s", config.name, err)
            return run
    run.result = strategy.result()
    if settings.final_eval:
        names, got, failed = strategy.evaluate_final(grid)
        run.eval_failed = failed
        run.metrics = write_final_report(strategy, run_dir, labels, names, got)
    return run


def run_server(grid: Grid, context: Context) -> FlowerRun:
    """The ServerApp main: reads :class:`ServerSettings` from ``context.run_config`` and trains one method."""
    return run_flower_method(grid, ServerSettings.from_run_config(context.run_config))
