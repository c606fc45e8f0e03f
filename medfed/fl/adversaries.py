"""Simulated malicious sites: what a compromised client submits instead of its honest update.

Selected per site in the experiment's ``site_conditions`` (``adversary: {kind: ...}``). The runner trains the
site honestly first (its model then holds the honest local weights ``h``), and the adversary turns
``(g, h)`` into the submitted weights ``w`` (``g``: the global model the site received):

``scaled`` (boosting / model replacement, Bagdasaryan et al., AISTATS 2020)
    ``w = g + factor * (h - g)``.
``noise`` (the Gaussian Byzantine client of Blanchard et al., NeurIPS 2017)
    ``w = g + N(0, sigma^2 I)`` on floating-point entries, drawn from ``(seed, round, site)``.
``forger`` (the FedAgain papers' "expert forger", our construction; see :class:`ExpertForger`)
    a harmful update forged to look like an honest one to a divergence check.
``label_flip``
    label poisoning: the site trains honestly on flipped training labels (a data condition applied by
    :class:`medfed.sites.conditioned.ConditionedSite`; its update is not altered here).

Data poisoning by corrupted images is the ``corruption`` condition of the same config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import Dataset

from medfed.fl.weights import get_weights, model_divergence, set_weights
from medfed.seeding import rng_for
from medfed.fl.protocols import ClientHook
from medfed.tasks.base import Task


class AdversaryConfig(BaseModel):
    """``{kind, factor, sigma, claimed_examples}`` (the fields a kind does not use are ignored)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["forger", "scaled", "noise", "label_flip"]
    factor: float = Field(10.0, description="scaled: multiplier of the honest update")
    sigma: float = Field(0.1, gt=0, description="noise: standard deviation of the random update")
    claimed_examples: int | None = Field(
        None, ge=1, description="number of training examples the site reports (default: the true number)"
    )


@dataclass
class AttackContext:
    """What a malicious site has at hand after its honest local training."""

    task: Task
    model: nn.Module  # holds the honest local weights h on entry
    dataset: Dataset  # the site's training data
    global_weights: np.ndarray  # g
    honest_weights: np.ndarray  # h
    float_mask: np.ndarray  # True on floating-point entries (integer buffers are never forged)
    budget: dict[str, Any]  # local_train's epochs / max_steps: the same local work as honest training
    seed: int


class Adversary(ABC):
    kind: str

    @abstractmethod
    def forge(self, context: AttackContext) -> np.ndarray:
        """The flat weights the site submits."""


class ScaledUpdate(Adversary):
    kind = "scaled"

    def __init__(self, factor: float) -> None:
        self.factor = float(factor)

    def forge(self, context: AttackContext) -> np.ndarray:
        g, h = context.global_weights, context.honest_weights
        return np.where(context.float_mask, g + self.factor * (h - g), h).astype(np.float32)


class RandomUpdate(Adversary):
    kind = "noise"

    def __init__(self, sigma: float) -> None:
        self.sigma = float(sigma)

    def forge(self, context: AttackContext) -> np.ndarray:
        noise = rng_for(context.seed, "noise-attack").normal(0.0, self.sigma, context.global_weights.shape)
        g = context.global_weights
        return np.where(context.float_mask, g + noise, context.honest_weights).astype(np.float32)


class HonestUpdate(Adversary):
    """Label flipping: the poisoning is in the data, the update is the (poisoned) honest one."""

    kind = "label_flip"

    def forge(self, context: AttackContext) -> np.ndarray:
        return context.honest_weights


class _LossAscent(ClientHook):
    """Adds ``-2 x task loss`` to each step, so the optimiser minimises ``-loss`` (gradient ascent)."""

    def output_penalty(self, task: Task, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return -2.0 * task.criterion(outputs, batch)


def cosine_divergence(reference: np.ndarray, weights: np.ndarray) -> float:
    """``1 - cos(reference, weights)`` in float64: FedAgain's model divergence, the signal the forger imitates."""
    a = reference.astype(np.float64)
    return model_divergence(a, float(np.linalg.norm(a)), weights)


def match_divergence(g: np.ndarray, direction: np.ndarray, target: float, iterations: int = 60) -> float:
    """The step ``s >= 0`` with ``1 - cos(g, g + s * direction) = target`` (bisection; the divergence grows
    from 0 at ``s = 0``); the largest bracketed step when ``target`` cannot be reached."""
    g64, d64 = g.astype(np.float64), direction.astype(np.float64)
    gg, gd, dd = float(g64 @ g64), float(g64 @ d64), float(d64 @ d64)
    if gg == 0 or dd == 0:
        return 0.0

    def divergence(s: float) -> float:  # closed form of 1 - cos(g, g + s d) from three dot products
        return 1.0 - (gg + s * gd) / np.sqrt(gg * max(gg + 2 * s * gd + s * s * dd, 1e-300))

    high = np.sqrt(gg / dd) * 1e-3
    for _ in range(80):
        if divergence(high) >= target:
            break
        high *= 2
    else:
        return high
    low = 0.0
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if divergence(mid) < target else (low, mid)
    return 0.5 * (low + high)


class ExpertForger(Adversary):
    """The "expert forger" of Reyes-Amezcua et al. (FedAgain, arXiv 2603.19512), built as follows (the
    papers name the threat; this construction is ours, stated here so it can be tested and criticised):

    1. train honestly from ``g`` to ``h``: the forger learns what a trustworthy update looks like, its
       divergence ``d_h = 1 - cos(g, h)`` (the signal a divergence-based server checks);
    2. train a harmful model ``m`` from ``g`` with the same local budget by gradient *ascent* on the task
       loss over its own data (the model gets worse at the task; task-agnostic);
    3. submit ``w = g + s (m - g)`` with the step ``s`` solved so that ``1 - cos(g, w) = d_h``: the forged
       update has exactly an honest update's divergence, so a divergence check cannot tell it apart.

    It cannot imitate the server's benchmark reliability signal without the server's benchmark data,
    which is the point of FedAgain's second signal. Integer buffers are submitted unchanged.
    """

    kind = "forger"

    def forge(self, context: AttackContext) -> np.ndarray:
        g, h, mask = context.global_weights, context.honest_weights, context.float_mask
        target = cosine_divergence(g[mask], h[mask])
        set_weights(context.model, g)
        context.task.local_train(context.model, context.dataset, **context.budget, seed=context.seed,
                                 hooks=[_LossAscent()])
        harmful = get_weights(context.model)
        direction = np.where(mask, harmful - g, 0.0).astype(np.float32)
        step = match_divergence(g[mask], direction[mask], target)
        return np.where(mask, g + step * direction, h).astype(np.float32)


def build_adversary(config: AdversaryConfig) -> Adversary:
    if config.kind == "forger":
        return ExpertForger()
    if config.kind == "scaled":
        return ScaledUpdate(config.factor)
    if config.kind == "noise":
        return RandomUpdate(config.sigma)
    return HonestUpdate()


__all__: Sequence[str] = [
    "Adversary",
    "AdversaryConfig",
    "AttackContext",
    "ExpertForger",
    "HonestUpdate",
    "RandomUpdate",
    "ScaledUpdate",
    "build_adversary",
    "cosine_divergence",
    "match_divergence",
]
