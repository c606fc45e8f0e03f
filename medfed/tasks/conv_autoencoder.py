"""The convolutional autoencoder of the FedAgain papers (Reyes-Amezcua et al., arXiv 2510.06230, 2025;
arXiv 2603.19512, 2026), as described there and in the authors' code: architecture facts only.

Encoder: ``L`` convolutions, kernel 4, stride 2, padding 1, each followed by batch norm and LeakyReLU(0.2),
widths ``channels`` (paper: 64, 128, 256, 512, 1024 on 256 x 256 RGB input, so an 8 x 8 map), then global
average pooling and a linear map to a ``latent_dim`` code (paper: 128).
Decoder: a linear map back to ``channels[-1] x s x s`` (``s = image_size / 2^L``), ``L`` transposed
convolutions (kernel 4, stride 2, padding 1) mirroring the encoder widths, batch norm and ReLU after all but
the last, and a sigmoid output (images in [0, 1]). Trained with the mean squared reconstruction error.

``forward`` returns the reconstruction only (the latent code is :meth:`encode`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

PAPER_CHANNELS = (64, 128, 256, 512, 1024)


class ConvAutoencoder(nn.Module):
    """``AE(x)``: the papers' encoder-decoder; ``image_size`` must be divisible by ``2 ** len(channels)``."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        channels: Sequence[int] = PAPER_CHANNELS,
        latent_dim: int = 128,
        image_size: int = 256,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        depth = len(channels)
        if depth < 1 or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive widths, got {channels}")
        if image_size % (2**depth):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{depth} (one halving per layer of {channels})")
        self.image_size = int(image_size)
        self.bottleneck = (channels[-1], image_size // 2**depth, image_size // 2**depth)
        widths = [in_channels, *channels]
        encoder: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            encoder += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*encoder, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], latent_dim))
        self.expand = nn.Linear(latent_dim, channels[-1] * self.bottleneck[1] * self.bottleneck[2])
        out = in_channels if out_channels is None else out_channels
        back = [*channels[::-1], out]
        decoder: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(itertools.pairwise(back)):
            decoder.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))
            decoder += [nn.BatchNorm2d(c_out), nn.ReLU()] if i < depth - 1 else [nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"the autoencoder was built for {self.image_size} x {self.image_size} images, got "
                             f"{tuple(x.shape[-2:])}; set the task's model.image_size to the site's image size")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.expand(z).view(-1, *self.bottleneck))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
