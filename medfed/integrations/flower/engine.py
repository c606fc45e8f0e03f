"""``medfed run --engine flower|flower-sim``: one experiment config trained over Flower on this machine.

:func:`run_experiment_on_flower` is :func:`medfed.fl.experiment.run_experiment` with Flower doing the
transport: it starts a :class:`~medfed.integrations.flower.local_cluster.LocalCluster`, runs medfed's Flower App
(:mod:`medfed.integrations.flower.app`) once per method of the experiment (``flwr run``, one method per run,
all into the same run directory ``<out>/<experiment name>/``), and returns the same
:class:`~medfed.fl.experiment.ExperimentResult`. The run directory holds what ``medfed run`` writes
(``config.yaml``, ``sites.csv``/``sites.json``, ``runs/<method>/``, ``predictions/``, ``metrics.csv``,
``summary.csv``), so ``medfed report`` works unchanged, plus ``flower/``:

``flower/sites/<site>.yaml``
    (engine ``flower``) one federation config per site: the experiment federation's ``sources`` entry of that
    site, its paths (``root``, a BraTS ``partition_csv``) made absolute, other values as written (``${VAR}``
    kept, e.g. an ``id_salt``, which each SuperNode expands from the environment it inherits). SuperNode *i*
    gets ``site-config`` = that file and ``site-name`` = the site, so each node owns exactly one site.
``flower/experiment.yaml``
    only for a demo federation (``federation: demo:<modality>``): the experiment with the federation replaced
    by the resolved file (the ServerApp and simulated nodes cannot resolve demo names).
``flower/logs/``
    the SuperLink's, the SuperNodes' and each ``flwr run``'s output (a resumed run's earlier logs move to
    ``flower/logs-<time>/``).

Engines:

``flower``
    a Flower *deployment* over loopback: ``flower-superlink`` plus one ``flower-supernode`` per site, all bound
    to 127.0.0.1. Results equal the in-process engine's bit for bit.
``flower-sim``
    Flower's Simulation Engine: ``flower-superlink --simulation`` and ``num-supernodes`` = number of sites,
    virtual nodes on Ray (needs ``flwr[simulation]``; Ray runs in loopback mode, listening on 127.0.0.1 only).
    A virtual node has no ``site-config``; the ClientApp takes site ``partition-id`` of the run's ``sites``
    (:func:`medfed.integrations.flower.node_site.site_node_config`).

What the Flower App refuses is refused here too, before anything is written: ``partition``,
``site_conditions``, ``server_benchmark``, strategies that pool data (centralised) or train sites one after
another (cyclic), a strategy unsuited to the task or needing a server benchmark. Every wait is bounded
(``timeout`` for the whole experiment) and every process started is stopped on return or error
(:meth:`LocalCluster.close`). The cluster's processes get ``PYTHONPATH`` with this medfed first, so the App
they run is the code running this function even where another medfed is installed.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

import pandas as pd
import yaml
from tqdm.auto import tqdm

from medfed.config import read_yaml, resolve_path
from medfed.errors import ConfigError, MedfedError
from medfed.fl.config import (
    DEMO_PREFIX,
    ExperimentConfig,
    build_strategies,
    federation_path,
    load_experiment,
    resolve_init,
)
from medfed.fl.experiment import ExperimentResult, check_federation, init_refusals
from medfed.fl.ledger import CHECKPOINT, ROUNDS_LOG
from medfed.fl.names import REPORT_FILES
from medfed.fl.summary import summary_table
from medfed.io import atomic_write_text
from medfed.sites.federation import Federation, load_federation
from medfed.tasks import build_task

Engine = Literal["flower", "flower-sim"]
ENGINES: tuple[str, ...] = ("flower", "flower-sim")

#: the Flower App project (``pyproject.toml`` beside :mod:`medfed.integrations.flower.app`)
APP_DIR = Path(__file__).resolve().parent

#: bounded waits handed to the ServerApp (seconds; never more than the experiment's ``timeout``)
ROUND_TIMEOUT = 600.0
QUERY_TIMEOUT = 60.0
CONNECT_TIMEOUT = 120.0
STARTUP_TIMEOUT = 90.0


class FlowerEngineError(MedfedError):
    """The Flower cluster did not start, or a ``flwr run`` failed (the message names the log)."""


class FlowerTimeout(FlowerEngineError, TimeoutError):
    """The experiment did not finish within ``timeout`` (its run was stopped, every process ended)."""


# ----------------------------------------------------------------------------- checks
def flower_refusals(config: ExperimentConfig, source: str) -> list[str]:
    """Why the Flower App cannot train ``config`` (empty: it can); the ServerApp's own checks, all at once."""
    from medfed.integrations.flower.server_run import check_flower_experiment

    refusals: list[str] = []
    try:
        check_flower_experiment(config, source)
    except ConfigError as err:
        refusals += str(err).splitlines()
    if config.seeds is not None:
        refusals.append(f"{source}: seeds: multi-seed runs use the in-process engine (medfed run without --engine)")
    refusals += [f"{source}: methods: {m.label}: server_learning_rate match:{m.match_target} is measured in-process "
                 "only; give the number (the matched method's mean step_ratio in its rounds.jsonl)"
                 for m in config.methods if m.match_target is not None]
    task = build_task(config.task)
    for label, method in build_strategies(config, source).items():
        if method.pooled:
            reason = (f"strategy {method.name} pools the sites' data (a centralised reference), which never "
                      "leave the sites over Flower")
        elif not method.order_invariant:
            reason = f"strategy {method.name} trains the sites one after another (cyclic), not over Flower"
        elif (reason := method.check_task(task)) is None and method.needs_server_benchmark():
            reason = "needs a benchmark set held by the server, which a Flower run has not: use reliability: client"
        if reason is not None:
            refusals.append(f"{source}: methods: {label}: {reason}")
    return refusals + init_refusals(task, config, source)


def _check_engine(engine: str) -> None:
    from medfed.integrations.flower.local_cluster import flower_cli_available

    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    ok, reason = flower_cli_available()
    if not ok:
        raise ConfigError(f"engine {engine}: {reason}")
    if engine == "flower-sim" and importlib.util.find_spec("ray") is None:
        raise ConfigError("engine flower-sim needs Flower's Simulation Engine (Ray): pip install 'flwr[simulation]' "
                          "(medfed[flower-sim])")


# ----------------------------------------------------------------------------- files written
def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "site"


def _source_sites(expanded: Mapping[str, Any], source: Mapping[str, Any], fed_dir: Path, sites: set[str]) -> list[str]:
    """The site names one ``sources`` entry forms (by its name; a partitioned source is built to find out)."""
    name = str(source.get("name", ""))
    if name in sites and not source.get("partition_csv"):
        return [name]
    from medfed.config import FederationConfig
    from medfed.sites.federation import build_federation

    one = FederationConfig.model_validate({**expanded, "sources": [dict(source)]})
    return [s.name for s in build_federation(one, fed_dir).sites]


def write_site_configs(fed_file: Path, federation: Federation, folder: Path) -> dict[str, Path]:
    """One federation config per site of ``federation`` (from ``fed_file``) in ``folder``: ``site -> file``.

    Each file keeps the federation's settings (name, adapter, split, ``min_count``, ``id_salt``) and only the
    ``sources`` entry forming that site, with ``root`` (and a ``partition_csv``) absolute; other values are
    written as in ``fed_file``, unexpanded.
    """
    fed_file = Path(fed_file).resolve()
    fed_dir = fed_file.parent
    raw = yaml.safe_load(fed_file.read_text()) or {}
    expanded = read_yaml(fed_file)
    names = set(federation.site_names)
    owner: dict[str, dict[str, Any]] = {}
    for raw_source, source in zip(raw.get("sources", []), expanded.get("sources", []), strict=True):
        entry = copy.deepcopy(raw_source)
        root = resolve_path(str(source["root"]), fed_dir)
        entry["root"] = str(root)
        if source.get("partition_csv"):
            from medfed.sites.brats import find_partition_csv

            entry["partition_csv"] = str(find_partition_csv(str(source["partition_csv"]), root, fed_dir))
        for site in _source_sites(expanded, source, fed_dir, names):
            owner.setdefault(site, entry)
    missing = [s for s in federation.site_names if s not in owner]
    if missing:  # pragma: no cover - every site comes from some source
        raise MedfedError(f"{fed_file}: cannot tell which source forms site(s) {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    used: set[str] = set()
    for i, site in enumerate(federation.site_names):
        stem = _safe_name(site)
        if stem in used:
            stem = f"{stem}-{i}"
        used.add(stem)
        files[site] = folder / f"{stem}.yaml"
        data = {**raw, "sources": [owner[site]]}
        atomic_write_text(files[site], f"# site {site} of {fed_file} (written by medfed's Flower engine)\n"
                          + yaml.safe_dump(data, sort_keys=False))
    return files


def write_resolved_experiment(config_path: Path, fed_file: Path, target: Path) -> Path:
    """The experiment at ``config_path`` with its (demo) federation replaced by ``fed_file`` and relative
    paths made absolute, at ``target`` (as :func:`medfed.fl.sweep.expand` writes variants)."""
    raw = read_yaml(config_path)
    raw["federation"] = str(Path(fed_file).resolve())
    base = config_path.parent
    if isinstance(raw.get("partition"), dict) and raw["partition"].get("file"):
        raw["partition"]["file"] = str(resolve_path(str(raw["partition"]["file"]), base))
    model = raw.get("task", {}).get("model") if isinstance(raw.get("task"), dict) else None
    if isinstance(model, dict) and model.get("init") is not None:
        model["init"] = resolve_init(model["init"], base)
    for method in raw.get("methods", []):
        if isinstance(method, dict) and method.get("init") is not None:
            method["init"] = resolve_init(method["init"], base)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, f"# {config_path} with its federation resolved (medfed's Flower engine)\n"
                      + yaml.safe_dump(raw, sort_keys=False))
    return target


def _clear_outputs(out: Path) -> None:
    """What a fresh ``medfed run`` removes from a run directory (and this engine's ``flower/``)."""
    for stale in ("runs", "predictions", "flower"):
        shutil.rmtree(out / stale, ignore_errors=True)
    for stale in ("metrics.csv", "summary.csv", "sites.csv", "sites.json", *REPORT_FILES):
        (out / stale).unlink(missing_ok=True)


def fresh_log_dir(flower_dir: Path) -> Path:
    """``flower_dir/logs``, empty: logs of an earlier invocation (a resumed run) move to ``logs-<time>``, since
    :class:`LocalCluster` appends to its log files and reads the SuperNodes' ids from them."""
    logs = flower_dir / "logs"
    if logs.is_dir() and any(logs.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(logs.stat().st_mtime))
        target, n = flower_dir / f"logs-{stamp}", 1
        while target.exists():
            n += 1
            target = flower_dir / f"logs-{stamp}-{n}"
        logs.rename(target)
    logs.mkdir(parents=True, exist_ok=True)
    return logs


def same_medfed_env() -> dict[str, str]:
    """``PYTHONPATH`` with this process's medfed first: the cluster's ServerApp and ClientApp processes import
    ``medfed.integrations.flower.app``, which must be the medfed running this engine (not another install)."""
    import medfed

    root = str(Path(medfed.__file__).resolve().parent.parent)
    others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return {"PYTHONPATH": os.pathsep.join([root, *others])}


# ----------------------------------------------------------------------------- progress
class _RoundsBar:
    """A tqdm bar of a method's rounds, fed by polling its ``rounds.jsonl`` while ``flwr run`` runs."""

    def __init__(self, log: Path, label: str, rounds: int, enabled: bool) -> None:
        self.log, self.enabled = log, enabled
        self.bar = tqdm(total=rounds, desc=f"{label}: rounds (Flower)", unit="round", leave=False,
                        disable=None if enabled else True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _count(self) -> int:
        try:
            return sum(1 for line in self.log.read_text().splitlines() if line.strip())
        except OSError:
            return 0

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            done = min(self._count(), self.bar.total or 0)
            if done > self.bar.n:
                self.bar.update(done - self.bar.n)

    def __enter__(self) -> Self:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.bar.close()


# ----------------------------------------------------------------------------- results
def _rounds(run_dir: Path) -> list[dict[str, Any]]:
    log = run_dir / ROUNDS_LOG
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _stopped_reason(label: str, run_dir: Path, log: list[dict[str, Any]], output_log: Path) -> str:
    last = log[-1] if log else None
    if last is not None and last.get("status") == "stopped":
        rnd = int(last["round"])
        return (f"{label}, round {rnd}: only {len(last.get('completed', []))} of the {len(last.get('sampled', []))} "
                f"sampled site(s) returned an update; stopped, keeping rounds 1-{rnd - 1} "
                f"(checkpoint {run_dir / CHECKPOINT}, log {run_dir / ROUNDS_LOG})")
    return f"{label}: the Flower run wrote no final metrics (see {output_log})"


def _run_methods(cluster: Any, config: ExperimentConfig, out: Path, base_run_config: Mapping[str, Any],
                 federation_config: Mapping[str, Any] | None, left: Callable[[], float], progress: bool,
                 stopped: dict[str, str], failures: list[dict[str, Any]]) -> None:
    """One ``flwr run`` per method of ``config`` on ``cluster`` (started here, always closed)."""
    with cluster:
        for spec in config.methods:
            label = spec.label
            run_dir = out / "runs" / label
            metrics_file = run_dir / "metrics.csv"
            before = metrics_file.stat().st_mtime_ns if metrics_file.is_file() else None
            remaining = left()
            run_config = {
                **base_run_config, "method": label,
                "round-timeout": min(ROUND_TIMEOUT, remaining), "query-timeout": min(QUERY_TIMEOUT, remaining),
                "connect-timeout": min(CONNECT_TIMEOUT, remaining),
            }
            with _RoundsBar(run_dir / ROUNDS_LOG, label, config.training.rounds, progress):
                result = cluster.run_app(APP_DIR, run_config, timeout=remaining,
                                         federation_config=federation_config, check=False)
            if not result.ok:
                tail = "\n".join(result.output.splitlines()[-40:])
                raise FlowerEngineError(f"[{config.name}] method {label}: the Flower run ended as {result.status} "
                                  f"({result.status_details}); output in {result.log_path}:\n{tail}")
            log = _rounds(run_dir)
            wrote = metrics_file.is_file() and metrics_file.stat().st_mtime_ns != before
            if not wrote:
                stopped[label] = _stopped_reason(label, run_dir, log, result.log_path)
                tqdm.write(f"[{config.name}] {stopped[label]}")
                continue
            failures += [dict(dict(f, round=r["round"]), method=label) for r in log for f in r.get("failed", [])]
            if progress:
                tqdm.write(f"[{config.name}] {label}: {len(log)} round(s) over Flower in {result.seconds:.1f} s")


# ----------------------------------------------------------------------------- the engine
def run_experiment_on_flower(
    config_path: Path | str,
    out_root: Path | str,
    engine: Engine,
    *,
    demo_configs: dict[str, Path] | None = None,
    rounds: int | None = None,
    resume: bool = False,
    progress: bool = True,
    timeout: float = 3600,
) -> ExperimentResult:
    """Train every method of the experiment at ``config_path`` over Flower on this machine (see the module
    docstring); the run directory ``<out_root>/<experiment name>/`` is what ``run_experiment`` writes.

    ``rounds`` (when > 0) replaces ``training.rounds``; ``resume`` continues each method from its last
    checkpoint; ``timeout`` bounds the whole experiment in seconds (a run past it is stopped and
    :class:`FlowerTimeout`, a :class:`TimeoutError`, raised). A cluster that does not start or a ``flwr run``
    that fails raises :class:`FlowerEngineError` (a :class:`MedfedError`) naming its log; a
    method whose round gets too few updates is in ``stopped`` (as in-process).
    """
    from medfed.integrations.flower.local_cluster import (
        FlowerClusterError,
        LocalCluster,
    )

    started = time.monotonic()
    deadline = started + float(timeout)
    if float(timeout) <= 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
    _check_engine(engine)
    config_path = Path(config_path).expanduser().resolve()
    config = load_experiment(config_path)
    if rounds:
        if int(rounds) < 1:
            raise ConfigError(f"rounds must be >= 1, got {rounds}")
        config = config.model_copy(update={"training": config.training.model_copy(update={"rounds": int(rounds)})})
    refusals = flower_refusals(config, str(config_path))
    if refusals:
        raise ConfigError("\n".join(refusals))
    fed_file = federation_path(config, config_path.parent, demo_configs)  # a demo not given: ConfigError
    federation = load_federation(fed_file)  # every problem of every site (DataProblems) before any output
    task = build_task(config.task)
    check_federation(task, federation)  # sites that do not suit the task (DataProblems)

    out = Path(out_root) / config.name
    out_abs = out.expanduser().resolve()
    flower_dir = out_abs / "flower"
    if not resume:
        _clear_outputs(out_abs)
    out_abs.mkdir(parents=True, exist_ok=True)
    experiment = config_path
    if config.federation.startswith(DEMO_PREFIX):
        experiment = write_resolved_experiment(config_path, Path(fed_file), flower_dir / "experiment.yaml")
    sites = federation.site_names

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FlowerTimeout(f"{config.name}: not finished within {timeout:g} s over Flower ({engine})")
        return remaining

    base_run_config: dict[str, Any] = {
        "experiment": str(experiment), "out": str(out_abs.parent), "sites": ",".join(sites),
        "rounds": int(rounds or 0), "resume": bool(resume),
    }
    logs = fresh_log_dir(flower_dir)
    if engine == "flower":
        files = write_site_configs(Path(fed_file), federation, flower_dir / "sites")
        cluster = LocalCluster([{"site-config": str(files[s]), "site-name": s} for s in sites], log_dir=logs,
                               startup_timeout=min(STARTUP_TIMEOUT, left()), extra_env=same_medfed_env())
        federation_config: dict[str, Any] | None = None
    else:
        cluster = LocalCluster(simulation=True, log_dir=logs, startup_timeout=min(STARTUP_TIMEOUT, left()),
                               extra_env=same_medfed_env())
        federation_config = {"num-supernodes": len(sites)}
    if progress:
        tqdm.write(f"[{config.name}] {engine}: {len(sites)} site(s) ({', '.join(sites)}), "
                   f"{len(config.methods)} method(s), logs in {logs}")
    stopped: dict[str, str] = {}
    failures: list[dict[str, Any]] = []
    try:
        _run_methods(cluster, config, out_abs, base_run_config, federation_config, left, progress, stopped, failures)
    except FlowerClusterError as err:
        raise FlowerEngineError(f"[{config.name}] {engine}: {err}") from err
    except TimeoutError as err:
        if isinstance(err, FlowerTimeout):
            raise
        raise FlowerTimeout(f"[{config.name}] {engine}: not finished within {timeout:g} s: {err}") from err

    metrics_csv = out_abs / "metrics.csv"
    if metrics_csv.is_file():
        metrics = pd.read_csv(metrics_csv)
    else:  # every method stopped: the empty files medfed run writes
        metrics = pd.DataFrame()
        atomic_write_text(metrics_csv, metrics.to_csv(index=False))
    summary = summary_table(metrics, task.primary_metric) if len(metrics) else pd.DataFrame()
    if not len(metrics):
        atomic_write_text(out_abs / "summary.csv", summary.rename_axis("site").reset_index().to_csv(index=False))
    return ExperimentResult(config.name, out, metrics, summary, task.primary_metric, stopped, failures)


__all__ = [
    "ENGINES",
    "FlowerEngineError",
    "FlowerTimeout",
    "flower_refusals",
    "fresh_log_dir",
    "run_experiment_on_flower",
    "same_medfed_env",
    "write_resolved_experiment",
    "write_site_configs",
]
