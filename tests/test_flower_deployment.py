"""medfed's Flower App on a real Flower deployment: a SuperLink and three SuperNodes (one synthetic hospital
each: the demo chest X-ray federation's adult sites) as subprocesses on 127.0.0.1, driven by `flwr run`;
compared with the in-process engine."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from flower_support import SITES, LoopbackWatch, node_configs, write_hospitals

from medfed.fl.checkpoint import load_checkpoint
from medfed.fl.experiment import run_experiment
from medfed.integrations.flower.local_cluster import LocalCluster, flower_cli_available

APP = Path(__file__).resolve().parents[1] / "medfed" / "integrations" / "flower"
DEMO_TASK = Path(__file__).resolve().parents[1] / "tasks" / "demo_chest_xray.yaml"
_CLI_OK, _CLI_REASON = flower_cli_available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _CLI_OK, reason=_CLI_REASON or "Flower CLI missing")]


@pytest.fixture(scope="module")
def demo_hospitals(tmp_path_factory) -> dict[str, Path]:
    """The demo chest X-ray federation's three adult hospitals (`medfed demo` data: scale demo, seed 0)."""
    return write_hospitals(tmp_path_factory.mktemp("demo"), scale="demo", min_count=None)


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory) -> dict[str, Path]:
    """The same three hospitals at the small scale (a quicker federation for the crash test)."""
    return write_hospitals(tmp_path_factory.mktemp("small"))


def demo_experiment(path: Path, federation: Path) -> Path:
    """tasks/demo_chest_xray.yaml (its task, seed and training), FedAvg for 2 rounds evaluated after each."""
    config = yaml.safe_load(DEMO_TASK.read_text())
    config["training"].update({"rounds": 2, "eval_every": 1})
    path.write_text(yaml.safe_dump({**config, "name": "exp", "federation": str(federation), "methods": ["fedavg"]}))
    return path


def experiment(path: Path, federation: Path, rounds: int = 2) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "exp", "federation": str(federation), "seed": 7,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 4,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": rounds, "local_epochs": 1, "eval_every": 1}, "methods": ["fedavg"]}))
    return path


def rounds_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def test_two_fedavg_rounds_on_the_demo_federation_equal_the_in_process_engine(demo_hospitals, tmp_path):
    config = demo_experiment(tmp_path / "exp.yaml", demo_hospitals["federation"])
    reference = run_experiment(config, tmp_path / "inprocess", progress=False).out
    out = tmp_path / "flower"
    with LoopbackWatch() as network, LocalCluster(node_configs(demo_hospitals), log_dir=tmp_path / "logs") as cluster:
        result = cluster.run_app(APP, {"experiment": str(config), "method": "fedavg", "out": str(out),
                                       "sites": ",".join(SITES), "round-timeout": 240.0}, timeout=500)
        assert result.ok, result.output[-3000:]
    assert cluster.processes_alive() == []
    assert network.listening and network.outside() == []
    flower_run, local_run = out / "exp" / "runs" / "fedavg", reference / "runs" / "fedavg"
    a, b = load_checkpoint(flower_run / "checkpoints" / "last.pt"), load_checkpoint(local_run / "checkpoints" / "last.pt")
    assert np.asarray(a["global"]).tobytes() == np.asarray(b["global"]).tobytes()  # exact, bit for bit
    for got, want in zip(rounds_log(flower_run), rounds_log(local_run), strict=True):
        assert got["completed"] == want["completed"] == list(SITES)
        assert got["train_loss"] == want["train_loss"] and got["eval"] == want["eval"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "exp" / "metrics.csv"), pd.read_csv(reference / "metrics.csv"))


def test_a_supernode_killed_during_a_round_is_recorded_and_the_round_completes(hospitals, tmp_path):
    config = experiment(tmp_path / "exp.yaml", hospitals["federation"], rounds=2)
    out = tmp_path / "flower"
    run_dir = out / "exp" / "runs" / "fedavg"
    with LocalCluster(node_configs(hospitals), log_dir=tmp_path / "logs") as cluster:
        outcome: dict = {}

        def run() -> None:
            outcome["result"] = cluster.run_app(
                APP, {"experiment": str(config), "method": "fedavg", "out": str(out), "sites": ",".join(SITES),
                      "round-timeout": 90.0, "query-timeout": 60.0}, timeout=420, check=False)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run_dir / "rounds.jsonl").is_file():
            time.sleep(0.5)  # the ServerApp has mapped the nodes to sites and started round 1
        while time.monotonic() < deadline and not rounds_log(run_dir):
            if "train" in cluster.supernodes[2].log_text().lower():
                break
            time.sleep(0.2)
        cluster.kill_node(2)  # a crash of hospital adult-c's SuperNode during round 1 (or 2)
        thread.join(timeout=450)
        assert not thread.is_alive()
        assert outcome["result"].ok, outcome["result"].output[-3000:]
    log = rounds_log(run_dir)
    assert len(log) == 2
    hit = [r for r in log if "adult-c" not in r["completed"]]
    assert hit, log
    for record in hit:  # the others finished the round; the dropout is recorded
        assert record["completed"] == ["adult-a", "adult-b"]
        lost = {f["site"] for f in record["failed"]} | set(record.get("unreachable", []))
        assert "adult-c" in lost
