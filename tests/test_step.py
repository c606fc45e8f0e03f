"""The step diagnostic (medfed.fl.step): a strategy's step against FedAvg's on the same updates, by hand, for
FedAvg and FedLD, and in the round log of a seeded run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from medfed.fl.experiment import run_experiment
from medfed.fl.step import FedAvgShadow, step_diagnostic
from medfed.fl.strategies import FedAvg, FedLD
from medfed.fl.update import ClientUpdate
from medfed.report import ReportOptions, write_report
from medfed.synth import write_federation


def _updates(global_weights: np.ndarray, rows, counts=None) -> list[ClientUpdate]:
    counts = counts or [1] * len(rows)
    return [ClientUpdate(f"s{i}", global_weights + np.asarray(r, np.float32), n)
            for i, (r, n) in enumerate(zip(rows, counts, strict=True))]


def test_step_diagnostic_by_hand():
    g = np.zeros(2, np.float32)
    fedavg = np.array([0.5, 1.5])  # updates [2, 0] (n = 1) and [0, 2] (n = 3): (2 + 0, 0 + 6) / 4
    assert step_diagnostic(g, fedavg, fedavg) == {"step_ratio": 1.0, "step_cosine": pytest.approx(1.0)}
    half = step_diagnostic(g, 0.5 * fedavg, fedavg)  # a server learning rate of 0.5
    assert half["step_ratio"] == pytest.approx(0.5) and half["step_cosine"] == pytest.approx(1.0)
    turned = step_diagnostic(g, np.array([1.5, -0.5]), fedavg)  # orthogonal, same length
    assert turned["step_ratio"] == pytest.approx(1.0) and turned["step_cosine"] == pytest.approx(0.0, abs=1e-12)
    back = step_diagnostic(g, -2 * fedavg, fedavg)
    assert back["step_ratio"] == pytest.approx(2.0) and back["step_cosine"] == pytest.approx(-1.0)
    # FedAvg does not move: nothing to compare with; the strategy does not move: no direction
    assert step_diagnostic(g, fedavg, g) == {"step_ratio": None, "step_cosine": None}
    assert step_diagnostic(g, g, fedavg) == {"step_ratio": 0.0, "step_cosine": None}


def test_fedavg_step_ratio_is_one_by_construction():
    rng = np.random.default_rng(0)
    g = rng.normal(size=50).astype(np.float32)
    updates = FedAvgShadow(_updates(g, rng.normal(size=(5, 50)), counts=[3, 1, 4, 1, 5]))
    new, _, _ = FedAvg().aggregate(g, updates, {})
    step = updates.diagnostic(g, new)
    assert step["step_ratio"] == pytest.approx(1.0, abs=1e-12) and step["step_cosine"] == pytest.approx(1.0, abs=1e-12)


def test_fedld_step_is_shorter_than_fedavgs_on_the_hand_case():
    # tests/test_fedld.py: g1 = 2x, g2 = x, g3 = y; FedLD gives [5/6, 1/18], FedAvg [1, 1/3]
    g = np.zeros(4, np.float32)
    updates = FedAvgShadow(_updates(g, [[2, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]))
    new, _, _ = FedLD().aggregate(g, updates, {"history": np.ones(4, np.float32)})
    step = updates.diagnostic(g, new)
    fedld, fedavg = np.array([5 / 6, 1 / 18]), np.array([1, 1 / 3])
    assert step["step_ratio"] == pytest.approx(np.linalg.norm(fedld) / np.linalg.norm(fedavg), rel=1e-6)  # 0.792
    assert step["step_ratio"] < 1
    cosine = fedld @ fedavg / (np.linalg.norm(fedld) * np.linalg.norm(fedavg))  # 0.968
    assert step["step_cosine"] == pytest.approx(cosine, rel=1e-6)


def test_shadow_passes_every_update_once_in_order_and_says_nothing_without_examples():
    g = np.zeros(3, np.float32)
    batch = _updates(g, [[1, 0, 0], [0, 1, 0]], counts=[0, 0])
    shadow = FedAvgShadow(iter(batch))
    assert [u.site for u in shadow] == ["s0", "s1"]
    assert shadow.diagnostic(g, g) is None  # no example: FedAvg has no average to compare with
    assert FedAvgShadow(iter([])).diagnostic(g, g) is None


def test_round_log_records_the_step_for_global_methods_only(tmp_path):
    federation = write_federation("chest_xray", tmp_path / "fed", scale="small", seed=0)
    config = {
        "name": "step", "federation": str(federation), "seed": 3,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 4,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": 2, "local_epochs": 1, "eval_every": 0},
        "methods": ["local_only", "fedavg", {"strategy": "fedavgm", "server_learning_rate": 0.5,
                                              "server_momentum": 0.0}],
    }
    path = tmp_path / "step.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run_experiment(path, tmp_path / "out", progress=False).out

    def log(method: str) -> list[dict]:
        return [json.loads(line) for line in (out / "runs" / method / "rounds.jsonl").read_text().splitlines()]

    assert all(r["step_ratio"] == 1.0 and r["step_cosine"] == 1.0 for r in log("fedavg"))
    # FedAvgM with momentum 0 is FedAvg with a server learning rate: the step is that rate, in FedAvg's direction
    assert all(r["step_ratio"] == pytest.approx(0.5, abs=1e-6) and r["step_cosine"] == pytest.approx(1.0, abs=1e-6)
               for r in log("fedavgm"))
    assert not any("step_ratio" in r for r in log("local_only"))
    # the report plots it per method (FedAvg and FedAvgM; local-only has no global step)
    html = write_report([out], tmp_path / "report", ReportOptions(n_resamples=200)).html.read_text()
    assert 'id="steps"' in html and "Step length against FedAvg" in html


def test_step_plot_draws_the_methods_that_logged_a_step():
    from medfed.report.plots import step_ratios

    rounds = {"fedavg": [{"round": 1, "step_ratio": 1.0}, {"round": 2, "step_ratio": 1.0}],
              "fedld": [{"round": 1, "step_ratio": 0.4}, {"round": 2, "step_ratio": None}],
              "local_only": [{"round": 1}]}
    svg = step_ratios(rounds)
    assert svg is not None and svg.startswith("<svg") and "fedld" in svg and "local_only" not in svg
    assert step_ratios({"local_only": [{"round": 1}]}) is None
