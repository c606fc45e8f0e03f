"""Fine-tuning policies (the task config's ``finetune``): which parameters train, at which learning rate.

``full``
    every parameter at the optimiser's ``lr``.
``linear_probe``
    only the classification head trains; every other parameter is frozen (``requires_grad = False``), so
    a pretrained encoder is evaluated as a fixed feature extractor.
``llrd`` (layer-wise learning-rate decay; Clark et al., ICLR 2020, ELECTRA; Bao et al., ICLR 2022, BEiT)
    parameter group ``l`` of ``L + 1`` depth levels (0 = input embedding, ``L`` = head) trains at
    ``lr * layer_decay ** (L - l)``: layers near the input, which hold the most general features, move least.

Depth levels are known for MONAI's ``ViT`` (patch embedding and cls token 0, block ``i`` -> ``i + 1``, final
norm and head ``L``) and ``ResNet`` (stem 0, ``layerK`` -> ``K``, ``fc`` last); the head is the
``classification_head`` (ViT), ``fc`` (ResNet) or ``class_layers`` (DenseNet).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medfed.errors import ConfigError

HEAD_PREFIXES = ("classification_head.", "fc.", "class_layers.")


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: Literal["full", "linear_probe", "llrd"] = "full"
    layer_decay: float = Field(0.75, gt=0, le=1, description="llrd: lr factor per level below the head")


def head_parameters(model: nn.Module) -> list[str]:
    """Names of the classification head's parameters (the first known head prefix the model has)."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in HEAD_PREFIXES:
        found = [n for n in names if n.startswith(prefix)]
        if found:
            return found
    raise ConfigError(f"finetune: no classification head found in {type(model).__name__} "
                      f"(looked for parameters starting with {', '.join(HEAD_PREFIXES)})")


def depth_levels(model: nn.Module) -> dict[str, int]:
    """``name -> level`` for every parameter (0 = input side, max = head); ConfigError for unknown networks."""
    names = [n for n, _ in model.named_parameters()]
    head = set(head_parameters(model))
    block = re.compile(r"^(?:blocks\.|layer)(\d+)\.")
    indices = [int(m.group(1)) for n in names if (m := block.match(n))]
    if not indices:
        raise ConfigError(f"finetune llrd: {type(model).__name__} has no numbered blocks (blocks.N or layerN); "
                          "llrd supports MONAI's ViT and ResNet")
    offset = 1 if any(n.startswith("blocks.") for n in names) else 0  # ViT blocks count from 0, ResNet layers from 1
    top = max(indices) + offset + 1
    levels = {}
    for name in names:
        match = block.match(name)
        if match:
            levels[name] = int(match.group(1)) + offset
        elif name in head or name.startswith("norm."):
            levels[name] = top
        else:
            levels[name] = 0
    return levels


def apply_policy(model: nn.Module, config: FinetuneConfig) -> nn.Module:
    """Freeze what ``config`` freezes (a linear probe: everything but the head); idempotent. The runner calls
    it right after building the model, so hooks that read ``requires_grad`` see the final set."""
    if config.policy == "linear_probe":
        head = set(head_parameters(model))
        for name, param in model.named_parameters():
            param.requires_grad_(name in head)
    return model


def parameter_groups(model: nn.Module, config: FinetuneConfig, lr: float) -> list[dict]:
    """Optimiser parameter groups for ``config`` (after :func:`apply_policy`)."""
    apply_policy(model, config)
    params = dict(model.named_parameters())
    if config.policy in ("full", "linear_probe"):
        return [{"params": [p for p in params.values() if p.requires_grad], "lr": lr}]
    levels = depth_levels(model)
    top = max(levels.values())
    groups: dict[int, list[nn.Parameter]] = {}
    for name, param in params.items():
        if param.requires_grad:
            groups.setdefault(levels[name], []).append(param)
    return [{"params": groups[level], "lr": lr * config.layer_decay ** (top - level), "level": level}
            for level in sorted(groups)]
