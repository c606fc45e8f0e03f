"""Client-side algorithm hooks, run inside a task's local training (see :class:`medfed.fl.protocols.ClientHook`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfed.fl.protocols import ClassifierView, ClientHook


class ProximalTerm(ClientHook):
    """FedProx's ``(mu / 2) * ||w - w_start||^2`` over the trainable parameters (Li et al., MLSys 2020).

    ``w_start`` is a snapshot of the model's parameters when the hook is built (the global model the
    client received).
    """

    def __init__(self, model: nn.Module, mu: float) -> None:
        self.mu = float(mu)
        self.reference = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    def penalty(self, model: nn.Module) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        squared = sum(((p - r) ** 2).sum() for p, r in zip(params, self.reference))
        return 0.5 * self.mu * squared  # type: ignore[return-value]


class GradientCorrection(ClientHook):
    """Adds a fixed vector to every parameter's gradient before each optimiser step: SCAFFOLD's
    ``g_i(y) - c_i + c`` (Karimireddy et al., ICML 2020, Algorithm 1, line 10); ``corrections`` are
    ``c - c_i``, one tensor per trainable parameter in ``model.parameters()`` order."""

    def __init__(self, corrections: list[torch.Tensor]) -> None:
        self.corrections = corrections

    def after_backward(self, model: nn.Module) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        for param, correction in zip(params, self.corrections, strict=True):
            if param.grad is not None:
                param.grad.add_(correction.to(param.grad.dtype))


class MarginControl(ClientHook):
    """FedLD's margin control regularisation (Zeng et al., MICCAI 2024, "Tackling data heterogeneity in
    federated learning via loss decomposition"): ``lambda * log(1 + ||P||_F^2)`` added to the task loss,
    where ``P`` stacks the class-probability vectors of the batch (the Frobenius norm is over the whole
    batch, as in the authors' code). It penalises confident outputs, limiting how far local training pulls
    the decision margins towards the site's own distribution (the distribution-shift loss).

    ``P`` comes from :meth:`medfed.tasks.base.Task.class_probabilities`: softmax rows for a softmax head,
    ``(1 - p, p)`` per finding for medfed's sigmoid classification head.
    """

    def __init__(self, margin_lambda: float) -> None:
        self.margin_lambda = float(margin_lambda)

    def output_penalty(self, task: ClassifierView, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        probabilities = task.class_probabilities(outputs, batch)
        return self.margin_lambda * torch.log1p((probabilities**2).sum())
