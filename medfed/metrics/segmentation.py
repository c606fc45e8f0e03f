"""Segmentation overlap metrics per case and per channel, BraTS regions.

BraTS regions from a label map with labels 0 background, 1 necrotic/non-enhancing core, 2 oedema,
4 enhancing tumour (Menze et al. 2015; Bakas et al. 2018): ET = {4}, TC = {1, 4}, WT = {1, 2, 4}. Channel
order ``[TC, WT, ET]`` is MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``, which the BraTS adapter uses.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

REGIONS: tuple[str, ...] = ("TC", "WT", "ET")


def brats_regions(label: np.ndarray, axis: int = 0, enhancing_label: int = 4) -> np.ndarray:
    """Boolean region masks stacked at ``axis`` in order TC, WT, ET.

    ``label`` of shape ``(*spatial)`` gives ``(3, *spatial)``; a batch ``(B, *spatial)`` with ``axis=1`` gives
    ``(B, 3, *spatial)``. ``enhancing_label=3`` reads BraTS 2023-style maps.
    """
    label = np.asarray(label)
    et = (enhancing_label,)
    members = {"TC": (1, *et), "WT": (1, 2, *et), "ET": et}
    return np.stack([np.isin(label, members[name]) for name in REGIONS], axis=axis)


def dice(pred: np.ndarray, target: np.ndarray, empty_value: float = 1.0) -> np.ndarray:
    """Dice ``2|P ∩ T| / (|P| + |T|)`` per case and channel of binary arrays ``(B, C, *spatial)`` -> ``(B, C)``.

    When both masks are empty the score is ``empty_value`` (1.0: the BraTS convention, a correctly absent
    structure is perfect; MONAI's ``ignore_empty=False`` gives the same); one empty -> 0.
    """
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    if pred.ndim < 3:
        raise ValueError(f"expected (B, C, *spatial), got shape {pred.shape}")
    axes = tuple(range(2, pred.ndim))
    intersection = np.logical_and(pred, target).sum(axis=axes, dtype=np.int64)
    total = pred.sum(axis=axes, dtype=np.int64) + target.sum(axis=axes, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = 2.0 * intersection / total
    return np.where(total == 0, empty_value, score)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every true voxel of ``mask``, ``None`` when ``mask`` is empty
    (per-axis ``any`` projections, no coordinate list)."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others) if others else mask)
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its erosion by the face-connected cross (as MONAI's ``get_mask_edges``).

    Voxels outside the array count as background (scipy's ``binary_erosion`` with ``border_value=0``, which
    MONAI uses); the erosion is a logical AND of the 2 x ndim face-neighbour shifts of a zero-padded copy.
    """
    padded = np.pad(mask, 1)
    centre = (slice(1, -1),) * mask.ndim
    interior = mask.copy()
    for axis in range(mask.ndim):
        for lo, hi in ((0, -2), (2, None)):
            shifted = list(centre)
            shifted[axis] = slice(lo, hi)
            interior &= padded[tuple(shifted)]
    return mask & ~interior


def _surface_distances(from_edges: np.ndarray, to_edges: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Euclidean distance (``scale`` units per voxel axis) from every voxel of ``from_edges`` to the nearest
    voxel of ``to_edges``: an exact k-d tree query on the scaled voxel coordinates. Voxels on both boundaries
    are 0 and skip the query."""
    shared = np.count_nonzero(from_edges & to_edges)
    targets = np.argwhere(to_edges) * scale
    queries = np.argwhere(from_edges & ~to_edges) * scale
    tree = cKDTree(targets, leafsize=32, balanced_tree=False, compact_nodes=False)
    distances = tree.query(queries, k=1)[0] if len(queries) else np.empty(0)
    return np.concatenate([np.zeros(shared), distances])


def hausdorff95(
    pred: np.ndarray,
    target: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    both_empty: float = 0.0,
    one_empty: float = float("nan"),
) -> float:
    """95th-percentile symmetric Hausdorff distance (in ``spacing`` units, mm for NIfTI) of two binary masks.

    ``HD95 = max(P95{d(p, ∂T) : p ∈ ∂P}, P95{d(t, ∂P) : t ∈ ∂T})`` over boundary voxels ∂ (mask XOR its
    face-connected erosion), Euclidean distances between voxel centres scaled by ``spacing``, percentiles with
    linear interpolation (numpy's default, as ``torch.quantile``): the definition of MONAI's
    ``compute_hausdorff_distance(percentile=95, directed=False)`` and the BraTS evaluation. Both masks are
    cropped to their union bounding box (plus one voxel) before the erosion, and the nearest-boundary
    distances are exact k-d tree queries over boundary voxels only, so the cost follows the structure's
    surface, not the image's size. Both empty -> ``both_empty`` (BraTS: 0); exactly one empty -> ``one_empty``
    (NaN here; challenge scoring substitutes a penalty explicitly).
    """
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    box = _bounding_box(pred | target)
    if box is None:
        return both_empty
    pred, target = pred[box], target[box]
    if not pred.any() or not target.any():
        return one_empty
    scale = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, dtype=np.float64), (pred.ndim,))
    pred_edges, target_edges = _edges(pred), _edges(target)
    to_target = _surface_distances(pred_edges, target_edges, scale)
    to_pred = _surface_distances(target_edges, pred_edges, scale)
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))


def regions_to_label(regions: np.ndarray, enhancing_label: int = 4) -> np.ndarray:
    """BraTS label map (uint8) from boolean region masks ``[TC, WT, ET]`` stacked on axis 0 (the inverse of
    :func:`brats_regions` for nested regions): ``WT -> 2``, then ``TC -> 1``, then ``ET -> enhancing_label``,
    each overwriting the previous, the usual BraTS post-processing of per-region sigmoid outputs."""
    regions = np.asarray(regions, dtype=bool)
    if regions.shape[0] != len(REGIONS):
        raise ValueError(f"expected {len(REGIONS)} region channels (TC, WT, ET), got shape {regions.shape}")
    tc, wt, et = regions
    label = np.zeros(regions.shape[1:], dtype=np.uint8)
    label[wt] = 2
    label[tc] = 1
    label[et] = enhancing_label
    return label
