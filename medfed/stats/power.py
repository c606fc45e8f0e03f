"""Power of a site's paired comparison: the smallest true difference it would detect.

For a difference estimated with standard error ``se`` and tested two-sided at level ``alpha`` (normal
approximation, as the DeLong z-test and the paired bootstrap are), the minimum detectable difference at power
``1 - beta`` is ``MDD = (z_{1 - alpha/2} + z_{1 - beta}) * se`` (e.g. 2.80 se at alpha 0.05 and 80% power;
Cohen 1988, ch. 12; the same formula as statsmodels' ``NormalIndPower`` solved for the effect in SE units).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def minimum_detectable_difference(se: float | np.ndarray, alpha: float = 0.05, power: float = 0.8) -> float | np.ndarray:
    """``(z_{1 - alpha/2} + z_{power}) * se``; NaN where ``se`` is not finite and positive."""
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1), got alpha={alpha}, power={power}")
    se = np.asarray(se, dtype=float)
    factor = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    out = np.where(np.isfinite(se) & (se > 0), factor * se, np.nan)
    return float(out) if out.ndim == 0 else out
