"""FedMedian: the coordinate-wise median of the client models, unweighted (Yin et al., ICML 2018,
"Byzantine-robust distributed learning: towards optimal statistical rates"; Flower's ``FedMedian``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State
from medfed.fl.strategies.robust import AllModelsStrategy, columnwise


def coordinate_median(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Median over K client vectors of each coordinate (mean of the two middle values for even K)."""
    return columnwise(list(vectors), lambda block: np.median(block, axis=0))


class FedMedian(AllModelsStrategy):
    name: ClassVar[str] = "fedmedian"
    weights_by_examples: ClassVar[bool] = False

    def combine(
        self, global_weights: np.ndarray, vectors: list[np.ndarray], counts: np.ndarray, sites: list[str],
        state: State,
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        return coordinate_median(vectors), state, {"clients": len(sites)}
