"""FedYogi (Reddi et al. 2021; Zaheer et al. 2018): ``v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)``."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medfed.fl.strategies.fedopt import FedOpt


class FedYogi(FedOpt):
    name: ClassVar[str] = "fedyogi"

    def __init__(self, eta: float = 1e-2, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        squared = delta**2
        return v - (1 - self.beta_2) * squared * np.sign(v - squared)
