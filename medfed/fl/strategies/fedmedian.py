"""FedMedian: the coordinate-wise median of the client models, unweighted (Yin et al., ICML 2018,
"Byzantine-robust distributed learning: towards optimal statistical rates"; Flower's ``FedMedian``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.strategies.robust import stack_updates
from medfed.fl.update import ClientUpdate


def coordinate_median(weights: np.ndarray) -> np.ndarray:
    """Median over clients of each coordinate of ``(K, P)`` weights (mean of the two middle values for even K)."""
    return np.median(np.asarray(weights, dtype=np.float64), axis=0).astype(np.float32)


class FedMedian(Strategy):
    name: ClassVar[str] = "fedmedian"
    weights_by_examples: ClassVar[bool] = False

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        weights, _, sites = stack_updates(updates)
        if not sites:
            return global_weights, state, {"clients": 0}
        return coordinate_median(weights), state, {"clients": len(sites)}
