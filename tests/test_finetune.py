"""Fine-tuning policies: a linear probe trains only the head (gradients asserted), layer-wise learning-rate
decay sets lr * decay^(L - level) per depth level, full fine-tuning trains everything."""

from __future__ import annotations

import pytest
import torch

from medfed.errors import ConfigError
from medfed.tasks import ClassificationConfig, build_task
from medfed.tasks.finetune import (
    FinetuneConfig,
    apply_policy,
    depth_levels,
    head_parameters,
    parameter_groups,
)
from medfed.tasks.models import build_network


def vit(layers: int = 2):
    return build_network({"name": "vit", "img_size": 16, "patch_size": 8, "hidden_size": 24, "mlp_dim": 48,
                          "num_layers": layers, "num_heads": 2}, default="resnet", spatial_dims=2, in_channels=1,
                         out_channels=1, seed=0)


def resnet():
    return build_network({"name": "resnet"}, default="resnet", spatial_dims=2, in_channels=1, out_channels=1, seed=0)


def _batch(n: int = 4, size: int = 16) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, size, size, generator=generator), "label": torch.tensor([float(i % 2)]),
             "case_id": str(i)} for i in range(n)]


@pytest.mark.parametrize("network", [vit, resnet])
def test_linear_probe_trains_only_the_head(network):
    model = network()
    task = build_task(ClassificationConfig(labels=["x"], finetune={"policy": "linear_probe"}, batch_size=4))
    task.labels = ["x"]
    apply_policy(model, task.config.finetune)
    head = set(head_parameters(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = task.loader(_batch(), train=True).__iter__().__next__()
    model.train()
    task.loss(model, batch).backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == (name in head), name
    task.local_train(model, _batch(), epochs=2)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) == (name not in head), name


def test_full_policy_trains_every_parameter():
    model = vit()
    groups = parameter_groups(model, FinetuneConfig(), 0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_layer_wise_decay_by_hand():
    model = vit(layers=2)  # levels: embeddings 0, blocks.0 -> 1, blocks.1 -> 2, norm and head 3
    levels = depth_levels(model)
    assert levels["cls_token"] == 0 and levels["patch_embedding.position_embeddings"] == 0
    assert levels["blocks.0.mlp.linear1.weight"] == 1 and levels["blocks.1.attn.qkv.weight"] == 2
    assert levels["norm.weight"] == 3 and levels["classification_head.weight"] == 3
    groups = parameter_groups(model, FinetuneConfig(policy="llrd", layer_decay=0.5), 0.8)
    assert [(g["level"], g["lr"]) for g in groups] == [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8)]
    res = depth_levels(resnet())  # stem 0, layer1..4 -> 1..4, fc 5
    assert res["conv1.weight"] == 0 and res["layer1.0.conv1.weight"] == 1 and res["fc.weight"] == 5


def test_llrd_on_a_network_without_blocks_is_a_clear_error():
    model = build_network({"name": "unet"}, default="unet", spatial_dims=2, in_channels=1, out_channels=2, seed=0)
    with pytest.raises(ConfigError, match="head|blocks"):
        depth_levels(model)


def test_task_model_init_loads_an_encoder_checkpoint_and_keeps_the_head(tmp_path):
    from medfed.ssl.checkpoints import CheckpointError, save_encoder_checkpoint

    source = vit()
    with torch.no_grad():
        for param in source.parameters():
            param.add_(0.5)
    save_encoder_checkpoint(source, tmp_path / "encoder.pt", network="vit")
    spec = {"name": "vit", "img_size": 16, "patch_size": 8, "hidden_size": 24, "mlp_dim": 48, "num_layers": 2,
            "num_heads": 2, "init": {"path": str(tmp_path / "encoder.pt"), "format": "medfed"}}
    model = build_network(spec, default="resnet", spatial_dims=2, in_channels=1, out_channels=1, seed=0)
    fresh = vit()
    for (name, loaded), original, initial in zip(model.named_parameters(), source.parameters(), fresh.parameters()):
        assert torch.equal(loaded, initial if name.startswith("classification_head.") else original), name
    wider = {**spec, "hidden_size": 48, "mlp_dim": 96}
    with pytest.raises(CheckpointError, match="mismatch"):
        build_network(wider, default="resnet", spatial_dims=2, in_channels=1, out_channels=1, seed=0)
