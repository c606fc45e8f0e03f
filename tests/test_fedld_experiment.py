"""The seeded FedLD experiment of tasks/: the demo chest X-ray cases re-drawn with Dirichlet label skew, and
a per-site report of FedLD against FedAvg with CIs and P-values. (The measured outcome of the full budget
is in the README; this checks the experiment runs as configured, on a short budget.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medfed.cli import main
from medfed.fl.config import load_experiment

TASKS = Path(__file__).resolve().parents[1] / "tasks"


@pytest.mark.slow(seconds=70)
@pytest.mark.parametrize("alpha", ["0.1"])  # alpha 1.0 runs the same code; its numbers are in the README
def test_fedld_label_skew_experiment_reports_fedld_against_fedavg(alpha, tmp_path_factory, capsys):
    data = tmp_path_factory.getbasetemp() / "fedld_demo_data"  # shared by both levels: generated once
    out = tmp_path_factory.mktemp("fedld_reports")
    config = TASKS / f"fedld_chest_xray_alpha{alpha}.yaml"
    assert main(["run", str(config), "--data", str(data), "--rounds", "2", "--out", str(out), "--no-progress",
                 "--resamples", "200", "--seeds", "0"]) == 0  # one seed of the config's three, for time
    top = out / f"fedld_chest_xray_alpha{alpha}"
    assert (top / "across_seeds.csv").is_file()
    run = top / "seed-0"
    partition = pd.read_csv(run / "partition.csv")
    assert sorted(partition["site"].unique()) == [f"site-{i}" for i in range(1, 6)]
    cases = pd.read_csv(run / "sites.csv")
    assert set(cases["site"]) == set(partition["site"])
    comparisons = pd.read_csv(run / "comparisons.csv")
    fedld = comparisons[(comparisons["method"] == "fedld") & (comparisons["baseline"] == "fedavg")
                        & (comparisons["metric"] == "auroc")]
    assert set(fedld["site"]) - {"pooled"} == set(partition["site"])  # pooled: the site-stratified row, if any
    tested = fedld.dropna(subset=["ci_low", "ci_high", "p_value"])
    assert len(tested) >= 1 and (tested["ci_low"] <= tested["difference"]).all()
    assert (tested["difference"] <= tested["ci_high"]).all()
    assert set(pd.read_csv(run / "metrics.csv")["method"]) == {
        "fedavg", "fedavg_step_matched", "fedprox", "fedld", "fedld_aggregation_only", "fedld_margin_only"}
    assert "fedld" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["fedld_paper_regime_alpha0.1", "fedld_paper_regime_alpha1.0",
                                  "fedld_chest_xray_alpha0.1", "fedld_chest_xray_alpha1.0"])
def test_regime_configs_validate_and_hold_the_papers_regime(name):
    config = load_experiment(TASKS / f"{name}.yaml")
    assert config.seeds is not None and len(config.seeds) >= 3
    assert config.partition.method == "dirichlet_label_skew" and config.partition.n_sites >= 5
    assert config.task.batch_size == 50 and config.training.local_epochs == 1
    assert config.task.optimizer.model_dump() == {"name": "sgd", "lr": 0.01, "momentum": 0.5, "weight_decay": 0.0005}
    methods = {m.label: m for m in config.methods}
    assert set(methods) == {"fedavg", "fedavg_step_matched", "fedprox", "fedld", "fedld_aggregation_only",
                            "fedld_margin_only"}
    assert methods["fedavg_step_matched"].match_target == "fedld"
    assert methods["fedld_aggregation_only"].params["margin_lambda"] == 0
    assert methods["fedld_margin_only"].params["aggregation"] == "mean"
    if "paper_regime" in name:  # a pretrained start over at least 100 rounds
        assert config.training.rounds >= 100
        assert config.task.model["init"]["path"].endswith("reports/ssl_chest_xray_central/encoder.pt")
    else:
        assert "init" not in config.task.model
