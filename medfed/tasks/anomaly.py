"""Anomaly detection with a convolutional autoencoder (ureteroscopy kidney-stone images).

The autoencoder is trained on *normal* images to minimise the mean squared reconstruction error; a case's
anomaly score is its reconstruction error ``s(x) = mean((x - AE(x))^2)`` over pixels and channels, as in
Reyes-Amezcua et al. 2025 (arXiv 2510.06230). What is anomalous (``target``):

``class``
    cases of ``normal_classes`` (of ``label_column``) are normal and the only training cases; cases of any
    other class are anomalies (target 1).
``corruption`` (the papers' setting)
    every training case is normal; each evaluated case appears twice, clean (target 0, its own case id)
    and corrupted (target 1, id ``<case_id>~<corruption>``) by one of ``test_corruption.types`` (drawn per
    case, seeded) at ``test_corruption.severity`` (:mod:`medfed.corruptions`). The two copies of a
    case are resampled as separate records by the report's bootstrap.

Threshold policy (chosen on validation records, per evaluated site and model; the papers pick Youden's J
on the test set itself, an oracle we do not copy):

``f1``
    the cut between consecutive validation scores that maximises F1 (ties: the lowest such cut); falls
    back to ``percentile`` when the validation split lacks normal or anomalous cases.
``youden``
    the cut maximising Youden's J = sensitivity + specificity - 1 (ties: the lowest cut); falls back like
    ``f1``.
``percentile``
    the ``percentile``-th percentile of the normal validation cases' scores (false-positive rate
    about ``1 - percentile/100``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, Dataset

from medfed.errors import Problem
from medfed.metrics import auroc, confusion_metrics
from medfed.seeding import derive_seed
from medfed.sites.base import Site
from medfed.corruptions import CORRUPTION_NAMES, Corrupt, check_name
from medfed.tasks.base import Task, TaskConfigBase, records_frame
from medfed.tasks.models import build_network

RECORD_COLUMNS = ("case_id", "score", "target")


class TestCorruption(BaseModel):
    """The corruptions that make the anomalous copy of each evaluated case (``target: corruption``)."""

    model_config = ConfigDict(extra="forbid")
    types: list[str] = Field(default_factory=lambda: list(CORRUPTION_NAMES), min_length=1)
    severity: int = Field(3, ge=1, le=5)
    seed: int = 0

    @field_validator("types", mode="before")
    @classmethod
    def _all(cls, value: Any) -> Any:
        return list(CORRUPTION_NAMES) if value == "all" else [value] if isinstance(value, str) else value

    @field_validator("types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return [check_name(v) for v in value]


class AnomalyConfig(TaskConfigBase):
    kind: Literal["anomaly"] = "anomaly"
    target: Literal["class", "corruption"] = "class"
    label_column: str = "stone_type"
    normal_classes: list[str] = Field(default_factory=list)
    test_corruption: TestCorruption = TestCorruption()
    in_channels: int = 3
    spatial_dims: int = 2
    threshold_policy: Literal["f1", "youden", "percentile"] = "f1"
    percentile: float = Field(95.0, gt=0, le=100)

    @model_validator(mode="after")
    def _normal_classes_for_class_target(self) -> AnomalyConfig:
        if self.target == "class" and not self.normal_classes:
            raise ValueError("target 'class' needs normal_classes (the classes the autoencoder learns)")
        return self


def _candidate_cuts(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(cuts, predicted (cuts, cases), targets as bool)`` over midpoints of the sorted unique scores;
    ``None`` when the targets hold one class only (no cut is defined)."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool)
    if targets.all() or not targets.any():
        return None
    unique = np.unique(scores)
    cuts = np.concatenate([(unique[:-1] + unique[1:]) / 2, [unique[-1]]]) if unique.size > 1 else unique
    return cuts, scores[None, :] >= cuts[:, None], targets  # vectorised over all cuts


def f1_threshold(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Cut maximising F1 of ``scores >= cut`` among midpoints of sorted unique scores; ``None`` if undefined."""
    found = _candidate_cuts(scores, targets)
    if found is None:
        return None
    cuts, predicted, targets = found
    tp = (predicted & targets).sum(axis=1)
    fp = (predicted & ~targets).sum(axis=1)
    fn = targets.sum() - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(cuts[int(np.argmax(f1))])


def youden_threshold(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Cut maximising Youden's J = TPR - FPR of ``scores >= cut`` (ties: the lowest cut); ``None`` if undefined."""
    found = _candidate_cuts(scores, targets)
    if found is None:
        return None
    cuts, predicted, targets = found
    j = (predicted & targets).sum(axis=1) / targets.sum() - (predicted & ~targets).sum(axis=1) / (~targets).sum()
    return float(cuts[int(np.argmax(j))])


class _AnomalyTarget:
    """Adds ``anomaly`` (1 = not a normal class) from the site's public labels, keyed by case id."""

    def __init__(self, targets: dict[str, int]) -> None:
        self.targets = targets

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item["anomaly"] = self.targets[item["case_id"]]
        return item


class _Target:
    """Sets ``anomaly`` to a fixed value and suffixes the case id (the corrupted copy of a case)."""

    def __init__(self, value: int, suffix: str = "") -> None:
        self.value, self.suffix = value, suffix

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item["anomaly"] = self.value
        item["case_id"] = f"{item['case_id']}{self.suffix}"
        return item


class _CorruptCopy:
    """The anomalous copy of a case: one of ``types`` (chosen from the case id, seeded), id ``<case_id>~<type>``."""

    def __init__(self, spec: TestCorruption) -> None:
        self.spec = spec
        self.corrupters = {name: Corrupt(name, spec.severity, 1.0, spec.seed) for name in spec.types}

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        types = self.spec.types
        name = types[derive_seed(self.spec.seed, "test-corruption", item["case_id"]) % len(types)]
        item = self.corrupters[name](item)
        item.pop("corrupted", None)
        return _Target(1, f"~{name}")(item)


class AnomalyTask(Task):
    kind: ClassVar[str] = "anomaly"
    primary_metric: ClassVar[str] = "auroc"
    config: AnomalyConfig

    def build_model(self, seed: int) -> nn.Module:
        return build_network(
            self.config.model, default="autoencoder", spatial_dims=self.config.spatial_dims,
            in_channels=self.config.in_channels, out_channels=self.config.in_channels, seed=seed,
        )

    def _normal_ids(self, site: Site, split: str) -> list[str]:
        rows = site.split(split)
        if self.config.target == "corruption":
            return rows["case_id"].tolist()
        return rows.loc[rows[self.config.label_column].astype(str).isin(self.config.normal_classes), "case_id"].tolist()

    def check_site(self, site: Site) -> list[Problem]:
        column = self.config.label_column
        if self.config.target == "corruption":
            return [] if self._normal_ids(site, "train") else [site.problem("no training case")]
        if column not in site.cases:
            return [site.problem(f"anomaly detection needs label column {column!r}; site has {site.label_columns}")]
        if not self._normal_ids(site, "train"):
            return [site.problem(f"no training case of the normal class(es) {self.config.normal_classes}")]
        return []

    def _targets(self, site: Site) -> dict[str, int]:
        cases = site.cases
        normal = cases[self.config.label_column].astype(str).isin(self.config.normal_classes)
        return dict(zip(cases["case_id"], (~normal).astype(int)))

    def training_case_ids(self, site: Site) -> list[str]:
        return self._normal_ids(site, "train")

    def train_dataset(self, site: Site) -> Dataset:
        return site.dataset("train", case_ids=self._normal_ids(site, "train"))

    def eval_dataset(self, site: Site, split: str) -> Dataset:
        base = site.default_transform(split)
        if self.config.target == "corruption":
            clean = site.dataset(split, transform=Compose([base, _Target(0)]))
            corrupted = site.dataset(split, transform=Compose([base, _CorruptCopy(self.config.test_corruption)]))
            return ConcatDataset([clean, corrupted])
        return site.dataset(split, transform=Compose([base, _AnomalyTarget(self._targets(site))]))

    def criterion(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return F.mse_loss(outputs, batch["image"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: Dataset) -> pd.DataFrame:
        model.eval()
        rows: list[dict[str, Any]] = []
        for batch in self.batches(dataset):
            image = batch["image"]
            errors = ((model(image) - image) ** 2).flatten(1).mean(dim=1).numpy()
            for case_id, error, target in zip(batch["case_id"], errors, batch["anomaly"].tolist()):
                rows.append({"case_id": case_id, "score": float(error), "target": int(target)})
        return records_frame(rows, RECORD_COLUMNS)

    def calibrate(self, val_records: pd.DataFrame) -> float | None:
        scores = val_records["score"].to_numpy(dtype=float)
        targets = val_records["target"].to_numpy()
        if self.config.threshold_policy in ("f1", "youden"):
            choose = f1_threshold if self.config.threshold_policy == "f1" else youden_threshold
            cut = choose(scores, targets)
            if cut is not None:
                return cut
        normal = scores[targets == 0]
        return float(np.percentile(normal, self.config.percentile)) if normal.size else None

    def predict(self, records: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
        if threshold is None:
            return records.assign(prediction=pd.NA)
        return records.assign(prediction=(records["score"] >= threshold).astype(int))

    def metrics(self, records: pd.DataFrame) -> dict[str, float]:
        """AUROC of the scores; precision, recall, F1 of the ``prediction`` column (NaN without a threshold)."""
        targets = records["target"].to_numpy()
        out = {"auroc": auroc(records["score"].to_numpy(dtype=float), targets)}
        predicted = pd.to_numeric(records.get("prediction"), errors="coerce") if "prediction" in records else None
        if predicted is None or predicted.isna().any():
            out.update({k: float("nan") for k in ("precision", "recall", "f1")})
        else:
            confusion = confusion_metrics(predicted.to_numpy(dtype=float), targets, 0.5)
            out.update(precision=confusion["precision"], recall=confusion["sensitivity"], f1=confusion["f1"])
        return out
