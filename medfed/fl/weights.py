"""Model weights as one flat float32 vector plus a layout, so strategies are plain vector maths.

Every ``state_dict`` entry travels (parameters and buffers, e.g. batch-norm statistics, as Flower sends
them); integer buffers are carried as float32 and rounded back on load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class WeightLayout:
    """Names, shapes and dtypes of a model's ``state_dict`` entries, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s)) for s in self.shapes)

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def is_float(self) -> np.ndarray:
        """Boolean mask over the flat vector: True where the entry is floating point (trainable or statistic)."""
        return np.repeat([d.is_floating_point for d in self.dtypes], self.sizes).astype(bool)


def layout_of(model: nn.Module) -> WeightLayout:
    state = model.state_dict()
    return WeightLayout(
        names=tuple(state), shapes=tuple(tuple(t.shape) for t in state.values()),
        dtypes=tuple(t.dtype for t in state.values()),
    )


def get_weights(model: nn.Module) -> np.ndarray:
    """The model's ``state_dict`` as one flat float32 vector (a copy)."""
    parts = [t.detach().reshape(-1).to(torch.float32) for t in model.state_dict().values()]
    return torch.cat(parts).numpy().copy() if parts else np.zeros(0, np.float32)


def set_weights(model: nn.Module, weights: np.ndarray, layout: WeightLayout | None = None) -> None:
    """Load a flat vector made by :func:`get_weights` into ``model`` (shapes checked against its layout)."""
    layout = layout or layout_of(model)
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (layout.size,):
        raise ValueError(f"weight vector has shape {weights.shape}; the model needs ({layout.size},)")
    flat = torch.from_numpy(weights)
    state, offset = {}, 0
    for name, shape, dtype, size in zip(layout.names, layout.shapes, layout.dtypes, layout.sizes):
        part = flat[offset:offset + size].reshape(shape)
        state[name] = part.clone() if dtype.is_floating_point else torch.round(part).to(dtype)
        offset += size
    model.load_state_dict(state)


def model_divergence(reference: np.ndarray, reference_norm: float, weights: np.ndarray) -> float:
    """``1 - cos(reference, weights)``: ``reference`` already float64 with its norm (computed once per round);
    ``weights`` promoted to float64. 0 when either vector is zero."""
    w = weights.astype(np.float64)
    norms = reference_norm * float(np.linalg.norm(w))
    return 1.0 - float(reference @ w) / norms if norms > 0 else 0.0
