"""FedAdam (Reddi et al. 2021): ``v_t = β2 v_{t-1} + (1 - β2) Δ_t²`` with Flower's bias-corrected step."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medfed.fl.strategies.fedopt import FedOpt


class FedAdam(FedOpt):
    name: ClassVar[str] = "fedadam"

    def __init__(self, eta: float = 1e-1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-9) -> None:
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return self.beta_2 * v + (1 - self.beta_2) * delta**2

    def step_size(self, step: int) -> float:
        """``η √(1 - β2^{t+1}) / (1 - β1^{t+1})``: Flower's exponent ``server_round + 1`` with ``t`` = step."""
        return self.eta * float(np.sqrt(1 - self.beta_2 ** (step + 1)) / (1 - self.beta_1 ** (step + 1)))
