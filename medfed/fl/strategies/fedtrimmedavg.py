"""FedTrimmedAvg: the coordinate-wise trimmed mean (Yin et al., ICML 2018; Flower's ``FedTrimmedAvg``).

For each coordinate the ``⌊β K⌋`` smallest and ``⌊β K⌋`` largest client values are dropped and the rest
averaged, unweighted (``scipy.stats.trim_mean``); ``β = beta`` (Flower's default 0.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
from scipy.stats import trim_mean

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.strategies.robust import stack_updates
from medfed.fl.update import ClientUpdate


def trimmed_mean(weights: np.ndarray, beta: float) -> np.ndarray:
    """Coordinate-wise mean of ``(K, P)`` weights after cutting ``⌊beta K⌋`` values from each end."""
    return trim_mean(np.asarray(weights, dtype=np.float64), beta, axis=0).astype(np.float32)


class FedTrimmedAvg(Strategy):
    name: ClassVar[str] = "fedtrimmedavg"
    weights_by_examples: ClassVar[bool] = False

    def __init__(self, beta: float = 0.2) -> None:
        if not 0 <= beta < 0.5:
            raise ValueError(f"beta must lie in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        weights, _, sites = stack_updates(updates)
        if not sites:
            return global_weights, state, {"clients": 0}
        cut = int(self.beta * len(sites))
        return trimmed_mean(weights, self.beta), state, {"clients": len(sites), "trimmed_per_side": cut}

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}
