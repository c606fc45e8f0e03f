"""medfed's ClientApp handlers: one hospital's site, trained and evaluated where its data lives.

A SuperNode names its data in its own node config (``flower-supernode --node-config ...``):

``site-config``
    path of the hospital's site config (a medfed ``sites/*.yaml`` federation file; usually listing only
    this hospital's data). Relative paths are taken from the SuperNode's working directory.
``site-name``
    which site of that file this node is (optional when the file describes one site).
``share-case-records``
    ``true`` (default): evaluation replies carry the per-case records medfed's report is built from
    (case id, label, score, target, prediction, threshold: never an image); ``false``: only this site's
    metric values, already suppressed under its ``min_count`` (the server then reports no pooled metric
    and writes no predictions file).

Under Flower's Simulation Engine a virtual node's config has only ``partition-id`` and ``num-partitions``; with
no ``site-config``, node ``partition-id`` is site number ``partition-id`` of the run's ``sites`` (run config;
else the order of the experiment's federation), read from the federation of the experiment named by the run
config's ``experiment`` (:func:`site_node_config`), so each simulated node owns exactly one site.

Everything else comes from the server in each message (:mod:`medfed.integrations.flower.messages`): the task
config, the strategy and its hyper-parameters (for client-side hooks: FedProx's proximal term, FedLD's margin
control, SCAFFOLD's gradient correction), the round, seed and local budget, and the start weights.
Training repeats :meth:`medfed.fl.runner.MethodRunner._client_updates` step for step (start loss, hooks,
``task.local_train`` with ``derive_seed(seed, "train", round, site)``, the finite check), so a Flower run
gives the in-process result bit for bit. Any exception becomes an error reply naming the site, never a
crash of the node.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Context, Message, RecordDict
from pydantic import TypeAdapter
from torch import nn
from torch.utils.data import Dataset

from medfed.errors import ConfigError, DataProblems
from medfed.fl.config import federation_path, load_experiment
from medfed.fl.evaluation import EvalDatasets, evaluate_on_site, metric_table
from medfed.fl.names import POOLED
from medfed.fl.runner import quiet_collate
from medfed.fl.strategies import build_strategy
from medfed.fl.weights import WeightLayout, get_weights, layout_of, set_weights
from medfed.integrations.flower import messages as wire
from medfed.sites.base import Site
from medfed.sites.federation import Federation, load_federation
from medfed.sites.redact import error_text
from medfed.tasks import TaskConfig, build_task
from medfed.tasks.base import Task
from medfed.tasks.finetune import apply_policy

SITE_CONFIG = "site-config"
SITE_NAME = "site-name"
SHARE_RECORDS = "share-case-records"
PARTITION_ID = "partition-id"      # Flower simulation: the virtual node's index
NUM_PARTITIONS = "num-partitions"  # Flower simulation: how many virtual nodes

_TASK_CONFIG: TypeAdapter = TypeAdapter(TaskConfig)
_LOCK = threading.Lock()


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


def _reason(err: BaseException, site: Site | None = None) -> str:
    """The error as one short line with the site's paths and source ids hidden (the node is the site: its replies
    leave it)."""
    return error_text(err, site.private_texts() if site is not None else [])


# ----------------------------------------------------------------------------- the node's site
_SITES: dict[tuple[str, str], Site] = {}
_FEDERATIONS: dict[str, Federation] = {}
_SIM_FEDERATIONS: dict[str, str] = {}  # experiment file -> its federation file (simulated nodes)


def _federation(path: str) -> Federation:
    """The federation at ``path`` (absolute), loaded once per process; call with ``_LOCK`` held."""
    if path not in _FEDERATIONS:
        _FEDERATIONS[path] = load_federation(path)
    return _FEDERATIONS[path]


def node_site(node_config: dict[str, Any]) -> Site:
    """The site this node serves, from its node config (loaded once per process)."""
    raw = node_config.get(SITE_CONFIG)
    if not raw:
        raise ConfigError(f"this SuperNode has no `{SITE_CONFIG}` in its node config; start it with "
                          f"--node-config \"{SITE_CONFIG}='/path/to/site.yaml'\"")
    path = str(Path(str(raw)).expanduser().resolve())
    wanted = str(node_config.get(SITE_NAME) or "")
    key = (path, wanted)
    with _LOCK:
        if key not in _SITES:
            federation = _federation(path)
            if wanted:
                site = federation[wanted]
            elif len(federation) == 1:
                site = federation[0]
            else:
                raise ConfigError(f"{path} describes {len(federation)} sites ({', '.join(federation.site_names)}); "
                                  f"name this node's one with --node-config \"{SITE_NAME}='...'\"")
            _SITES[key] = site
        return _SITES[key]


def simulated_site(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> dict[str, str]:
    """``site-config`` and ``site-name`` of a simulated node: site ``partition-id`` of the run's ``sites`` (else
    of the federation's site order), in the federation of the run config's ``experiment``."""
    pid = int(node_config[PARTITION_ID])
    experiment = str(run_config.get("experiment") or "").strip()
    if not experiment:
        raise ConfigError(f"simulated node {pid}: the run config names no `experiment`, so this node (which has no "
                          f"`{SITE_CONFIG}`) cannot tell its site")
    path = Path(experiment).expanduser().resolve()
    with _LOCK:
        fed_file = _SIM_FEDERATIONS.get(str(path))
    if fed_file is None:  # read once per process (every message asks)
        fed_file = str(Path(federation_path(load_experiment(path), path.parent, None)).resolve())
        with _LOCK:
            _SIM_FEDERATIONS[str(path)] = fed_file
    sites = [s.strip() for s in str(run_config.get("sites") or "").split(",") if s.strip()]
    if not sites:
        with _LOCK:
            sites = _federation(fed_file).site_names
    if not 0 <= pid < len(sites):
        raise ConfigError(f"simulated node {PARTITION_ID}={pid} (of {node_config.get(NUM_PARTITIONS, '?')}): the run "
                          f"has {len(sites)} site(s) ({', '.join(sites)}); set num-supernodes = {len(sites)}")
    return {SITE_CONFIG: fed_file, SITE_NAME: sites[pid]}


def site_node_config(context: Context) -> dict[str, Any]:
    """The node config naming this node's site: its own, or for a simulated node without ``site-config`` (one
    with ``partition-id``) the one :func:`simulated_site` derives from the run config."""
    node_config = dict(context.node_config)
    if node_config.get(SITE_CONFIG) or PARTITION_ID not in node_config:
        return node_config
    return {**node_config, **simulated_site(node_config, context.run_config)}


@dataclass
class SiteRuntime:
    """One site under one task: the datasets and a model to load received weights into (built once)."""

    site: Site
    task: Task
    model: nn.Module
    layout: WeightLayout
    train_data: Dataset
    _eval: EvalDatasets | None = field(default=None, repr=False)

    @property
    def eval_data(self) -> EvalDatasets:
        if self._eval is None:
            self._eval = EvalDatasets(self.task, [self.site])
        return self._eval


_RUNTIMES: dict[tuple[int, str], SiteRuntime] = {}


def site_task(spec: dict[str, Any]) -> Task:
    """The task of a task config sent by the server (pretrained-weight paths are the server's: the weights
    arrive in the message, so ``model.init`` is not read here)."""
    spec = copy.deepcopy(spec)
    if isinstance(spec.get("model"), dict):
        spec["model"].pop("init", None)
    return build_task(_TASK_CONFIG.validate_python(spec))


def runtime(node_config: dict[str, Any], task_spec: dict[str, Any]) -> SiteRuntime:
    site = node_site(node_config)
    key = (id(site), json.dumps(task_spec, sort_keys=True))
    with _LOCK:
        if key not in _RUNTIMES:
            task = site_task(task_spec)
            problems = task.check_site(site)
            if problems:
                raise DataProblems(problems, f"site {site.name}")
            model = apply_policy(task.build_model(0), task.config.finetune)  # weights always come from the server
            _RUNTIMES[key] = SiteRuntime(site, task, model, layout_of(model), task.train_dataset(site))
        return _RUNTIMES[key]


def clear_caches() -> None:
    """Forget loaded sites and tasks (tests; a node whose data changed)."""
    with _LOCK:
        _SITES.clear()
        _FEDERATIONS.clear()
        _SIM_FEDERATIONS.clear()
        _RUNTIMES.clear()


# ----------------------------------------------------------------------------- handlers
def handle_query(message: Message, context: Context) -> Message:
    """Tell the server which site this node is (its name, ``min_count`` and suppressed case counts)."""
    name = str(context.node_config.get(SITE_NAME) or "")
    site = None
    try:
        site = node_site(site_node_config(context))
        name = site.name
        content = wire.site_reply_content(site.name, site.min_count, site.summary())
    except Exception as err:  # noqa: BLE001 - reported to the server, the node stays up
        content = wire.error_content(name, _reason(err, site))
    return Message(content, reply_to=message)


def local_update(rt: SiteRuntime, config: wire.TrainConfig, start: np.ndarray,
                 client_state: dict[str, Any] | None) -> RecordDict:
    """Train ``rt``'s site from ``start`` as the in-process runner does; the reply's content."""
    task, model = rt.task, rt.model
    strategy = build_strategy(config.strategy, config.strategy_params, source=f"method {config.method}")
    strategy.prepare(model)
    set_weights(model, start, rt.layout)
    diagnostics: dict[str, Any] = {}
    if config.start_loss:
        diagnostics["start_loss"] = task.mean_loss(model, rt.train_data)
    hooks = strategy.client_hooks(model, rt.site.name, client_state)
    began = time.perf_counter()
    budget: dict[str, Any] = {"epochs": config.epochs}
    if config.max_steps is not None:
        budget["max_steps"] = config.max_steps
    with quiet_collate():  # a batch that cannot be collated raises without dumping its tensors
        result = task.local_train(model, rt.train_data, **budget, seed=config.train_seed, hooks=hooks)
    seconds = time.perf_counter() - began
    weights = get_weights(model)
    if not np.isfinite(weights).all():
        raise FloatingPointError("local weights contain NaN or infinity")
    lr = float(task.config.optimizer.lr)
    diagnostics = {"loss": result.mean_loss, "steps": result.steps, "lr": lr, **diagnostics}
    metrics = {"train-loss": result.mean_loss, "steps": result.steps, "examples": result.examples_seen,
               "seconds": seconds, "val-examples": len(rt.site.split("val"))}
    return wire.train_reply_content(rt.site.name, weights, result.num_examples, metrics, diagnostics, rt.layout)


def handle_train(message: Message, context: Context) -> Message:
    name = str(context.node_config.get(SITE_NAME) or "")
    rt = None
    try:
        config, arrays, state_arrays = wire.parse_train_content(message.content)
        rt = runtime(site_node_config(context), config.task)
        name = rt.site.name
        if config.site != name:
            raise ConfigError(f"the server sent site {config.site!r}'s instructions to this node, which is site {name!r}")
        start = wire.arrays_to_weights(arrays, rt.layout)
        state = wire.client_state_from_arrays(config.strategy, state_arrays, name)
        content = local_update(rt, config, start, state)
    except Exception as err:  # noqa: BLE001 - any failure drops the site from this round, as in-process
        content = wire.error_content(name, _reason(err, rt.site if rt is not None else None))
    return Message(content, reply_to=message)


def site_tables(rt: SiteRuntime, config: wire.EvalConfig, models: list[np.ndarray], share: bool) -> list[pd.DataFrame]:
    """Per model: the site's per-case records (``share``), else its suppressed metric rows."""
    tables = []
    for name, weights in zip(config.models, models, strict=True):
        set_weights(rt.model, weights, rt.layout)
        records = evaluate_on_site(rt.task, rt.model, rt.site.name, rt.eval_data)
        if share:
            tables.append(records)
        else:
            rows = metric_table(rt.task, records.assign(model=name), config.method, {rt.site.name: rt.site.min_count},
                                rt.site.min_count)
            tables.append(rows[rows["site"] != POOLED].reset_index(drop=True))
    return tables


def handle_evaluate(message: Message, context: Context) -> Message:
    name = str(context.node_config.get(SITE_NAME) or "")
    rt = None
    try:
        config, arrays = wire.parse_evaluate_content(message.content)
        rt = runtime(site_node_config(context), config.task)
        name = rt.site.name
        if config.site != name:
            raise ConfigError(f"the server sent site {config.site!r}'s evaluation to this node, which is site {name!r}")
        share = _flag(context.node_config.get(SHARE_RECORDS), True)
        models = [wire.arrays_to_weights(a, rt.layout) for a in arrays]
        with quiet_collate():
            tables = site_tables(rt, config, models, share)
        content = wire.evaluate_reply_content(name, wire.EVAL_RECORDS if share else wire.EVAL_METRICS, tables)
    except Exception as err:  # noqa: BLE001
        content = wire.error_content(name, _reason(err, rt.site if rt is not None else None))
    return Message(content, reply_to=message)
