"""Multiple-comparison adjustment of P-values (NaNs are left out of the family and stay NaN)."""

from __future__ import annotations

import numpy as np

CORRECTIONS = {"holm": "Holm-Bonferroni", "bh": "Benjamini-Hochberg", "none": "no correction"}


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979): ``p̃_(i) = max_{j≤i} min(1, (m - j + 1) p_(j))`` for the
    ascending P-values ``p_(1) ≤ … ≤ p_(m)``; controls the family-wise error rate."""
    return _adjust(p_values, step_down=True)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg step-up adjustment (1995): ``p̃_(i) = min_{j≥i} min(1, m p_(j) / j)``; controls
    the false discovery rate."""
    return _adjust(p_values, step_down=False)


def _adjust(p_values: np.ndarray, *, step_down: bool) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    ranked = p[order]
    i = np.arange(1, m + 1)
    if step_down:
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - i + 1) * ranked))
    else:
        adjusted = np.minimum.accumulate(np.minimum(1.0, m * ranked / i)[::-1])[::-1]
    out[order] = adjusted
    return out


def adjust_p_values(p_values: np.ndarray, method: str = "holm") -> np.ndarray:
    """``holm``, ``bh`` or ``none``."""
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    if method == "none":
        return np.asarray(p_values, dtype=np.float64).copy()
    raise ValueError(f"unknown correction {method!r}; expected one of {', '.join(CORRECTIONS)}")
