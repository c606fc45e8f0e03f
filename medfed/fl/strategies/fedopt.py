"""FedOpt: adaptive server optimisers on the FedAvg pseudo-gradient (Reddi et al., ICLR 2021, "Adaptive
Federated Optimization", Algorithm 2), with Flower's parameter names and defaults.

With ``Δ_t = w̄ - w_t`` (sample-weighted average minus the current global model):
``m_t = β1 m_{t-1} + (1 - β1) Δ_t`` and ``w_{t+1} = w_t + η_t m_t / (√v_t + τ)`` where ``v_t`` is
- FedAdagrad: ``v_{t-1} + Δ_t²`` (β1 = 0, as in Flower),
- FedAdam: ``β2 v_{t-1} + (1 - β2) Δ_t²``, with Flower's bias-corrected step
  ``η_t = η √(1 - β2^{t+1}) / (1 - β1^{t+1})`` (Kingma & Ba's α_t; ``t`` counts server steps from 1),
- FedYogi: ``v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)``.
``m`` and ``v`` start at zero and are strategy state (checkpointed): two model-sized vectors, as the maths
needs. The clients' learning rate (Flower's ``eta_l``) is the task's ``optimizer.lr``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State
from medfed.fl.strategies.fedavg import FedAvg


class FedOpt(FedAvg):
    """Shared round logic; subclasses define :meth:`second_moment` and, for Adam, :meth:`step_size`."""

    #: a server optimiser moves *towards* agreeing clients by a step of size eta, not onto them
    consensus_fixed_point: ClassVar[bool] = False

    def __init__(self, eta: float, beta_1: float, beta_2: float, tau: float) -> None:
        if eta <= 0 or tau <= 0:
            raise ValueError(f"eta and tau must be > 0, got eta={eta}, tau={tau}")
        for label, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{label} must lie in [0, 1), got {beta}")
        self.eta, self.beta_1, self.beta_2, self.tau = float(eta), float(beta_1), float(beta_2), float(tau)

    def initial_state(self, global_weights: np.ndarray, sites: Sequence[str]) -> State:
        zeros = np.zeros(global_weights.shape, np.float64)
        return {"m": zeros, "v": zeros.copy(), "step": 0}

    @abstractmethod
    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """``v_t`` from ``v_{t-1}`` and the pseudo-gradient ``Δ_t``."""

    def step_size(self, step: int) -> float:
        return self.eta

    def server_update(
        self, global_weights: np.ndarray, average: np.ndarray, state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        delta = average.astype(np.float64) - global_weights.astype(np.float64)
        m = self.beta_1 * state["m"] + (1 - self.beta_1) * delta
        v = self.second_moment(state["v"], delta)
        step = int(state["step"]) + 1
        new = (global_weights + self.step_size(step) * m / (np.sqrt(v) + self.tau)).astype(np.float32)
        return new, {"m": m, "v": v, "step": step}, {"server_step": step}

    def params(self) -> dict[str, Any]:
        return {"eta": self.eta, "beta_1": self.beta_1, "beta_2": self.beta_2, "tau": self.tau}
