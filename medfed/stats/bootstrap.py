"""Bootstrap confidence intervals and paired bootstrap tests, vectorised over resamples.

Every statistic of one site is evaluated on the *same* resamples (:func:`bootstrap_distributions`), so the
difference between two methods on a resample is a paired difference by construction: resample cases,
recompute both metrics, keep the difference. Intervals: percentile, and BCa (bias-corrected and
accelerated; Efron 1987, Efron & Tibshirani 1993 §14.3, acceleration from the jackknife, Eq. 14.15).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from medfed.stats.resampling import bootstrap_resamples, jackknife_resamples
from medfed.stats.weighted import Statistic

CI_METHODS = ("bca", "percentile")


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: str


def bootstrap_distributions(
    statistics: Mapping[Hashable, Statistic],
    n: int,
    *,
    n_resamples: int = 1000,
    seed: int | np.random.Generator = 0,
    strata: np.ndarray | None = None,
) -> dict[Hashable, np.ndarray]:
    """Each statistic on the same ``n_resamples`` bootstrap resamples of ``n`` cases: ``{key: (B,)}``."""
    for key, statistic in statistics.items():
        if statistic.n_cases != n:
            raise ValueError(f"statistic {key!r} covers {statistic.n_cases} cases, expected {n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    blocks: dict[Hashable, list[np.ndarray]] = {key: [] for key in statistics}
    for block in bootstrap_resamples(n, n_resamples, rng, strata):
        for key, statistic in statistics.items():
            blocks[key].append(statistic(block))
    return {key: np.concatenate(parts) if parts else np.empty(0) for key, parts in blocks.items()}


def jackknife_values(statistic: Statistic) -> np.ndarray:
    """Leave-one-out values ``θ_(i)``, shape ``(n,)``."""
    return np.concatenate(list(map(statistic, jackknife_resamples(statistic.n_cases))))


def percentile_interval(distribution: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles of the finite bootstrap values."""
    values = distribution[np.isfinite(distribution)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def bca_interval(
    estimate: float, distribution: np.ndarray, jackknife: np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """BCa interval: quantiles of the bootstrap values at adjusted levels.

    ``z0 = Φ⁻¹(#{θ* < θ̂}/B + #{θ* = θ̂}/(2B))`` (bias), ``a = Σ d_i³ / (6 (Σ d_i²)^{3/2})`` with
    ``d_i = mean(θ_(·)) - θ_(i)`` (acceleration), and levels ``Φ(z0 + (z0 + z_α) / (1 - a (z0 + z_α)))``.
    Falls back to the percentile interval when ``z0`` or ``a`` is not finite (e.g. a degenerate sample) or when
    ``1 - a (z0 + z_α) <= 0`` (an acceleration so large that the adjusted levels would cross).
    """
    values = distribution[np.isfinite(distribution)]
    jack = jackknife[np.isfinite(jackknife)]
    if values.size == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    below = np.mean(values < estimate) + np.mean(values == estimate) / 2
    z0 = ndtri(below)
    d = jack.mean() - jack if jack.size else np.zeros(1)
    denominator = 6.0 * np.sum(d**2) ** 1.5
    a = np.sum(d**3) / denominator if denominator > 0 else 0.0
    if not (np.isfinite(z0) and np.isfinite(a)):
        return percentile_interval(values, confidence)
    alpha = (1 - confidence) / 2
    shifted = [z0 + z for z in (ndtri(alpha), ndtri(1 - alpha))]
    if any(1 - a * w <= 0 for w in shifted):  # acceleration too large: the adjusted levels would cross over
        return percentile_interval(values, confidence)
    levels = [float(ndtr(z0 + w / (1 - a * w))) for w in shifted]
    low, high = np.quantile(values, levels)
    return float(low), float(high)


def confidence_interval(
    statistic: Statistic,
    distribution: np.ndarray,
    estimate: float,
    confidence: float = 0.95,
    method: str = "bca",
) -> Interval:
    """The ``method`` interval (``bca`` or ``percentile``) of a statistic from its bootstrap values."""
    if method == "percentile":
        low, high = percentile_interval(distribution, confidence)
    elif method == "bca":
        low, high = bca_interval(estimate, distribution, jackknife_values(statistic), confidence)
    else:
        raise ValueError(f"unknown CI method {method!r}; expected one of {', '.join(CI_METHODS)}")
    return Interval(float(estimate), low, high, confidence, method)


def bootstrap_ci(
    statistic: Statistic,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    method: str = "bca",
    seed: int | np.random.Generator = 0,
    strata: np.ndarray | None = None,
) -> Interval:
    """Point estimate and bootstrap CI of one statistic (convenience around the functions above)."""
    from medfed.stats.weighted import point_estimate

    distribution = bootstrap_distributions(
        {0: statistic}, statistic.n_cases, n_resamples=n_resamples, seed=seed, strata=strata
    )[0]
    return confidence_interval(statistic, distribution, point_estimate(statistic), confidence, method)


@dataclass(frozen=True)
class PairedDifference:
    """``estimate`` = statistic(A) - statistic(B) on the same cases, its order-statistic percentile CI
    (:func:`order_statistic_interval`) and two-sided P (:func:`bootstrap_p_value`), which agree, and its
    bootstrap standard error ``se`` (standard deviation of the resampled differences, ``ddof=1``)."""

    estimate: float
    low: float
    high: float
    p_value: float
    n_resamples: int
    se: float = float("nan")


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided P of "no difference" from paired bootstrap differences, by inverting the percentile CI.

    ``P = min(1, 2 · min(1 + #{d* ≤ 0}, 1 + #{d* ≥ 0}) / (B + 1))``: the smallest level at which the
    equal-tailed percentile interval excludes zero (the +1 keeps P above zero with finite B). A 95% CI
    that excludes 0 goes with P < 0.05.
    """
    values = differences[np.isfinite(differences)]
    if values.size == 0:
        return float("nan")
    tail = min(np.sum(values <= 0), np.sum(values >= 0)) + 1
    return float(min(1.0, 2.0 * tail / (values.size + 1)))


def order_statistic_interval(differences: np.ndarray, alpha: float) -> tuple[float, float]:
    """Equal-tailed ``1 - alpha`` interval of paired bootstrap differences from their order statistics, the
    ``(B+1)·alpha/2`` rule (Davison & Hinkley 1997, §5.2.1): ``[d*_(j), d*_(B+1-j)]`` (1-based) with ``j`` the largest
    integer with ``2j / (B+1) < alpha``; ``(-inf, inf)`` when ``j = 0`` (B resamples cannot resolve that level).

    ``j`` is computed with the same expression as :func:`bootstrap_p_value`, so the interval excludes 0 exactly when
    that P is below ``alpha``: ``d*_(j) > 0`` iff fewer than ``j`` values are ``<= 0`` iff ``2(1 + #{d* <= 0}) / (B+1)
    < alpha`` (likewise for the upper end).
    """
    values = np.sort(differences[np.isfinite(differences)])
    if values.size == 0 or not np.isfinite(alpha) or alpha <= 0:
        return float("nan"), float("nan")
    resolution = values.size + 1
    j = int(np.floor(alpha * resolution / 2.0))
    while j > 0 and not 2.0 * j / resolution < alpha:
        j -= 1
    while 2.0 * (j + 1) / resolution < alpha and j + 1 <= values.size:
        j += 1
    if j == 0:
        return float("-inf"), float("inf")
    return float(values[j - 1]), float(values[values.size - j])


def paired_difference(
    estimate_a: float,
    estimate_b: float,
    distribution_a: np.ndarray,
    distribution_b: np.ndarray,
    confidence: float = 0.95,
) -> PairedDifference:
    """Difference A - B from two statistics' values on the same resamples (see module docstring). The interval is
    :func:`order_statistic_interval`, so it excludes 0 exactly when the P-value is below ``1 - confidence``."""
    differences = distribution_a - distribution_b
    low, high = order_statistic_interval(differences, 1 - confidence)
    finite = differences[np.isfinite(differences)]
    se = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
    return PairedDifference(
        float(estimate_a - estimate_b), low, high, bootstrap_p_value(differences), int(finite.size), se
    )
