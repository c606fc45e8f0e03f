"""Random-effects meta-analysis of per-site effects (e.g. each site's paired difference, method minus baseline).

Inputs: each site's effect ``y_i`` and its standard error ``s_i`` (``v_i = s_i^2``), from the site's own paired
analysis. With ``w_i = 1 / v_i`` and ``k`` sites:

* **fixed effect** (inverse variance): ``mu_FE = sum(w y) / sum(w)``, ``se = sqrt(1 / sum(w))``;
* **Cochran's Q** ``= sum(w (y - mu_FE)^2)`` with ``k - 1`` degrees of freedom, its chi-square P, and
  ``I^2 = max(0, (Q - (k - 1)) / Q)`` with the CI of Higgins & Thompson (2002, Stat Med 21:1539), from the
  standard error of ``ln H``, ``H = sqrt(Q / (k - 1))``;
* **tau^2**, the between-site variance: DerSimonian & Laird (1986, Control Clin Trials 7:177)
  ``max(0, (Q - (k - 1)) / (sum(w) - sum(w^2) / sum(w)))``, or Paule & Mandel (1982), the root of
  ``sum((y - mu(tau^2))^2 / (v + tau^2)) = k - 1`` (0 when Q <= k - 1). Both are truncated at 0, as metafor and
  the DL paper do (statsmodels 0.15's ``method_re="chi2"`` is not);
* **random effects** with ``w*_i = 1 / (v_i + tau^2)``: ``mu = sum(w* y) / sum(w*)``;
  - CI ``hksj`` (default; Hartung & Knapp 2001, Sidik & Jonkman 2002): ``se = sqrt(q* / sum(w*))``,
    ``q* = sum(w* (y - mu)^2) / (k - 1)``, ``mu +- t(k - 1) se``, P from the same t;
  - CI ``wald``: ``se = sqrt(1 / sum(w*))``, ``mu +- z se``, P from the normal;
* the **prediction interval** for a new site (Higgins, Thompson & Spiegelhalter 2009, JRSS A 172:137):
  ``mu +- t(k - 2) sqrt(tau^2 + se^2)``, with the CI's ``se``; it needs ``k >= 3``.

Sites with a missing or non-positive standard error never reach the estimators (they are dropped and counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

MODELS = ("fixed", "dl", "pm")
CI_METHODS = ("hksj", "wald")


@dataclass(frozen=True)
class MetaResult:
    """One model's pooled estimate with its interval, heterogeneity and test (``NaN`` where undefined)."""

    model: str  # "fixed", "dl" (DerSimonian-Laird) or "pm" (Paule-Mandel)
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    pi_low: float
    pi_high: float
    tau2: float
    i2: float
    i2_low: float
    i2_high: float
    q: float
    q_p: float
    p_value: float
    n_sites: int
    ci_method: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def usable(effects: Sequence[float], ses: Sequence[float]) -> np.ndarray:
    """Mask of the sites the estimators may use: finite effect and finite, positive standard error."""
    y, s = np.asarray(effects, dtype=float), np.asarray(ses, dtype=float)
    return np.isfinite(y) & np.isfinite(s) & (s > 0)


def cochran_q(effects: np.ndarray, variances: np.ndarray) -> float:
    """``Q = sum(w (y - mu_FE)^2)``, ``w = 1 / v``."""
    w = 1.0 / variances
    mean = float(np.sum(w * effects) / np.sum(w))
    return float(np.sum(w * (effects - mean) ** 2))


def tau2_dl(effects: np.ndarray, variances: np.ndarray) -> float:
    """DerSimonian-Laird moment estimate of tau^2, truncated at 0."""
    w = 1.0 / variances
    q, df = cochran_q(effects, variances), len(effects) - 1
    denominator = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    return max(0.0, (q - df) / denominator) if denominator > 0 else 0.0


def tau2_pm(effects: np.ndarray, variances: np.ndarray) -> float:
    """Paule-Mandel estimate of tau^2: the root of the generalised Q equal to ``k - 1`` (0 when none above 0)."""
    df = len(effects) - 1

    def excess(tau2: float) -> float:
        w = 1.0 / (variances + tau2)
        mean = np.sum(w * effects) / np.sum(w)
        return float(np.sum(w * (effects - mean) ** 2) - df)

    if df < 1 or excess(0.0) <= 0:
        return 0.0
    upper = max(float(np.var(effects)) * 10, 1e-12)
    while excess(upper) > 0:
        upper *= 10
    return float(optimize.brentq(excess, 0.0, upper, xtol=1e-14, rtol=1e-12, maxiter=500))


def i2_interval(q: float, k: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """``I^2`` and its CI (Higgins & Thompson 2002, from the standard error of ``ln H``); NaN below 3 sites."""
    df = k - 1
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    if k < 3:
        return i2, float("nan"), float("nan")
    if q > k:
        se_ln_h = 0.5 * (np.log(q) - np.log(df)) / (np.sqrt(2 * q) - np.sqrt(2 * k - 3))
    else:
        se_ln_h = np.sqrt(1.0 / (2 * (k - 2)) * (1 - 1.0 / (3 * (k - 2) ** 2)))
    z = stats.norm.ppf(0.5 + confidence / 2)
    ln_h = 0.5 * np.log(max(q / df, 1e-300))
    low, high = np.exp(ln_h - z * se_ln_h), np.exp(ln_h + z * se_ln_h)
    to_i2 = lambda h: float(min(1.0, max(0.0, (h**2 - 1) / h**2)))  # noqa: E731 - H -> I^2
    return i2, to_i2(low), to_i2(high)


def meta_analysis(
    effects: Sequence[float], ses: Sequence[float], *, ci_method: str = "hksj", confidence: float = 0.95,
    models: Sequence[str] = MODELS,
) -> list[MetaResult]:
    """One :class:`MetaResult` per model over the usable sites (module docstring). Fewer than 2 usable sites:
    an empty list (a meta-analysis of one site is that site)."""
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {CI_METHODS}, got {ci_method!r}")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown meta-analysis model(s) {unknown}; choose from {MODELS}")
    keep = usable(effects, ses)
    y = np.asarray(effects, dtype=float)[keep]
    v = np.asarray(ses, dtype=float)[keep] ** 2
    k = len(y)
    if k < 2:
        return []
    q = cochran_q(y, v)
    q_p = float(stats.chi2.sf(q, k - 1))
    i2, i2_low, i2_high = i2_interval(q, k, confidence)
    out = []
    for model in models:
        tau2 = 0.0 if model == "fixed" else tau2_dl(y, v) if model == "dl" else tau2_pm(y, v)
        w = 1.0 / (v + tau2)
        mean = float(np.sum(w * y) / np.sum(w))
        if ci_method == "hksj" and model != "fixed":
            se = float(np.sqrt(np.sum(w * (y - mean) ** 2) / (k - 1) / np.sum(w)))
            critical, p_value = _t_test(mean, se, k - 1, confidence)
        else:
            se = float(np.sqrt(1.0 / np.sum(w)))
            critical = float(stats.norm.ppf(0.5 + confidence / 2))
            p_value = float(2 * stats.norm.sf(abs(mean / se))) if se > 0 else float("nan")
        pi_low = pi_high = float("nan")
        if model != "fixed" and k >= 3:
            half = float(stats.t.ppf(0.5 + confidence / 2, k - 2)) * np.sqrt(tau2 + se**2)
            pi_low, pi_high = mean - half, mean + half
        out.append(MetaResult(model, mean, se, mean - critical * se, mean + critical * se, pi_low, pi_high,
                              tau2, i2, i2_low, i2_high, q, q_p, p_value, k, "wald" if model == "fixed" else ci_method))
    return out


def _t_test(mean: float, se: float, df: int, confidence: float) -> tuple[float, float]:
    """Critical t value and two-sided P of ``mean / se`` with ``df`` degrees of freedom."""
    critical = float(stats.t.ppf(0.5 + confidence / 2, df))
    if se == 0:
        return critical, 0.0 if mean != 0 else 1.0
    return critical, float(2 * stats.t.sf(abs(mean / se), df))
