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
config's ``experiment`` (:func:`~medfed.integrations.flower.node_site.site_node_config`), so each simulated
node owns exactly one site. Which site a node is, and its answer to the server's query, live in
:mod:`medfed.integrations.flower.node_site` (no MONAI there); this module trains and evaluates.

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
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Context, Message, RecordDict
from pydantic import TypeAdapter
from torch import nn
from torch.utils.data import Dataset

from medfed.errors import ConfigError, DataProblems
from medfed.fl.evaluation import EvalDatasets, evaluate_on_site, metric_table
from medfed.fl.names import POOLED
from medfed.fl.runner import quiet_collate
from medfed.fl.strategies import build_strategy
from medfed.fl.weights import WeightLayout, get_weights, layout_of, set_weights
from medfed.integrations.flower import messages as wire
from medfed.integrations.flower.node_site import (
    LOCK,
    SHARE_RECORDS,
    SITE_NAME,
    clear_sites,
    flag,
    node_site,
    reason,
    site_node_config,
)
from medfed.sites.base import Site
from medfed.tasks import TaskConfig, build_task
from medfed.tasks.base import Task
from medfed.tasks.finetune import apply_policy

_TASK_CONFIG: TypeAdapter = TypeAdapter(TaskConfig)


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
    with LOCK:
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
    clear_sites()
    with LOCK:
        _RUNTIMES.clear()


# ----------------------------------------------------------------------------- handlers
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
        content = wire.error_content(name, reason(err, rt.site if rt is not None else None))
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
        share = flag(context.node_config.get(SHARE_RECORDS), True)
        models = [wire.arrays_to_weights(a, rt.layout) for a in arrays]
        with quiet_collate():
            tables = site_tables(rt, config, models, share)
        content = wire.evaluate_reply_content(name, wire.EVAL_RECORDS if share else wire.EVAL_METRICS, tables)
    except Exception as err:  # noqa: BLE001
        content = wire.error_content(name, reason(err, rt.site if rt is not None else None))
    return Message(content, reply_to=message)
