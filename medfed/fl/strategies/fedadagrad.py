"""FedAdagrad (Reddi et al. 2021): ``v_t = v_{t-1} + Δ_t²``, no first-moment averaging (β1 = 0, as Flower)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.fedopt import FedOpt


class FedAdagrad(FedOpt):
    name: ClassVar[str] = "fedadagrad"

    def __init__(self, eta: float = 1e-1, tau: float = 1e-9) -> None:
        super().__init__(eta=eta, beta_1=0.0, beta_2=0.0, tau=tau)

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return v + delta**2

    def params(self) -> dict[str, Any]:
        return {"eta": self.eta, "tau": self.tau}
