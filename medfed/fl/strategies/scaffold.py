"""SCAFFOLD: stochastic controlled averaging (Karimireddy et al., ICML 2020, Algorithm 1, option II).

Control variates correct client drift. The server keeps ``c``; each site keeps ``c_i`` (strategy state,
checkpointed, so resume is exact; K float32 vectors, as the algorithm needs). A client starts from ``x`` and takes
its ``K`` local steps with corrected gradients ``g_i(y) - c_i + c``, ending at ``y_i``; then
``c_i⁺ = c_i - c + (x - y_i) / (K η_l)`` on trainable parameters (η_l = the task's local learning rate;
option II assumes plain SGD steps). The server sets ``x ← x + η_g mean_i(y_i - x)`` (unweighted, as in the
paper; buffers such as running statistics are averaged the same way) and ``c ← c + (1/N) Σ_i (c_i⁺ - c_i)``
over the ``N`` sites of the federation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from medfed.fl.client import GradientCorrection
from medfed.fl.strategies.base import State, Strategy
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import layout_of
from medfed.fl.protocols import ClientHook


class Scaffold(Strategy):
    name: ClassVar[str] = "scaffold"
    weights_by_examples: ClassVar[bool] = False

    def __init__(self, server_learning_rate: float = 1.0) -> None:
        if server_learning_rate <= 0:
            raise ValueError(f"server_learning_rate must be > 0, got {server_learning_rate}")
        self.server_learning_rate = float(server_learning_rate)
        self.slices: list[tuple[int, int, tuple[int, ...]]] | None = None  # (offset, size, shape) per parameter
        self.mask: np.ndarray | None = None

    def prepare(self, model: nn.Module) -> None:
        layout = layout_of(model)
        offsets = dict(zip(layout.names, np.cumsum((0, *layout.sizes))[:-1], strict=True))
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.slices = [(int(offsets[name]), p.numel(), tuple(p.shape)) for name, p in trainable]
        self.mask = np.zeros(layout.size, bool)
        for offset, size, _ in self.slices:
            self.mask[offset:offset + size] = True

    def _checked(self, size: int) -> np.ndarray:
        if self.mask is None or self.mask.size != size:
            raise RuntimeError("SCAFFOLD needs the model layout: call prepare(model) before training")
        return self.mask

    def initial_state(self, global_weights: np.ndarray, sites: Sequence[str]) -> State:
        return {"c": np.zeros(global_weights.shape, np.float64), "c_sites": {}, "sites": len(sites)}

    def client_hooks(self, model: nn.Module, site: str | None = None, state: State | None = None) -> list[ClientHook]:
        if site is None or state is None or self.slices is None:
            return []
        c = state["c"]
        correction = c - state["c_sites"].get(site, np.zeros_like(c))
        tensors = [torch.from_numpy(correction[o:o + n].reshape(shape).astype(np.float32)) for o, n, shape in self.slices]
        return [GradientCorrection(tensors)]

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        mask = self._checked(global_weights.size)
        x = global_weights.astype(np.float64)
        c = state["c"]
        c_sites = dict(state["c_sites"])
        delta_sum = np.zeros_like(x)
        control_sum = np.zeros_like(x)
        clients = 0
        for update in updates:
            y = np.asarray(update.weights, np.float64)
            steps = int(update.diagnostics.get("steps", 0))
            lr = float(update.diagnostics.get("lr", 0.0))
            if steps <= 0 or lr <= 0:
                raise ValueError(f"SCAFFOLD needs the local steps and learning rate of site {update.site}")
            old = c_sites.get(update.site, np.zeros(x.shape, np.float32)).astype(np.float64)
            new = np.where(mask, old - c + (x - y) / (steps * lr), 0.0).astype(np.float32)  # K of them: float32
            control_sum += new - old
            c_sites[update.site] = new
            delta_sum += y - x
            clients += 1
        if clients == 0:
            return global_weights, state, {"clients": 0}
        new_global = (x + self.server_learning_rate * delta_sum / clients).astype(np.float32)
        new_c = c + control_sum / max(int(state["sites"]), 1)
        return new_global, {**state, "c": new_c, "c_sites": c_sites}, {"clients": clients}

    def params(self) -> dict[str, Any]:
        return {"server_learning_rate": self.server_learning_rate}
