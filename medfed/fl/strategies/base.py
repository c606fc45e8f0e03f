"""The strategy contract: configuration and round wiring around pure aggregation maths.

``aggregate(global_weights, updates, state) -> (new_global, state, diagnostics)`` consumes ``updates``
once, in order (an iterator: the runner trains the next site only when the strategy asks for it, so a
streaming strategy never holds more than one client model). ``state`` is a dict of numpy arrays and
plain values, saved in checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from medfed.fl.update import ClientUpdate
from medfed.fl.protocols import ClientHook, TaskView

State = dict[str, Any]


class Strategy(ABC):
    """One federated (or reference) training method."""

    #: config name, e.g. ``"fedavg"``
    name: ClassVar[str]
    #: False for methods that pool patient data (the centralised reference)
    privacy_preserving: ClassVar[bool] = True
    #: True: train one client on the union of all sites' training data
    pooled: ClassVar[bool] = False
    #: True: when every client returns the same model, that model is the new global one (False for server
    #: optimisers, which step towards it)
    consensus_fixed_point: ClassVar[bool] = True
    #: True: clients count in proportion to ``num_examples``; False: every client counts the same
    weights_by_examples: ClassVar[bool] = True
    #: True: the round moves one global model, so its step can be compared with FedAvg's on the same updates
    #: (``step_ratio``, ``step_cosine`` in the round log, :mod:`medfed.fl.step`); False for local-only training
    global_step: ClassVar[bool] = True
    #: True: the result does not depend on the order in which sites report
    order_invariant: ClassVar[bool] = True

    #: True: the runner adds ``start_loss`` to each update's diagnostics: the mean task loss of the model the
    #: site received on its own training data, before local training (a client-reported statistic)
    wants_start_loss: bool = False

    def needs_server_benchmark(self) -> bool:
        """Whether the server must hold a benchmark set (the experiment's ``server_benchmark``)."""
        return False

    def attach_server_data(self, task: TaskView, model: nn.Module, benchmark: Dataset | None) -> None:
        """Called once by the runner after :meth:`prepare`: the task, a scratch model of the same layout and
        the server's own benchmark data (``None`` when the experiment gives none)."""

    def prepare(self, model: nn.Module) -> None:
        """Called once by the runner with the freshly built model, before :meth:`initial_state`; strategies
        that treat parts of the weight vector differently (FedBN) read the layout here."""

    def check_task(self, task: TaskView) -> str | None:
        """Why this strategy cannot train ``task`` (``None``: it can); checked before any training."""
        return None

    def initial_state(self, global_weights: np.ndarray, sites: Sequence[str]) -> State:
        return {}

    def client_weights(self, global_weights: np.ndarray, site: str, state: State) -> np.ndarray:
        """The weights ``site`` starts its local training from (default: the global model)."""
        return global_weights

    def client_hooks(self, model: nn.Module, site: str | None = None, state: State | None = None) -> list[ClientHook]:
        """Hooks for ``site``'s local training, built after its start weights are loaded into ``model``."""
        return []

    @abstractmethod
    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]: ...

    def final_models(self, global_weights: np.ndarray, state: State) -> dict[str, np.ndarray]:
        """Models to evaluate at the end, by name (default: ``{"global": ...}``)."""
        return {"global": global_weights}

    def round_models(self, global_weights: np.ndarray, state: State, sites: Sequence[str]) -> dict[str, np.ndarray]:
        """The model each site uses after a round (for per-round evaluation); default: the global one."""
        return {site: global_weights for site in sites}

    def params(self) -> dict[str, Any]:
        """Hyper-parameters, for logs and the resolved config."""
        return {}
