"""Calibration of predicted probabilities: do the predicted risks match the observed rates?

For outcomes ``y`` in {0, 1} and predicted probabilities ``p``:

* **Brier score** ``mean((p - y)^2)`` (Brier 1950; scikit-learn's ``brier_score_loss``);
* **expected calibration error** with equal-mass bins: sort by ``p``, cut into ``n_bins`` groups of (nearly) equal
  size, ``ECE = sum_b (n_b / n) |mean(y_b) - mean(p_b)|`` (Naeini et al. 2015, with quantile bins as in
  Nixon et al. 2019);
* **calibration slope** ``b`` of the logistic recalibration ``logit P(y = 1) = a + b logit(p)`` (Cox 1958; 1 is
  ideal, below 1 means too extreme predictions), and **calibration intercept** (calibration-in-the-large) ``a``
  of ``logit P(y = 1) = a + logit(p)`` with the slope fixed at 1 (Steyerberg, Clinical Prediction Models,
  2019; 0 is ideal), both by maximum likelihood with statsmodels;
* the **reliability curve**: observed rate against mean prediction per equal-mass bin (scikit-learn's
  ``calibration_curve(strategy="quantile")``);
* for scores that are not probabilities (an anomaly score), :func:`platt_scaling` fits ``sigmoid(a + b s)`` on
  validation cases (Platt 1999), to be applied to test cases before the measures above.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import statsmodels.api as sm
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

EPSILON = 1e-6  #: probabilities are clipped to [EPSILON, 1 - EPSILON] before the logit


@dataclass(frozen=True)
class Calibration:
    """Calibration measures of one set of predictions (NaN where undefined, e.g. a single class)."""

    brier: float
    ece: float
    slope: float
    intercept: float
    n: int
    n_positive: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(p, dtype=float), EPSILON, 1 - EPSILON)
    return np.log(clipped / (1 - clipped))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE over ``min(n_bins, n)`` equal-mass bins of the sorted predictions."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y.size == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, min(n_bins, y.size))
    return float(sum(len(b) / y.size * abs(y[b].mean() - p[b].mean()) for b in bins))


def calibration_slope_intercept(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """``(slope, intercept)`` of the logistic recalibration (module docstring); NaN with one class or no fit."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y.size < 2 or y.min() == y.max():
        return float("nan"), float("nan")
    z = logit(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            slope = float(sm.Logit(y, sm.add_constant(z, has_constant="add")).fit(disp=0).params[1])
            glm = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=z).fit()
            intercept = float(glm.params[0])
        except (np.linalg.LinAlgError, ValueError, sm.tools.sm_exceptions.PerfectSeparationError):
            return float("nan"), float("nan")
    return slope, intercept


def calibration(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> Calibration:
    """Every measure of the module docstring for one set of predictions."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    brier = float(brier_score_loss(y, p)) if y.size else float("nan")
    slope, intercept = calibration_slope_intercept(y, p)
    return Calibration(brier, expected_calibration_error(y, p, n_bins), slope, intercept, int(y.size),
                       int((y == 1).sum()))


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(mean prediction, observed rate)`` per equal-mass bin (scikit-learn's quantile strategy)."""
    observed, predicted = calibration_curve(np.asarray(y), np.asarray(p), n_bins=n_bins, strategy="quantile")
    return predicted, observed


def platt_scaling(scores: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """``(a, b)`` of ``P(y = 1 | s) = sigmoid(a + b s)`` fitted by maximum likelihood; ``None`` with one class or
    no fit (then the scores cannot be read as probabilities)."""
    scores, y = np.asarray(scores, dtype=float), np.asarray(y, dtype=float)
    if y.size < 2 or y.min() == y.max():
        return None
    scale = float(np.std(scores)) or 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = sm.Logit(y, sm.add_constant(scores / scale, has_constant="add")).fit(disp=0)
        except (np.linalg.LinAlgError, ValueError, sm.tools.sm_exceptions.PerfectSeparationError):
            return None
    a, b = (float(v) for v in fit.params)
    if not (np.isfinite(a) and np.isfinite(b)):
        return None
    return a, b / scale


def apply_platt(scores: np.ndarray, parameters: tuple[float, float]) -> np.ndarray:
    """``sigmoid(a + b s)``."""
    a, b = parameters
    return 1.0 / (1.0 + np.exp(-(a + b * np.asarray(scores, dtype=float))))
