"""medfed's ServerApp: one method of an experiment, trained over Flower with medfed's own strategy objects.

:class:`MedfedStrategy` is one ``flwr.serverapp.strategy.Strategy`` subclass wrapping any order-invariant
medfed :class:`~medfed.fl.strategies.Strategy` (FedAvg, FedProx, FedAvgM, FedAdam/Yogi/Adagrad, FedBN,
FedMedian, FedTrimmedAvg, Krum, FedLD, FedAgain with client reliability, SCAFFOLD, local-only). Flower's
``Strategy.start`` drives the rounds; each round does what :class:`medfed.fl.runner.MethodRunner` does
in-process, with the same seeds, the same record and the same checkpoint, so a run resumes and reports the
same way:

* **Nodes are sites.** A node says which site it is in reply to a ``query`` message (its name comes from
  its own node config, see :mod:`medfed.integrations.flower.client`). Before the first round, and at the
  start of any round in which a site of the run has no connected node (so a hospital that reconnects under
  a new node id is found again), the server asks every node it has not heard from, with a bounded wait
  (``query-timeout``). A node naming a site outside the run's sites, or one another connected node already
  serves, is not used (logged). Node ids never enter medfed's records: rounds, checkpoints and reports
  name sites.
* **Sampling** is medfed's: ``available_sites`` over the run's sites from ``(seed, "available", round)``
  restricted to the sites whose node is connected, then ``sample_sites`` from ``(seed, "sample", round)``
  (Flower's own sampling is unseeded); messages go to the sampled sites' nodes.
* **Train messages** carry each site's start weights (``strategy.client_weights``), the round, seed, local
  budget and task config; replies carry the trained weights, ``num-examples`` (the FedAvg weight) and the
  diagnostics the strategy reads (``loss``, ``steps``, ``lr``, ``start_loss``). Replies are handed to
  ``strategy.aggregate`` as :class:`~medfed.fl.update.ClientUpdate` objects in sampling (federation)
  order, converted one at a time.
* **Failures**: a site whose reply reports an error, whose reply is a Flower error, or that sends nothing
  within ``round-timeout`` seconds (the bounded wait of ``send_and_receive``; it is also the messages'
  TTL) is recorded in the round's ``failed`` list like an in-process failure (silent ones also under
  ``dropped``); the round counts with ``min(min_fit_clients, sites)`` updates, else the run stops
  (:class:`~medfed.fl.runner.RunStopped`) keeping its checkpoints and log.
* **Every site's metrics are kept**: ``train_loss``, ``num_examples``, ``work`` and, every ``eval_every``
  rounds, ``eval`` per site in ``rounds.jsonl`` (and per site in the MetricRecord given to Flower, whose
  own strategies keep only a weighted mean). Keys a Flower round adds to the in-process record:
  ``unreachable`` (drawn available but no connected node), ``dropped`` (no reply in time; also in
  ``failed``) and ``eval_failed``.
* **Checkpoints**: after each round ``runs/<method>/checkpoints/last.pt`` (weights, strategy state, log) and
  ``rounds.jsonl``, exactly as in-process; ``resume = true`` continues from the last checkpoint.
* **Final report**: the final models are evaluated on every site (the cross-site matrix); with per-case
  records from every site, ``predictions/<method>.csv``, ``metrics.csv`` (pooled rows included) and
  ``summary.csv`` are what ``medfed run`` writes, so ``medfed report`` works unchanged. ``sites.csv`` and
  ``sites.json`` come from the sites' (suppressed) summaries.

Run config keys (``[tool.flwr.app.config]``, overridable with ``flwr run --run-config``): see
:data:`RUN_CONFIG`. Not supported over Flower (refused before any round, with the reason): the
centralised reference (pools data), cyclic training (sequential), simulated site conditions and
adversaries, re-partitioning, a server benchmark (FedAgain's ``server`` reliability).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from medfed.errors import ConfigError, MedfedError
from medfed.fl.checkpoint import load_checkpoint, save_checkpoint
from medfed.fl.config import (
    ExperimentConfig,
    TrainingConfig,
    build_strategies,
    federation_path,
    load_experiment,
)
from medfed.fl.evaluation import METRIC_COLUMNS, POOLED_LEFT_OUT, metric_table, metrics_by_site, pooled_round_metrics
from medfed.fl.experiment import check_resume_config, resolved_config, write_sites
from medfed.fl.log_disclosure import disclose_round, shown_splits
from medfed.fl.names import OWN_MODEL, POOLED
from medfed.fl.runner import (
    CHECKPOINT,
    ROUNDS_LOG,
    FailureStreaks,
    MethodResult,
    RunStopped,
    log_record,
    stop_message,
)
from medfed.fl.sampling import available_sites, sample_sites
from medfed.fl.step import FedAvgShadow
from medfed.fl.strategies import Strategy as MedfedMethod
from medfed.fl.strategies.local_only import local_key
from medfed.fl.summary import summary_table
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import get_weights, layout_of
from medfed.integrations.flower import messages as wire
from medfed.io import atomic_write_text
from medfed.seeding import derive_seed, rng_for
from medfed.sites.redact import error_text, scrub_message
from medfed.tasks import build_task
from medfed.tasks.base import Task
from medfed.tasks.finetune import apply_policy
from medfed.tasks.models import load_initial_weights

logger = logging.getLogger("medfed.flower")

#: run config keys of the ServerApp and their defaults (``[tool.flwr.app.config]`` of the app's pyproject.toml)
RUN_CONFIG: dict[str, Any] = {
    "experiment": "",          # experiment config (tasks/*.yaml) on the SuperLink machine; its federation is not read
    "method": "",              # method label of the experiment to train ("" = its only method)
    "out": "reports",          # run directories go to <out>/<experiment name>/
    "rounds": 0,               # 0 = the experiment's training.rounds
    "resume": False,           # continue from runs/<method>/checkpoints/last.pt
    "round-timeout": 600.0,    # seconds a round waits for train (and evaluate) replies
    "query-timeout": 60.0,     # seconds to wait for nodes to say which site they are
    "connect-timeout": 300.0,  # seconds to wait, before round 1, for the sites to connect
    "sites": "",               # the run's sites in federation order, comma-separated ("" = those that connect)
    "min-nodes": 0,            # with sites "": wait for this many sites (0 = training.min_fit_clients)
    "final-eval": True,        # evaluate the final models on every site and write metrics/summary/predictions
    "per-tensor": True,        # weights travel one array per state_dict tensor (False: one flat array)
}

_POLL_SECONDS = 1.0


def _reason(err: BaseException) -> str:
    """One line of at most :data:`~medfed.sites.redact.MESSAGE_LIMIT` characters (as the in-process runner records)."""
    return error_text(err)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


@dataclass(frozen=True)
class ServerSettings:
    """The ServerApp's run config, parsed (:data:`RUN_CONFIG`)."""

    experiment: Path
    method: str = ""
    out: Path = Path("reports")
    rounds: int = 0
    resume: bool = False
    round_timeout: float = 600.0
    query_timeout: float = 60.0
    connect_timeout: float = 300.0
    sites: tuple[str, ...] = ()
    min_nodes: int = 0
    final_eval: bool = True
    per_tensor: bool = True

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ServerSettings:
        values = {**RUN_CONFIG, **dict(run_config)}
        if not str(values["experiment"]).strip():
            raise ConfigError("the run config has no `experiment` (the experiment config path on the SuperLink "
                              "machine): set it in [tool.flwr.app.config] or with flwr run --run-config")
        timeouts = {k: float(values[k]) for k in ("round-timeout", "query-timeout", "connect-timeout")}
        bad = [k for k, v in timeouts.items() if not v > 0]
        if bad:
            raise ConfigError(f"run config: {', '.join(bad)} must be > 0 seconds (a missing site must never hang a run)")
        sites = tuple(s.strip() for s in str(values["sites"]).split(",") if s.strip())
        return cls(
            experiment=Path(str(values["experiment"])).expanduser(), method=str(values["method"]).strip(),
            out=Path(str(values["out"])).expanduser(), rounds=int(values["rounds"]), resume=_flag(values["resume"]),
            round_timeout=timeouts["round-timeout"], query_timeout=timeouts["query-timeout"],
            connect_timeout=timeouts["connect-timeout"], sites=sites, min_nodes=int(values["min-nodes"]),
            final_eval=_flag(values["final-eval"]), per_tensor=_flag(values["per-tensor"]),
        )


@dataclass
class _Round:
    """The round between ``configure_train`` and ``aggregate_evaluate``."""

    number: int
    record: dict[str, Any]
    began: float
    sampled: list[str]
    nodes: dict[str, int]
    needed: int
    skipped: bool = False
    evaluating: list[str] = field(default_factory=list)


class MedfedStrategy(Strategy):
    """A medfed strategy (``method``) as a Flower strategy; see the module docstring for the protocol.

    ``clients``: the run's site names in federation order; empty: the sites that connect (sorted), fixed by
    :meth:`connect` before the first round. Call :meth:`connect` then :meth:`begin` before ``start``.
    """

    def __init__(
        self,
        name: str,
        method: MedfedMethod,
        task: Task,
        training: TrainingConfig,
        seed: int,
        run_dir: Path,
        *,
        task_spec: Mapping[str, Any],
        method_params: Mapping[str, Any] | None = None,
        clients: Sequence[str] = (),
        min_nodes: int = 0,
        init: Mapping[str, Any] | None = None,
        per_tensor: bool = True,
        round_timeout: float = 600.0,
        query_timeout: float = 60.0,
    ) -> None:
        if method.pooled or not method.order_invariant:
            raise ConfigError(f"method {name}: strategy {method.name} cannot run over Flower "
                              f"({'it pools the sites data' if method.pooled else 'its sites train one after another'})")
        self.name = name
        self.method = method
        self.task = task
        self.training = training
        self.seed = int(seed)
        self.run_dir = Path(run_dir)
        self.task_spec = dict(task_spec)
        self.method_params = dict(method_params or {})
        self.clients = list(clients)
        self._fixed_clients = bool(self.clients)
        self.min_nodes = int(min_nodes)
        self.per_tensor = per_tensor
        self.round_timeout = float(round_timeout)
        self.query_timeout = float(query_timeout)
        model = task.build_model(derive_seed(self.seed, "init"))
        if init is not None:
            load_initial_weights(model, dict(init), name)
        model = apply_policy(model, task.config.finetune)
        self.layout = layout_of(model)
        self.global_weights = get_weights(model)
        method.prepare(model)
        method.attach_server_data(task, task.build_model(derive_seed(self.seed, "init")), None)
        self.state: dict[str, Any] = {}
        self.log: list[dict[str, Any]] = []
        self.streaks = FailureStreaks()
        self.offset = 0
        #: node id -> the site it said it is (first claimant of a site serves it); sites' query answers
        self.node_sites: dict[int, str] = {}
        self.site_info: dict[str, wire.SiteReply] = {}
        self.node_errors: dict[int, str] = {}
        self._connected: list[int] = []
        self._round: _Round | None = None

    # ----------------------------------------------------------------- nodes
    def _arrays(self, weights: np.ndarray) -> ArrayRecord:
        return wire.weights_to_arrays(weights, self.layout if self.per_tensor else None)

    def refresh_nodes(self, grid: Grid) -> dict[str, int]:
        """Ask connected nodes not heard from yet which site they are; ``site -> node`` of the run's sites."""
        self._connected = list(grid.get_node_ids())
        connected = set(self._connected)
        for node in [n for n in self.node_sites if n not in connected]:
            del self.node_sites[node]
        unknown = [n for n in self._connected if n not in self.node_sites]
        served = set(self.site_nodes())
        if unknown and not (self.clients and served.issuperset(self.clients)):  # asks only while a site lacks a node
            queries = [Message(wire.query_content(), node, MessageType.QUERY, ttl=self.query_timeout,
                               group_id="medfed-query") for node in unknown]
            for reply in grid.send_and_receive(queries, timeout=self.query_timeout):
                node = int(reply.metadata.src_node_id)
                if reply.has_error():
                    self.node_errors[node] = scrub_message(f"Flower error {reply.error.code}: {reply.error.reason}", [])
                    continue
                try:
                    info = wire.parse_site_reply(reply.content)
                except Exception as err:  # noqa: BLE001 - a malformed answer: the node is not used
                    self.node_errors[node] = _reason(err)
                    continue
                if info.error is not None:
                    self.node_errors[node] = info.error
                    logger.warning("node %s (site %s) cannot serve: %s", node, info.name or "?", info.error)
                    continue
                self.node_errors.pop(node, None)
                self.node_sites[node] = info.name
                self.site_info.setdefault(info.name, info)
                if self._fixed_clients and info.name not in self.clients:
                    logger.warning("node %s is site %s, which is not one of this run's sites (%s): not used",
                                   node, info.name, ", ".join(self.clients))
        return self.site_nodes()

    def site_nodes(self) -> dict[str, int]:
        """``site -> node`` over connected nodes, the first node that claimed a site serving it."""
        out: dict[str, int] = {}
        for node, site in self.node_sites.items():
            if site in out:
                if node not in self.node_errors:
                    self.node_errors[node] = f"site {site} is already served by node {out[site]}"
                    logger.warning("node %s also claims site %s (served by node %s): not used", node, site, out[site])
                continue
            if not self.clients or site in self.clients:
                out[site] = node
        return out

    def connect(self, grid: Grid, timeout: float) -> list[str]:
        """Wait (at most ``timeout`` seconds) until every site of the run has a node (``clients`` empty: until
        ``min_nodes`` sites have), then fix the run's sites; returns them."""
        deadline = time.monotonic() + timeout
        wanted = self.min_nodes or self.training.min_fit_clients
        while True:
            found = self.refresh_nodes(grid)
            done = all(s in found for s in self.clients) if self._fixed_clients else len(found) >= wanted
            left = deadline - time.monotonic()
            if done or left <= 0:
                break
            time.sleep(min(_POLL_SECONDS, left))
        if not self._fixed_clients:
            if not found:
                raise MedfedError(f"no SuperNode said which site it is within {timeout:g} s; nothing to train "
                                  f"(node errors: {self.node_errors or 'none'})")
            self.clients = sorted(found)
        missing = [s for s in self.clients if s not in found]
        if missing:
            logger.warning("sites without a connected node after %g s: %s (they count as unavailable)",
                           timeout, ", ".join(missing))
        return list(self.clients)

    # ----------------------------------------------------------------- run state
    def begin(self, resume: bool = False) -> int:
        """Initial strategy state, or the last checkpoint when ``resume``; returns the rounds left to run."""
        if not self.clients:
            raise MedfedError("the run has no sites: call connect(grid, timeout) first")
        self.state = self.method.initial_state(self.global_weights, self.clients)
        self.log, start = [], 1
        checkpoint = self.run_dir / CHECKPOINT
        if resume and checkpoint.is_file():
            saved = load_checkpoint(checkpoint)
            if saved.get("method") != self.name or saved.get("clients") != self.clients:
                raise MedfedError(f"{checkpoint}: checkpoint belongs to another run (method or sites differ: "
                                  f"{saved.get('method')}, {saved.get('clients')})")
            self.global_weights, self.state, self.log = saved["global"], saved["state"], saved["log"]
            start = int(saved["round"]) + 1
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.streaks = FailureStreaks(self.log)  # a resumed run stops where an uninterrupted one would
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / ROUNDS_LOG, "".join(json.dumps(r) + "\n" for r in self.log))
        self.offset = start - 1
        return max(0, self.training.rounds - self.offset)

    def result(self) -> MethodResult:
        return MethodResult(self.name, self.method.final_models(self.global_weights, self.state), self.log, self.offset)

    def _save(self, rnd: int) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT, {"method": self.name, "clients": self.clients, "round": rnd,
                                                    "global": self.global_weights, "state": self.state, "log": self.log})

    def _append_log(self, record: dict[str, Any]) -> None:
        with (self.run_dir / ROUNDS_LOG).open("a") as handle:
            handle.write(json.dumps(self._logged(record)) + "\n")

    def _budget(self) -> tuple[int, int | None]:
        steps = self.training.local_steps
        return (self.training.local_epochs, None) if steps is None else (steps, steps)

    # ----------------------------------------------------------------- Flower: train
    def summary(self) -> None:
        logger.info("medfed method %s (strategy %s %s), sites %s, rounds %s..%s", self.name, self.method.name,
                    self.method.params(), ", ".join(self.clients), self.offset + 1, self.training.rounds)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Sample this round's sites (seeded) and send each its start weights; ``arrays`` is ignored (the
        global model and strategy state live here)."""
        rnd = self.offset + server_round
        began = time.perf_counter()
        nodes = self.refresh_nodes(grid)
        drawn = available_sites(self.clients, self.training.availability, rng_for(self.seed, "available", rnd))
        available = [s for s in drawn if s in nodes]
        sampled = sample_sites(available, self.training.fraction_fit, self.training.min_fit_clients,
                               rng_for(self.seed, "sample", rnd))
        record: dict[str, Any] = {"round": rnd, "available": available, "sampled": sampled, "completed": [],
                                  "failed": [], "train_loss": {}, "num_examples": {}}
        unreachable = [s for s in drawn if s not in nodes]
        if unreachable:
            record["unreachable"] = unreachable
        needed = min(self.training.min_fit_clients, len(self.clients))
        self._round = _Round(rnd, record, began, sampled, {s: nodes[s] for s in sampled}, needed)
        if len(available) < needed:  # not a fault: the model is unchanged, the round is logged as skipped
            record["skipped"] = f"only {len(available)} of {len(self.clients)} sites available ({needed} needed)"
            self._round.skipped = True
            return []
        epochs, max_steps = self._budget()
        shared: dict[int, tuple[np.ndarray, ArrayRecord]] = {}
        out = []
        for site in sampled:
            start = self.method.client_weights(self.global_weights, site, self.state)
            if id(start) not in shared:  # one record for every site that starts from the same array
                shared[id(start)] = (start, self._arrays(start))
            train = wire.TrainConfig(round=rnd, seed=self.seed, site=site, method=self.name, strategy=self.method.name,
                                     task=self.task_spec, epochs=epochs, max_steps=max_steps,
                                     start_loss=bool(self.method.wants_start_loss), strategy_params=self.method_params)
            content = wire.train_content(train, shared[id(start)][1],
                                         wire.client_state_to_arrays(self.method.name, self.state, site))
            out.append(Message(content, nodes[site], MessageType.TRAIN, ttl=self.round_timeout, group_id=str(rnd)))
        return out

    def _by_site(self, replies: Iterable[Message], nodes: Mapping[str, int]) -> dict[str, Message]:
        site_of = {node: site for site, node in nodes.items()}
        out: dict[str, Message] = {}
        for reply in replies:
            site = site_of.get(int(reply.metadata.src_node_id))
            if site is None or site in out:
                logger.warning("ignored an unexpected reply from node %s", reply.metadata.src_node_id)
                continue
            out[site] = reply
        return out

    def _updates(self, replies: dict[str, Message], current: _Round) -> Iterator[ClientUpdate]:
        """The sampled sites' updates in sampling order; failures and silent sites recorded as in-process."""
        record = current.record
        for site in current.sampled:
            reply = replies.pop(site, None)
            parsed: wire.TrainReply | None = None
            if reply is None:
                reason = f"no reply within {self.round_timeout:g} s (dropped)"
                record.setdefault("dropped", []).append(site)
            elif reply.has_error():
                reason = scrub_message(f"Flower error {reply.error.code}: {reply.error.reason}", [])
            else:
                try:
                    parsed = wire.parse_train_reply(reply.content, self.layout)
                    reason = parsed.error
                    if reason is None and parsed.site != site:
                        reason = f"the reply came from site {parsed.site!r}"
                    elif reason is None and not np.isfinite(parsed.weights).all():  # type: ignore[arg-type]
                        reason = "FloatingPointError: local weights contain NaN or infinity"
                except Exception as err:  # noqa: BLE001 - a malformed reply drops the site
                    reason = _reason(err)
            if reason is not None or parsed is None or parsed.weights is None:
                record["failed"].append({"site": site, "error": reason})
                logger.warning("[%s] round %s: site %s failed and is dropped from this round: %s",
                               self.name, current.number, site, reason)
                continue
            record["completed"].append(site)
            record["train_loss"][site] = parsed.metrics.get("train-loss", parsed.diagnostics.get("loss"))
            record["num_examples"][site] = parsed.num_examples
            record.setdefault("work", {})[site] = {
                "seconds": round(float(parsed.metrics.get("seconds", 0.0)), 4),
                "examples": int(parsed.metrics.get("examples", 0)),
                "val_examples": int(parsed.metrics.get("val-examples", 0))}
            yield ClientUpdate(site, parsed.weights, parsed.num_examples, parsed.diagnostics)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        current = self._round
        if current is None or current.skipped:
            return None, None
        by_site = self._by_site(replies, current.nodes)
        record = current.record
        updates = self._updates(by_site, current)
        shadow = FedAvgShadow(updates) if self.method.global_step else None  # local-only: no global step
        new_global, new_state, diagnostics = self.method.aggregate(self.global_weights, shadow or updates, self.state)
        self.streaks.update(record)
        stop = stop_message(self.name, record, current.needed, self.streaks, self.run_dir / ROUNDS_LOG)
        if stop is not None:  # too few updates, or a site failing the same way again: as the in-process runner
            record["status"] = "stopped"
            self._append_log(record)
            self._round = None
            raise RunStopped(stop)
        step = shadow.diagnostic(self.global_weights, new_global) if shadow else None
        self.global_weights, self.state = new_global, new_state
        record["aggregation"] = diagnostics
        if step is not None:  # as the in-process runner: medfed.fl.step
            record.update(step)
        metrics = MetricRecord({"completed": len(record["completed"]), "failed": len(record["failed"])})
        shown = self._logged({"num_examples": record["num_examples"]})["num_examples"]  # as rounds.jsonl shows them
        for site in record["completed"]:  # every site's values, not one weighted mean
            loss = record["train_loss"][site]
            metrics[f"train-loss.{site}"] = float(loss) if loss is not None else float("nan")
            if not isinstance(shown[site], str):  # a suppressed count is left out (Flower logs its metrics)
                metrics[f"num-examples.{site}"] = int(shown[site])
        return self._arrays(self.global_weights), metrics

    # ----------------------------------------------------------------- Flower: evaluate
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Every ``eval_every`` rounds (and the last), each site evaluates its round model on val and test."""
        current = self._round
        every, total = self.training.eval_every, self.training.rounds
        if current is None or current.skipped or not every or not (current.number % every == 0 or current.number == total):
            return []
        connected = set(grid.get_node_ids())
        nodes = {s: n for s, n in self.site_nodes().items() if n in connected}
        models = self.method.round_models(self.global_weights, self.state, self.clients)
        out = []
        for site in self.clients:
            if site not in nodes:
                continue
            request = wire.EvalConfig(round=current.number, site=site, method=self.name, task=self.task_spec,
                                      models=("round",))
            out.append(Message(wire.evaluate_content(request, [self._arrays(models[site])]), nodes[site],
                               MessageType.EVALUATE, ttl=self.round_timeout, group_id=f"{current.number}-eval"))
            current.evaluating.append(site)
        current.nodes = {s: nodes[s] for s in current.evaluating}
        return out

    def _collect(self, replies: Iterable[Message], nodes: Mapping[str, int], sites: Sequence[str],
                 failed: list[dict[str, Any]]) -> dict[str, wire.EvalReply]:
        by_site = self._by_site(replies, nodes)
        out: dict[str, wire.EvalReply] = {}
        for site in sites:
            reply = by_site.get(site)
            if reply is None:
                reason = f"no reply within {self.round_timeout:g} s (dropped)"
            elif reply.has_error():
                reason = scrub_message(f"Flower error {reply.error.code}: {reply.error.reason}", [])
            else:
                try:
                    parsed = wire.parse_evaluate_reply(reply.content)
                    reason = parsed.error
                except Exception as err:  # noqa: BLE001
                    reason = _reason(err)
            if reason is not None:
                failed.append({"site": site, "error": reason})
                logger.warning("[%s] evaluation on site %s failed: %s", self.name, site, reason)
                continue
            out[site] = parsed
        return out

    def _logged(self, record: dict[str, Any]) -> dict[str, Any]:
        """As ``MethodRunner._logged``: JSON-ready, per-site counts no more exact than ``sites.csv`` shows them."""
        shown = shown_splits({name: (info.summary, info.min_count) for name, info in self.site_info.items()
                              if info.error is None}, POOLED)
        return disclose_round(log_record(record), shown)

    def min_counts(self) -> dict[str, int]:
        return {s: self.site_info[s].min_count for s in self.clients if s in self.site_info}

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Adds the round's per-site evaluation to its record, then checkpoints and logs the round."""
        current = self._round
        if current is None:
            return None
        summary = None
        if current.evaluating:
            failed: list[dict[str, Any]] = []
            got = self._collect(replies, current.nodes, current.evaluating, failed)
            current.record["eval"] = self._round_eval(got)
            if failed:
                current.record["eval_failed"] = failed
            summary = MetricRecord({"sites-evaluated": len(got), "sites-failed": len(failed)})
        self._finish(current)
        return summary

    def _round_eval(self, got: Mapping[str, wire.EvalReply]) -> dict[str, Any]:
        """As ``MethodRunner._evaluate_round``: metrics per site, and pooled when every site sent its records."""
        min_counts = self.min_counts()
        out: dict[str, Any] = {}
        for site, reply in got.items():
            table = reply.tables[0]
            if reply.kind == wire.EVAL_RECORDS:
                out.update(metrics_by_site(self.task, table, min_counts))
            else:
                out[site] = _rows_by_split(table)
        if self.clients and all(s in got and got[s].kind == wire.EVAL_RECORDS for s in self.clients):
            records = pd.concat([got[s].tables[0] for s in self.clients], ignore_index=True)
            pooled, left_out = pooled_round_metrics(self.task, records, min_counts)
            if pooled:
                out[POOLED] = pooled
            if left_out:
                out[POOLED_LEFT_OUT] = left_out
        return out

    def _finish(self, current: _Round) -> None:
        record = current.record
        record["seconds"] = round(time.perf_counter() - current.began, 3)
        record = self._logged(record)
        self.log.append(record)
        self._save(current.number)
        self._append_log(record)
        self._round = None

    # ----------------------------------------------------------------- final evaluation
    def evaluate_final(self, grid: Grid) -> tuple[list[str], dict[str, wire.EvalReply], list[dict[str, Any]]]:
        """Every final model on every site's val and test cases; ``(model names, replies by site, failures)``."""
        models = self.method.final_models(self.global_weights, self.state)
        names = list(models)
        arrays = [self._arrays(w) for w in models.values()]
        connected = set(grid.get_node_ids())
        nodes = {s: n for s, n in self.refresh_nodes(grid).items() if n in connected}
        last = self.offset if not self.log else int(self.log[-1]["round"])
        messages, sites = [], []
        for site in self.clients:
            if site not in nodes:
                continue
            request = wire.EvalConfig(round=last, site=site, method=self.name, task=self.task_spec,
                                      models=tuple(names), final=True)
            messages.append(Message(wire.evaluate_content(request, arrays), nodes[site], MessageType.EVALUATE,
                                    ttl=self.round_timeout, group_id="final-eval"))
            sites.append(site)
        failed = [{"site": s, "error": "no connected node"} for s in self.clients if s not in nodes]
        replies = grid.send_and_receive(messages, timeout=self.round_timeout) if messages else []
        got = self._collect(replies, {s: nodes[s] for s in sites}, sites, failed)
        return names, got, failed


def _rows_by_split(rows: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """``{split: {metric: value or None}}`` from a site's metric rows (as ``metrics_by_site`` logs them)."""
    out: dict[str, dict[str, float | None]] = {}
    for row in rows.itertuples(index=False):
        value = float(row.value)
        keep = not bool(row.suppressed) and np.isfinite(value)
        out.setdefault(str(row.split), {})[str(row.metric)] = round(value, 6) if keep else None
    return out


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


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


class _RemoteSite:
    """A site as its node described it (name, ``min_count``, suppressed summary), for ``sites.csv``/``.json``."""

    def __init__(self, info: wire.SiteReply) -> None:
        self.name, self.min_count, self._summary = info.name, info.min_count, info.summary

    def summary(self) -> dict[str, Any]:
        return dict(self._summary)


def _prepare_out(out: Path, resolved: dict[str, Any], resume: bool) -> None:
    """``config.yaml`` of the run directory; a resume must find the same config (as ``medfed run --resume``).
    Other methods' results in the directory are kept (each ``flwr run`` trains one method)."""
    config_file = out / "config.yaml"
    if resume and config_file.is_file():
        check_resume_config(config_file, resolved)
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_file, yaml.safe_dump(resolved, sort_keys=False))


def write_final_report(strategy: MedfedStrategy, out: Path, methods: Sequence[str], names: Sequence[str],
                       got: Mapping[str, wire.EvalReply]) -> pd.DataFrame:
    """The files ``medfed run`` writes after training one method: ``predictions/<method>.csv`` (when every site
    sent its per-case records), this method's rows of ``metrics.csv`` (kept in ``runs/<method>/metrics.csv``
    and merged with the other methods' in experiment order) and ``summary.csv``."""
    task, label, sites = strategy.task, strategy.name, strategy.clients
    min_counts = strategy.min_counts()
    pooled_min = max(min_counts.values(), default=1)
    prediction_file = out / "predictions" / f"{label}.csv"
    if sites and all(s in got and got[s].kind == wire.EVAL_RECORDS for s in sites):
        records = pd.concat([got[s].tables[i].assign(model=name) for i, name in enumerate(names) for s in sites],
                            ignore_index=True)
        if any(m == local_key(n) for m in names for n in sites):
            own = pd.concat([records[(records["model"] == local_key(n)) & (records["site"] == n)] for n in sites])
            records = pd.concat([records, own.assign(model=OWN_MODEL)], ignore_index=True)
        _write_csv(prediction_file, records)
        metrics = metric_table(task, records, label, min_counts, pooled_min)
    else:  # some site kept its case records (or did not answer): per-site rows only, no pooled value
        prediction_file.unlink(missing_ok=True)
        parts = []
        for i, name in enumerate(names):
            for site in sites:
                if site not in got:
                    continue
                table = got[site].tables[i]
                if got[site].kind == wire.EVAL_RECORDS:
                    table = metric_table(task, table.assign(model=name), label, {site: min_counts.get(site, 1)},
                                         min_counts.get(site, 1))
                    table = table[table["site"] != POOLED]
                parts.append(table.assign(method=label, model=name))
        metrics = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(METRIC_COLUMNS))
        own_rows = [metrics[(metrics["model"] == local_key(n)) & (metrics["site"] == n)] for n in sites]
        if any(len(r) for r in own_rows):
            metrics = pd.concat([metrics, pd.concat(own_rows).assign(model=OWN_MODEL)], ignore_index=True)
        # metric_table's order: model, then split (as first met), then site; metrics in their order within
        models = {m: i for i, m in enumerate([*names, OWN_MODEL])}
        splits = {s: i for i, s in enumerate(dict.fromkeys(metrics["split"]))} if len(metrics) else {}
        order = np.lexsort((metrics["site"].map({s: i for i, s in enumerate(sites)}).to_numpy(),
                            metrics["split"].map(splits).to_numpy(), metrics["model"].map(models).to_numpy()))
        metrics = metrics.iloc[order].reset_index(drop=True)
    _write_csv(strategy.run_dir / "metrics.csv", metrics)
    combined = [pd.read_csv(f, dtype=str, keep_default_na=False) for m in methods
                if (f := out / "runs" / m / "metrics.csv").is_file()]
    _write_csv(out / "metrics.csv", pd.concat(combined, ignore_index=True))
    typed = pd.read_csv(out / "metrics.csv")
    summary = summary_table(typed, task.primary_metric) if len(typed) else pd.DataFrame()
    _write_csv(out / "summary.csv", summary.rename_axis("site").reset_index())
    return metrics


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
    _prepare_out(out, resolved_config(config, Path(fed_file)), settings.resume)
    strategy = MedfedStrategy(
        label, method, task, config.training, config.seed, out / "runs" / label,
        task_spec=config.task.model_dump(mode="json"), method_params=spec.params, clients=settings.sites,
        min_nodes=settings.min_nodes, init=spec.init, per_tensor=settings.per_tensor,
        round_timeout=settings.round_timeout, query_timeout=settings.query_timeout)
    strategy.connect(grid, settings.connect_timeout)
    write_sites(out / "sites.csv", [_RemoteSite(strategy.site_info[s]) for s in strategy.clients if s in strategy.site_info],
                 {})  # type: ignore[arg-type]
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
        run.metrics = write_final_report(strategy, out, labels, names, got)
    return run


def run_server(grid: Grid, context: Context) -> FlowerRun:
    """The ServerApp main: reads :class:`ServerSettings` from ``context.run_config`` and trains one method."""
    return run_flower_method(grid, ServerSettings.from_run_config(context.run_config))
