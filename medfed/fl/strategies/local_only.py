"""Local-only training: every site trains its own model on its own data, nothing is shared.

The baseline of every site-level evaluation ("does federation help *my* site?"): site ``k``'s model after
round ``t`` is simply its own model trained for ``t * local_epochs`` epochs. Kept in the same round loop as
the federated methods so budgets, seeding, checkpoints and resume are identical; the state holds the K
site models (the algorithm needs them all).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.update import ClientUpdate


def local_key(site: str) -> str:
    return f"local:{site}"


class LocalOnly(Strategy):
    name: ClassVar[str] = "local_only"
    global_step: ClassVar[bool] = False  # no global model moves: each site keeps its own

    def initial_state(self, global_weights: np.ndarray, sites: Sequence[str]) -> State:
        return {"models": {site: global_weights.copy() for site in sites}}

    def client_weights(self, global_weights: np.ndarray, site: str, state: State) -> np.ndarray:
        return state["models"][site]

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        models = dict(state["models"])
        trained = []
        for update in updates:
            models[update.site] = update.weights
            trained.append(update.site)
        return global_weights, {"models": models}, {"clients": len(trained)}

    def final_models(self, global_weights: np.ndarray, state: State) -> dict[str, np.ndarray]:
        return {local_key(site): w for site, w in state["models"].items()}

    def round_models(self, global_weights: np.ndarray, state: State, sites: Sequence[str]) -> dict[str, np.ndarray]:
        return {site: state["models"][site] for site in sites}
