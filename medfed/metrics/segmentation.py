"""Segmentation overlap metrics per case and per channel, BraTS regions.

BraTS regions from a label map with labels 0 background, 1 necrotic/non-enhancing core, 2 oedema,
4 enhancing tumour (Menze et al. 2015; Bakas et al. 2018): ET = {4}, TC = {1, 4}, WT = {1, 2, 4}. Channel
order ``[TC, WT, ET]`` is MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``, which the BraTS adapter uses.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its erosion by the face-connected cross (as MONAI's ``get_mask_edges``)."""
    return mask ^ ndimage.binary_erosion(mask)


def hausdorff95(
    pred: np.ndarray,
    target: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    both_empty: float = 0.0,
    one_empty: float = float("nan"),
) -> float:
    """95th-percentile symmetric Hausdorff distance (in ``spacing`` units, mm for NIfTI) of two binary masks.

    ``HD95 = max(P95{d(p, ∂T) : p ∈ ∂P}, P95{d(t, ∂P) : t ∈ ∂T})`` over boundary voxels ∂, the definition of
    MONAI's ``compute_hausdorff_distance(percentile=95)`` and the BraTS evaluation. Both masks are cropped to
    their union bounding box (plus one voxel) before the distance transforms, so the cost follows the
    structure's size, not the image's. Both empty -> ``both_empty`` (BraTS: 0); exactly one empty ->
    ``one_empty`` (NaN here; challenge scoring substitutes a penalty explicitly).
    """
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    has_pred, has_target = pred.any(), target.any()
    if not has_pred and not has_target:
        return both_empty
    if not has_pred or not has_target:
        return one_empty
    union = np.argwhere(pred | target)
    lo = np.maximum(union.min(axis=0) - 1, 0)
    hi = union.max(axis=0) + 2
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    pred_edges, target_edges = _edges(pred[box]), _edges(target[box])
    sampling = spacing if spacing is not None else None
    to_target = ndimage.distance_transform_edt(~target_edges, sampling=sampling)[pred_edges]
    to_pred = ndimage.distance_transform_edt(~pred_edges, sampling=sampling)[target_edges]
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))
