"""Two random views of each radiograph for joint-embedding SSL, batched on the tensor (no per-image loop).

Augmentations chosen for anatomy, not natural images: a random resized crop that keeps most of the field of
view (``scale`` 0.5-1 of the area, aspect 3/4-4/3), a small rotation (+-``rotate_deg``, patient positioning),
brightness/contrast and gamma changes (exposure and detector response), Gaussian noise (quantum noise) and an
occasional slight blur. No flips (the heart is on the left; laterality is anatomy) and no colour jitter
(grey images). All draws come from the ``generator`` passed in, so views are reproducible.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


class RadiographViews:
    """``views(x, generator) -> (v1, v2)`` for a batch ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]``."""

    def __init__(
        self,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        rotate_deg: float = 10.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
        gamma: tuple[float, float] = (0.8, 1.25),
        noise: float = 0.03,
        blur_probability: float = 0.3,
    ) -> None:
        self.scale, self.ratio, self.rotate = scale, ratio, math.radians(rotate_deg)
        self.brightness, self.contrast, self.gamma = brightness, contrast, gamma
        self.noise, self.blur_probability = noise, blur_probability

    def _uniform(self, n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random view of every image (crop + rotation by one affine resampling, then intensity)."""
        b = x.shape[0]
        area = self._uniform(b, *self.scale, generator)
        log_ratio = self._uniform(b, math.log(self.ratio[0]), math.log(self.ratio[1]), generator)
        sx = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)  # crop size relative to the image
        sy = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
        tx = (1 - sx) * self._uniform(b, -1, 1, generator)  # crop centre inside the image
        ty = (1 - sy) * self._uniform(b, -1, 1, generator)
        angle = self._uniform(b, -self.rotate, self.rotate, generator)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([sx * cos, -sy * sin, tx], 1), torch.stack([sx * sin, sy * cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        shape = (b,) + (1,) * (x.ndim - 1)
        mean = out.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        contrast = self._uniform(b, 1 - self.contrast, 1 + self.contrast, generator).view(shape)
        shift = self._uniform(b, -self.brightness, self.brightness, generator).view(shape)
        out = ((out - mean) * contrast + mean + shift).clamp(0, 1)
        gamma = torch.exp(self._uniform(b, math.log(self.gamma[0]), math.log(self.gamma[1]), generator)).view(shape)
        out = out.clamp_min(1e-6) ** gamma
        blur = (torch.rand(b, generator=generator) < self.blur_probability).view(shape)
        blurred = F.avg_pool2d(out, 3, stride=1, padding=1, count_include_pad=False)
        out = torch.where(blur, blurred, out)
        out = out + self.noise * torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return out.clamp(0, 1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(x, generator), self.view(x, generator)
