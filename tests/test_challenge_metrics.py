"""Per-case challenge scores: hand-computed masks, empty-structure rules, label conventions, MONAI agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_hausdorff_distance,
    get_confusion_matrix,
)
from monai.metrics.meandice import compute_dice
from scipy.ndimage import gaussian_filter

from medfed.challenge.case_metrics import (
    METRICS,
    REGIONS,
    EmptyRules,
    metric_name,
    score_case,
    worst_case,
)

ISO = (1.0, 1.0, 1.0)


def keys() -> list[str]:
    return [metric_name(m, r) for m in METRICS for r in REGIONS]


def test_names_and_order():
    assert REGIONS == ("ET", "TC", "WT") and METRICS == ("Dice", "HD95", "Sensitivity", "Specificity")
    assert metric_name("HD95", "ET") == "HD95_ET"
    with pytest.raises(ValueError, match="unknown metric"):
        metric_name("Jaccard", "ET")
    with pytest.raises(ValueError, match="unknown region"):
        metric_name("Dice", "NCR")
    scores = score_case(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), ISO)
    assert list(scores) == keys() and all(isinstance(v, float) for v in scores.values())


def test_single_voxels_isotropic_and_anisotropic():
    truth = np.zeros((12, 10, 20), np.uint8)
    pred = np.zeros_like(truth)
    truth[5, 5, 4] = 4  # ET, so in every region
    pred[5, 5, 6] = 4  # two voxels further along z
    iso = score_case(pred, truth, ISO)
    aniso = score_case(pred, truth, (1.0, 1.0, 3.0))
    for region in REGIONS:
        assert iso[f"HD95_{region}"] == pytest.approx(2.0)
        assert aniso[f"HD95_{region}"] == pytest.approx(6.0)  # 3 mm x 2 voxels
        assert iso[f"Dice_{region}"] == 0.0 and iso[f"Sensitivity_{region}"] == 0.0
        assert iso[f"Specificity_{region}"] == pytest.approx((truth.size - 2) / (truth.size - 1))


def test_parallel_plates_with_an_outlier_interpolate_the_95th_percentile():
    # plates one voxel thick are all boundary; each plate voxel's nearest boundary voxel is straight across
    truth = np.zeros((8, 8, 16), np.uint8)
    pred = np.zeros_like(truth)
    pred[2:5, 2:5, 2] = 2  # 3 x 3 plate at z = 2
    truth[2:5, 2:5, 3] = 2  # 3 x 3 plate at z = 3
    truth[3, 3, 12] = 2  # a far outlier voxel, 10 voxels above the predicted plate
    scores = score_case(pred, truth, (1.0, 1.0, 3.0))
    # truth -> prediction distances: 9 x 3 mm and 30 mm; P95 of 10 sorted values sits at index 0.95 * 9 = 8.55:
    # 3 + 0.55 * (30 - 3) = 17.85 mm; prediction -> truth: all 3 mm
    assert scores["HD95_WT"] == pytest.approx(17.85)
    assert scores["Dice_WT"] == 0.0 and scores["HD95_ET"] == 0.0 and scores["Dice_ET"] == 1.0
    # the same masks in MONAI
    theirs = compute_hausdorff_distance(torch.tensor(pred > 0)[None, None], torch.tensor(truth > 0)[None, None],
                                        include_background=True, percentile=95, spacing=[1.0, 1.0, 3.0])
    assert float(theirs) == pytest.approx(17.85, abs=1e-4)


def test_cube_shifted_by_one_voxel():
    truth = np.zeros((14, 14, 14), np.uint8)
    pred = np.zeros_like(truth)
    truth[4:8, 4:8, 4:8] = 1  # TC and WT, not ET
    pred[5:9, 4:8, 4:8] = 1
    # 4^3 cubes overlapping in 3 x 4 x 4: Dice 2 * 48 / 128; boundary distances are 0 (36 voxels) or 1 (20)
    for spacing, hd in ((ISO, 1.0), ((2.0, 1.0, 1.0), 2.0), ((1.0, 2.0, 2.0), 1.0)):
        scores = score_case(pred, truth, spacing)
        assert scores["Dice_TC"] == pytest.approx(0.75) and scores["Dice_WT"] == pytest.approx(0.75)
        assert scores["HD95_TC"] == pytest.approx(hd) and scores["HD95_WT"] == pytest.approx(hd)
        assert scores["Sensitivity_TC"] == pytest.approx(48 / 64)
        assert scores["Dice_ET"] == 1.0 and scores["HD95_ET"] == 0.0


def test_sensitivity_and_specificity_counts_by_hand():
    truth = np.zeros((3, 3, 3), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 0, :] = 2
    truth[0, 1, 0] = 2  # 4 oedema voxels
    pred[0, 0, :] = 2  # 3 of them ...
    pred[2, 2, 1:] = 2  # ... and 2 false positives: TP 3, FP 2, FN 1, TN 27 - 6 = 21
    scores = score_case(pred, truth, ISO)
    assert scores["Sensitivity_WT"] == pytest.approx(3 / 4)
    assert scores["Specificity_WT"] == pytest.approx(21 / 23)
    assert scores["Dice_WT"] == pytest.approx(2 * 3 / (5 + 4))
    for region in ("ET", "TC"):  # absent in both: perfect
        assert scores[f"Dice_{region}"] == 1.0 and scores[f"HD95_{region}"] == 0.0
        assert scores[f"Sensitivity_{region}"] == 1.0 and scores[f"Specificity_{region}"] == 1.0


def test_label_conventions_et_tc_wt():
    truth = np.zeros((6, 6, 6), np.uint8)
    truth[1, 1, 1:4] = [1, 2, 4]  # necrosis, oedema, enhancing
    pred = np.zeros_like(truth)
    pred[1, 1, 1] = 1  # only the necrosis voxel
    scores = score_case(pred, truth, ISO)
    assert scores["Sensitivity_ET"] == 0.0  # ET = {4}: missed
    assert scores["Sensitivity_TC"] == pytest.approx(1 / 2)  # TC = {1, 4}
    assert scores["Sensitivity_WT"] == pytest.approx(1 / 3)  # WT = {1, 2, 4}
    assert scores["Dice_TC"] == pytest.approx(2 / 3) and scores["Dice_WT"] == pytest.approx(2 / 4)
    # BraTS-2023-style maps: enhancing tumour is 3
    assert score_case(np.where(pred == 4, 3, pred), np.where(truth == 4, 3, truth), ISO, enhancing_label=3) == scores
    # 3 is no region of a BraTS-2020 map
    other = truth.copy()
    other[other == 4] = 3
    assert score_case(other, other, ISO)["Sensitivity_ET"] == 1.0  # no ET in either
    assert score_case(other, other, ISO)["Sensitivity_WT"] == 1.0


def test_both_empty_and_one_empty_rules():
    empty = np.zeros((10, 10, 10), np.uint8)
    assert score_case(empty, empty, ISO) == {
        **{f"Dice_{r}": 1.0 for r in REGIONS}, **{f"HD95_{r}": 0.0 for r in REGIONS},
        **{f"Sensitivity_{r}": 1.0 for r in REGIONS}, **{f"Specificity_{r}": 1.0 for r in REGIONS}}
    truth = empty.copy()
    truth[3:6, 3:6, 3:6] = 4
    missed = score_case(empty, truth, ISO)  # tumour missed entirely
    for r in REGIONS:
        assert missed[f"Dice_{r}"] == 0.0 and missed[f"HD95_{r}"] == 374.0
        assert missed[f"Sensitivity_{r}"] == 0.0 and missed[f"Specificity_{r}"] == 1.0
    hallucinated = score_case(truth, empty, ISO)  # tumour where there is none
    for r in REGIONS:
        assert hallucinated[f"Dice_{r}"] == 0.0 and hallucinated[f"HD95_{r}"] == 374.0
        assert hallucinated[f"Sensitivity_{r}"] == 0.0  # empty truth, non-empty prediction
        assert hallucinated[f"Specificity_{r}"] == pytest.approx((1000 - 27) / 1000)
    custom = EmptyRules(both_empty_dice=float("nan"), both_empty_hd95=float("nan"), one_empty_hd95=373.13)
    assert score_case(empty, truth, ISO, rules=custom)["HD95_ET"] == 373.13
    assert np.isnan(score_case(empty, empty, ISO, rules=custom)["Dice_ET"])
    assert np.isnan(score_case(empty, empty, ISO, rules=custom)["HD95_WT"])


def test_truth_covering_the_whole_image():
    full = np.full((4, 4, 4), 2, np.uint8)
    assert score_case(full, full, ISO)["Specificity_WT"] == 1.0
    holed = full.copy()
    holed[0, 0, 0] = 0
    assert score_case(holed, full, ISO)["Specificity_WT"] == 0.0  # no background: only an exact match scores 1
    assert score_case(holed, full, ISO)["Sensitivity_WT"] == pytest.approx(63 / 64)


def test_worst_case_values():
    assert worst_case() == {**{f"Dice_{r}": 0.0 for r in REGIONS}, **{f"HD95_{r}": 374.0 for r in REGIONS},
                            **{f"Sensitivity_{r}": 0.0 for r in REGIONS}, **{f"Specificity_{r}": 0.0 for r in REGIONS}}
    assert list(worst_case()) == keys()
    assert worst_case(EmptyRules(one_empty_hd95=373.13))["HD95_TC"] == 373.13


def test_invalid_inputs_raise():
    a = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="differs"):
        score_case(a, np.zeros((4, 4, 5), np.uint8), ISO)
    with pytest.raises(ValueError, match="3-D"):
        score_case(a[0], a[0], ISO)
    with pytest.raises(ValueError, match="integer"):
        score_case(a.astype(float), a, ISO)
    with pytest.raises(ValueError, match="spacing"):
        score_case(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        score_case(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="enhancing_label"):
        score_case(a, a, ISO, enhancing_label=2)


def random_label_map(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Blobby BraTS-like label map: oedema around a core with an enhancing part (may touch the image edge)."""
    field = gaussian_filter(rng.random((3, *shape)), sigma=(0, 3, 3, 3))
    field = (field - field.mean(axis=(1, 2, 3), keepdims=True)) / field.std(axis=(1, 2, 3), keepdims=True)
    label = np.zeros(shape, np.uint8)
    label[field[0] > 0.3] = 2
    label[(field[0] > 0.9) & (field[1] > 0)] = 1
    label[(field[0] > 0.9) & (field[2] > 0.2)] = 4
    return label


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.5, 3.0), (0.9, 0.9, 1.25)])
def test_agrees_with_monai_on_random_blobs(spacing):
    rng = np.random.default_rng(7)
    for _ in range(2):
        pred, truth = random_label_map(rng, (40, 36, 28)), random_label_map(rng, (40, 36, 28))
        ours = score_case(pred, truth, spacing)
        one_hot = [torch.tensor(np.stack([x == 4, np.isin(x, (1, 4)), x > 0]).astype(np.float32))[None]
                   for x in (pred, truth)]
        assert all(bool(m.any()) for m in one_hot[1][0]), "every region present in the truth"
        dice = compute_dice(*one_hot, include_background=True)[0]
        hd95 = compute_hausdorff_distance(*one_hot, include_background=True, percentile=95, spacing=list(spacing))[0]
        confusion = get_confusion_matrix(*one_hot, include_background=True)
        sens = compute_confusion_matrix_metric("sensitivity", confusion)[0]
        spec = compute_confusion_matrix_metric("specificity", confusion)[0]
        for i, region in enumerate(REGIONS):
            assert ours[f"Dice_{region}"] == pytest.approx(float(dice[i]), abs=1e-6)
            assert ours[f"HD95_{region}"] == pytest.approx(float(hd95[i]), abs=1e-3)
            assert ours[f"Sensitivity_{region}"] == pytest.approx(float(sens[i]), abs=1e-6)
            assert ours[f"Specificity_{region}"] == pytest.approx(float(spec[i]), abs=1e-6)


def test_memory_layout_and_dtype_do_not_change_scores():
    rng = np.random.default_rng(3)
    pred, truth = random_label_map(rng, (30, 26, 22)), random_label_map(rng, (30, 26, 22))
    reference = score_case(pred, truth, (1.0, 1.0, 1.5))
    assert score_case(np.asfortranarray(pred), np.asfortranarray(truth), (1.0, 1.0, 1.5)) == reference
    assert score_case(pred.astype(np.int64), truth.astype(np.int16), (1.0, 1.0, 1.5)) == reference
    # a view with negative strides (a flipped axis) scores as the flipped case
    flipped = score_case(pred[:, ::-1], truth[:, ::-1], (1.0, 1.0, 1.5))
    assert flipped == pytest.approx(reference)
