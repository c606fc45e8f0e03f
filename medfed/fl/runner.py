"""The in-process round loop: sample sites, train locally, aggregate, log, checkpoint; resume exactly.

Round ``r`` of a method:

1. draw the available sites from ``(seed, "available", r)`` (a round with fewer than ``min_fit_clients``
   available is skipped and logged, the model unchanged), then sample among them from ``(seed, "sample", r)``
   (:mod:`medfed.fl.sampling`);
2. for each sampled site, in federation order, load the strategy's start weights, train ``local_epochs``
   with randomness from ``(seed, "train", r, site)``, and hand the update to the strategy's ``aggregate``
   as soon as it exists (one client model in memory at a time); a site configured as an adversary
   (:mod:`medfed.fl.adversaries`) submits its forged weights instead, drawn from ``(seed, "attack", r, site)``;
3. a site whose local training raises is dropped from the round and recorded (the error as one line of at
   most :data:`~medfed.sites.redact.MESSAGE_LIMIT` characters, the sites' data folders hidden); the round
   counts if at least ``min(min_fit_clients, sites)`` updates arrived, otherwise the run stops
   (:class:`RunStopped`) keeping its checkpoints and log. A site that fails the same way (same exception type
   and message, numbers aside) in :data:`REPEATED_FAILURE_ROUNDS` consecutive rounds it was sampled in stops
   the run too: that is a data or code problem, not a passing fault;
4. every ``eval_every`` rounds each site's model is evaluated on its val and test split;
5. ``checkpoints/last.pt`` (weights, strategy state, the round log) is replaced atomically, then the round
   is appended to ``rounds.jsonl``.

Since every random draw depends only on ``(seed, round, site)`` and the checkpoint holds the complete
training state, a run killed at any moment and resumed from its last checkpoint ends bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import ConcatDataset, Dataset
from tqdm.auto import tqdm

from medfed.errors import ConfigError, MedfedError
from medfed.fl.adversaries import AdversaryConfig, AttackContext, build_adversary
from medfed.fl.checkpoint import load_checkpoint, save_checkpoint
from medfed.fl.log_disclosure import disclose_round, shown_splits
from medfed.fl.config import TrainingConfig
from medfed.fl.evaluation import POOLED_LEFT_OUT, EvalDatasets, evaluate_on_site, metrics_by_site, pooled_round_metrics
from medfed.fl.sampling import available_sites, sample_sites
from medfed.fl.strategies import Strategy
from medfed.fl.step import FedAvgShadow
from medfed.fl.strategies.centralised import POOLED
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import get_weights, layout_of, set_weights
from medfed.io import atomic_write_text
from medfed.seeding import derive_seed, rng_for
from medfed.sites.base import Site
from medfed.sites.redact import error_text
from medfed.tasks.base import Task
from medfed.tasks.finetune import apply_policy
from medfed.tasks.models import load_initial_weights

CHECKPOINT = "checkpoints/last.pt"
ROUNDS_LOG = "rounds.jsonl"
#: a site that fails with the same error in this many consecutive rounds it was sampled in stops the run
REPEATED_FAILURE_ROUNDS = 2


class RunStopped(MedfedError):
    """A round ended with too few site updates, or a site failed the same way round after round; the run keeps
    its checkpoints and log up to the last completed round."""


@contextmanager
def quiet_collate() -> Iterator[None]:
    """Silence MONAI's ``dev_collate`` logger, which dumps whole tensors (pixel values) to stderr when a batch
    cannot be collated; the error itself is still raised and recorded."""
    logger = logging.getLogger("dev_collate")
    previous, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = previous


def _same_failure(a: str, b: str) -> bool:
    """Two recorded errors are the same failure: equal once numbers are masked (tensor sizes and batch positions
    in a collate error vary from round to round)."""
    return re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b)


def _rounds_text(rounds: Sequence[int]) -> str:
    """``"rounds 1 and 2"``, ``"rounds 3, 4 and 5"``."""
    shown = [str(r) for r in rounds]
    return f"rounds {', '.join(shown[:-1])} and {shown[-1]}" if len(shown) > 1 else f"round {shown[0]}"


class FailureStreaks:
    """Per site, the consecutive rounds it was sampled in and failed with the same error (:func:`_same_failure`);
    a completed round ends a streak, a round the site was not sampled in (or a skipped round) leaves it alone.
    Rebuilt from the round log on resume, so a resumed run stops where an uninterrupted one would."""

    def __init__(self, log: Sequence[Mapping[str, Any]] = ()) -> None:
        self.streaks: dict[str, tuple[list[int], str]] = {}
        for record in log:
            self.update(record)

    def update(self, record: Mapping[str, Any]) -> None:
        """Account for one round record."""
        if record.get("skipped"):
            return
        failed = {f["site"]: f["error"] for f in record.get("failed", [])}
        for site in record.get("sampled", []):
            if site not in failed:
                self.streaks.pop(site, None)
                continue
            rounds, previous = self.streaks.get(site, ([], ""))
            same = bool(rounds) and _same_failure(previous, failed[site])
            self.streaks[site] = ([*rounds, record["round"]] if same else [record["round"]], failed[site])

    def repeated(self) -> tuple[str, list[int], str] | None:
        """``(site, rounds, error)`` of the first site failing the same way :data:`REPEATED_FAILURE_ROUNDS` times."""
        for site, (rounds, error) in self.streaks.items():
            if len(rounds) >= REPEATED_FAILURE_ROUNDS:
                return site, rounds, error
        return None


def stop_message(name: str, record: Mapping[str, Any], needed: int, streaks: FailureStreaks, log: Path) -> str | None:
    """Why method ``name`` stops after the round ``record`` (after ``streaks.update(record)``), in one line, or
    ``None``: fewer than ``needed`` updates (the first failure shown), or a site that failed the same way in
    :data:`REPEATED_FAILURE_ROUNDS` consecutive sampled rounds. Both engines stop with it (:class:`RunStopped`)."""
    rnd, completed, failed = record["round"], len(record["completed"]), record["failed"]
    kept = f"keeping rounds 1-{rnd - 1}" if rnd > 2 else "keeping round 1" if rnd == 2 else "no round kept"
    stopped = f"stopped, {kept} (log {log})"
    if completed < needed:
        detail = f"; site {failed[0]['site']} failed: {failed[0]['error']}" if failed else ""
        if len(failed) > 1:
            detail += f" (and {len(failed) - 1} more site(s))"
        return (f"{name}, round {rnd}: only {completed} of the {len(record['sampled'])} sampled site(s) returned "
                f"an update ({needed} needed); {stopped}{detail}")
    repeated = streaks.repeated()
    if repeated is not None:
        site, rounds, error = repeated
        return (f"{name}, round {rnd}: site {site} failed the same way in {_rounds_text(rounds)} ({error}); "
                f"{stopped}; run `medfed validate` on its federation")
    return None


@dataclass
class MethodResult:
    """Final models of one method (flat weights by model name) and what happened on the way."""

    name: str
    models: dict[str, np.ndarray]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [dict(f, round=r["round"]) for r in self.rounds for f in r.get("failed", [])]


def _train_datasets(task: Task, sites: Sequence[Site], pooled: bool) -> dict[str, Dataset]:
    datasets = {site.name: task.train_dataset(site) for site in sites}
    if pooled:
        return {POOLED: ConcatDataset(list(datasets.values()))}
    return datasets


def log_record(value: Any) -> Any:
    """A round-log record as JSON can hold it: keys as text, numpy numbers as Python ones, floats rounded to
    6 decimals, non-finite floats as ``None`` (the in-process and Flower engines write the same records)."""
    if isinstance(value, dict):
        return {str(k): log_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [log_record(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


class MethodRunner:
    """Trains one method (a strategy) of an experiment on a federation, in this process."""

    def __init__(
        self,
        name: str,
        task: Task,
        sites: Sequence[Site],
        strategy: Strategy,
        training: TrainingConfig,
        seed: int,
        run_dir: Path,
        eval_datasets: EvalDatasets | None = None,
        progress: bool = True,
        adversaries: Mapping[str, AdversaryConfig] | None = None,
        server_benchmark: Dataset | None = None,
        init: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.task = task
        self.sites = list(sites)
        self.site_names = [s.name for s in self.sites]
        self.strategy = strategy
        self.training = training
        self.seed = seed
        self.run_dir = Path(run_dir)
        self.eval_datasets = eval_datasets
        self.progress = progress
        self.adversaries = {site: (build_adversary(c), c) for site, c in (adversaries or {}).items()}
        self.server_benchmark = server_benchmark
        self.init = init
        self.min_counts = {s.name: s.min_count for s in self.sites}
        self._secrets = [text for s in self.sites for text in s.private_texts()]  # hidden in recorded errors
        self._val_examples = {s.name: len(s.split("val")) for s in self.sites}
        # what sites.csv shows of each site's splits: the round log shows no more (medfed.fl.log_disclosure)
        self._shown = shown_splits({s.name: (s.summary(), s.min_count) for s in self.sites}, POOLED)
        self.clients = [POOLED] if strategy.pooled else list(self.site_names)
        self._local_lr = float(task.config.optimizer.lr)  # SCAFFOLD's control variates need the local step size
        if isinstance(training.availability, dict):
            unknown = sorted(set(training.availability) - set(self.site_names))
            if unknown:
                raise ConfigError(f"training.availability names unknown site(s) {', '.join(unknown)}; "
                                  f"sites are {', '.join(self.site_names)}")
        unknown = sorted(set(self.adversaries) - set(self.site_names))
        if unknown:
            raise ConfigError(f"adversaries name unknown site(s) {', '.join(unknown)}; sites are {', '.join(self.site_names)}")

    # ----------------------------------------------------------------- public
    def run(self, resume: bool = False) -> MethodResult:
        """Train all rounds (continuing from the last checkpoint when ``resume``) and return the final models."""
        model = self.task.build_model(derive_seed(self.seed, "init"))
        if self.init is not None:  # this method's pretrained encoder (random init otherwise, or task.model.init)
            load_initial_weights(model, dict(self.init), self.name)
        model = apply_policy(model, self.task.config.finetune)
        global_weights = get_weights(model)
        self.strategy.prepare(model)
        self.strategy.attach_server_data(self.task, self.task.build_model(derive_seed(self.seed, "init")),
                                         self.server_benchmark)
        self._float_mask = layout_of(model).is_float()
        state = self.strategy.initial_state(global_weights, self.clients)
        log: list[dict[str, Any]] = []
        start = 1
        checkpoint = self.run_dir / CHECKPOINT
        if resume and checkpoint.is_file():
            saved = load_checkpoint(checkpoint)
            if saved.get("method") != self.name or saved.get("clients") != self.clients:
                raise MedfedError(f"{checkpoint}: checkpoint belongs to another run (method or sites differ)")
            global_weights, state, log = saved["global"], saved["state"], saved["log"]
            start = int(saved["round"]) + 1
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_log(log)
        datasets = _train_datasets(self.task, self.sites, self.strategy.pooled)
        streaks = FailureStreaks(log)

        total = self.training.rounds
        bar = tqdm(range(start, total + 1), desc=self.name, unit="round", initial=start - 1, total=total,
                   disable=None if self.progress else True, leave=False)
        for rnd in bar:
            began = time.perf_counter()
            available = self._available(rnd)
            sampled = sample_sites(available, self.training.fraction_fit, self.training.min_fit_clients,
                                   rng_for(self.seed, "sample", rnd))
            record: dict[str, Any] = {"round": rnd, "available": available, "sampled": sampled, "completed": [],
                                      "failed": [], "train_loss": {}, "num_examples": {}}
            needed = min(self.training.min_fit_clients, len(self.clients))
            if len(available) < needed:  # not a fault: the round waits for the next one, the model is unchanged
                record["skipped"] = f"only {len(available)} of {len(self.clients)} sites available ({needed} needed)"
                record["seconds"] = round(time.perf_counter() - began, 3)
                record = self._logged(record)
                log.append(record)
                save_checkpoint(checkpoint, {"method": self.name, "clients": self.clients, "round": rnd,
                                             "global": global_weights, "state": state, "log": log})
                self._append_log(record)
                continue
            updates = self._client_updates(model, datasets, sampled, rnd, global_weights, state, record)
            shadow = FedAvgShadow(updates) if self.strategy.global_step else None  # local-only: no global step
            new_global, new_state, diagnostics = self.strategy.aggregate(global_weights, shadow or updates, state)
            streaks.update(record)
            stop = stop_message(self.name, record, needed, streaks, self.run_dir / ROUNDS_LOG)
            if stop is not None:
                record["status"] = "stopped"
                self._append_log(record)
                raise RunStopped(stop)
            step = shadow.diagnostic(global_weights, new_global) if shadow else None
            global_weights, state = new_global, new_state
            record["aggregation"] = diagnostics
            if step is not None:
                record.update(step)
            every = self.training.eval_every
            if every and (rnd % every == 0 or rnd == total) and self.eval_datasets is not None:
                with quiet_collate():
                    record["eval"] = self._evaluate_round(model, global_weights, state)
            record["seconds"] = round(time.perf_counter() - began, 3)
            record = self._logged(record)
            log.append(record)
            save_checkpoint(checkpoint, {"method": self.name, "clients": self.clients, "round": rnd,
                                         "global": global_weights, "state": state, "log": log})
            self._append_log(record)
            losses = [v for v in record["train_loss"].values() if v is not None]
            if losses:
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        bar.close()
        return MethodResult(self.name, self.strategy.final_models(global_weights, state), log, start - 1)

    # ----------------------------------------------------------------- internals
    def _available(self, rnd: int) -> list[str]:
        """Sites reachable in round ``rnd`` (seeded by (seed, "available", round)); the pooled reference is
        always available."""
        if self.strategy.pooled:
            return list(self.clients)
        return available_sites(self.clients, self.training.availability, rng_for(self.seed, "available", rnd))

    def _local_budget(self) -> dict[str, Any]:
        """``local_train`` arguments: ``local_epochs`` passes, or exactly ``local_steps`` steps (each epoch has
        at least one step, so ``local_steps`` epochs always suffice)."""
        steps = self.training.local_steps
        if steps is None:
            return {"epochs": self.training.local_epochs}
        return {"epochs": steps, "max_steps": steps}

    def _client_updates(
        self, model: Any, datasets: dict[str, Dataset], sampled: list[str], rnd: int,
        global_weights: np.ndarray, state: dict[str, Any], record: dict[str, Any],
    ) -> Iterator[ClientUpdate]:
        """Train each sampled site in turn and yield its update; a site that raises is recorded and skipped."""
        bar = tqdm(sampled, desc=f"round {rnd}", unit="site", leave=False,
                   disable=None if self.progress and len(sampled) > 1 else True)
        for site in bar:
            bar.set_postfix_str(site)
            try:
                start = self.strategy.client_weights(global_weights, site, state)
                set_weights(model, start)
                info: dict[str, Any] = {}
                if self.strategy.wants_start_loss:
                    with quiet_collate():
                        info["start_loss"] = self.task.mean_loss(model, datasets[site])
                hooks = self.strategy.client_hooks(model, site, state)
                trained_from = time.perf_counter()
                with quiet_collate():
                    result = self.task.local_train(
                        model, datasets[site], **self._local_budget(),
                        seed=derive_seed(self.seed, "train", rnd, site), hooks=hooks,
                    )
                weights = get_weights(model)
                num_examples = result.num_examples
                if site in self.adversaries:
                    adversary, spec = self.adversaries[site]
                    weights = adversary.forge(AttackContext(
                        self.task, model, datasets[site], start, weights, self._float_mask,
                        self._local_budget(), derive_seed(self.seed, "attack", rnd, site)))
                    num_examples = spec.claimed_examples or num_examples
                    record.setdefault("adversarial", {})[site] = spec.kind
                if not np.isfinite(weights).all():
                    raise FloatingPointError("local weights contain NaN or infinity")
            except Exception as err:  # noqa: BLE001 - any failure of a site drops it from this round
                reason = error_text(err, self._secrets)  # one line, cut: library messages may quote tensors
                record["failed"].append({"site": site, "error": reason})
                tqdm.write(f"[{self.name}] round {rnd}: site {site} failed and is dropped from this round: {reason}")
                continue
            record["completed"].append(site)
            record["train_loss"][site] = result.mean_loss
            record["num_examples"][site] = num_examples
            # the site's local work, for simulated round times (challenge convergence score); seconds vary by
            # machine, examples do not
            record.setdefault("work", {})[site] = {
                "seconds": round(time.perf_counter() - trained_from, 4), "examples": result.examples_seen,
                "val_examples": self._val_examples.get(site, 0)}
            yield ClientUpdate(site, weights, num_examples,
                               {"loss": result.mean_loss, "steps": result.steps, "lr": self._local_lr, **info})

    def _evaluate_round(self, model: Any, global_weights: np.ndarray, state: dict[str, Any]) -> dict[str, Any]:
        assert self.eval_datasets is not None
        models = self.strategy.round_models(global_weights, state, self.site_names)
        frames = []
        for site in self.site_names:
            set_weights(model, models[site])
            frames.append(evaluate_on_site(self.task, model, site, self.eval_datasets))
        records = pd.concat(frames, ignore_index=True)
        by_site: dict[str, Any] = metrics_by_site(self.task, records, self.min_counts)
        # every site's model on its own cases, pooled over the sites whose counts are shown (the federation's
        # validation score, e.g. for convergence); sites left out are listed under "pooled_left_out"
        pooled, left_out = pooled_round_metrics(self.task, records, self.min_counts)
        if pooled:
            by_site[POOLED] = pooled
        if left_out:
            by_site[POOLED_LEFT_OUT] = left_out
        return by_site

    def _logged(self, record: dict[str, Any]) -> dict[str, Any]:
        """A round record as the log and the checkpoint keep it: JSON-ready, counts under disclosure control."""
        return disclose_round(log_record(record), self._shown)

    def _write_log(self, log: list[dict[str, Any]]) -> None:
        atomic_write_text(self.run_dir / ROUNDS_LOG, "".join(json.dumps(r) + "\n" for r in log))

    def _append_log(self, record: dict[str, Any]) -> None:
        with (self.run_dir / ROUNDS_LOG).open("a") as handle:
            handle.write(json.dumps(self._logged(record)) + "\n")
