"""Tasks: each trains and its loss falls; records and metrics are right on hand-made cases; configs fail clearly."""

from __future__ import annotations

import copy

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medfed.errors import ConfigError
from medfed.sites.federation import load_federation
from medfed.synth import write_federation
from medfed.tasks import (
    AnomalyConfig,
    ClassificationConfig,
    SegmentationConfig,
    build_task,
)
from medfed.tasks.anomaly import f1_threshold
from medfed.tasks.models import build_network


@pytest.fixture(scope="module")
def feds(tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("tasks")
    return {m: load_federation(write_federation(m, out, scale="small", seed=0))
            for m in ("brain_mri", "chest_xray", "ureteroscopy")}


CASES = {
    "chest_xray": lambda: ClassificationConfig(labels=["Pneumonia"], batch_size=8, optimizer={"lr": 0.003}),
    "brain_mri": lambda: SegmentationConfig(batch_size=2, optimizer={"lr": 0.01}),
    "ureteroscopy": lambda: AnomalyConfig(normal_classes=["Ia_COM"], batch_size=8, optimizer={"lr": 0.003}),
}


@pytest.mark.parametrize("modality", sorted(CASES))
def test_task_contract_training_lowers_the_loss(feds, modality):
    """Common checks for every task: the site suits it, the loss falls over a few epochs, evaluation
    returns one record per case (per label/region) with the task's columns, metrics are finite floats."""
    task = build_task(CASES[modality]())
    site = feds[modality][0]
    assert task.check_site(site) == []
    model = task.build_model(seed=0)
    dataset = task.train_dataset(site)
    before = _mean_loss(task, model, dataset)
    result = task.local_train(model, dataset, epochs=6, seed=0)
    after = _mean_loss(task, model, dataset)
    assert result.steps > 0 and result.num_examples == len(dataset)
    assert after < before, f"{modality}: loss {before:.4f} -> {after:.4f}"
    val = task.evaluate(model, task.eval_dataset(site, "val"))
    test = task.predict(task.evaluate(model, task.eval_dataset(site, "test")), task.calibrate(val))
    assert set(test["case_id"]) == set(site.split("test")["case_id"])
    metrics = task.metrics(test)
    assert task.primary_metric in metrics and all(isinstance(v, float) for v in metrics.values())


def _mean_loss(task, model, dataset) -> float:
    """The training objective over the training set, with batch statistics (train mode, on a copy, no gradient):
    what local training minimises. Eval mode would mix in BatchNorm running statistics, which a few steps on a
    handful of cases (5-6 images at a small site) leave far from the data, so its loss can rise while the fit
    improves."""
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        losses = [float(task.loss(probe, batch)) for batch in task.loader(dataset, train=False)]
    return float(np.mean(losses))


@pytest.mark.parametrize("modality", sorted(CASES))
def test_same_seed_same_training(feds, modality):
    task = build_task(CASES[modality]())
    site = feds[modality][0]
    runs = []
    for _ in range(2):
        model = task.build_model(seed=3)
        task.local_train(model, task.train_dataset(site), epochs=1, seed=11)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_classification_metrics_by_hand():
    task = build_task(ClassificationConfig(labels=["Pneumonia"]))
    records = pd.DataFrame({
        "case_id": list("abcde"), "label": "Pneumonia",
        "score": [0.9, 0.8, 0.3, 0.6, 0.1], "target": [1, 0, 1, 0, -1],  # e: uncertain, ignored
    })
    m = task.metrics(records)
    # positives {0.9, 0.3}, negatives {0.8, 0.6}: pairs won 2 of 4 -> AUROC 0.5
    assert m["auroc"] == pytest.approx(0.5)
    # at 0.5: TP a, FN c, FP b d, TN none
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == 0.0
    assert m["precision"] == pytest.approx(1 / 3) and m["f1"] == pytest.approx(2 / 5)


def test_multilabel_classification_reports_macro_and_per_label():
    task = build_task(ClassificationConfig(labels=["A", "B"]))
    records = pd.DataFrame({
        "case_id": ["x", "x", "y", "y"], "label": ["A", "B", "A", "B"],
        "score": [0.9, 0.2, 0.1, 0.7], "target": [1, 0, 0, 0],
    })
    m = task.metrics(records)
    assert m["auroc/A"] == 1.0 and np.isnan(m["auroc/B"]) and m["auroc"] == 1.0
    assert m["accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_f1_threshold_by_hand():
    # scores of normals 0.1 0.2, anomalies 0.3 0.9: the cut between 0.2 and 0.3 separates them
    assert f1_threshold(np.array([0.1, 0.2, 0.3, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.25)
    assert f1_threshold(np.array([0.1, 0.2]), np.array([0, 0])) is None


def test_anomaly_metrics_use_the_calibrated_threshold():
    task = build_task(AnomalyConfig(normal_classes=["n"]))
    val = pd.DataFrame({"case_id": list("abcd"), "score": [0.1, 0.2, 0.3, 0.9], "target": [0, 0, 1, 1]})
    threshold = task.calibrate(val)
    test = task.predict(pd.DataFrame({"case_id": list("wxyz"), "score": [0.15, 0.26, 0.24, 0.5],
                                      "target": [0, 0, 1, 1]}), threshold)
    m = task.metrics(test)
    assert list(test["prediction"]) == [0, 1, 0, 1]
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["auroc"] == 0.75


def test_anomaly_percentile_policy():
    task = build_task(AnomalyConfig(normal_classes=["n"], threshold_policy="percentile", percentile=50))
    val = pd.DataFrame({"case_id": list("abc"), "score": [1.0, 2.0, 3.0], "target": [0, 0, 0]})
    assert task.calibrate(val) == 2.0  # the median of the normal scores


def test_segmentation_records_per_region(feds):
    task = build_task(SegmentationConfig())
    site = feds["brain_mri"][0]
    model = task.build_model(seed=0)
    records = task.evaluate(model, task.eval_dataset(site, "test"))
    assert list(records["region"].unique()) == ["TC", "WT", "ET"]
    assert len(records) == 3 * len(site.split("test"))
    assert records["dice"].between(0, 1).all()


def test_sliding_window_inference_matches_whole_volume_for_a_pointwise_net():
    """A 1x1x1 network gives the same logits patch by patch: sliding windows stitch without seams."""
    task = build_task(SegmentationConfig(patch_size=[16, 16, 16], model={"name": "UNet"}))
    net = torch.nn.Conv3d(4, 3, kernel_size=1)
    image = torch.randn(1, 4, 32, 24, 40)
    torch.testing.assert_close(task._logits(net, image), net(image), rtol=1e-4, atol=1e-5)


def test_unknown_network_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown network 'NoSuchNet'"):
        build_network({"name": "NoSuchNet"}, default="resnet", spatial_dims=2, in_channels=1, out_channels=1, seed=0)
    with pytest.raises(ConfigError, match="unet"):
        build_network({"name": "unet", "chanels": [4]}, default="unet", spatial_dims=3, in_channels=4,
                      out_channels=3, seed=0)


def test_task_rejects_a_site_of_the_wrong_kind(feds):
    seg = build_task(SegmentationConfig())
    assert "label maps" in seg.check_site(feds["chest_xray"][0])[0].reason
    cls = build_task(ClassificationConfig(labels=["Atelectasis"]))
    assert "Atelectasis" in cls.check_site(feds["chest_xray"][0])[0].reason
    ano = build_task(AnomalyConfig(normal_classes=["NoSuchStone"]))
    assert "NoSuchStone" in ano.check_site(feds["ureteroscopy"][0])[0].reason


def test_models_are_seeded(tmp_path: Path):
    a = build_network({}, default="resnet", spatial_dims=2, in_channels=1, out_channels=1, seed=1)
    b = build_network({}, default="resnet", spatial_dims=2, in_channels=1, out_channels=1, seed=1)
    c = build_network({}, default="resnet", spatial_dims=2, in_channels=1, out_channels=1, seed=2)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
