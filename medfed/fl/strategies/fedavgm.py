"""FedAvgM: FedAvg with server momentum (Hsu, Qi & Brown 2019, "Measuring the effects of non-identical data
distribution for federated visual classification", Algorithm 1).

With the sample-weighted average ``w̄`` of the round (FedAvg) and the pseudo-gradient ``g = w_t - w̄``:
``v ← β v + g`` and ``w_{t+1} = w_t - η v``. ``β = server_momentum`` and ``η = server_learning_rate``
(Flower's names and defaults, 0 and 1: FedAvg). The momentum vector is strategy state (checkpointed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State
from medfed.fl.strategies.fedavg import FedAvg


def momentum_step(
    global_weights: np.ndarray, average: np.ndarray, momentum: np.ndarray, server_momentum: float, lr: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(w_{t+1}, v_{t+1})`` for pseudo-gradient ``g = w_t - w̄``: ``v' = β v + g``, ``w' = w_t - η v'``."""
    gradient = global_weights.astype(np.float64) - average.astype(np.float64)
    velocity = server_momentum * momentum + gradient
    return (global_weights - lr * velocity).astype(np.float32), velocity


class FedAvgM(FedAvg):
    name: ClassVar[str] = "fedavgm"

    def __init__(self, server_learning_rate: float = 1.0, server_momentum: float = 0.0) -> None:
        if server_learning_rate <= 0:
            raise ValueError(f"server_learning_rate must be > 0, got {server_learning_rate}")
        if not 0 <= server_momentum < 1:
            raise ValueError(f"server_momentum must lie in [0, 1), got {server_momentum}")
        self.server_learning_rate = float(server_learning_rate)
        self.server_momentum = float(server_momentum)

    def initial_state(self, global_weights: np.ndarray, sites: Sequence[str]) -> State:
        return {"momentum": np.zeros(global_weights.shape, np.float64)}

    def server_update(
        self, global_weights: np.ndarray, average: np.ndarray, state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        new, velocity = momentum_step(global_weights, average, state["momentum"], self.server_momentum,
                                      self.server_learning_rate)
        return new, {**state, "momentum": velocity}, {}

    def params(self) -> dict[str, Any]:
        return {"server_learning_rate": self.server_learning_rate, "server_momentum": self.server_momentum}
