"""DeLong's test for two correlated AUROCs (DeLong, DeLong & Clarke-Pearson 1988).

Structural components ("placement values") by midranks, the fast algorithm of Sun & Xu (2014): with ``m``
positives, ``n`` negatives, ``T`` midranks over all cases, ``T⁺`` within positives and ``T⁻`` within
negatives, ``V10_i = (T_i - T⁺_i) / n`` per positive and ``V01_j = 1 - (T_j - T⁻_j) / m`` per negative;
``AUROC = mean(V10)``. For two scores on the same cases ``S = S10/m + S01/n`` (sample covariances of the
components), ``Var(Â - B̂) = S_AA + S_BB - 2 S_AB`` and ``z = (Â - B̂)/√Var``, two-sided ``P = 2Φ(-|z|)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import rankdata


@dataclass(frozen=True)
class DeLongResult:
    auroc_a: float
    auroc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    low: float
    high: float
    n_positive: int
    n_negative: int


def placement_values(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V10, V01)``: each positive's share of negatives below it, each negative's share of positives above
    it (ties one half)."""
    scores = np.asarray(scores, dtype=np.float64)
    all_ranks = rankdata(scores)
    m, n = int(positive.sum()), int((~positive).sum())
    v10 = (all_ranks[positive] - rankdata(scores[positive])) / n
    v01 = 1.0 - (all_ranks[~positive] - rankdata(scores[~positive])) / m
    return v10, v01


def delong_test(
    scores_a: np.ndarray, scores_b: np.ndarray, targets: np.ndarray, confidence: float = 0.95
) -> DeLongResult:
    """Compare the AUROCs of two scores of the same cases (targets 1/0; negative targets are masked)."""
    scores_a, scores_b, targets = (np.asarray(x) for x in (scores_a, scores_b, targets))
    if not (scores_a.shape == scores_b.shape == targets.shape):
        raise ValueError(f"shapes differ: {scores_a.shape}, {scores_b.shape}, {targets.shape}")
    keep = targets >= 0
    scores_a, scores_b, positive = scores_a[keep], scores_b[keep], targets[keep] == 1
    m, n = int(positive.sum()), int((~positive).sum())
    nan = float("nan")
    if m < 2 or n < 2:  # a covariance needs two components of each class
        return DeLongResult(nan, nan, nan, nan, nan, nan, nan, nan, m, n)
    v10_a, v01_a = placement_values(scores_a, positive)
    v10_b, v01_b = placement_values(scores_b, positive)
    s10 = np.cov(np.stack([v10_a, v10_b]))
    s01 = np.cov(np.stack([v01_a, v01_b]))
    s = s10 / m + s01 / n
    variance = max(float(s[0, 0] + s[1, 1] - 2 * s[0, 1]), 0.0)
    auroc_a, auroc_b = float(v10_a.mean()), float(v10_b.mean())
    difference = auroc_a - auroc_b
    se = float(np.sqrt(variance))
    if se == 0.0:  # no variance: equal AUROCs agree (P = 1); a difference has no estimable uncertainty
        z = 0.0 if difference == 0 else nan
    else:
        z = difference / se
    p_value = float(2 * ndtr(-abs(z))) if np.isfinite(z) else nan
    half = float(ndtri(0.5 + confidence / 2)) * se
    return DeLongResult(auroc_a, auroc_b, difference, se, float(z), p_value, difference - half, difference + half, m, n)
