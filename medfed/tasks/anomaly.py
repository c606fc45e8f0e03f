"""Anomaly detection with a convolutional autoencoder (ureteroscopy kidney-stone images).

The autoencoder is trained on *normal* cases only (``normal_classes`` of ``label_column``) to minimise
the mean squared reconstruction error; a case's anomaly score is its reconstruction error
``s(x) = mean((x - AE(x))^2)`` over pixels and channels, as in Reyes-Amezcua et al. 2025 (arXiv
2510.06230). Cases of any other class are anomalies (target 1).

Threshold policy (chosen on validation records, per evaluated site and model):

``f1``
    the cut between consecutive validation scores that maximises F1 (ties: the lowest such cut); falls
    back to ``percentile`` when the validation split lacks normal or anomalous cases.
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
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from medfed.errors import Problem
from medfed.metrics import auroc, confusion_metrics
from medfed.sites.base import Site
from medfed.tasks.base import Task, TaskConfigBase, records_frame
from medfed.tasks.models import build_network

RECORD_COLUMNS = ("case_id", "score", "target")


class AnomalyConfig(TaskConfigBase):
    kind: Literal["anomaly"] = "anomaly"
    label_column: str = "stone_type"
    normal_classes: list[str] = Field(min_length=1)
    in_channels: int = 3
    spatial_dims: int = 2
    threshold_policy: Literal["f1", "percentile"] = "f1"
    percentile: float = Field(95.0, gt=0, le=100)


def f1_threshold(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Cut maximising F1 of ``scores >= cut`` among midpoints of sorted unique scores; ``None`` if undefined."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool)
    if targets.all() or not targets.any():
        return None
    unique = np.unique(scores)
    cuts = np.concatenate([(unique[:-1] + unique[1:]) / 2, [unique[-1]]]) if unique.size > 1 else unique
    predicted = scores[None, :] >= cuts[:, None]  # (cuts, cases), vectorised over all cuts
    tp = (predicted & targets).sum(axis=1)
    fp = (predicted & ~targets).sum(axis=1)
    fn = targets.sum() - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(cuts[int(np.argmax(f1))])


class _AnomalyTarget:
    """Adds ``anomaly`` (1 = not a normal class) from the site's public labels, keyed by case id."""

    def __init__(self, targets: dict[str, int]) -> None:
        self.targets = targets

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item["anomaly"] = self.targets[item["case_id"]]
        return item


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
        return rows.loc[rows[self.config.label_column].astype(str).isin(self.config.normal_classes), "case_id"].tolist()

    def check_site(self, site: Site) -> list[Problem]:
        column = self.config.label_column
        if column not in site.cases:
            return [site.problem(f"anomaly detection needs label column {column!r}; site has {site.label_columns}")]
        if not self._normal_ids(site, "train"):
            return [site.problem(f"no training case of the normal class(es) {self.config.normal_classes}")]
        return []

    def _targets(self, site: Site) -> dict[str, int]:
        cases = site.cases
        normal = cases[self.config.label_column].astype(str).isin(self.config.normal_classes)
        return dict(zip(cases["case_id"], (~normal).astype(int)))

    def train_dataset(self, site: Site) -> Dataset:
        return site.dataset("train", case_ids=self._normal_ids(site, "train"))

    def eval_dataset(self, site: Site, split: str) -> Dataset:
        return site.dataset(split, transform=Compose([site.default_transform(split), _AnomalyTarget(self._targets(site))]))

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
        if self.config.threshold_policy == "f1":
            cut = f1_threshold(scores, targets)
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
