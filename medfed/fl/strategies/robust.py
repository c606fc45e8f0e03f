"""Shared pieces of the robust aggregators (median, trimmed mean, Krum): they need every client model of
the round at once (their maths compares them), so the K float32 vectors are kept as they arrive, once, and
coordinate-wise work runs over column blocks stacked on the fly: memory is the K models plus one float64
block of ``BLOCK`` values, never a second copy of the K models."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.update import ClientUpdate

#: values per float64 block (64 MiB): a block spans ``BLOCK // K`` columns of the K models
BLOCK = 1 << 23


def collect_updates(updates: Iterable[ClientUpdate]) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """``(K float32 vectors, num_examples (K,), sites)``; every vector must have the first one's shape."""
    vectors, counts, sites = [], [], []
    for update in updates:
        vector = np.asarray(update.weights, dtype=np.float32)
        if vectors and vector.shape != vectors[0].shape:
            raise ValueError(f"update of site {update.site} has shape {vector.shape}, expected {vectors[0].shape}")
        vectors.append(vector)
        counts.append(update.num_examples)
        sites.append(update.site)
    return vectors, np.asarray(counts, dtype=np.float64), sites


def column_blocks(vectors: Sequence[np.ndarray]) -> Iterator[tuple[slice, np.ndarray]]:
    """``(columns, (K, b) float64 block)`` over the coordinates of K equal-length vectors."""
    size = vectors[0].size
    step = max(1, BLOCK // len(vectors))
    for start in range(0, size, step):
        columns = slice(start, min(size, start + step))
        yield columns, np.stack([v[columns] for v in vectors]).astype(np.float64)


def columnwise(vectors: Sequence[np.ndarray], statistic: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``statistic`` (``(K, b) float64 -> (b,)``) over every coordinate, float32 out."""
    out = np.empty(vectors[0].size, np.float32)
    for columns, block in column_blocks(vectors):
        out[columns] = statistic(block)
    return out


class AllModelsStrategy(Strategy):
    """A strategy whose maths compares the round's client models: it collects the K updates once, keeps the
    global model when none arrived, and hands the rest to :meth:`combine`."""

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        vectors, counts, sites = collect_updates(updates)
        if not sites:
            return global_weights, state, {"clients": 0}
        return self.combine(global_weights, vectors, counts, sites, state)

    @abstractmethod
    def combine(
        self, global_weights: np.ndarray, vectors: list[np.ndarray], counts: np.ndarray, sites: list[str],
        state: State,
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        """The new global model from K >= 1 float32 client vectors, their ``num_examples`` and sites."""
