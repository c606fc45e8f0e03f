"""Brain-tumour segmentation on BraTS regions (4-channel MRI in, TC / WT / ET out).

Region-based training as in the BraTS literature and nnU-Net's region mode (Isensee et al. 2021): one
sigmoid channel per overlapping region ``[TC, WT, ET]``; loss = soft Dice (MONAI ``DiceLoss``, sigmoid,
mean over channels and batch) + binary cross-entropy. Training uses random patches of ``patch_size``
(MONAI ``RandSpatialCropd``, seeded) or whole volumes; inference on volumes larger than the patch uses
MONAI sliding-window inference. Records: one row per case and region with Dice and HD95 (mm) of the
thresholded prediction (:mod:`medfed.metrics.segmentation`).

``model: {name: nnunet, plans: nnUNetPlans.json, configuration: 3d_fullres}`` trains nnU-Net's network from
a plans file (``medfed nnunet plan`` derives one for a federation) with nnU-Net's deep-supervised Dice + BCE
(:mod:`medfed.integrations.nnunet.network`, found through :mod:`medfed.tasks.plugins`): volumes are resampled to the plans' spacing (images trilinear,
labels nearest), training patches have the plans' patch size, inference runs a Gaussian sliding window of
that size and resamples the logits back to each case's own grid, where the metrics are computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.transforms import Compose, DivisiblePadd, RandSpatialCropd, SpatialPadd
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, Dataset

from medfed.errors import ConfigError, Problem
from medfed.metrics import dice, hausdorff95
from medfed.metrics.segmentation import REGIONS
from medfed.sites.base import Site
from medfed.tasks import plugins
from medfed.tasks.base import Task, TaskConfigBase, records_frame
from medfed.tasks.models import build_network

RECORD_COLUMNS = ("case_id", "region", "dice", "hd95", "pred_voxels", "target_voxels")


class SegmentationConfig(TaskConfigBase):
    kind: Literal["segmentation"] = "segmentation"
    in_channels: int = 4
    batch_size: int = Field(2, ge=1)
    eval_batch_size: int = Field(1, ge=1)
    patch_size: list[int] | None = Field(None, description="training patch; null = whole (padded) volumes")
    divisible: int = Field(8, ge=1, description="pad volumes so each side is a multiple of this (network strides)")
    sw_batch_size: int = Field(2, ge=1)
    sw_overlap: float = Field(0.25, ge=0, lt=1)
    threshold: float = Field(0.5, gt=0, lt=1)
    dice_weight: float = Field(1.0, ge=0)
    bce_weight: float = Field(1.0, ge=0)


def _nnunet_plan(config: SegmentationConfig) -> Any:
    """The nnU-Net plan of ``model: {name: nnunet, plans, configuration}``, else ``None``."""
    if str(config.model.get("name", "")).lower() != "nnunet":
        return None
    unknown = sorted(set(config.model) - {"name", "plans", "configuration", "init"})
    if unknown or "plans" not in config.model:
        raise ConfigError(f"task model nnunet: needs `plans` (an nnUNetPlans.json), optional `configuration` "
                          f"(default 3d_fullres) and `init`; unknown: {unknown}")
    return plugins.provider(plugins.NETWORKS, "nnunet").plan(config.model, config.patch_size)


class _SpacingArray:
    """``spacing`` as a float array, so batches collate it to ``(B, 3)``."""

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item["spacing"] = np.asarray(item.get("spacing", (1.0, 1.0, 1.0)), dtype=np.float64)
        return item


class _ResampleTo:
    """Image (trilinear) and, when ``with_label``, label (nearest) resampled from the case's ``spacing`` to
    ``target`` mm; the new shape is round(shape * spacing / target), as nnU-Net's ``compute_new_shape``."""

    def __init__(self, target: Sequence[float], with_label: bool) -> None:
        self.target = np.asarray(target, dtype=np.float64)
        self.with_label = with_label

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        spacing = np.asarray(item["spacing"], dtype=np.float64)
        shape = np.asarray(item["image"].shape[1:])
        size = [int(v) for v in np.round(shape * spacing / self.target)]
        if list(shape) == size:
            return item
        item["image"] = F.interpolate(item["image"][None], size=size, mode="trilinear", align_corners=False)[0]
        if self.with_label:
            item["label"] = F.interpolate(item["label"][None], size=size, mode="nearest")[0]
            item["spacing"] = self.target.copy()
        return item


class SegmentationTask(Task):
    kind: ClassVar[str] = "segmentation"
    primary_metric: ClassVar[str] = "dice_mean"
    config: SegmentationConfig

    def __init__(self, config: SegmentationConfig) -> None:
        super().__init__(config)
        self.dice_loss = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.nnunet = _nnunet_plan(config)
        if self.nnunet is not None:
            self.deep_supervision_loss = plugins.provider(plugins.NETWORKS, "nnunet").loss(self.nnunet)

    @property
    def patch_size(self) -> list[int] | None:
        """The training / sliding-window patch: the task's, else the nnU-Net plans'."""
        if self.config.patch_size or self.nnunet is None:
            return self.config.patch_size
        return self.nnunet.patch_size

    def build_model(self, seed: int) -> nn.Module:
        if self.nnunet is not None:
            model = plugins.provider(plugins.NETWORKS, "nnunet").build(self.nnunet, self.config.in_channels,
                                                                      len(REGIONS), seed)
            if self.config.model.get("init") is not None:
                from medfed.tasks.models import load_initial_weights

                load_initial_weights(model, self.config.model["init"], "nnunet")
            return model
        return build_network(
            self.config.model, default="unet", spatial_dims=3, in_channels=self.config.in_channels,
            out_channels=len(REGIONS), seed=seed,
        )

    def check_site(self, site: Site) -> list[Problem]:
        if self.nnunet is not None:
            problems = [site.problem(p) for p in self.nnunet.problems(self.config.in_channels)]
            if problems:
                return problems
        if site.label_kind != "segmentation":
            return [site.problem(f"segmentation needs label maps; this {site.modality} site has image labels")]
        if len(site.split("train")) == 0:
            return [site.problem("no training case")]
        return []

    def _transform(self, site: Site, split: str, train: bool) -> Compose:
        steps: list[Any] = [site.default_transform(split), _SpacingArray()]
        keys = ("image", "label")
        if self.nnunet is not None:  # nnU-Net: the plans' spacing; patches (train) or a sliding window (eval)
            steps.append(_ResampleTo(self.nnunet.spacing, with_label=train))
            if train:
                steps += [SpatialPadd(keys=keys, spatial_size=self.patch_size),
                          RandSpatialCropd(keys=keys, roi_size=self.patch_size, random_size=False)]
            return Compose(steps)
        if train and self.config.patch_size:
            steps.append(RandSpatialCropd(keys=keys, roi_size=self.config.patch_size, random_size=False))
        steps.append(DivisiblePadd(keys=keys, k=self.config.divisible))
        return Compose(steps)

    def train_dataset(self, site: Site) -> Dataset:
        return site.dataset("train", transform=self._transform(site, "train", train=True))

    def eval_dataset(self, site: Site, split: str) -> Dataset:
        return site.dataset(split, transform=self._transform(site, split, train=False))

    def local_train(self, model: nn.Module, dataset: Dataset, *, seed: int = 0, **kwargs: Any):  # type: ignore[override]
        """As :meth:`Task.local_train`; random patches are drawn from ``seed`` too."""
        parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
        for i, part in enumerate(parts):
            transform = getattr(part, "transform", None)
            if isinstance(transform, Compose):
                transform.set_random_state(seed=(seed + i) % (2**32))
        return super().local_train(model, dataset, seed=seed, **kwargs)

    def criterion(self, outputs: torch.Tensor | list[torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        if self.nnunet is not None:
            return self.deep_supervision_loss(outputs, batch["label"].float())
        target = batch["label"].to(outputs.dtype)
        bce = F.binary_cross_entropy_with_logits(outputs, target)
        return self.config.dice_weight * self.dice_loss(outputs, target) + self.config.bce_weight * bce

    def _logits(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        patch = self.patch_size
        if self.nnunet is not None or (patch and any(s > p for s, p in zip(image.shape[2:], patch))):
            return sliding_window_inference(
                image, roi_size=patch, sw_batch_size=self.config.sw_batch_size, predictor=model,
                overlap=self.config.sw_overlap, mode="gaussian",
            )
        return model(image)

    def label_grid_logits(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Logits of ``batch["image"]`` on the grid of ``batch["label"]``: an input resampled to the nnU-Net
        plans' spacing is predicted there and its logits resampled back (trilinear), as nnU-Net does."""
        logits = self._logits(model, batch["image"])
        if logits.shape[2:] != batch["label"].shape[2:]:
            logits = F.interpolate(logits, size=batch["label"].shape[2:], mode="trilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: Dataset) -> pd.DataFrame:
        model.eval()
        rows: list[dict[str, Any]] = []
        for batch in self.batches(dataset):
            probabilities = torch.sigmoid(self.label_grid_logits(model, batch))
            pred = (probabilities >= self.config.threshold).numpy()
            target = batch["label"].numpy() > 0.5
            scores = dice(pred, target)
            spacing = np.asarray(batch["spacing"], dtype=np.float64).reshape(len(pred), -1)
            for i, case_id in enumerate(batch["case_id"]):
                for c, region in enumerate(REGIONS):
                    rows.append({
                        "case_id": case_id, "region": region, "dice": float(scores[i, c]),
                        "hd95": hausdorff95(pred[i, c], target[i, c], spacing=tuple(spacing[i])),
                        "pred_voxels": int(pred[i, c].sum()), "target_voxels": int(target[i, c].sum()),
                    })
        return records_frame(rows, RECORD_COLUMNS)

    def metrics(self, records: pd.DataFrame) -> dict[str, float]:
        """Per region: mean Dice over cases, mean HD95 over cases where it is defined; ``dice_mean`` over regions."""
        out: dict[str, float] = {}
        for region in REGIONS:
            group = records[records["region"] == region]
            out[f"dice_{region}"] = float(group["dice"].mean()) if len(group) else float("nan")
            finite = group["hd95"].to_numpy(dtype=float)
            finite = finite[np.isfinite(finite)]
            out[f"hd95_{region}"] = float(finite.mean()) if finite.size else float("nan")
        out["dice_mean"] = float(np.mean([out[f"dice_{r}"] for r in REGIONS]))
        return out
