"""Non-inferiority and equivalence of a difference (method - baseline) given its standard error and a margin.

With ``delta > 0`` the margin, ``d`` the estimated difference, ``se`` its standard error and ``Z`` a normal (or a
t with ``df`` degrees of freedom, for HKSJ meta-analysis estimates):

* **non-inferiority** (one-sided; Blackwelder 1982): for a metric where higher is better, H0 ``d <= -delta``,
  ``P = P(Z >= (d + delta) / se)``; where lower is better (HD95), H0 ``d >= delta``, ``P = P(Z >= (delta - d) / se)``.
  ``P < alpha`` exactly when the one-sided ``1 - alpha`` bound lies inside the margin;
* **equivalence** by two one-sided tests (TOST; Schuirmann 1987): ``P = max(P(Z >= (d + delta) / se),
  P(Z >= (delta - d) / se))``; ``P < alpha`` exactly when the ``1 - 2 alpha`` CI lies inside ``(-delta, delta)``.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _upper_tail(z: float, df: float | None) -> float:
    return float(stats.norm.sf(z) if df is None else stats.t.sf(z, df))


def noninferiority_p(difference: float, se: float, margin: float, higher_is_better: bool = True,
                     df: float | None = None) -> float:
    """One-sided P of non-inferiority within ``margin`` (module docstring); NaN without a finite, positive SE."""
    if not (np.isfinite(difference) and np.isfinite(se) and se > 0 and margin > 0):
        return float("nan")
    z = (difference + margin) / se if higher_is_better else (margin - difference) / se
    return _upper_tail(z, df)


def equivalence_p(difference: float, se: float, margin: float, df: float | None = None) -> float:
    """TOST P of equivalence within ``(-margin, margin)``; NaN without a finite, positive SE."""
    if not (np.isfinite(difference) and np.isfinite(se) and se > 0 and margin > 0):
        return float("nan")
    return max(_upper_tail((difference + margin) / se, df), _upper_tail((margin - difference) / se, df))
