"""What federated strategies need of a task and of local training, as small protocols in ``fl``.

Strategies (:mod:`medfed.fl.strategies`) never import :mod:`medfed.tasks` (an import-linter contract,
``docs/design.md``): they see a task through :class:`TaskView` and act inside local training through
:class:`ClientHook` objects, which the task's training loop calls (the hook contract is
:class:`medfed.tasks.base.LocalHook`; any object with these three methods works).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset


class TaskView(Protocol):
    """The part of a :class:`medfed.tasks.base.Task` a strategy reads."""

    kind: str

    def mean_loss(self, model: nn.Module, dataset: Dataset) -> float:
        """Mean task loss of ``model`` over ``dataset``, no gradient (FedAgain's benchmark loss)."""
        ...


class ClassifierView(Protocol):
    """What FedLD's margin control reads of a classification task inside local training."""

    def class_probabilities(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """``(M, C)``: the class-probability vector of each of the batch's M labelled predictions."""
        ...


class ClientHook:
    """Something a strategy runs inside a client's local training (default: nothing).

    ``penalty(model)`` and ``output_penalty(task, outputs, batch)`` (a term on the step's network outputs) are
    added to every step's loss; ``after_backward(model)`` may edit gradients before the optimiser step.
    """

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def output_penalty(self, task: Any, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor | None:
        return None

    def after_backward(self, model: nn.Module) -> None:
        return None
