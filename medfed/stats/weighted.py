"""Case-weighted statistics: ``statistic(resamples) -> values``, one value per resample of a block.

A block is a :class:`~medfed.stats.resampling.Resamples` or a plain ``(b, n)`` count matrix; with one row
of ones each statistic
equals the ordinary unweighted metric of :mod:`medfed.metrics` on the same cases (checked in tests).
Statistics are small callable objects that precompute what every block needs (sort orders, masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from medfed.stats.resampling import Resamples, as_resamples


class Statistic(Protocol):
    """Maps a block of ``b`` resamples of ``n_cases`` cases to one value each ``(b,)``; NaN where undefined."""

    n_cases: int

    def __call__(self, block: Resamples | np.ndarray) -> np.ndarray: ...


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


class MeanStatistic:
    """Weighted mean ``Σ c_i x_i / Σ c_i`` over cases with a finite value (NaN/inf cases are skipped, as
    the task metrics skip an undefined HD95)."""

    def __init__(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        self.n_cases = values.size
        self.values = values
        self._finite = np.isfinite(values).astype(np.float64)
        self._filled = np.where(np.isfinite(values), values, 0.0)
        self._all_finite = bool(self._finite.all())

    def __call__(self, block: Resamples | np.ndarray) -> np.ndarray:
        block = as_resamples(block)
        if block.indices is not None:  # gather: cheaper than building counts
            total = self._filled[block.indices].sum(axis=1)
            kept = float(block.indices.shape[1]) if self._all_finite else self._finite[block.indices].sum(axis=1)
            return _divide(total, np.broadcast_to(kept, total.shape))
        return _divide(block.counts @ self._filled, block.counts @ self._finite)


class AurocStatistic:
    """Weighted AUROC, the Mann-Whitney form with ties counting one half (Hanley & McNeil 1982).

    ``AUROC = Σ_i c_i (N_<(s_i) + N_=(s_i) / 2) / (Σ_pos c · Σ_neg c)`` over positives ``i``, where
    ``N_<(s)`` / ``N_=(s)`` are the total weights of negatives scoring below / equal to ``s``. Negatives are
    sorted once; per block one cumulative sum over negatives and one gather at the positives' places, in
    exact integer arithmetic. Cases with a negative target (uncertain, masked) carry no weight.
    """

    def __init__(self, scores: np.ndarray, targets: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        targets = np.asarray(targets)
        if scores.shape != targets.shape:
            raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in shape")
        self.n_cases = scores.size
        self.scores, self.targets = scores, targets
        self._pos = np.flatnonzero(targets == 1)
        negatives = np.flatnonzero(targets == 0)
        self._neg = negatives[np.argsort(scores[negatives], kind="stable")]
        neg_scores = scores[self._neg]
        self._below = np.searchsorted(neg_scores, scores[self._pos], side="left")
        self._upto = np.searchsorted(neg_scores, scores[self._pos], side="right")
        self._ties = bool(np.any(self._below != self._upto))
        # a non-finite score of a scored case leaves the ranking undefined (as medfed.metrics.auroc gives NaN)
        self._undefined = not np.all(np.isfinite(scores[targets >= 0]))

    def __call__(self, block: Resamples | np.ndarray) -> np.ndarray:
        counts = as_resamples(block).counts
        if self._pos.size == 0 or self._neg.size == 0 or self._undefined:
            return np.full(counts.shape[0], np.nan)
        exact = np.result_type(counts.dtype, np.int64)  # integer counts stay exact
        cumulative = np.zeros((counts.shape[0], self._neg.size + 1), dtype=exact)
        np.cumsum(counts[:, self._neg], axis=1, out=cumulative[:, 1:])
        twice = 2 * cumulative[:, self._below]
        if self._ties:
            twice += cumulative[:, self._upto] - cumulative[:, self._below]
        pos_counts = counts[:, self._pos].astype(exact)
        wins_twice = np.einsum("ij,ij->i", pos_counts, twice)
        return _divide(wins_twice / 2.0, pos_counts.sum(axis=1) * cumulative[:, -1].astype(np.float64))


RATES = ("accuracy", "sensitivity", "specificity", "precision", "f1")


class RateStatistic:
    """A confusion-matrix rate of fixed 0/1 predictions, with case weights.

    accuracy (TP+TN)/all, sensitivity TP/(TP+FN), specificity TN/(TN+FP), precision TP/(TP+FP),
    F1 2TP/(2TP+FP+FN); NaN on a zero denominator. Negative targets are masked.
    """

    def __init__(self, rate: str, predictions: np.ndarray, targets: np.ndarray) -> None:
        if rate not in RATES:
            raise ValueError(f"unknown rate {rate!r}; expected one of {', '.join(RATES)}")
        predicted = np.asarray(predictions, dtype=np.float64) >= 0.5
        targets = np.asarray(targets)
        self.rate, self.n_cases = rate, targets.size
        valid = targets >= 0
        positive = targets == 1
        self._cells = np.stack([
            predicted & positive & valid, predicted & ~positive & valid,
            ~predicted & ~positive & valid, ~predicted & positive & valid,
        ], axis=1).astype(np.float64)  # columns tp, fp, tn, fn

    def __call__(self, block: Resamples | np.ndarray) -> np.ndarray:
        tp, fp, tn, fn = (as_resamples(block).counts @ self._cells).T
        if self.rate == "accuracy":
            return _divide(tp + tn, tp + fp + tn + fn)
        if self.rate == "sensitivity":
            return _divide(tp, tp + fn)
        if self.rate == "specificity":
            return _divide(tn, tn + fp)
        if self.rate == "precision":
            return _divide(tp, tp + fp)
        return _divide(2 * tp, 2 * tp + fp + fn)


class MacroStatistic:
    """Mean over several statistics of the same cases, ignoring undefined ones (the macro average)."""

    def __init__(self, parts: Sequence[Statistic]) -> None:
        if not parts:
            raise ValueError("a macro average needs at least one statistic")
        self.parts = list(parts)
        self.n_cases = self.parts[0].n_cases

    def __call__(self, block: Resamples | np.ndarray) -> np.ndarray:
        block = as_resamples(block)
        values = np.stack([part(block) for part in self.parts])
        finite = np.isfinite(values)
        return _divide(np.where(finite, values, 0.0).sum(axis=0), finite.sum(axis=0).astype(np.float64))


class SupportWeightedStatistic:
    """Mean of per-label statistics weighted by each label's positives in the resample (scikit-learn's
    ``average="weighted"``): ``Σ_l P_l v_l / Σ_l P_l`` over labels with a defined ``v_l``, ``P_l = Σ_i c_i y_il``."""

    def __init__(self, parts: Sequence[Statistic], positives: Sequence[np.ndarray]) -> None:
        if not parts or len(parts) != len(positives):
            raise ValueError("one positives indicator per statistic, at least one")
        self.parts = list(parts)
        self.n_cases = self.parts[0].n_cases
        self._support = np.stack([np.asarray(p, dtype=np.float64) for p in positives], axis=1)  # (n, L)

    def __call__(self, block: Resamples | np.ndarray) -> np.ndarray:
        block = as_resamples(block)
        values = np.stack([part(block) for part in self.parts], axis=1)  # (b, L)
        weights = block.counts @ self._support
        finite = np.isfinite(values)
        weights = np.where(finite, weights, 0.0)
        return _divide((weights * np.where(finite, values, 0.0)).sum(axis=1), weights.sum(axis=1))


def point_estimate(statistic: Statistic) -> float:
    """The statistic on the original sample (every case once)."""
    return float(statistic(np.ones((1, statistic.n_cases), dtype=np.int64))[0])
