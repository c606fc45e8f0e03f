"""Calibration measures (medfed.stats.calibration): scikit-learn on the same predictions, hand cases, and their
effect on seeded synthetic predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from medfed.stats.calibration import (
    apply_platt, calibration, calibration_slope_intercept, expected_calibration_error, platt_scaling, reliability_curve,
)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_brier_and_the_reliability_curve_match_scikit_learn():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 500)
    y = (rng.uniform(0, 1, 500) < p).astype(float)
    assert calibration(y, p).brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    predicted, observed = reliability_curve(y, p, n_bins=8)
    want_observed, want_predicted = calibration_curve(y, p, n_bins=8, strategy="quantile")
    np.testing.assert_allclose(predicted, want_predicted)
    np.testing.assert_allclose(observed, want_observed)


def test_ece_with_equal_mass_bins_by_hand():
    # bins {0.1, 0.3}: |0 - 0.2| = 0.2; {0.6, 0.8}: |1 - 0.7| = 0.3; ECE = 0.5 * 0.2 + 0.5 * 0.3 = 0.25
    assert expected_calibration_error([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8], n_bins=2) == pytest.approx(0.25)
    assert expected_calibration_error([1, 0], [0.9, 0.2], n_bins=10) == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)


def test_slope_and_intercept_find_planted_miscalibration():
    rng = np.random.default_rng(1)
    true = rng.uniform(0.05, 0.95, 20_000)
    y = (rng.uniform(0, 1, true.size) < true).astype(float)
    z = np.log(true / (1 - true))
    slope, intercept = calibration_slope_intercept(y, true)
    assert slope == pytest.approx(1.0, abs=0.06) and intercept == pytest.approx(0.0, abs=0.05)
    slope, _ = calibration_slope_intercept(y, sigmoid(2 * z))  # overconfident: twice the true log-odds
    assert slope == pytest.approx(0.5, abs=0.04)
    _, intercept = calibration_slope_intercept(y, sigmoid(z + 1))  # risks overestimated by 1 on the logit scale
    assert intercept == pytest.approx(-1.0, abs=0.06)
    assert calibration(y, true).ece < calibration(y, sigmoid(2 * z)).ece
    assert np.isnan(calibration_slope_intercept(np.ones(5), np.full(5, 0.7))[0])  # one class: undefined


def test_platt_scaling_recovers_the_planted_link():
    rng = np.random.default_rng(2)
    scores = rng.normal(0.5, 0.3, 20_000)
    y = (rng.uniform(0, 1, scores.size) < sigmoid(-2 + 3 * scores)).astype(float)
    a, b = platt_scaling(scores, y)
    assert a == pytest.approx(-2, abs=0.1) and b == pytest.approx(3, abs=0.15)
    assert apply_platt(np.array([0.0]), (a, b))[0] == pytest.approx(sigmoid(a))
    assert platt_scaling(scores[:5], np.zeros(5)) is None


def test_calibration_rows_of_a_run_per_site_method_and_finding():
    import pandas as pd

    from medfed.report.calibration_table import CALIBRATION_COLUMNS, calibration_rows

    rng = np.random.default_rng(3)
    frames = []
    for split in ("val", "test"):
        p = rng.uniform(0.05, 0.95, 400)
        y = (rng.uniform(0, 1, 400) < p).astype(float)
        frames.append(pd.DataFrame({"case_id": [f"{split}{i}" for i in range(400)], "label": "Pneumonia", "score": p,
                                    "target": y, "prediction": (p >= 0.5).astype(int), "site": "a", "split": split,
                                    "threshold": np.nan, "model": "global"}))
    records = {"fedavg": pd.concat(frames, ignore_index=True)}
    table, curves = calibration_rows("classification", records, ["a"])
    assert list(table.columns) == list(CALIBRATION_COLUMNS) and len(table) == 1
    (row,) = table.to_dict("records")
    test = records["fedavg"][records["fedavg"]["split"] == "test"]
    assert row["brier"] == pytest.approx(brier_score_loss(test["target"], test["score"]))
    assert row["slope"] == pytest.approx(1.0, abs=0.35) and row["probability"] == "sigmoid output"
    positive = test["target"] == 1
    assert row["sensitivity"] == pytest.approx((test.loc[positive, "prediction"] == 1).mean())
    assert ("a", "fedavg", "Pneumonia") in curves
    # anomaly scores are Platt-scaled on validation first; a segmentation run has no calibration
    anomaly = {"m": records["fedavg"].drop(columns="label").assign(score=lambda f: 3 * f["score"] + 1)}
    table, _ = calibration_rows("anomaly", anomaly, ["a"])
    assert table["probability"].iloc[0] == "Platt scaling fitted on validation" and table["brier"].iloc[0] < 0.25
    assert calibration_rows("segmentation", records, ["a"])[0].empty
