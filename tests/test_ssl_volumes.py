"""Masked-volume SSL for 3D MRI: views mask boxes, the loss falls on small synthetic volumes, and the
pretrained network loads unchanged into the segmentation task's UNet."""

from __future__ import annotations

import numpy as np
import torch

from medfed.ssl.checkpoints import save_encoder_checkpoint
from medfed.ssl.volumes import MaskedVolumeConfig, MaskedVolumeTask, masked_view
from medfed.tasks.models import build_network


def _volumes(n: int = 8, size: int = 16) -> list[dict]:
    """Synthetic 4-channel 'brains': a bright ellipsoid with channel-specific contrast, z-scored."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:size, :size, :size] / size - 0.5
    out = []
    for i in range(n):
        r = rng.uniform(0.15, 0.3)
        blob = ((x - rng.uniform(-0.1, 0.1)) ** 2 + y**2 + z**2 < r**2).astype(np.float32)
        image = np.stack([blob * (k + 1) + 0.1 * rng.standard_normal(blob.shape) for k in range(4)])
        image = (image - image.mean()) / image.std()
        out.append({"image": torch.tensor(image, dtype=torch.float32), "case_id": str(i)})
    return out


def test_masked_view_zeroes_boxes_and_keeps_shape():
    x = torch.ones(2, 4, 16, 16, 16)
    config = MaskedVolumeConfig(boxes=2, box_fraction=0.25, scale=0.0, shift=0.0)
    view = masked_view(x, config, torch.Generator().manual_seed(0))
    assert view.shape == x.shape
    zeroed = (view == 0).float().mean().item()
    assert 4**3 / 16**3 - 1e-6 <= zeroed <= 2 * 4**3 / 16**3 + 1e-6  # one or two 4^3 boxes (they may overlap)
    assert torch.equal(view[:, 0] == 0, view[:, 3] == 0)  # the same box in every channel


def test_masked_volume_loss_falls_and_the_network_loads_into_segmentation(tmp_path):
    task = MaskedVolumeTask(MaskedVolumeConfig(batch_size=4, optimizer={"lr": 0.003}))
    model = task.build_model(0)
    result = task.local_train(model, _volumes(), epochs=15, seed=0)
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4]) - 0.05
    save_encoder_checkpoint(model.encoder, tmp_path / "mri.pt", network="unet")
    segmentation = build_network({"name": "unet", "init": {"path": str(tmp_path / "mri.pt"), "format": "medfed"}},
                                 default="unet", spatial_dims=3, in_channels=4, out_channels=3, seed=1)
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(segmentation.state_dict()[key], value), key


def test_federated_masked_volume_pretraining_keeps_the_head_local(tmp_path):
    import yaml

    from medfed.cli import main
    from medfed.ssl.checkpoints import load_encoder_checkpoint
    from medfed.synth.brain_mri import write_brain_mri

    write_brain_mri(tmp_path / "data", scale="small", seed=0)
    config = {"name": "mri", "federation": str(tmp_path / "data" / "sites" / "brain_mri.yaml"), "where": "federated",
              "task": {"kind": "masked_volume", "batch_size": 2}, "training": {"rounds": 1, "local_steps": 1}}
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(config))
    assert main(["pretrain", str(tmp_path / "pretrain.yaml"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    log = (tmp_path / "out" / "mri" / "runs" / "masked_volume" / "rounds.jsonl").read_text()
    assert '"local_entries": 16' in log  # the 1x1x1 head, 3 x 4 weights + 4 biases, never aggregated
    unet = build_network({"name": "unet"}, default="unet", spatial_dims=3, in_channels=4, out_channels=3, seed=0)
    report = load_encoder_checkpoint(unet, tmp_path / "out" / "mri" / "encoder.pt")
    assert report.loaded and not report.unused
