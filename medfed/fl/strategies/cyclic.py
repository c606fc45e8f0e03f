"""Cyclic weight transfer: the model travels from site to site within a round, each site training it
further, and the last site's model is the new global one (Chang et al., JAMIA 2018, "Distributed deep
learning networks among institutions for medical imaging"; a common medical baseline).

Sites are visited in the round's sampling order (the federation's order). The runner trains a site only
when the strategy pulls its update, so each site starts from the weights the previous site returned; a site
that fails is skipped and the chain continues from the last good model. Counts of examples are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.update import ClientUpdate


class Cyclic(Strategy):
    name: ClassVar[str] = "cyclic"
    weights_by_examples: ClassVar[bool] = False
    order_invariant: ClassVar[bool] = False

    def __init__(self) -> None:
        self._carried: np.ndarray | None = None  # the model travelling through the current round

    def client_weights(self, global_weights: np.ndarray, site: str, state: State) -> np.ndarray:
        return global_weights if self._carried is None else self._carried

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        self._carried = global_weights
        path = []
        try:
            for update in updates:
                self._carried = np.asarray(update.weights, np.float32)
                path.append(update.site)
            new = self._carried
        finally:
            self._carried = None
        return (new.copy() if path else global_weights), state, {"clients": len(path), "path": path}
