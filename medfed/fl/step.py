"""Step diagnostic: how far a strategy moves the global model, against FedAvg on the same client updates.

With ``g`` the round's global weights, ``g'`` the strategy's new global model and ``m = sum_k n_k w_k / sum_k n_k``
FedAvg's average of the same updates (McMahan et al. 2017)::

    step_ratio  = ||g' - g|| / ||m - g||
    step_cosine = <g' - g, m - g> / (||g' - g|| ||m - g||)

FedAvg gives 1 and 1 by construction; a server learning rate ``eta`` gives ``eta`` and 1. A spectral aggregation
such as FedLD's (Zeng et al., MICCAI 2024) keeps only part of each update and takes a shorter step, which is what makes it
trail FedAvg from a random start. Both are ``None`` when FedAvg does not move (``m = g``) or nothing arrived.

:class:`FedAvgShadow` wraps the update stream the strategy consumes, so the comparison costs one pass and one
float64 model, and the strategy still sees every update once, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from medfed.fl.strategies.fedavg import StreamingWeightedMean
from medfed.fl.update import ClientUpdate


def step_diagnostic(global_weights: np.ndarray, new_global: np.ndarray, fedavg: np.ndarray) -> dict[str, float | None]:
    """``{"step_ratio": ||g' - g|| / ||m - g||, "step_cosine": cos(g' - g, m - g)}`` in float64 (``None`` where the
    FedAvg step is zero; the cosine is also ``None`` when the strategy does not move)."""
    g = np.asarray(global_weights, dtype=np.float64)
    step = np.asarray(new_global, dtype=np.float64) - g
    reference = np.asarray(fedavg, dtype=np.float64) - g
    step_norm, reference_norm = float(np.linalg.norm(step)), float(np.linalg.norm(reference))
    if reference_norm == 0.0:
        return {"step_ratio": None, "step_cosine": None}
    cosine = float(step @ reference / (step_norm * reference_norm)) if step_norm > 0 else None
    return {"step_ratio": step_norm / reference_norm, "step_cosine": cosine}


class FedAvgShadow:
    """Pass ``updates`` through unchanged while keeping FedAvg's running weighted mean of them."""

    def __init__(self, updates: Iterable[ClientUpdate]) -> None:
        self._updates = updates
        self._mean = StreamingWeightedMean()

    def __iter__(self) -> Iterator[ClientUpdate]:
        for update in self._updates:
            self._mean.add(update.weights, update.num_examples)
            yield update

    def diagnostic(self, global_weights: np.ndarray, new_global: np.ndarray) -> dict[str, float | None] | None:
        """The step diagnostic of ``new_global`` (``None`` when no update with examples went through)."""
        if self._mean.total is None or self._mean.count <= 0:
            return None
        return step_diagnostic(global_weights, new_global, self._mean.result())


def mean_step_ratio(rounds: Sequence[Mapping[str, Any]]) -> float | None:
    """The mean ``step_ratio`` over the logged rounds that have one (``None`` when none has): the server learning rate
    of a FedAvg whose steps are, on average, as long as that method's (``server_learning_rate: match:<method>``)."""
    values = [float(r["step_ratio"]) for r in rounds if r.get("step_ratio") is not None]
    return float(np.mean(values)) if values else None


__all__ = ["FedAvgShadow", "mean_step_ratio", "step_diagnostic"]
