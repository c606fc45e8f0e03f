"""nnU-Net's networks as a medfed network family (``model: {name: nnunet, plans, configuration, init}``).

Registered as the ``nnunet`` entry point of group ``medfed.networks`` (``pyproject.toml``), through which the
segmentation task finds it (:mod:`medfed.tasks.plugins`) without importing this layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from medfed.errors import ConfigError
from medfed.integrations.nnunet.network import DeepSupervisionLoss, NnUNetPlan, build_nnunet_network


class NnUNetNetworks:
    """``plan`` reads the plans file of a model config; ``build`` makes the plans' network from a seed; ``loss``
    is nnU-Net's deep-supervision region loss for it."""

    def plan(self, model: Mapping[str, Any], patch_size: Sequence[int] | None) -> NnUNetPlan:
        try:
            import nnunetv2  # noqa: F401 - the plans handler and losses come from nnU-Net itself
        except ImportError as err:
            raise ConfigError(f"task model nnunet needs nnU-Net: pip install 'medfed[nnunet]' ({err})") from None
        plan = NnUNetPlan.load(model["plans"], model.get("configuration", "3d_fullres"))
        if patch_size and (problems := plan.patch_problems(patch_size)):
            raise ConfigError("; ".join(problems))
        return plan

    def build(self, plan: NnUNetPlan, in_channels: int, out_channels: int, seed: int) -> nn.Module:
        return build_nnunet_network(plan, in_channels, out_channels, seed)

    def loss(self, plan: NnUNetPlan) -> nn.Module:
        return DeepSupervisionLoss(plan)


NNUNET = NnUNetNetworks()
