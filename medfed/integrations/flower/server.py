"""medfed's ServerApp: one method of an experiment, trained over Flower with medfed's own strategy objects.

:class:`MedfedStrategy` is one ``flwr.serverapp.strategy.Strategy`` subclass wrapping any order-invariant
medfed :class:`~medfed.fl.strategies.Strategy` (FedAvg, FedProx, FedAvgM, FedAdam/Yogi/Adagrad, FedBN,
FedMedian, FedTrimmedAvg, Krum, FedLD, FedAgain with client reliability, SCAFFOLD, local-only). Flower's
``Strategy.start`` drives the rounds; each round does what :class:`medfed.fl.runner.MethodRunner` does
in-process, with the same seeds, the same record and the same checkpoint, so a run resumes and reports the
same way:

* **Nodes are sites.** A node says which site it is in reply to a ``query`` message (its name comes from
  its own node config, see :mod:`medfed.integrations.flower.node_site`). Before the first round, and at the
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
* **Checkpoints, round log, resume, stopping and output files** are the run ledger's (:mod:`medfed.fl.ledger`),
  the same code the in-process runner drives: after each round ``runs/<method>/checkpoints/last.pt`` (weights,
  strategy state, log) and ``rounds.jsonl``; ``resume = true`` continues from the last checkpoint.
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

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from medfed.errors import ConfigError, MedfedError
from medfed.fl.config import (
    TrainingConfig,
)
from medfed.fl.evaluation import POOLED_LEFT_OUT, metrics_by_site, pooled_round_metrics
from medfed.fl.ledger import (
    MethodLedger,
    MethodResult,
    RunStopped,
)
from medfed.fl.log_disclosure import shown_splits
from medfed.fl.names import POOLED
from medfed.fl.sampling import available_sites, sample_sites
from medfed.fl.step import FedAvgShadow
from medfed.fl.strategies import Strategy as MedfedMethod
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import get_weights, layout_of
from medfed.integrations.flower import messages as wire
from medfed.integrations.flower.final_report import _rows_by_split
from medfed.integrations.flower.nodes import SiteNodes, _reason, answered
from medfed.seeding import derive_seed, rng_for
from medfed.sites.redact import scrub_message
from medfed.tasks.base import Task
from medfed.tasks.finetune import apply_policy
from medfed.tasks.models import load_initial_weights

logger = logging.getLogger("medfed.flower")


@dataclass
class _Round:
    """The round between ``configure_train`` and ``aggregate_evaluate``."""

    number: int
    record: dict[str, Any]
    began: float
    sampled: list[str]
    needed: int
    skipped: bool = False
    sent: dict[str, Message] = field(default_factory=dict)  # site -> this phase's message to it (train, then eval)
    evaluating: list[str] = field(default_factory=list)


class MedfedStrategy(SiteNodes, Strategy):
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
        self.ledger = MethodLedger(self.run_dir, name, self.clients, self._shown)  # (re)made by begin, once sites are known
        self.offset = 0
        #: node id -> the site it said it is (first claimant of a site serves it); sites' query answers
        self.node_sites: dict[int, str] = {}
        self.site_info: dict[str, wire.SiteReply] = {}
        self.node_errors: dict[int, str] = {}
        self._connected: list[int] = []
        self._round: _Round | None = None

    def _arrays(self, weights: np.ndarray) -> ArrayRecord:
        return wire.weights_to_arrays(weights, self.layout if self.per_tensor else None)

    # ----------------------------------------------------------------- run state

    def begin(self, resume: bool = False) -> int:
        """Initial strategy state, or the last checkpoint when ``resume`` (the run ledger,
        :class:`medfed.fl.ledger.MethodLedger`, as in-process); returns the rounds left to run."""
        if not self.clients:
            raise MedfedError("the run has no sites: call connect(grid, timeout) first")
        self.ledger = MethodLedger(self.run_dir, self.name, self.clients, self._shown)
        opened = self.ledger.open(self.global_weights, self.method.initial_state(self.global_weights, self.clients),
                                  resume)
        self.global_weights, self.state, self.offset = opened.global_weights, opened.state, opened.resumed_from
        return max(0, self.training.rounds - self.offset)

    @property
    def log(self) -> list[dict[str, Any]]:
        """The rounds logged so far (those of the checkpoint resumed from included)."""
        return self.ledger.log

    def result(self) -> MethodResult:
        return self.ledger.result(self.method.final_models(self.global_weights, self.state), self.offset)

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
        self._round = _Round(rnd, record, began, sampled, needed)
        if len(available) < needed:  # not a fault: the model is unchanged, the round is logged as skipped
            record["skipped"] = f"only {len(available)} of {len(self.clients)} sites available ({needed} needed)"
            self._round.skipped = True
            return []
        epochs, max_steps = self._budget()
        shared: dict[int, tuple[np.ndarray, ArrayRecord]] = {}
        for site in sampled:
            start = self.method.client_weights(self.global_weights, site, self.state)
            if id(start) not in shared:  # one record for every site that starts from the same array
                shared[id(start)] = (start, self._arrays(start))
            train = wire.TrainConfig(round=rnd, seed=self.seed, site=site, method=self.name, strategy=self.method.name,
                                     task=self.task_spec, epochs=epochs, max_steps=max_steps,
                                     start_loss=bool(self.method.wants_start_loss), strategy_params=self.method_params)
            content = wire.train_content(train, shared[id(start)][1],
                                         wire.client_state_to_arrays(self.method.name, self.state, site))
            self._round.sent[site] = Message(content, nodes[site], MessageType.TRAIN, ttl=self.round_timeout,
                                             group_id=str(rnd))
        return list(self._round.sent.values())

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
        by_site = dict(answered(replies, current.sent))
        record = current.record
        updates = self._updates(by_site, current)
        shadow = FedAvgShadow(updates) if self.method.global_step else None  # local-only: no global step
        new_global, new_state, diagnostics = self.method.aggregate(self.global_weights, shadow or updates, self.state)
        try:  # too few updates, or a site failing the same way again: the ledger's rule, as in-process
            self.ledger.stop_if(record, current.needed)
        except RunStopped:
            self._round = None
            raise
        step = shadow.diagnostic(self.global_weights, new_global) if shadow else None
        self.global_weights, self.state = new_global, new_state
        record["aggregation"] = diagnostics
        if step is not None:  # as the in-process runner: medfed.fl.step
            record.update(step)
        metrics = MetricRecord({"completed": len(record["completed"]), "failed": len(record["failed"])})
        shown = self.ledger.logged({"num_examples": record["num_examples"]})["num_examples"]  # as rounds.jsonl shows them
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
        current.sent = {}
        for site in self.clients:
            if site not in nodes:
                continue
            request = wire.EvalConfig(round=current.number, site=site, method=self.name, task=self.task_spec,
                                      models=("round",))
            current.sent[site] = Message(wire.evaluate_content(request, [self._arrays(models[site])]), nodes[site],
                                         MessageType.EVALUATE, ttl=self.round_timeout, group_id=f"{current.number}-eval")
        current.evaluating = list(current.sent)
        return list(current.sent.values())

    def _collect(self, replies: Iterable[Message], sent: Mapping[str, Message],
                 failed: list[dict[str, Any]]) -> dict[str, wire.EvalReply]:
        """The parsed evaluation of every site ``sent`` a message; a site whose reply is missing, an error or
        malformed is appended to ``failed``."""
        by_site = dict(answered(replies, sent))
        out: dict[str, wire.EvalReply] = {}
        for site in sent:
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

    def _shown(self) -> dict[str, Any]:
        """What ``sites.csv`` shows of each site's splits, from the sites' own (suppressed) summaries; the round
        log shows no more (:mod:`medfed.fl.log_disclosure`)."""
        return shown_splits({name: (info.summary, info.min_count) for name, info in self.site_info.items()
                             if info.error is None}, POOLED)

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
            got = self._collect(replies, current.sent, failed)
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
        self.ledger.commit(current.record, self.global_weights, self.state, current.began)
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
        sent: dict[str, Message] = {}
        for site in self.clients:
            if site not in nodes:
                continue
            request = wire.EvalConfig(round=last, site=site, method=self.name, task=self.task_spec,
                                      models=tuple(names), final=True)
            sent[site] = Message(wire.evaluate_content(request, arrays), nodes[site], MessageType.EVALUATE,
                                 ttl=self.round_timeout, group_id="final-eval")
        failed = [{"site": s, "error": "no connected node"} for s in self.clients if s not in nodes]
        replies = grid.send_and_receive(list(sent.values()), timeout=self.round_timeout) if sent else []
        got = self._collect(replies, sent, failed)
        return names, got, failed


