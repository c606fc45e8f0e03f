"""The federated runner end to end on small synthetic federations: layout, determinism, faults, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medfed.cli import main
from medfed.fl.experiment import run_experiment
from medfed.synth import write_federation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> Path:
    """A small chest X-ray federation: 4 sites, 8-10 images of 32x32 each."""
    return write_federation("chest_xray", tmp_path_factory.mktemp("fed"), scale="small", seed=0)


def experiment(tmp_path: Path, federation: Path, name: str = "exp", **training) -> Path:
    config = {
        "name": name,
        "federation": str(federation),
        "seed": 7,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 4,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": 2, "local_epochs": 1, "eval_every": 1, **training},
        "methods": ["local_only", "fedavg", {"strategy": "fedprox", "proximal_mu": 0.1}, "centralised"],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_directory_cross_site_matrix_and_suppression(chest, tmp_path):
    result = run_experiment(experiment(tmp_path, chest), tmp_path / "out", progress=False)
    out = result.out
    for name in ("config.yaml", "sites.csv", "metrics.csv", "summary.csv"):
        assert (out / name).is_file(), name
    for method in ("local_only", "fedavg", "fedprox", "centralised"):
        assert (out / "runs" / method / "checkpoints" / "last.pt").is_file()
        log = [json.loads(line) for line in (out / "runs" / method / "rounds.jsonl").read_text().splitlines()]
        assert [r["round"] for r in log] == [1, 2] and all("eval" in r for r in log)
        assert (out / "predictions" / f"{method}.csv").is_file()
    metrics = pd.read_csv(out / "metrics.csv")
    sites = ["adult-a", "adult-b", "adult-c", "pediatric"]
    local = metrics[(metrics["method"] == "local_only") & (metrics["split"] == "test")]
    # every local model on every site and on the pooled test set: the cross-site matrix
    assert set(local["model"]) == {f"local:{s}" for s in sites} | {"own"}
    for model in (f"local:{s}" for s in sites):
        assert set(local.loc[local["model"] == model, "site"]) == {*sites, "pooled"}
    # small sites' metrics are suppressed: no value, count shown as "<5"
    small = metrics[metrics["suppressed"] & (metrics["site"] != "pooled")]
    assert len(small) and small["value"].isna().all() and (small["n_cases"] == "<5").all()
    # ...and the pooled value over them is withheld too (it would reveal them by subtraction)
    pooled = metrics[(metrics["site"] == "pooled") & (metrics["split"] == "test")]
    assert pooled["suppressed"].all() and pooled["value"].isna().all()
    assert (result.summary.loc["pooled"] == "withheld").all()
    assert "pooled" in result.summary.index and list(result.summary.columns) == [
        "local_only", "fedavg", "fedprox", "centralised"]


def test_same_seed_gives_identical_metrics(chest, tmp_path):
    config = experiment(tmp_path, chest)
    a = run_experiment(config, tmp_path / "a", progress=False)
    b = run_experiment(config, tmp_path / "b", progress=False)
    assert (a.out / "metrics.csv").read_bytes() == (b.out / "metrics.csv").read_bytes()
    for method in ("fedavg", "local_only"):
        assert (a.out / "predictions" / f"{method}.csv").read_bytes() == (b.out / "predictions" / f"{method}.csv").read_bytes()


def test_crashing_site_is_dropped_and_stops_the_run_when_it_fails_the_same_way_again(chest, tmp_path, monkeypatch):
    import shutil

    from medfed.fl import experiment as experiment_module
    from medfed.sites.federation import load_federation

    fed_dir = tmp_path / "fed"
    shutil.copytree(chest.parent.parent, fed_dir)
    config_file = fed_dir / "sites" / "chest_xray.yaml"
    site = load_federation(config_file)["adult-b"]
    victim = Path(site._table[site._table["split"] == "train"]["_path"].iloc[0])
    real_check = experiment_module.check_federation

    def damage_then_check(task, federation):
        """A training file of adult-b breaks after the run has indexed the site (a disk failing mid-run)."""
        victim.write_bytes(victim.read_bytes()[:200])
        return real_check(task, federation)

    monkeypatch.setattr(experiment_module, "check_federation", damage_then_check)
    result = run_experiment(experiment(tmp_path, config_file), tmp_path / "out", progress=False)
    log = [json.loads(x) for x in (result.out / "runs" / "fedavg" / "rounds.jsonl").read_text().splitlines()]
    # round 1: the site is dropped and recorded, the round counts with the other three
    assert log[0]["completed"] == ["adult-a", "adult-c", "pediatric"] and log[0]["aggregation"]["clients"] == 3
    assert log[0]["failed"][0]["site"] == "adult-b" and "could not be loaded" in log[0]["failed"][0]["error"]
    # round 2: the same failure again is no passing fault: the run stops with one line naming site, rounds, reason
    assert log[1]["status"] == "stopped" and log[1]["failed"] == log[0]["failed"]
    message = result.stopped["fedavg"]
    assert message.startswith("fedavg, round 2: site adult-b failed the same way in rounds 1 and 2 (MedfedError: "
                              "site adult-b, case ")
    assert "could not be loaded" in message and "\n" not in message and victim.name not in message
    # the centralised run pools every site, so it fails as a whole in round 1: it stops and says so
    assert result.stopped["centralised"].startswith("centralised, round 1: only 0 of the 1 sampled site(s)")


def test_too_few_sites_stops_the_run_with_a_clear_message(chest, tmp_path, monkeypatch):
    import shutil

    from medfed.fl import experiment as experiment_module

    fed_dir = tmp_path / "fed"
    shutil.copytree(chest.parent.parent, fed_dir)
    real_check = experiment_module.check_federation

    def damage_then_check(task, federation):
        for image in (fed_dir / "chest_xray").rglob("*.dcm"):
            image.write_bytes(b"not a dicom")  # both DICOM sites break once training reads pixels
        return real_check(task, federation)

    monkeypatch.setattr(experiment_module, "check_federation", damage_then_check)
    config = experiment(tmp_path, fed_dir / "sites" / "chest_xray.yaml", min_fit_clients=4)
    result = run_experiment(config, tmp_path / "out", progress=False)
    assert set(result.stopped) == {"local_only", "fedavg", "fedprox", "centralised"}
    assert "returned an update (4 needed); stopped" in result.stopped["fedavg"]
    log = (result.out / "runs" / "fedavg" / "rounds.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["status"] == "stopped"


@pytest.mark.slow(seconds=50)
def test_resume_after_kill_ends_with_identical_metrics(chest, tmp_path):
    config = experiment(tmp_path, chest, rounds=4)
    reference = run_experiment(config, tmp_path / "uninterrupted", progress=False)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "medfed.cli", "run", str(config), "--out", str(out), "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    checkpoint = out / "exp" / "runs" / "fedavg" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not checkpoint.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # mid-run: fedavg has finished round 1 at most a moment ago
    process.wait()
    assert checkpoint.is_file(), "the run was killed before its first checkpoint"
    assert not (out / "exp" / "metrics.csv").is_file(), "the run finished before it could be killed"
    assert main(["run", str(config), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert (out / "exp" / "metrics.csv").read_bytes() == (reference.out / "metrics.csv").read_bytes()
    log = [json.loads(x)["round"] for x in (out / "exp" / "runs" / "fedavg" / "rounds.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]


def test_resume_refuses_a_changed_config(chest, tmp_path, capsys):
    config = experiment(tmp_path, chest, rounds=1)
    assert main(["run", str(config), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    changed = experiment(tmp_path, chest, rounds=2)
    assert main(["run", str(changed), "--out", str(tmp_path / "o"), "--resume", "--no-progress"]) == 2  # a config error
    assert "config changed" in capsys.readouterr().err


def test_experiment_config_errors_name_the_field(chest, tmp_path, capsys):
    config = experiment(tmp_path, chest)
    data = yaml.safe_load(config.read_text())
    data["methods"] = ["fedavg", {"strategy": "fedprox", "proximal_mu": -1}]
    data["training"]["rounds"] = 0
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "training.rounds" in err and "Traceback" not in err


def test_fedavg_weights_are_the_sample_weighted_mean_of_the_round(chest, tmp_path):
    """Round 1 of FedAvg from the runner equals the hand-computed weighted mean of the local models."""
    import torch

    from medfed.fl.checkpoint import load_checkpoint
    from medfed.fl.config import load_experiment
    from medfed.fl.weights import get_weights, set_weights
    from medfed.seeding import derive_seed
    from medfed.sites.federation import load_federation
    from medfed.tasks import build_task

    config_file = experiment(tmp_path, chest, rounds=1)
    result = run_experiment(config_file, tmp_path / "out", progress=False)
    saved = load_checkpoint(result.out / "runs" / "fedavg" / "checkpoints" / "last.pt")
    config = load_experiment(config_file)
    task = build_task(config.task)
    federation = load_federation(chest)
    for site in federation:
        task.check_site(site)
    start = get_weights(task.build_model(derive_seed(7, "init")))
    total, count = np.zeros(start.shape, np.float64), 0
    for site in federation:
        model = task.build_model(0)
        set_weights(model, start)
        dataset = task.train_dataset(site)
        task.local_train(model, dataset, epochs=1, seed=derive_seed(7, "train", 1, site.name))
        total += len(dataset) * get_weights(model).astype(np.float64)
        count += len(dataset)
    np.testing.assert_array_equal(saved["global"], (total / count).astype(np.float32))
    assert torch.is_tensor(torch.from_numpy(saved["global"]))


def test_available_sites_follow_their_probabilities_and_the_seed():
    from medfed.fl.sampling import available_sites

    sites = ["a", "b", "c"]
    assert available_sites(sites, 1.0, np.random.default_rng(0)) == sites
    assert available_sites(sites, 0.0, np.random.default_rng(0)) == []
    rounds = [available_sites(sites, {"a": 0.3, "c": 0.0}, np.random.default_rng(r)) for r in range(400)]
    share_a = np.mean(["a" in r for r in rounds])
    assert 0.22 < share_a < 0.38 and all("b" in r and "c" not in r for r in rounds)
    assert rounds[7] == available_sites(sites, {"a": 0.3, "c": 0.0}, np.random.default_rng(7))


def test_unavailable_sites_skip_rounds_deterministically(chest, tmp_path):
    from medfed.errors import ConfigError

    config = experiment(tmp_path, chest, rounds=4, availability=0.5, min_fit_clients=2)
    a = run_experiment(config, tmp_path / "a", progress=False)
    b = run_experiment(config, tmp_path / "b", progress=False)
    assert (a.out / "metrics.csv").read_bytes() == (b.out / "metrics.csv").read_bytes()
    log = [json.loads(line) for line in (a.out / "runs" / "fedavg" / "rounds.jsonl").read_text().splitlines()]
    assert any(len(r["available"]) < 4 for r in log)  # someone was away at least once
    for record in log:
        assert set(record["sampled"]) <= set(record["available"])
        if "skipped" in record:
            assert len(record["available"]) < 2 and record["completed"] == []
    central = [json.loads(line) for line in (a.out / "runs" / "centralised" / "rounds.jsonl").read_text().splitlines()]
    assert all(r["available"] == ["pooled"] for r in central)  # the pooled reference is always there
    with pytest.raises(ConfigError, match="unknown site\\(s\\) nowhere"):
        run_experiment(experiment(tmp_path, chest, name="bad", availability={"nowhere": 0.5}), tmp_path / "c",
                       progress=False)


def test_partition_redraws_the_sites_and_saves_a_reusable_file(chest, tmp_path, capsys):
    config = experiment(tmp_path, chest, rounds=1)
    data = yaml.safe_load(config.read_text())
    data["methods"] = ["fedavg", {"strategy": "fedld", "margin_lambda": 0.03}]
    data["partition"] = {"method": "dirichlet_label_skew", "n_sites": 3, "alpha": 0.5, "min_size": 5,
                         "prefix": "part"}
    config.write_text(yaml.safe_dump(data))
    result = run_experiment(config, tmp_path / "a", progress=False)
    partition = pd.read_csv(result.out / "partition.csv")
    sites = pd.read_csv(result.out / "sites.csv")
    assert sorted(partition["site"].unique()) == ["part-1", "part-2", "part-3"]
    assert set(sites["site"]) == {"part-1", "part-2", "part-3"}
    # every case of the federation, once, by its hashed id (no path or source id)
    from medfed.sites.federation import load_federation

    cases = load_federation(chest).case_table()
    assert sorted(partition["case_id"]) == sorted(cases["case_id"]) and not partition["case_id"].duplicated().any()
    # each case keeps its split
    merged = partition.merge(cases[["case_id", "split"]], on="case_id")
    redrawn = pd.concat([s.cases for s in _partitioned_sites(chest, result.out / "partition.csv")])
    assert (merged.set_index("case_id")["split"].sort_index() == redrawn.set_index("case_id")["split"].sort_index()).all()
    # the saved file reproduces the run
    data["partition"] = {"method": "file", "file": str(result.out / "partition.csv")}
    config.write_text(yaml.safe_dump(data))
    again = run_experiment(config, tmp_path / "b", progress=False)
    assert (again.out / "metrics.csv").read_bytes() == (result.out / "metrics.csv").read_bytes()
    # a partition of other cases is refused, saying how many ids differ
    partition.loc[0, "case_id"] = "not-a-case"
    partition.to_csv(tmp_path / "bad.csv", index=False)
    data["partition"] = {"method": "file", "file": str(tmp_path / "bad.csv")}
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "1 partition id(s) are not cases" in err and "1 case(s) of the federation are in no partition" in err


def _partitioned_sites(federation_file: Path, partition_file: Path):
    from medfed.partition import read_partition
    from medfed.sites.federation import load_federation
    from medfed.sites.partitioned import repartition

    return repartition(load_federation(federation_file).sites, read_partition(partition_file))


def test_fedld_margin_control_is_refused_for_segmentation_before_training(tmp_path, capsys):
    brain = write_federation("brain_mri", tmp_path / "fed", scale="small", seed=0)
    config = {"name": "seg", "federation": str(brain), "task": {"kind": "segmentation"},
              "training": {"rounds": 1}, "methods": ["fedavg", "fedld"]}
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "methods: fedld" in err and "margin_lambda: 0" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "seg").exists()
