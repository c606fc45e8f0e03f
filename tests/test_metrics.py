"""Metrics on hand-computable cases and against MONAI's implementations on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, compute_roc_auc
from monai.metrics.meandice import compute_dice

from medfed.metrics import (
    auroc,
    binary_confusion,
    brats_regions,
    confusion_metrics,
    dice,
)


def test_auroc_hand_computed_with_ties_and_masking():
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4) (0.8>0.1) (0.4=0.4 -> 1/2) (0.4>0.1) -> 3.5/4
    assert auroc(np.array([0.8, 0.4, 0.4, 0.1, 0.9]), np.array([1, 1, 0, 0, -1])) == pytest.approx(0.875)
    assert np.isnan(auroc(np.array([0.2, 0.3]), np.array([1, 1])))


def test_auroc_equals_monai_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.random(200).round(2)  # rounding makes ties
        targets = (rng.random(200) < 0.3).astype(int)
        expected = float(compute_roc_auc(torch.tensor(scores), torch.tensor(targets)))
        assert auroc(scores, targets) == pytest.approx(expected, abs=1e-12)


def test_confusion_metrics_hand_computed():
    scores = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.1])
    targets = np.array([1, 1, 1, 0, 0, 0])
    assert binary_confusion(scores, targets) == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    m = confusion_metrics(scores, targets)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3) and m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert np.isnan(confusion_metrics(np.array([0.1, 0.2]), np.array([0, 0]))["sensitivity"])


def test_brats_regions_follow_the_label_convention():
    label = np.array([0, 1, 2, 4])
    regions = brats_regions(label)
    assert regions.tolist() == [[False, True, False, True], [False, True, True, True], [False, False, False, True]]
    assert brats_regions(np.array([0, 1, 2, 3]), enhancing_label=3).tolist() == regions.tolist()
    assert brats_regions(np.zeros((2, 4, 4, 4)), axis=1).shape == (2, 3, 4, 4, 4)


def test_dice_hand_computed_and_empty_convention():
    pred = np.zeros((1, 3, 4, 4), bool)
    target = np.zeros((1, 3, 4, 4), bool)
    pred[0, 0, :2] = True  # 8 voxels
    target[0, 0, 1:3] = True  # 8 voxels, 4 shared -> 2*4/16
    target[0, 1, 0, 0] = True  # predicted empty, target not -> 0
    np.testing.assert_allclose(dice(pred, target), [[0.5, 0.0, 1.0]])
    with pytest.raises(ValueError, match="differ in shape"):
        dice(pred, target[:, :2])


def test_dice_equals_monai_on_random_inputs():
    rng = np.random.default_rng(1)
    pred = rng.random((4, 3, 16, 16, 8)) < 0.3
    target = rng.random((4, 3, 16, 16, 8)) < 0.3
    pred[0, 2] = target[0, 2] = False  # both empty: MONAI ignore_empty=False gives 1
    expected = compute_dice(torch.tensor(pred), torch.tensor(target), include_background=True, ignore_empty=False)
    np.testing.assert_allclose(dice(pred, target), expected.numpy(), rtol=1e-6)
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    metric(torch.tensor(pred), torch.tensor(target))
    np.testing.assert_allclose(dice(pred, target), metric.aggregate().numpy(), rtol=1e-6)


def test_hausdorff95_hand_computed_anisotropic_and_empty():
    from medfed.metrics import hausdorff95

    a = np.zeros((20, 5, 5), bool)
    b = np.zeros((20, 5, 5), bool)
    a[2, 2, 2] = True
    b[7, 2, 2] = True  # single voxels 5 voxels apart along axis 0
    assert hausdorff95(a, b) == pytest.approx(5.0)
    assert hausdorff95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(10.0)
    empty = np.zeros_like(a)
    assert hausdorff95(empty, empty) == 0.0 and np.isnan(hausdorff95(a, empty))
    assert hausdorff95(a, empty, one_empty=374.0) == 374.0


def test_hausdorff95_equals_monai_on_random_blobs():
    from monai.metrics import compute_hausdorff_distance
    from scipy.ndimage import gaussian_filter

    from medfed.metrics import hausdorff95

    rng = np.random.default_rng(2)
    for spacing in ((1.0, 1.0, 1.0), (1.0, 1.5, 3.0)):
        field = gaussian_filter(rng.random((2, 40, 36, 24)), sigma=(0, 3, 3, 3))
        pred, target = field[0] > 0.52, field[1] > 0.52
        assert pred.sum() > 100 and target.sum() > 100 and (pred != target).any()
        ours = hausdorff95(pred, target, spacing=spacing)
        theirs = compute_hausdorff_distance(
            torch.tensor(pred)[None, None], torch.tensor(target)[None, None], percentile=95, spacing=list(spacing)
        )
        assert ours == pytest.approx(float(theirs), abs=1e-3)
