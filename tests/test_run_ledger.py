"""The run ledger (medfed.fl.ledger), once for each engine: in-process, and Flower through a fake Grid.

Both engines drive the same ledger, so the same tests hold for both: a run killed while it finishes a round resumes
to the uninterrupted run's files; a site that fails in one round is dropped from it, recorded, and back in the
next; too few updates stop the run keeping its earlier rounds; the same seed gives the same files (Flower: the
in-process engine's files, byte for byte). The Flower side runs medfed's real ServerApp and ClientApp code in this
process, messages through Flower's wire format (``fake_grid``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("flwr.app")

from fake_grid import FakeGrid, flower_server_identity, node_configs, settings  # noqa: E402
from flower_support import write_hospitals  # noqa: E402

from medfed.fl.checkpoint import load_checkpoint  # noqa: E402
from medfed.fl.experiment import run_experiment  # noqa: E402
from medfed.fl.ledger import (  # noqa: E402
    CHECKPOINT,
    ROUNDS_LOG,
    MethodLedger,
    RunDirectory,
    RunStopped,
    resolved_config,
)
from medfed.integrations.flower import client as flower_client  # noqa: E402
from medfed.integrations.flower.server_run import run_flower_method  # noqa: E402
from medfed.seeding import derive_seed  # noqa: E402
from medfed.tasks.classification import ClassificationTask  # noqa: E402

ENGINES = ["inprocess", "flower"]
SEED = 3
ROUNDS = 3


class Killed(Exception):
    """The process dies while it finishes a round (after training, before the round is on disk)."""


@pytest.fixture(autouse=True, scope="module")
def server_identity():
    with flower_server_identity():
        yield


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> dict[str, Path]:
    yield write_hospitals(tmp_path_factory.mktemp("fed"))
    flower_client.clear_caches()


@pytest.fixture(scope="module")
def experiment(federation, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "exp", "federation": str(federation["federation"]), "seed": SEED,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 8,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": ROUNDS, "local_epochs": 1, "eval_every": 2, "min_fit_clients": 2},
        "methods": ["fedavg"],
    }))
    return path


def run(engine: str, experiment: Path, federation: dict[str, Path], out: Path, resume: bool = False) -> str | None:
    """Train the experiment's one method with ``engine`` into ``out``; returns why it stopped (or None)."""
    if engine == "inprocess":
        return run_experiment(experiment, out, progress=False, resume=resume).stopped.get("fedavg")
    try:
        return run_flower_method(FakeGrid(node_configs(federation)),
                                 settings(experiment, out, "fedavg", resume=resume)).stopped
    except RunStopped as err:  # pragma: no cover - run_flower_method returns it
        return str(err)


def rounds(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "runs" / "fedavg" / ROUNDS_LOG).read_text().splitlines()]


def untimed(record: dict[str, Any]) -> dict[str, Any]:
    """A round record less the machine-dependent wall-clock seconds."""
    record = {k: v for k, v in record.items() if k != "seconds"}
    if "work" in record:
        record["work"] = {s: {k: v for k, v in w.items() if k != "seconds"} for s, w in record["work"].items()}
    return record


def files(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in ("metrics.csv", "summary.csv", "predictions/fedavg.csv")}


def failing_site(monkeypatch: pytest.MonkeyPatch, site: str, rounds_failing: set[int]) -> None:
    """``site``'s local training raises in ``rounds_failing`` (both engines train through the task object)."""
    original = ClassificationTask.local_train
    seeds = {derive_seed(SEED, "train", r, site) for r in rounds_failing}

    def local_train(self, model, dataset, *args, seed, **kwargs):
        if seed in seeds:
            raise OSError(f"disk error while reading the images of {site}")
        return original(self, model, dataset, *args, seed=seed, **kwargs)

    monkeypatch.setattr(ClassificationTask, "local_train", local_train)


@pytest.fixture(scope="module")
def uninterrupted(experiment, federation, tmp_path_factory) -> Path:
    """The reference: an uninterrupted in-process run."""
    out = tmp_path_factory.mktemp("reference")
    assert run("inprocess", experiment, federation, out) is None
    return out / "exp"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_same_seed_writes_the_same_files(engine, experiment, federation, uninterrupted, tmp_path):
    assert run(engine, experiment, federation, tmp_path) is None
    assert files(tmp_path / "exp") == files(uninterrupted)
    assert [untimed(r) for r in rounds(tmp_path / "exp")] == [untimed(r) for r in rounds(uninterrupted)]
    got = load_checkpoint(tmp_path / "exp" / "runs" / "fedavg" / CHECKPOINT)
    want = load_checkpoint(uninterrupted / "runs" / "fedavg" / CHECKPOINT)
    assert got["round"] == want["round"] == ROUNDS
    assert got["global"].tobytes() == want["global"].tobytes()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_killed_while_finishing_a_round_resumes_to_the_uninterrupted_files(
        engine, experiment, federation, uninterrupted, tmp_path, monkeypatch):
    commit = MethodLedger.commit

    def dying(self, record, *args, **kwargs):
        if record["round"] == 2:
            raise Killed("killed after training round 2, before it was on disk")
        return commit(self, record, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(MethodLedger, "commit", dying)
        with pytest.raises(Killed):
            run(engine, experiment, federation, tmp_path)
    assert [r["round"] for r in rounds(tmp_path / "exp")] == [1]  # round 2 never reached the disk
    assert load_checkpoint(tmp_path / "exp" / "runs" / "fedavg" / CHECKPOINT)["round"] == 1
    assert run(engine, experiment, federation, tmp_path, resume=True) is None
    assert files(tmp_path / "exp") == files(uninterrupted)
    assert [untimed(r) for r in rounds(tmp_path / "exp")] == [untimed(r) for r in rounds(uninterrupted)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_site_failing_in_one_round_is_dropped_recorded_and_back_next_round(
        engine, experiment, federation, tmp_path, monkeypatch):
    failing_site(monkeypatch, "adult-b", {1})
    assert run(engine, experiment, federation, tmp_path) is None
    log = rounds(tmp_path / "exp")
    assert log[0]["completed"] == ["adult-a", "adult-c"]
    assert [f["site"] for f in log[0]["failed"]] == ["adult-b"]
    assert "disk error while reading the images of adult-b" in log[0]["failed"][0]["error"]
    assert set(log[0]["num_examples"]) == {"adult-a", "adult-c"}
    assert log[1]["completed"] == ["adult-a", "adult-b", "adult-c"] and log[1]["failed"] == []
    assert [r["round"] for r in log] == [1, 2, 3]


@pytest.mark.parametrize("engine", ENGINES)
def test_too_few_updates_stop_the_run_keeping_the_rounds_before(engine, experiment, federation, tmp_path, monkeypatch):
    failing_site(monkeypatch, "adult-a", {2})
    failing_site(monkeypatch, "adult-c", {2})
    stopped = run(engine, experiment, federation, tmp_path)
    assert stopped is not None and "round 2: only 1 of the 3 sampled site(s)" in stopped
    log = rounds(tmp_path / "exp")
    assert [r["round"] for r in log] == [1, 2] and log[1]["status"] == "stopped"
    assert load_checkpoint(tmp_path / "exp" / "runs" / "fedavg" / CHECKPOINT)["round"] == 1
    metrics = tmp_path / "exp" / "metrics.csv"  # no final model, so no metric of it
    assert not metrics.exists() or "fedavg" not in metrics.read_text()


# ----------------------------------------------------------------------------- the ledger itself, by hand
def test_commit_checkpoints_then_logs_and_resume_reopens_the_last_round(tmp_path):
    ledger = MethodLedger(tmp_path / "m", "fedavg", ["a", "b"], lambda: {})
    opened = ledger.open(np.zeros(3, np.float32), {"t": 0}, resume=False)
    assert (opened.start, opened.resumed_from) == (1, 0)
    for rnd in (1, 2):
        ledger.commit({"round": rnd, "sampled": ["a", "b"], "completed": ["a", "b"], "failed": [],
                       "train_loss": {"a": 0.1234567891}}, np.full(3, rnd, np.float32), {"t": rnd}, began=0.0)
    logged = [json.loads(line) for line in ledger.rounds_log.read_text().splitlines()]
    assert [r["round"] for r in logged] == [1, 2] and logged[0]["train_loss"] == {"a": 0.123457}  # 6 decimals
    again = MethodLedger(tmp_path / "m", "fedavg", ["a", "b"], lambda: {})
    reopened = again.open(np.zeros(3, np.float32), {"t": 0}, resume=True)
    assert reopened.start == 3 and reopened.state == {"t": 2} and reopened.global_weights.tolist() == [2, 2, 2]
    assert [r["round"] for r in again.log] == [1, 2]
    with pytest.raises(Exception, match="belongs to another run"):
        MethodLedger(tmp_path / "m", "fedprox", ["a", "b"], lambda: {}).open(np.zeros(3), {}, resume=True)
    fresh = MethodLedger(tmp_path / "m", "fedavg", ["a", "b"], lambda: {})
    assert fresh.open(np.zeros(3), {}, resume=False).start == 1 and fresh.rounds_log.read_text() == ""


def test_a_stopping_round_is_logged_as_stopped_and_raises(tmp_path):
    ledger = MethodLedger(tmp_path / "m", "fedavg", ["a", "b", "c"], lambda: {})
    ledger.open(np.zeros(2), {}, resume=False)
    record = {"round": 1, "sampled": ["a", "b", "c"], "completed": ["a"],
              "failed": [{"site": "b", "error": "OSError: x"}, {"site": "c", "error": "OSError: y"}]}
    with pytest.raises(RunStopped, match=r"only 1 of the 3 sampled site\(s\) returned an update \(2 needed\)"):
        ledger.stop_if(record, needed=2)
    assert json.loads(ledger.rounds_log.read_text())["status"] == "stopped"
    assert not ledger.checkpoint.exists()


def test_the_run_directory_freezes_its_config_and_refuses_a_changed_one_on_resume(tmp_path, experiment):
    from medfed.errors import ConfigError
    from medfed.fl.config import load_experiment

    config = load_experiment(experiment)
    run_dir = RunDirectory(tmp_path / "exp")
    assert run_dir.prepare(resolved_config(config, "fed.yaml"), resume=True) is False  # nothing to resume
    (tmp_path / "exp" / "metrics.csv").write_text("old")
    assert run_dir.prepare(resolved_config(config, "fed.yaml"), resume=True) is True
    assert (tmp_path / "exp" / "metrics.csv").exists()
    changed = config.model_copy(update={"seed": SEED + 1})
    with pytest.raises(ConfigError, match="config changed since this run started"):
        run_dir.prepare(resolved_config(changed, "fed.yaml"), resume=True)
    assert run_dir.prepare(resolved_config(changed, "fed.yaml"), resume=False) is False
    assert not (tmp_path / "exp" / "metrics.csv").exists()  # a fresh start clears the former outputs
    (tmp_path / "exp" / "metrics.csv").write_text("other methods")
    run_dir.prepare(resolved_config(changed, "fed.yaml"), resume=False, keep_methods=True)
    assert (tmp_path / "exp" / "metrics.csv").read_text() == "other methods"
