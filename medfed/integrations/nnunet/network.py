"""nnU-Net's network and loss, built from a plans file, for medfed's segmentation task.

The network is nnU-Net's own (``get_network_from_plans``: the plans' ``architecture`` class, e.g.
``dynamic_network_architectures``' ``PlainConvUNet``, with its He initialisation); the loss is nnU-Net's
region loss (``DC_and_BCE_loss``: soft Dice with sigmoid over the region channels + binary cross-entropy,
the plans' ``batch_dice``) under its deep supervision (``DeepSupervisionWrapper``: the decoder's output at
scale i weighs 2^-i, the lowest resolution 0, weights normalised to sum 1; targets reduced to each scale by
``nearest-exact`` resampling, as batchgeneratorsv2's ``DownsampleSegForDSTransform``), following Isensee et al.,
Nature Methods 2021. Output channels are medfed's BraTS regions ``[TC, WT, ET]``.

Axes: nnU-Net plans are in its array order (Z, Y, X for NIfTI, then ``transpose_forward``); medfed's volumes
are nibabel's (X, Y, Z). :class:`NnUNetNetwork` permutes on the way in and back on the way out, and
:class:`NnUNetPlan` gives patch size and spacing in medfed's order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medfed.errors import ConfigError

NIBABEL_TO_NNUNET = (2, 1, 0)  # nnU-Net's NIfTI array axis i is nibabel's axis NIBABEL_TO_NNUNET[i]


@dataclass(frozen=True)
class NnUNetPlan:
    """One configuration of an nnU-Net plans file, as medfed uses it."""

    plans: dict[str, Any]
    configuration: str
    source: str

    @classmethod
    def load(cls, path: Path | str, configuration: str = "3d_fullres") -> NnUNetPlan:
        path = Path(path)
        try:
            plans = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read nnU-Net plans ({err})") from None
        if configuration not in plans.get("configurations", {}):
            raise ConfigError(f"{path}: no configuration {configuration!r}; the plans have "
                              f"{sorted(plans.get('configurations', {}))}")
        plan = cls(plans, configuration, str(path))
        if len(plan.manager.patch_size) != 3:
            raise ConfigError(f"{path}: configuration {configuration!r} is not 3D; use 3d_fullres (or 3d_lowres)")
        return plan

    @property
    def manager(self):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        return PlansManager(self.plans).get_configuration(self.configuration)

    @property
    def network_axes(self) -> list[int]:
        """Network input axis i is medfed's spatial axis ``network_axes[i]``."""
        forward = self.plans.get("transpose_forward", [0, 1, 2])
        return [NIBABEL_TO_NNUNET[t] for t in forward]

    def _to_medfed(self, values: Any) -> list[Any]:
        out: list[Any] = [None] * 3
        for i, axis in enumerate(self.network_axes):
            out[axis] = values[i]
        return out

    @property
    def patch_size(self) -> list[int]:
        """Training patch in medfed's (X, Y, Z) order."""
        return [int(v) for v in self._to_medfed(list(self.manager.patch_size))]

    @property
    def spacing(self) -> list[float]:
        """Target voxel size (mm) in medfed's (X, Y, Z) order."""
        return [float(v) for v in self._to_medfed(list(self.manager.spacing))]

    @property
    def deep_supervision_weights(self) -> np.ndarray:
        return deep_supervision_weights(len(self.manager.pool_op_kernel_sizes))

    def problems(self, in_channels: int) -> list[str]:
        """What this plan cannot do in medfed (empty: fine)."""
        out = []
        schemes = list(self.manager.normalization_schemes)
        if any(s != "ZScoreNormalization" for s in schemes):
            out.append(f"{self.source}: normalisation {schemes}; medfed's BraTS sites z-score each channel over "
                       "the brain (nnU-Net's ZScoreNormalization), other schemes are not applied")
        masks = list(self.manager.use_mask_for_norm)
        if not all(masks):
            out.append(f"{self.source}: use_mask_for_norm {masks}; medfed's BraTS sites z-score over the brain "
                       "(the nonzero voxels), as nnU-Net does only when use_mask_for_norm is true")
        if len(schemes) != in_channels:
            out.append(f"{self.source}: the plans' dataset has {len(schemes)} channels, the task {in_channels}")
        return out

    @property
    def divisor(self) -> list[int]:
        """What each side of a network input must be a multiple of (the product of the pooling strides), in
        medfed's (X, Y, Z) order."""
        strides = np.prod(np.asarray(self.manager.pool_op_kernel_sizes, dtype=np.int64), axis=0)
        return [int(v) for v in self._to_medfed(list(strides))]

    def patch_problems(self, patch: Sequence[int]) -> list[str]:
        """Why ``patch`` (medfed order) cannot pass through the plans' network (empty: it can)."""
        if len(patch) != 3 or any(p % d for p, d in zip(patch, self.divisor)):
            return [(f"task patch_size {list(patch)} must be 3 sides, each a multiple of {self.divisor} (the plans' "
                    "pooling strides, X, Y, Z); leave it unset to use the plans' patch size")]
        return []


def deep_supervision_weights(stages: int) -> np.ndarray:
    """nnU-Net's loss weights for a network of ``stages`` resolution stages (``len(pool_op_kernel_sizes)``):
    w_i = 2^-i for the decoder's ``stages - 1`` outputs (full resolution first), the lowest set to 0, then
    normalised to sum 1."""
    weights = np.array([1 / 2**i for i in range(stages - 1)])
    weights[-1] = 0
    return weights / weights.sum()


class NnUNetNetwork(nn.Module):
    """nnU-Net's network on medfed's (B, C, X, Y, Z) tensors.

    Training mode returns the deep-supervision outputs (full resolution first), evaluation mode the
    full-resolution logits only; both in medfed's axis order.
    """

    def __init__(self, plan: NnUNetPlan, in_channels: int, out_channels: int) -> None:
        super().__init__()
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        manager = plan.manager
        self.network = get_network_from_plans(
            manager.network_arch_class_name, manager.network_arch_init_kwargs,
            manager.network_arch_init_kwargs_req_import, in_channels, out_channels,
            allow_init=True, deep_supervision=True)
        self.forward_order = [0, 1, *(2 + a for a in plan.network_axes)]
        self.backward_order = [int(i) for i in np.argsort(self.forward_order)]

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.network.decoder.deep_supervision = self.training
        outputs = self.network(image.permute(*self.forward_order))
        if isinstance(outputs, list | tuple):
            return [o.permute(*self.backward_order) for o in outputs]
        return outputs.permute(*self.backward_order)


def build_nnunet_network(plan: NnUNetPlan, in_channels: int, out_channels: int, seed: int) -> NnUNetNetwork:
    """The plans' network with nnU-Net's initialisation drawn from ``seed`` (the global torch RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NnUNetNetwork(plan, in_channels, out_channels)


class DeepSupervisionLoss(nn.Module):
    """nnU-Net's region loss (Dice + BCE) over every deep-supervision output; targets resampled (nearest)."""

    def __init__(self, plan: NnUNetPlan) -> None:
        super().__init__()
        from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
        from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

        region_loss = DC_and_BCE_loss({}, {"batch_dice": bool(plan.manager.batch_dice), "do_bg": True,
                                           "smooth": 1e-5, "ddp": False},
                                      use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)
        self.weights = plan.deep_supervision_weights
        self.loss = DeepSupervisionWrapper(region_loss, [float(w) for w in self.weights])  # python floats keep autograd

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):  # evaluation mode: the full-resolution output alone
            return self.loss.loss(outputs, target)
        targets = [target if o.shape[2:] == target.shape[2:] else
                   F.interpolate(target, size=o.shape[2:], mode="nearest-exact") for o in outputs]
        return self.loss(outputs, targets)
