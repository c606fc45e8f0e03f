"""SimCLR pretraining of a task's network (Chen et al., ICML 2020), centrally or federated.

The encoder is the task's own network (e.g. ``vit`` or ``resnet``), built with ``feature_dim`` outputs: its
head output is the representation a projection MLP (``projector``: Linear-ReLU-Linear, as in SimCLR) maps to
the space where :func:`medfed.ssl.objectives.nt_xent` compares two views (:class:`RadiographViews`).
After pretraining, :func:`encoder_state` drops the projector (SimCLR discards it) and the head belongs to
the downstream task, which starts it fresh (:mod:`medfed.ssl.checkpoints`).

:class:`SimCLRTask` is a :class:`medfed.tasks.base.Task`, so federated SSL runs through medfed's runner
with any strategy; :class:`LocalEntries` keeps the projector out of aggregation (each site keeps its own),
so only encoder tensors are aggregated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import layout_of
from medfed.ssl.augment import RadiographViews
from medfed.ssl.objectives import nt_xent
from medfed.ssl.task import PretrainTask
from medfed.tasks.base import TaskConfigBase
from medfed.tasks.models import build_network

PROJECTOR = "projector."


class SimCLRModel(nn.Module):
    """``encoder`` (features ``(B, feature_dim)``) followed by the projection MLP."""

    def __init__(self, encoder: nn.Module, feature_dim: int, projection_dim: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(),
                                       nn.Linear(feature_dim, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


class SimCLRConfig(TaskConfigBase):
    """SimCLR on the images of each site's ``splits`` (labels are never read)."""

    kind: Literal["simclr"] = "simclr"
    network: str = "resnet"
    in_channels: int = 1
    spatial_dims: int = 2
    feature_dim: int = 128
    projection_dim: int = 64
    temperature: float = 0.1
    splits: list[str] = Field(default_factory=lambda: ["train"], min_length=1)


class SimCLRTask(PretrainTask):
    kind: ClassVar[str] = "ssl_simclr"
    #: weight entries that stay at each site in federated pretraining (never aggregated)
    local_prefixes: ClassVar[tuple[str, ...]] = (PROJECTOR,)
    config: SimCLRConfig

    def __init__(self, config: SimCLRConfig, views: RadiographViews | None = None) -> None:
        super().__init__(config)
        self.views = views or RadiographViews()

    def build_model(self, seed: int) -> nn.Module:
        spec = {"name": self.config.network, **self.config.model}
        encoder = build_network(spec, default=self.config.network, spatial_dims=self.config.spatial_dims,
                                in_channels=self.config.in_channels, out_channels=self.config.feature_dim, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return SimCLRModel(encoder, self.config.feature_dim, self.config.projection_dim)

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Projections of two random views (drawn from torch's RNG, which local training seeds)."""
        first, second = self.views(batch["image"], generator=None)  # type: ignore[arg-type]
        return model(first), model(second)

    def criterion(self, outputs: Any, batch: dict[str, Any]) -> torch.Tensor:
        """NT-Xent of the two views; a batch of one image has no negative and contributes 0."""
        if outputs[0].shape[0] < 2:
            return outputs[0].sum() * 0.0
        return nt_xent(outputs[0], outputs[1], self.config.temperature)



def encoder_state(model: SimCLRModel) -> dict[str, torch.Tensor]:
    """The encoder's state dict (keys as in the task's network), ready for ``save_encoder_checkpoint``."""
    return {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}


class LocalEntries(Strategy):
    """Any strategy with some weight entries kept per site and out of aggregation (federated SSL keeps the
    projector local): each update's ``prefixes`` entries are stored for its site and replaced by the global
    model's before ``inner`` aggregates, so those entries of the global model never change; a site starts
    each round from the global model with its own entries put back."""

    def __init__(self, inner: Strategy, prefixes: Sequence[str] = (PROJECTOR,)) -> None:
        self.inner, self.prefixes = inner, tuple(prefixes)
        self.name = f"{inner.name}+local"  # type: ignore[misc]
        self.mask: np.ndarray | None = None

    def prepare(self, model: nn.Module) -> None:
        self.inner.prepare(model)
        layout = layout_of(model)
        self.mask = np.repeat([n.startswith(self.prefixes) for n in layout.names], layout.sizes).astype(bool)

    def initial_state(self, global_weights: np.ndarray, sites: Sequence[str]) -> State:
        return {"inner": self.inner.initial_state(global_weights, sites), "local": {}}

    def client_weights(self, global_weights: np.ndarray, site: str, state: State) -> np.ndarray:
        weights = self.inner.client_weights(global_weights, site, state["inner"])
        own = state["local"].get(site)
        if own is None:
            return weights
        weights = weights.copy()
        weights[self.mask] = own
        return weights

    def client_hooks(self, model: nn.Module, site: str | None = None, state: State | None = None) -> list:
        return self.inner.client_hooks(model, site, None if state is None else state["inner"])

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        assert self.mask is not None, "call prepare(model) first"
        local = dict(state["local"])

        def shared_only() -> Iterable[ClientUpdate]:
            for update in updates:
                local[update.site] = update.weights[self.mask].copy()
                weights = update.weights.copy()
                weights[self.mask] = global_weights[self.mask]
                yield ClientUpdate(update.site, weights, update.num_examples, update.diagnostics)

        new, inner_state, diagnostics = self.inner.aggregate(global_weights, shared_only(), state["inner"])
        return new, {"inner": inner_state, "local": local}, {**diagnostics, "local_entries": int(self.mask.sum())}
