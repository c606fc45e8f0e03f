"""Masked-volume SSL for 3D MRI: reconstruct the volume from two masked views, plus a contrastive term between
the two reconstructions, as MONAI's self-supervised pretraining tutorial does for its ViT autoencoder (after
Tang et al., CVPR 2022, Swin UNETR pretraining: inpainting + contrastive coding).

The network is the segmentation task's own (``unet`` by default) with its usual outputs (one per BraTS
region); a 1x1x1 convolution (``head``) maps them back to the input channels for reconstruction, so after
pretraining every tensor of the segmentation network loads unchanged (:func:`medfed.ssl.simclr.encoder_state`
reads ``model.encoder``) and the reconstruction head is dropped, like SimCLR's projector.

Views: ``boxes`` random cuboids, each ``box_fraction`` of every side, set to 0 (the z-scored background) in
all channels, and a random per-channel intensity scale (``1 +- scale``) and shift (``+- shift``): MRI
intensity varies between scanners while anatomy does not; no flips or rotations. Loss per batch:
``L1(AE(v1), x) + L1(AE(v2), x) + contrastive_weight * NT-Xent(flat AE(v1), flat AE(v2))``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from medfed.ssl.objectives import nt_xent
from medfed.ssl.task import PretrainTask
from medfed.tasks.base import TaskConfigBase
from medfed.tasks.models import build_network


class MaskedVolumeConfig(TaskConfigBase):
    kind: Literal["masked_volume"] = "masked_volume"
    network: str = "unet"
    in_channels: int = 4
    out_channels: int = 3  # the segmentation network's outputs (TC, WT, ET)
    boxes: int = Field(4, ge=1)
    box_fraction: float = Field(0.25, gt=0, lt=1)
    scale: float = Field(0.1, ge=0)
    shift: float = Field(0.1, ge=0)
    contrastive_weight: float = Field(0.1, ge=0)
    temperature: float = Field(0.5, gt=0)
    splits: list[str] = Field(default_factory=lambda: ["train"], min_length=1)


class MaskedVolumeModel(nn.Module):
    """``encoder`` (the segmentation network) followed by a 1x1x1 reconstruction ``head``."""

    def __init__(self, encoder: nn.Module, out_channels: int, in_channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Conv3d(out_channels, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def masked_view(x: torch.Tensor, config: MaskedVolumeConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (B, C, D, H, W) with ``config.boxes`` random cuboids zeroed and a per-channel intensity change."""
    b, c, *sizes = x.shape
    grids = torch.meshgrid(*[torch.arange(n) for n in sizes], indexing="ij")
    keep = torch.ones((b, 1, *sizes), dtype=torch.bool)
    for _ in range(config.boxes):  # a few boxes; each box is vectorised over the batch and the volume
        inside = torch.ones((b, *sizes), dtype=torch.bool)
        for axis, n in enumerate(sizes):
            width = max(1, round(config.box_fraction * n))
            start = torch.randint(0, n - width + 1, (b,), generator=generator)
            coord = grids[axis].unsqueeze(0)
            view_shape = (b,) + (1,) * len(sizes)
            inside &= (coord >= start.view(view_shape)) & (coord < (start + width).view(view_shape))
        keep &= ~inside.unsqueeze(1)
    scale = 1 + config.scale * (2 * torch.rand((b, c) + (1,) * len(sizes), generator=generator) - 1)
    shift = config.shift * (2 * torch.rand((b, c) + (1,) * len(sizes), generator=generator) - 1)
    return (x * scale + shift) * keep


class MaskedVolumeTask(PretrainTask):
    kind: ClassVar[str] = "ssl_masked_volume"
    #: weight entries that stay at each site in federated pretraining (never aggregated)
    local_prefixes: ClassVar[tuple[str, ...]] = ("head.",)
    config: MaskedVolumeConfig

    def build_model(self, seed: int) -> nn.Module:
        encoder = build_network({"name": self.config.network, **self.config.model}, default=self.config.network,
                                spatial_dims=3, in_channels=self.config.in_channels,
                                out_channels=self.config.out_channels, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MaskedVolumeModel(encoder, self.config.out_channels, self.config.in_channels)

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x = batch["image"]
        return model(masked_view(x, self.config)), model(masked_view(x, self.config))

    def criterion(self, outputs: Any, batch: dict[str, Any]) -> torch.Tensor:
        x = batch["image"]
        first, second = outputs
        loss = F.l1_loss(first, x) + F.l1_loss(second, x)
        if self.config.contrastive_weight > 0 and x.shape[0] >= 2:
            loss = loss + self.config.contrastive_weight * nt_xent(first.flatten(1), second.flatten(1),
                                                                   self.config.temperature)
        return loss
