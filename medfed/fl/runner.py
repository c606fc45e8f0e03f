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
   (:class:`~medfed.fl.ledger.RunStopped`) keeping its checkpoints and log. A site that fails the same way
   (same exception type and message, numbers aside) in :data:`~medfed.fl.ledger.REPEATED_FAILURE_ROUNDS`
   consecutive rounds it was sampled in stops the run too: that is a data or code problem, not a passing fault;
4. every ``eval_every`` rounds each site's model is evaluated on its val and test split;
5. the run ledger (:class:`medfed.fl.ledger.MethodLedger`, shared with the Flower engine) replaces
   ``checkpoints/last.pt`` (weights, strategy state, the round log) atomically, then appends the round to
   ``rounds.jsonl``.

Since every random draw depends only on ``(seed, round, site)`` and the checkpoint holds the complete
training state, a run killed at any moment and resumed from its last checkpoint ends bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import ConcatDataset, Dataset
from tqdm.auto import tqdm

from medfed.errors import ConfigError
from medfed.fl.adversaries import AdversaryConfig, AttackContext, build_adversary
from medfed.fl.ledger import MethodLedger, MethodResult, RunStopped
from medfed.fl.log_disclosure import shown_splits
from medfed.fl.config import TrainingConfig
from medfed.fl.evaluation import POOLED_LEFT_OUT, EvalDatasets, evaluate_on_site, metrics_by_site, pooled_round_metrics
from medfed.fl.sampling import available_sites, sample_sites
from medfed.fl.strategies import Strategy
from medfed.fl.step import FedAvgShadow
from medfed.fl.strategies.centralised import POOLED
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import get_weights, layout_of, set_weights
from medfed.seeding import derive_seed, rng_for
from medfed.sites.base import Site
from medfed.sites.redact import error_text
from medfed.tasks.base import Task
from medfed.tasks.finetune import apply_policy
from medfed.tasks.models import load_initial_weights

__all__ = ["MethodResult", "MethodRunner", "RunStopped", "quiet_collate"]


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


def _train_datasets(task: Task, sites: Sequence[Site], pooled: bool) -> dict[str, Dataset]:
    datasets = {site.name: task.train_dataset(site) for site in sites}
    if pooled:
        return {POOLED: ConcatDataset(list(datasets.values()))}
    return datasets


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
        ledger = MethodLedger(self.run_dir, self.name, self.clients, lambda: self._shown)
        opened = ledger.open(global_weights, self.strategy.initial_state(global_weights, self.clients), resume)
        global_weights, state, start = opened.global_weights, opened.state, opened.start
        datasets = _train_datasets(self.task, self.sites, self.strategy.pooled)

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
                ledger.commit(record, global_weights, state, began)
                continue
            updates = self._client_updates(model, datasets, sampled, rnd, global_weights, state, record)
            shadow = FedAvgShadow(updates) if self.strategy.global_step else None  # local-only: no global step
            new_global, new_state, diagnostics = self.strategy.aggregate(global_weights, shadow or updates, state)
            ledger.stop_if(record, needed)
            step = shadow.diagnostic(global_weights, new_global) if shadow else None
            global_weights, state = new_global, new_state
            record["aggregation"] = diagnostics
            if step is not None:
                record.update(step)
            every = self.training.eval_every
            if every and (rnd % every == 0 or rnd == total) and self.eval_datasets is not None:
                with quiet_collate():
                    record["eval"] = self._evaluate_round(model, global_weights, state)
            logged = ledger.commit(record, global_weights, state, began)
            losses = [v for v in logged["train_loss"].values() if v is not None]
            if losses:
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        bar.close()
        return ledger.result(self.strategy.final_models(global_weights, state), opened.resumed_from)

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
