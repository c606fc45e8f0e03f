"""FedBN: normalisation layers stay local, everything else is averaged (Li et al., ICLR 2021, "FedBN:
Federated learning on non-IID features via local batch normalization").

The standard answer to scanner feature shift in medical FL: each site keeps the affine parameters and
running statistics of its normalisation layers (batch, instance, group and layer norm; MONAI's default
instance norm has no affine parameters, so with it FedBN equals FedAvg) and starts every round from the
global model with its own normalisation entries put back. The other entries are FedAvg's sample-weighted
mean, streamed. State: one small vector of normalisation entries per site, not K models. Each site is
evaluated with its own normalisation (``local:<site>``), the global model alongside.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
from torch import nn

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.strategies.fedavg import average_updates
from medfed.fl.strategies.local_only import local_key
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import layout_of

#: normalisation layers whose entries stay local (_NormBase: every BatchNorm and InstanceNorm)
NORM_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def norm_mask(model: nn.Module) -> np.ndarray:
    """Boolean mask over the flat weight vector: True for entries of normalisation layers."""
    norm_modules = {name for name, module in model.named_modules() if isinstance(module, NORM_LAYERS)}
    layout = layout_of(model)
    owners = [name.rsplit(".", 1)[0] if "." in name else "" for name in layout.names]
    return np.repeat([owner in norm_modules for owner in owners], layout.sizes).astype(bool)


class FedBN(Strategy):
    name: ClassVar[str] = "fedbn"

    def __init__(self) -> None:
        self.mask: np.ndarray | None = None

    def prepare(self, model: nn.Module) -> None:
        self.mask = norm_mask(model)

    def _checked_mask(self, size: int) -> np.ndarray:
        if self.mask is None or self.mask.size != size:
            raise RuntimeError("FedBN needs the model layout: call prepare(model) before training")
        return self.mask

    def initial_state(self, global_weights: np.ndarray, sites: Sequence[str]) -> State:
        return {"norms": {}, "sites": list(sites)}

    def _personal(self, global_weights: np.ndarray, site: str, state: State) -> np.ndarray:
        own = state["norms"].get(site)
        if own is None:
            return global_weights
        weights = global_weights.copy()
        weights[self._checked_mask(global_weights.size)] = own
        return weights

    def client_weights(self, global_weights: np.ndarray, site: str, state: State) -> np.ndarray:
        return self._personal(global_weights, site, state)

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        mask = self._checked_mask(global_weights.size)
        norms = dict(state["norms"])

        def keep_norms() -> Iterable[ClientUpdate]:
            for update in updates:
                norms[update.site] = np.asarray(update.weights, np.float32)[mask].copy()
                yield update

        mean, used = average_updates(keep_norms())
        if not used:
            return global_weights, state, {"clients": 0}
        new_state = {**state, "norms": norms}
        return mean.result(), new_state, {"clients": mean.clients, "local_entries": int(mask.sum())}

    def final_models(self, global_weights: np.ndarray, state: State) -> dict[str, np.ndarray]:
        personal = {local_key(site): self._personal(global_weights, site, state) for site in state["sites"]}
        return {"global": global_weights, **personal}

    def round_models(self, global_weights: np.ndarray, state: State, sites: Sequence[str]) -> dict[str, np.ndarray]:
        return {site: self._personal(global_weights, site, state) for site in sites}
