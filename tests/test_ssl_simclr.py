"""SimCLR pretraining: NT-Xent by hand, radiograph views, the loss falls on small synthetic images, and
federated SSL aggregates only encoder tensors (the projector stays with each site)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from medfed.fl.strategies import FedAvg
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import get_weights, layout_of
from medfed.ssl.augment import RadiographViews
from medfed.ssl.objectives import nt_xent
from medfed.ssl.simclr import LocalEntries, SimCLRConfig, SimCLRTask, encoder_state


def test_nt_xent_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # anchor 0: positive similarity 1, negatives 0 and 0 -> -log(e / (e + 2)); all four anchors alike
    assert float(nt_xent(z, z.clone(), temperature=1.0)) == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        nt_xent(z[:1], z[:1])


def test_radiograph_views_are_reproducible_in_range_and_different():
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    views = RadiographViews()
    a1, b1 = views(x, torch.Generator().manual_seed(1))
    a2, _ = views(x, torch.Generator().manual_seed(1))
    assert a1.shape == x.shape and float(a1.min()) >= 0 and float(a1.max()) <= 1
    assert torch.equal(a1, a2) and not torch.equal(a1, b1)


def _images(n: int = 32, size: int = 32) -> list[dict]:
    """Synthetic 'radiographs': a bright disc of random size and place on a dark gradient."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for i in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        image = 0.2 + 0.3 * yy + 0.5 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2)
        out.append({"image": torch.tensor(image[None], dtype=torch.float32), "case_id": str(i)})
    return out


def test_simclr_loss_falls_on_small_synthetic_images():
    task = SimCLRTask(SimCLRConfig(network="resnet", feature_dim=32, projection_dim=16, batch_size=16,
                                   optimizer={"lr": 0.003}))
    model = task.build_model(0)
    result = task.local_train(model, _images(), epochs=12, seed=0)
    first, last = np.mean(result.losses[:4]), np.mean(result.losses[-4:])
    assert last < first - 0.1, (first, last)
    assert set(encoder_state(model)) == set(model.encoder.state_dict())


def test_federated_ssl_aggregates_only_encoder_tensors():
    task = SimCLRTask(SimCLRConfig(network="resnet", feature_dim=8, projection_dim=4))
    model = task.build_model(0)
    strategy = LocalEntries(FedAvg())
    strategy.prepare(model)
    layout = layout_of(model)
    projector = np.repeat([n.startswith("projector.") for n in layout.names], layout.sizes).astype(bool)
    assert projector.any() and (~projector).any() and np.array_equal(strategy.mask, projector)
    g = get_weights(model)
    state = strategy.initial_state(g, ["a", "b"])
    a, b = g + 1.0, g + 3.0
    new, state, _ = strategy.aggregate(g, iter([ClientUpdate("a", a, 1), ClientUpdate("b", b, 1)]), state)
    np.testing.assert_allclose(new[~projector], (g + 2.0)[~projector], rtol=1e-6)  # FedAvg of the encoder
    np.testing.assert_array_equal(new[projector], g[projector])  # the projector is never aggregated
    np.testing.assert_array_equal(strategy.client_weights(new, "b", state)[projector], b[projector])  # its own
    np.testing.assert_array_equal(strategy.client_weights(new, "b", state)[~projector], new[~projector])


def test_federated_simclr_through_the_runner_then_init_a_classifier(tmp_path):
    from medfed.fl.config import TrainingConfig
    from medfed.fl.runner import MethodRunner
    from medfed.sites import load_federation
    from medfed.ssl.checkpoints import save_encoder_checkpoint
    from medfed.synth.chest_xray import write_chest_xray
    from medfed.tasks.models import build_network

    write_chest_xray(tmp_path / "data", scale="small", seed=0)
    sites = list(load_federation(tmp_path / "data" / "sites" / "chest_xray.yaml"))
    spec = {"img_size": 32, "patch_size": 8, "hidden_size": 24, "mlp_dim": 48, "num_layers": 2, "num_heads": 2}
    task = SimCLRTask(SimCLRConfig(network="vit", model=spec, feature_dim=16, projection_dim=8, batch_size=8))
    strategy = LocalEntries(FedAvg())
    result = MethodRunner("simclr", task, sites, strategy, TrainingConfig(rounds=2, local_steps=2), 0,
                          tmp_path / "run", progress=False).run()
    model = task.build_model(0)
    from medfed.fl.weights import set_weights

    set_weights(model, result.models["global"])
    save_encoder_checkpoint(model.encoder, tmp_path / "ssl.pt", network="vit")
    classifier = build_network({"name": "vit", **spec, "init": {"path": str(tmp_path / "ssl.pt")}}, default="resnet",
                               spatial_dims=2, in_channels=1, out_channels=1, seed=1)
    loaded = classifier.state_dict()
    for key, value in encoder_state(model).items():
        if not key.startswith("classification_head."):
            assert torch.equal(loaded[key], value), key


def test_pretrain_command_writes_a_checkpoint_a_method_init_loads(tmp_path):
    import yaml

    from medfed.cli import main
    from medfed.synth.chest_xray import write_chest_xray

    write_chest_xray(tmp_path / "data", scale="small", seed=0)
    federation = tmp_path / "data" / "sites" / "chest_xray.yaml"
    vit = {"img_size": 32, "patch_size": 8, "hidden_size": 24, "mlp_dim": 48, "num_layers": 2, "num_heads": 2}
    pretrain = {"name": "ssl", "federation": str(federation), "where": "federated", "strategy": {"strategy": "fedavg"},
                "task": {"network": "vit", "model": vit, "feature_dim": 16, "batch_size": 8},
                "training": {"rounds": 1, "local_steps": 1}}
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(pretrain))
    assert main(["pretrain", str(tmp_path / "pretrain.yaml"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    checkpoint = tmp_path / "out" / "ssl" / "encoder.pt"
    assert checkpoint.is_file() and (tmp_path / "out" / "ssl" / "pretrain.json").is_file()
    experiment = {"name": "cmp", "federation": str(federation),
                  "task": {"kind": "classification", "model": {"name": "vit", **vit}, "batch_size": 8},
                  "training": {"rounds": 1},
                  "methods": ["fedavg", {"strategy": "fedavg", "name": "fedavg_ssl", "init": "out/ssl/encoder.pt"}]}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(experiment))
    assert main(["run", str(tmp_path / "cmp.yaml"), "--out", str(tmp_path / "out"), "--no-progress",
                 "--resamples", "100"]) == 0
    metrics = pd.read_csv(tmp_path / "out" / "cmp" / "metrics.csv")
    assert {"fedavg", "fedavg_ssl"} <= set(metrics["method"])
    broken = {**experiment, "methods": [{"strategy": "fedavg", "init": "out/ssl/pretrain.json"}]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert main(["run", str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "out2"), "--no-progress"]) == 2
    assert not (tmp_path / "out2").exists()  # refused before any output


def test_nt_xent_equals_monai_contrastive_loss():
    from monai.losses import ContrastiveLoss

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    for temperature in (0.1, 0.5):
        torch.testing.assert_close(nt_xent(a, b, temperature), ContrastiveLoss(temperature=temperature)(a, b))


def test_sweep_variants_keep_pointing_at_the_pretrained_file(tmp_path):
    import yaml

    from medfed.fl.sweep import expand

    (tmp_path / "tasks").mkdir()
    config = {"name": "budget", "federation": "demo:chest_xray", "task": {"kind": "classification"},
              "methods": ["fedavg", {"strategy": "fedavg", "name": "ssl", "init": "../reports/enc.pt"}],
              "sweep": {"parameter": "rounds", "values": [2, 8], "set": ["training.rounds"]}, "training": {"rounds": 1}}
    (tmp_path / "tasks" / "budget.yaml").write_text(yaml.safe_dump(config))
    _, _, variants = expand(tmp_path / "tasks" / "budget.yaml", tmp_path / "out")
    data = yaml.safe_load(variants[1][1].read_text())
    assert data["training"]["rounds"] == 8
    assert data["methods"][1]["init"] == {"path": str((tmp_path / "reports" / "enc.pt").resolve())}
