"""Bootstrap and jackknife resamples, in blocks, as drawn positions or case-count matrices.

A resample of ``n`` cases is a row of counts ``c`` with ``c[i]`` = how often case ``i`` was drawn
(sum ``n`` for the bootstrap, ``n - 1`` for the jackknife). Any statistic that can be written with case weights (a weighted mean, a weighted AUROC, a
confusion rate) is then evaluated on a whole block of resamples at once: ``(b, n) -> (b,)``. The point
estimate is the same statistic on a row of ones, so estimate and resamples share one code path.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: resamples per block; fixed so that the numbers never depend on available memory
BLOCK = 500


def strata_codes(strata: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Case positions of each stratum (one group of all cases when ``strata`` is None)."""
    if strata is None:
        return [np.arange(n)]
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"strata has shape {strata.shape}, expected ({n},)")
    _, codes = np.unique(strata, return_inverse=True)
    return [np.flatnonzero(codes == k) for k in range(int(codes.max()) + 1)] if n else []


class Resamples:
    """A block of ``b`` resamples of ``n`` cases, as drawn case positions ``indices`` ``(b, m)`` (a bootstrap
    block, ``m = n``) or directly as case ``counts`` ``(b, n)`` (jackknife, point estimate).

    Statistics use whichever form is cheaper: a mean gathers ``values[indices]``, an AUROC needs counts
    (computed once per block, on first use).
    """

    def __init__(self, n: int, *, indices: np.ndarray | None = None, counts: np.ndarray | None = None) -> None:
        if (indices is None) == (counts is None):
            raise ValueError("give exactly one of indices or counts")
        self.n, self.indices = n, indices
        self._counts = None if counts is None else np.asarray(counts)
        self.size = int((indices if indices is not None else self._counts).shape[0])

    @property
    def counts(self) -> np.ndarray:
        """``(b, n)`` integer counts: ``counts[r, i]`` = how often case ``i`` is in resample ``r``."""
        if self._counts is None:
            assert self.indices is not None
            flat = self.indices + (np.arange(self.size, dtype=np.int64) * self.n)[:, None]
            self._counts = np.bincount(flat.ravel(), minlength=self.size * self.n).reshape(self.size, self.n)
        return self._counts


def as_resamples(block: Resamples | np.ndarray) -> Resamples:
    """A plain ``(b, n)`` array is read as counts."""
    return block if isinstance(block, Resamples) else Resamples(np.shape(block)[1], counts=block)


def bootstrap_resamples(
    n: int, n_resamples: int, rng: np.random.Generator, strata: np.ndarray | None = None
) -> Iterator[Resamples]:
    """Blocks of ``n_resamples`` bootstrap resamples in total.

    Each resample draws ``n`` cases with replacement; with ``strata`` it draws ``n_k`` cases from each
    stratum ``k`` (the stratified bootstrap, Efron & Tibshirani 1993 §8), so every class keeps its size and
    no resample lacks a class.
    """
    groups = strata_codes(strata, n)
    for start in range(0, n_resamples, BLOCK):
        b = min(BLOCK, n_resamples - start)
        if strata is None:  # positions are the case indices themselves
            draws = rng.integers(0, n, size=(b, n), dtype=np.int32)
        else:
            draws = np.concatenate(
                [members[rng.integers(0, members.size, size=(b, members.size))] for members in groups], axis=1
            )
        yield Resamples(n, indices=draws)


def jackknife_resamples(n: int) -> Iterator[Resamples]:
    """Blocks of leave-one-out counts: row ``i`` is all ones except case ``i`` (zero)."""
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        block = np.ones((stop - start, n), dtype=np.int64)
        block[np.arange(stop - start), np.arange(start, stop)] = 0
        yield Resamples(n, counts=block)
