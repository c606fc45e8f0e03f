"""FedMedian: the coordinate-wise median of the client models, unweighted (Yin et al., ICML 2018,
"Byzantine-robust distributed learning: towards optimal statistical rates"; Flower's ``FedMedian``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.strategies.robust import collect_updates, columnwise
from medfed.fl.update import ClientUpdate


def coordinate_median(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Median over K client vectors of each coordinate (mean of the two middle values for even K)."""
    return columnwise(list(vectors), lambda block: np.median(block, axis=0))


class FedMedian(Strategy):
    name: ClassVar[str] = "fedmedian"
    weights_by_examples: ClassVar[bool] = False

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        vectors, _, sites = collect_updates(updates)
        if not sites:
            return global_weights, state, {"clients": 0}
        return coordinate_median(vectors), state, {"clients": len(sites)}
