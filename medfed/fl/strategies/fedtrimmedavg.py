"""FedTrimmedAvg: the coordinate-wise trimmed mean (Yin et al., ICML 2018; Flower's ``FedTrimmedAvg``).

For each coordinate the ``⌊β K⌋`` smallest and ``⌊β K⌋`` largest client values are dropped and the rest
averaged, unweighted (``scipy.stats.trim_mean``); ``β = beta`` (Flower's default 0.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.stats import trim_mean

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.strategies.robust import collect_updates, columnwise
from medfed.fl.update import ClientUpdate


def trimmed_mean(vectors: Sequence[np.ndarray], beta: float) -> np.ndarray:
    """Coordinate-wise mean of K client vectors after cutting ``⌊beta K⌋`` values from each end."""
    return columnwise(list(vectors), lambda block: trim_mean(block, beta, axis=0))


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
        vectors, _, sites = collect_updates(updates)
        if not sites:
            return global_weights, state, {"clients": 0}
        cut = int(self.beta * len(sites))
        return trimmed_mean(vectors, self.beta), state, {"clients": len(sites), "trimmed_per_side": cut}

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}
