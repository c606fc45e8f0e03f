"""FedTrimmedAvg: the coordinate-wise trimmed mean (Yin et al., ICML 2018; Flower's ``FedTrimmedAvg``).

For each coordinate the ``⌊β K⌋`` smallest and ``⌊β K⌋`` largest client values are dropped and the rest
averaged, unweighted (``scipy.stats.trim_mean``); ``β = beta`` (Flower's default 0.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.stats import trim_mean

from medfed.fl.strategies.base import State
from medfed.fl.strategies.robust import AllModelsStrategy, columnwise


def trimmed_mean(vectors: Sequence[np.ndarray], beta: float) -> np.ndarray:
    """Coordinate-wise mean of K client vectors after cutting ``⌊beta K⌋`` values from each end."""
    return columnwise(list(vectors), lambda block: trim_mean(block, beta, axis=0))


class FedTrimmedAvg(AllModelsStrategy):
    name: ClassVar[str] = "fedtrimmedavg"
    weights_by_examples: ClassVar[bool] = False

    def __init__(self, beta: float = 0.2) -> None:
        if not 0 <= beta < 0.5:
            raise ValueError(f"beta must lie in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def combine(
        self, global_weights: np.ndarray, vectors: list[np.ndarray], counts: np.ndarray, sites: list[str],
        state: State,
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        cut = int(self.beta * len(sites))
        return trimmed_mean(vectors, self.beta), state, {"clients": len(sites), "trimmed_per_side": cut}

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}
