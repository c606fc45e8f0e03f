"""The `Task` contract: model, loss, local training and per-case evaluation, knowing nothing of federation.

A task turns a site's cases into a model and back into per-case records:

``build_model(seed)``
    a fresh network (MONAI), initialised from ``seed``.
``train_dataset(site)`` / ``eval_dataset(site, split)``
    the site's MONAI datasets for this task (built inside the site).
``forward(model, batch)`` / ``criterion(outputs, batch)``
    the network outputs of a training batch and the task loss on them (``loss`` = both).
``class_probabilities(outputs, batch)``
    classification only: one row of class probabilities per labelled prediction (FedLD's margin control).
``local_train(model, dataset, epochs, seed, hooks)``
    optimiser steps over the dataset; ``hooks`` add loss terms or touch gradients (FedProx's proximal
    term and FedLD's margin control live in :mod:`medfed.fl.client`, not here).
``evaluate(model, dataset)``
    one row per case (and per label or region): ``case_id``, ``score``, ``target`` and task-specific
    columns. Every metric is computed later from these records by :meth:`Task.metrics`.
``calibrate(val_records)`` / ``predict(records, threshold)`` / ``metrics(records)``
    an operating threshold chosen on validation records (anomaly detection; ``None`` = the task's fixed
    rule), the records with a ``prediction`` column, and the metric values of a set of records (records
    of several sites concatenate into pooled metrics).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import pandas as pd
import torch
from monai.data import list_data_collate
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medfed.errors import Problem
from medfed.sites.base import Site
from medfed.tasks.finetune import FinetuneConfig, parameter_groups


class OptimizerConfig(BaseModel):
    """Local optimiser: ``torch.optim`` Adam, AdamW or SGD (momentum)."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")


class TaskConfigBase(BaseModel):
    """Fields every task shares. ``model`` is ``{name: <network>, init: {path, format}, **kwargs}`` (see
    :mod:`medfed.tasks.models`); ``finetune`` is the fine-tuning policy (:mod:`medfed.tasks.finetune`)."""

    model_config = ConfigDict(extra="forbid")
    model: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(16, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    finetune: FinetuneConfig = FinetuneConfig()


class LocalHook(Protocol):
    """What a task's training loop calls on each hook a strategy hands it (e.g. FedProx's proximal term, FedLD's
    margin control; their base class with no-op defaults is :class:`medfed.fl.protocols.ClientHook`).

    ``penalty(model)`` and ``output_penalty(task, outputs, batch)`` (a term on the step's network outputs)
    are added to every step's loss; ``after_backward(model)`` may edit gradients before the optimiser step.
    """

    def penalty(self, model: nn.Module) -> torch.Tensor | None: ...

    def output_penalty(self, task: Task, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor | None: ...

    def after_backward(self, model: nn.Module) -> None: ...


def batch_size(batch: Any) -> int:
    """Examples in a collated batch: the leading size of its ``image`` (or first tensor) entry."""
    if isinstance(batch, dict):
        value = batch.get("image", next((v for v in batch.values() if isinstance(v, torch.Tensor)), None))
    else:
        value = batch[0] if isinstance(batch, list | tuple) else batch
    return int(value.shape[0]) if isinstance(value, torch.Tensor) and value.ndim else 1


@dataclass
class TrainResult:
    """What one call of :meth:`Task.local_train` did."""

    steps: int
    num_examples: int
    losses: list[float] = field(default_factory=list)
    #: examples processed over all steps (``num_examples x epochs`` for whole epochs): the work a site did
    examples_seen: int = 0

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")


class Task(ABC):
    """A benchmark task: see the module docstring for the contract."""

    kind: ClassVar[str]
    #: metric reported first in summaries (higher is better)
    primary_metric: ClassVar[str]

    def __init__(self, config: TaskConfigBase) -> None:
        self.config = config

    # ----------------------------------------------------------------- subclass contract
    @abstractmethod
    def build_model(self, seed: int) -> nn.Module: ...

    @abstractmethod
    def check_site(self, site: Site) -> list[Problem]:
        """Problems that make ``site`` unusable for this task (missing label column, no training case, ...)."""

    @abstractmethod
    def train_dataset(self, site: Site) -> Dataset: ...

    def training_case_ids(self, site: Site) -> list[str]:
        """Ids of the cases :meth:`train_dataset` trains on (default: the whole training split)."""
        return site.split("train")["case_id"].tolist()

    @abstractmethod
    def eval_dataset(self, site: Site, split: str) -> Dataset: ...

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Network outputs of a training batch (default: ``model(batch["image"])``)."""
        return model(batch["image"])

    @abstractmethod
    def criterion(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The task loss of ``outputs`` (from :meth:`forward`) on ``batch``."""

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self.criterion(self.forward(model, batch), batch)

    def class_probabilities(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """``(M, C)``: the class-probability vector of each of the batch's M labelled predictions."""
        raise NotImplementedError(f"the {self.kind} task has no class probabilities")

    @abstractmethod
    def evaluate(self, model: nn.Module, dataset: Dataset) -> pd.DataFrame: ...

    @abstractmethod
    def metrics(self, records: pd.DataFrame) -> dict[str, float]:
        """Metric values of a set of records (after :meth:`predict`); higher-is-better unless named hd95."""

    def calibrate(self, val_records: pd.DataFrame) -> float | None:
        """Operating threshold chosen on validation records; ``None``: the task's fixed rule."""
        return None

    def predict(self, records: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
        """``records`` with a ``prediction`` column where the task has one (default: unchanged)."""
        return records

    # ----------------------------------------------------------------- shared machinery
    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The configured optimiser over :func:`medfed.tasks.finetune.parameter_groups` (the fine-tuning policy)."""
        cfg = self.config.optimizer
        params = parameter_groups(model, self.config.finetune, cfg.lr)
        if cfg.name == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        optimizer = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loader(self, dataset: Dataset, *, train: bool, seed: int = 0) -> DataLoader:
        """Single-process loader (deterministic); training batches are shuffled by a generator from ``seed``."""
        generator = torch.Generator().manual_seed(seed) if train else None
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size if train else self.config.eval_batch_size,
            shuffle=train,
            generator=generator,
            num_workers=0,
            collate_fn=list_data_collate,
        )

    def local_train(
        self,
        model: nn.Module,
        dataset: Dataset,
        *,
        epochs: int = 1,
        seed: int = 0,
        hooks: Sequence[LocalHook] = (),
        max_steps: int | None = None,
    ) -> TrainResult:
        """``epochs`` passes over ``dataset`` (or ``max_steps`` steps) with a fresh optimiser.

        Step loss = task loss + sum of ``hook.penalty(model)`` and ``hook.output_penalty(self, outputs, batch)``. Randomness (shuffling, dropout) draws from
        ``seed`` only, and the caller's global torch RNG state is restored afterwards.
        """
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("no training case")
        optimizer = self.make_optimizer(model)
        result = TrainResult(steps=0, num_examples=len(dataset))  # type: ignore[arg-type]
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for epoch in range(epochs):
                for batch in self.loader(dataset, train=True, seed=seed + epoch):
                    optimizer.zero_grad(set_to_none=True)
                    outputs = self.forward(model, batch)
                    loss = self.criterion(outputs, batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"training loss became {loss.item()} at step {result.steps}")
                    total = loss
                    for hook in hooks:
                        for extra in (hook.penalty(model), hook.output_penalty(self, outputs, batch)):
                            if extra is not None:
                                total = total + extra
                    total.backward()
                    for hook in hooks:
                        hook.after_backward(model)
                    optimizer.step()
                    result.losses.append(float(loss.detach()))
                    result.steps += 1
                    result.examples_seen += batch_size(batch)
                    if max_steps is not None and result.steps >= max_steps:
                        return result
        return result

    @torch.no_grad()
    def mean_loss(self, model: nn.Module, dataset: Dataset) -> float:
        """``(1/N) sum_batches n_b * loss_b``: the task loss of ``model`` (eval mode) over ``dataset``'s N cases."""
        model.eval()
        total, count = 0.0, 0
        for batch in self.batches(dataset):
            n = int(batch["image"].shape[0])
            total += float(self.loss(model, batch)) * n
            count += n
        if count == 0:
            raise ValueError("no case to compute a loss on")
        return total / count

    def batches(self, dataset: Dataset) -> Iterable[dict[str, Any]]:
        """Evaluation batches in dataset order."""
        return self.loader(dataset, train=False)


def records_frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A records table with ``columns`` even when ``rows`` is empty."""
    return pd.DataFrame(rows, columns=list(columns))
