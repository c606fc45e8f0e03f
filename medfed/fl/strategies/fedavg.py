"""FedAvg: sample-weighted average of client models (McMahan et al., AISTATS 2017, Algorithm 1).

``w_{t+1} = sum_k n_k w_k / sum_k n_k`` over the clients that returned an update in round ``t``, with
``n_k`` the client's number of training examples (Flower's ``FedAvg`` weights by ``num_examples`` the
same way). Accumulated as a running float64 sum, one client at a time: memory is one model, not K.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.update import ClientUpdate


def weighted_average(weights: np.ndarray, num_examples: np.ndarray) -> np.ndarray:
    """``sum_k n_k w_k / sum_k n_k`` for stacked weights ``(K, P)`` and counts ``(K,)``; float32 out."""
    weights = np.asarray(weights, dtype=np.float64)
    counts = np.asarray(num_examples, dtype=np.float64)
    if weights.ndim != 2 or counts.shape != (weights.shape[0],):
        raise ValueError(f"expected weights (K, P) and counts (K,), got {weights.shape} and {counts.shape}")
    if counts.sum() <= 0:
        raise ValueError("total number of examples is zero")
    return (counts @ weights / counts.sum()).astype(np.float32)


class StreamingWeightedMean:
    """Running ``sum_k n_k w_k`` and ``sum_k n_k`` (float64); :meth:`result` equals :func:`weighted_average`."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0.0
        self.clients = 0

    def add(self, weights: np.ndarray, num_examples: float) -> None:
        w = np.asarray(weights)
        if self.total is None:
            self.total = np.zeros(w.shape, np.float64)
            self._scaled = np.empty(w.shape, np.float64)  # one float64 buffer, reused for every client
        elif w.shape != self.total.shape:
            raise ValueError(f"update of shape {w.shape} does not match {self.total.shape}")
        np.multiply(w, float(num_examples), out=self._scaled, dtype=np.float64)  # product in float64
        self.total += self._scaled
        self.count += float(num_examples)
        self.clients += 1

    def result(self) -> np.ndarray:
        if self.total is None or self.count <= 0:
            raise ValueError("no update with a positive number of examples to average")
        return (self.total / self.count).astype(np.float32)


def average_updates(updates: Iterable[ClientUpdate]) -> tuple[StreamingWeightedMean, dict[str, int]]:
    """Stream ``updates`` into a weighted mean; also returns each site's ``num_examples`` (empty: no update)."""
    mean = StreamingWeightedMean()
    used: dict[str, int] = {}
    for update in updates:
        mean.add(update.weights, update.num_examples)
        used[update.site] = update.num_examples
    return mean, used


class FedAvg(Strategy):
    """The weighted average; server optimisers (FedAvgM, FedOpt) subclass it and override :meth:`server_update`."""

    name: ClassVar[str] = "fedavg"

    def server_update(
        self, global_weights: np.ndarray, average: np.ndarray, state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        """The new global model from the round's weighted average (FedAvg: the average itself)."""
        return average, state, {}

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        mean, used = average_updates(updates)
        if not used:
            return global_weights, state, {"clients": 0}
        new, state, extra = self.server_update(global_weights, mean.result(), state)
        return new, state, {"clients": mean.clients, "num_examples": used, **extra}
