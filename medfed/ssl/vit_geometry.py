"""A ViT's patch grid, resized: position embeddings to another grid, patch kernels to another patch size.

Shared by the checkpoint loaders (:mod:`medfed.ssl.checkpoints`, :mod:`medfed.ssl.dinov2`); pure torch maths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medfed.errors import MedfedError

POS_KEY = "patch_embedding.position_embeddings"
PATCH_KEY = "patch_embedding.patch_embeddings.weight"


class CheckpointError(MedfedError):
    """A checkpoint cannot be read or does not fit the model (the message names the file and every reason)."""


def key_list(keys: Sequence[str], limit: int = 4) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f" ({', '.join(keys[:limit])}{more})"


def shape_text(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def resize_patch_kernel(weight: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Patch kernel (D, C, p_src, p_src) -> (D, C, *size): bilinear resize (align_corners=False) times
    ``p_src^2 / prod(size)`` (``(p_src / p)^2``), then a uniform shift per (D, C) kernel so that
    ``sum(W') = sum(W)`` exactly: a constant image keeps its patch embedding (for integer ratios the shift is
    ~0). FlexiViT's pseudo-inverse resize (Beyer et al., CVPR 2023) preserves the embedding of every smooth
    patch more exactly; this is the simple, common choice."""
    size = tuple(int(s) for s in size)
    resized = F.interpolate(weight, size=size, mode="bilinear", align_corners=False, antialias=False)
    resized = resized * (weight.shape[2] * weight.shape[3] / math.prod(size))
    shift = (weight.sum(dim=(2, 3), keepdim=True) - resized.sum(dim=(2, 3), keepdim=True)) / math.prod(size)
    return resized + shift


def interpolate_position_embeddings(
    pos: torch.Tensor, grid: Sequence[int], source_grid: Sequence[int] | None = None
) -> torch.Tensor:
    """Patch position embeddings (1, N_src, D) -> (1, prod(grid), D): reshaped to the source grid (row-major,
    as the conv tokens are flattened; square or cubic when ``source_grid`` is None), resized with bicubic
    (2-D) or trilinear (3-D) interpolation, align_corners=False, as DINOv2 does for other resolutions.
    ValueError when N_src is not a square/cube and no ``source_grid`` is given."""
    grid = tuple(int(g) for g in grid)
    n, dim = pos.shape[1], pos.shape[2]
    if source_grid is None:
        source_grid = (_side(n, len(grid)),) * len(grid)
    source_grid = tuple(int(g) for g in source_grid)
    if math.prod(source_grid) != n:
        raise ValueError(f"{n} position embeddings do not fill a {source_grid} grid")
    if source_grid == grid:
        return pos.clone()
    x = pos.float().reshape(1, *source_grid, dim).movedim(-1, 1)
    x = F.interpolate(x, size=grid, mode="bicubic" if len(grid) == 2 else "trilinear", align_corners=False)
    return x.movedim(1, -1).reshape(1, math.prod(grid), dim).to(pos.dtype)


def _side(n: int, dims: int) -> int:
    side = round(n ** (1 / dims))
    if side**dims != n:
        raise ValueError(f"{n} position embeddings are not a {'square' if dims == 2 else 'cubic'} grid")
    return side


def interpolate_patch_grid(
    patches: torch.Tensor, wanted: torch.Tensor, grid: Sequence[int] | None, dims: int, where: str, notes: list[str]
) -> torch.Tensor:
    dims = len(grid) if grid is not None else dims
    try:
        if grid is None:
            grid = (_side(wanted.shape[1], dims),) * dims
        if math.prod(grid) != wanted.shape[1]:
            raise ValueError(f"grid {tuple(grid)} does not have the model's {wanted.shape[1]} patches")
        source = (_side(patches.shape[1], dims),) * dims
        out = interpolate_position_embeddings(patches, grid, source)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {where}: cannot interpolate the position embeddings ({err}); pass "
                              "grid=(rows, cols) for a model with a non-square patch grid") from None
    notes.append(f"Position embeddings interpolated from a {'x'.join(map(str, source))} to a "
                 f"{'x'.join(map(str, grid))} patch grid ({'bicubic' if dims == 2 else 'trilinear'}).")
    return out
