"""Image classification, binary or multi-label (chest X-ray findings).

One sigmoid output per finding; loss = binary cross-entropy averaged over the (case, finding) pairs whose
target is known (targets < 0, CheXpert "uncertain" under U-Ignore, are masked; Irvin et al. 2019).
Records: one row per case and finding with the sigmoid probability as ``score``. Metrics per finding:
AUROC, and accuracy / sensitivity / specificity / precision / F1 at ``threshold``; with several findings,
the unsuffixed name is the macro mean over findings.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from medfed.errors import Problem
from medfed.metrics import auroc, confusion_metrics
from medfed.sites.base import Site
from medfed.tasks.base import Task, TaskConfigBase, records_frame
from medfed.tasks.models import build_network

RECORD_COLUMNS = ("case_id", "label", "score", "target")


class ClassificationConfig(TaskConfigBase):
    kind: Literal["classification"] = "classification"
    labels: list[str] | None = None  # default: every label column of the first site
    in_channels: int = 1
    spatial_dims: int = 2
    threshold: float = 0.5


class _SelectLabels:
    """Keep the label vector entries at ``indices`` (the task's findings, in the task's order)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        label = torch.as_tensor(np.asarray(item["label"], dtype=np.float32)).reshape(-1)
        item["label"] = label[self.indices]
        return item


class ClassificationTask(Task):
    kind: ClassVar[str] = "classification"
    primary_metric: ClassVar[str] = "auroc"
    config: ClassificationConfig

    def __init__(self, config: ClassificationConfig) -> None:
        super().__init__(config)
        self.labels: list[str] | None = list(config.labels) if config.labels else None

    def build_model(self, seed: int) -> nn.Module:
        if self.labels is None:
            raise RuntimeError("call check_site() on a site first: the task's labels are not known yet")
        return build_network(
            self.config.model, default="resnet", spatial_dims=self.config.spatial_dims,
            in_channels=self.config.in_channels, out_channels=len(self.labels), seed=seed,
        )

    def check_site(self, site: Site) -> list[Problem]:
        if site.label_kind != "classification":
            return [site.problem(f"classification needs image-level labels; this {site.modality} site has none")]
        if self.labels is None:
            self.labels = list(site.label_columns)
        missing = [label for label in self.labels if label not in site.label_columns]
        if missing:
            return [site.problem(f"label column(s) {missing} not in this site (has {site.label_columns})")]
        train = site.split("train")
        known = (train[self.labels].to_numpy(dtype=float) >= 0).sum()
        if len(train) == 0 or known == 0:
            return [site.problem("no training case with a known label")]
        return []

    def _transform(self, site: Site, split: str) -> Compose:
        assert self.labels is not None
        indices = [site.label_columns.index(label) for label in self.labels]
        return Compose([site.default_transform(split), _SelectLabels(indices)])

    def train_dataset(self, site: Site) -> Dataset:
        return site.dataset("train", transform=self._transform(site, "train"))

    def eval_dataset(self, site: Site, split: str) -> Dataset:
        return site.dataset(split, transform=self._transform(site, split))

    def criterion(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        target = batch["label"].to(outputs.dtype)
        known = target >= 0
        per_pair = F.binary_cross_entropy_with_logits(outputs, target.clamp(min=0), reduction="none")
        return (per_pair * known).sum() / known.sum().clamp(min=1)

    def class_probabilities(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """``(M, 2)``: ``(1 - p, p)`` with ``p = sigmoid(z)`` for each (case, finding) with a known target.

        A sigmoid output is the two-class softmax of logits ``(0, z)``, so each finding is a binary
        classifier whose probability vector is ``(1 - p, p)``; masked (uncertain) targets are left out.
        """
        p = torch.sigmoid(outputs)[batch["label"] >= 0]
        return torch.stack([1 - p, p], dim=1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: Dataset) -> pd.DataFrame:
        assert self.labels is not None
        model.eval()
        rows: list[dict[str, Any]] = []
        for batch in self.batches(dataset):
            scores = torch.sigmoid(model(batch["image"])).numpy()
            targets = batch["label"].numpy()
            for i, case_id in enumerate(batch["case_id"]):
                for j, label in enumerate(self.labels):
                    rows.append({"case_id": case_id, "label": label,
                                 "score": float(scores[i, j]), "target": float(targets[i, j])})
        return records_frame(rows, RECORD_COLUMNS)

    def predict(self, records: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
        cut = self.config.threshold if threshold is None else threshold
        return records.assign(prediction=(records["score"] >= cut).astype(int))

    def metrics(self, records: pd.DataFrame) -> dict[str, float]:
        """AUROC of ``score``; confusion metrics of ``prediction`` (default: ``score >= threshold``)."""
        if "prediction" not in records:
            records = self.predict(records)
        per_label: dict[str, dict[str, float]] = {}
        for label, group in records.groupby("label", sort=False):
            scores, targets = group["score"].to_numpy(), group["target"].to_numpy()
            predicted = group["prediction"].to_numpy(dtype=float)
            per_label[str(label)] = {"auroc": auroc(scores, targets), **confusion_metrics(predicted, targets, 0.5)}
        if len(per_label) == 1:
            return next(iter(per_label.values()))
        out: dict[str, float] = {}
        for name in ("auroc", "accuracy", "sensitivity", "specificity", "precision", "f1"):
            values = [m[name] for m in per_label.values()]
            out[name] = float(np.nanmean(values)) if not np.all(np.isnan(values)) else float("nan")
            out.update({f"{name}/{label}": m[name] for label, m in per_label.items()})
        # support-weighted F1 (scikit-learn's average="weighted"): labels weighted by their positives
        support = records[records["target"] == 1].groupby("label", sort=False).size()
        weights = np.array([float(support.get(label, 0)) for label in per_label])
        f1 = np.array([m["f1"] for m in per_label.values()])
        keep = np.isfinite(f1) & (weights > 0)
        out["f1_weighted"] = float((weights[keep] * f1[keep]).sum() / weights[keep].sum()) if keep.any() else float("nan")
        return out
