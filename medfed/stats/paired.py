"""Wilcoxon signed-rank test on per-case paired values (Dice, HD95), with its effect size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata, wilcoxon


@dataclass(frozen=True)
class WilcoxonResult:
    """``n_pairs``: pairs the test used (finite on both sides, non-zero difference)."""

    statistic: float
    p_value: float
    n_pairs: int
    rank_biserial: float
    median_difference: float


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation ``r = (W⁺ - W⁻) / (W⁺ + W⁻)`` over non-zero differences
    ``a - b`` ranked by absolute value (Kerby 2014): +1 when every case has ``a > b``, -1 when every case has
    ``a < b`` (for a lower-is-better metric such as HD95, +1 means A is worse)."""
    d = differences[differences != 0]
    if d.size == 0:
        return 0.0
    ranks = rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (scipy; pairs with a non-finite value are dropped,
    zero differences dropped as in Wilcoxon's original method)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    used = int(np.count_nonzero(d))
    if d.size == 0 or used == 0:  # no pair, or every pair equal: nothing to test (P = 1 when all equal)
        return WilcoxonResult(float("nan"), 1.0 if d.size else float("nan"), 0, 0.0, 0.0 if d.size else float("nan"))
    result = wilcoxon(d, alternative="two-sided")
    return WilcoxonResult(float(result.statistic), float(result.pvalue), used, rank_biserial(d), float(np.median(d)))
