"""FedProx: FedAvg aggregation plus a proximal term in each client's objective (Li et al., MLSys 2020).

Client ``k`` minimises ``F_k(w) + (mu / 2) ||w - w_t||^2`` where ``w_t`` is the global model it started
from (Eq. 2 of the paper); ``mu = proximal_mu`` as in Flower's ``FedProx``. ``mu = 0`` is FedAvg. The
server step is FedAvg's sample-weighted average (:mod:`medfed.fl.strategies.fedavg`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from medfed.fl.client import ProximalTerm
from medfed.fl.strategies.base import State
from medfed.fl.strategies.fedavg import FedAvg
from medfed.fl.protocols import ClientHook


class FedProx(FedAvg):
    name: ClassVar[str] = "fedprox"

    def __init__(self, proximal_mu: float = 0.01) -> None:
        if proximal_mu < 0:
            raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}")
        self.proximal_mu = float(proximal_mu)

    def client_hooks(self, model: nn.Module, site: str | None = None, state: State | None = None) -> list[ClientHook]:
        return [ProximalTerm(model, self.proximal_mu)] if self.proximal_mu > 0 else []

    def params(self) -> dict[str, Any]:
        return {"proximal_mu": self.proximal_mu}
