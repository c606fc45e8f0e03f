"""``run_experiment_on_flower``: an experiment config trained over Flower on this machine, compared with the
in-process engine; and a simulated node (Flower's Simulation Engine) taking its site from the run config."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

pytest.importorskip("flwr.app")

from flower_support import (  # noqa: F401
    SITES,
    LoopbackWatch,
    experiment,
    only_sites,
    ray_ready,
    rounds_log,
    without_timing,
    write_hospitals,
)
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from medfed.errors import ConfigError
from medfed.fl.checkpoint import load_checkpoint
from medfed.fl.config import federation_path, load_experiment
from medfed.fl.experiment import run_experiment
from medfed.integrations.flower import client as flower_client
from medfed.integrations.flower import messages as wire
from medfed.integrations.flower import node_site
from medfed.integrations.flower.engine import (
    fresh_log_dir,
    run_experiment_on_flower,
    same_medfed_env,
    write_resolved_experiment,
    write_site_configs,
)
from medfed.integrations.flower.local_cluster import flower_cli_available
from medfed.sites.federation import load_federation

_CLI_OK, _CLI_REASON = flower_cli_available()
needs_cli = pytest.mark.skipif(not _CLI_OK, reason=_CLI_REASON or "Flower CLI missing")


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Path:
    """The three table sites of the small synthetic chest X-ray federation (paths relative to the file)."""
    return write_hospitals(tmp_path_factory.mktemp("fed"))["federation"]


def flower_processes() -> list[str]:
    """Flower processes (SuperLink, SuperNodes, SuperExec, apps, Ray) still running below this test."""
    names = []
    for proc in psutil.Process().children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if any(word in line for word in ("flower-", "flwr", "ray")):
            names.append(line)
    return names


# ----------------------------------------------------------------------------- refusals (no processes)
@pytest.mark.parametrize(("extra", "methods", "expected"), [
    ({"partition": {"method": "iid", "n_sites": 2}}, None, ["partition:"]),
    ({"site_conditions": {"adult-a": {"adversary": {"kind": "scaled"}}}}, None, ["site_conditions:"]),
    ({"server_benchmark": {"cases": 4}}, None, ["server_benchmark:"]),
    ({}, ["fedavg", "centralised", "cyclic"], ["methods: centralised:", "methods: cyclic:"]),
    ({"partition": {"method": "iid", "n_sites": 2}}, ["centralised"], ["partition:", "methods: centralised:"]),
])
@pytest.mark.parametrize("engine", ["flower", "flower-sim"])
def test_what_flower_cannot_run_is_refused_before_any_output(federation, tmp_path, extra, methods, expected, engine):
    if engine == "flower-sim" and importlib.util.find_spec("ray") is None:
        pytest.skip("flwr[simulation] (Ray) is not installed")
    config = experiment(tmp_path / "exp.yaml", federation, methods=methods, **extra)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        run_experiment_on_flower(config, out, engine, progress=False, timeout=60)
    message = str(err.value)
    for part in expected:  # every reason at once, each naming the config file
        assert f"{config}: {part}" in message, message
    assert not out.exists()  # nothing written, nothing started
    assert flower_processes() == []


def test_a_demo_federation_that_was_not_generated_is_refused_before_any_output(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "exp", "federation": "demo:chest_xray", "task": {"kind": "classification", "labels": ["Pneumonia"]},
        "methods": ["fedavg"]}))
    with pytest.raises(ConfigError, match="no demo federation"):
        run_experiment_on_flower(config, tmp_path / "out", "flower", progress=False)
    assert not (tmp_path / "out").exists()


def test_unknown_engine_is_refused(federation, tmp_path):
    with pytest.raises(ConfigError, match="engine 'ray'"):
        run_experiment_on_flower(experiment(tmp_path / "exp.yaml", federation), tmp_path / "out", "ray")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- per-site configs (no processes)
def test_each_site_config_holds_exactly_its_site_with_the_same_cases(federation, tmp_path):
    full = load_federation(federation)
    files = write_site_configs(federation, full, tmp_path / "elsewhere" / "sites")  # another folder: paths absolute
    assert list(files) == list(SITES)
    for name, path in files.items():
        data = yaml.safe_load(path.read_text())
        assert [s["name"] for s in data["sources"]] == [name]
        assert Path(data["sources"][0]["root"]).is_absolute()
        one = load_federation(path)
        assert one.site_names == [name] and one.name == full.name and one[name].min_count == 2
        pd.testing.assert_frame_equal(one[name].cases, full[name].cases)  # same ids, labels and splits


def test_a_demo_experiment_is_written_with_its_federation_resolved(federation, tmp_path):
    source = tmp_path / "tasks" / "demo.yaml"
    source.parent.mkdir()
    source.write_text(yaml.safe_dump({
        "name": "demo", "federation": "demo:chest_xray", "task": {"kind": "classification", "labels": ["Pneumonia"]},
        "methods": [{"strategy": "fedavg", "init": "weights/start.pt"}]}))
    target = write_resolved_experiment(source, federation, tmp_path / "run" / "flower" / "experiment.yaml")
    config = load_experiment(target)
    assert config.name == "demo" and federation_path(config, target.parent, None) == federation.resolve()
    assert config.methods[0].init == {"path": str(source.parent / "weights" / "start.pt")}  # still the original file


def test_each_invocation_logs_into_an_empty_folder(tmp_path):
    flower = tmp_path / "flower"
    assert fresh_log_dir(flower) == flower / "logs" and not any((flower / "logs").iterdir())
    (flower / "logs" / "supernode-0.log").write_text("SuperNode ID: 1\n")  # LocalCluster appends, reads ids back
    logs = fresh_log_dir(flower)
    assert not any(logs.iterdir())
    (moved,) = [p for p in flower.iterdir() if p.name.startswith("logs-")]
    assert (moved / "supernode-0.log").read_text() == "SuperNode ID: 1\n"
    (logs / "superlink.log").write_text("again")
    fresh_log_dir(flower)
    assert len([p for p in flower.iterdir() if p.name.startswith("logs-")]) == 2


def test_the_cluster_processes_import_this_medfed(monkeypatch):
    import medfed

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", str(Path(medfed.__file__).resolve().parents[1])]))
    assert same_medfed_env()["PYTHONPATH"].split(os.pathsep) == [str(Path(medfed.__file__).resolve().parents[1]),
                                                                 "/elsewhere"]


# ----------------------------------------------------------------------------- simulated node (fake context)
@pytest.fixture
def server_identity():
    """What the SuperLink sets in a ServerApp process before ``main`` runs (Message() reads it)."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def query(node_config: dict, run_config: dict) -> wire.SiteReply:
    context = Context(run_id=1, node_id=11, node_config=node_config, state=RecordDict(), run_config=run_config)
    reply = node_site.handle_query(Message(wire.query_content(), 11, MessageType.QUERY), context)
    return wire.parse_site_reply(reply.content)


def test_a_simulated_node_owns_the_site_its_partition_id_names(federation, tmp_path, server_identity):
    flower_client.clear_caches()
    config = experiment(tmp_path / "exp.yaml", federation)
    run = {"experiment": str(config), "sites": ",".join(SITES)}
    for pid, site in enumerate(SITES):
        node = {"partition-id": pid, "num-partitions": 3}
        context = Context(run_id=1, node_id=11, node_config=node, state=RecordDict(), run_config=run)
        assert node_site.site_node_config(context) == {
            **node, "site-config": str(federation.resolve()), "site-name": site}
        info = query(node, run)
        assert info.error is None and info.name == site and info.min_count == 2
    # partition-id indexes the run's `sites`, in its order; without them the federation's site order
    assert query({"partition-id": 0, "num-partitions": 3}, {**run, "sites": "adult-c,adult-a,adult-b"}).name == "adult-c"
    assert query({"partition-id": 2, "num-partitions": 3}, {**run, "sites": ""}).name == "adult-c"
    # a node beyond the run's sites answers with an error naming the cause (it is not used), never crashes
    info = query({"partition-id": 3, "num-partitions": 4}, run)
    assert info.error is not None and "num-supernodes = 3" in info.error
    info = query({"partition-id": 0, "num-partitions": 3}, {"sites": ",".join(SITES)})
    assert info.error is not None and "experiment" in info.error
    # a node with its own site config keeps it (a deployment SuperNode), partition-id or not
    own = {"site-config": str(federation), "site-name": "adult-b", "partition-id": 0}
    context = Context(run_id=1, node_id=11, node_config=own, state=RecordDict(), run_config=run)
    assert node_site.site_node_config(context) == own
    assert query(own, run).name == "adult-b"
    flower_client.clear_caches()


def test_a_query_is_answered_without_importing_torch_or_monai(federation):
    """Flower starts a ClientApp process per message: the query (which site is this node) loads the site's
    tables only, so its process skips the ~7 s of CPU that importing torch and MONAI costs (training needs them)."""
    code = (
        "import sys\n"
        "from flwr.app import Context, Message, MessageType, RecordDict\n"
        "from flwr.supercore.task_identity import TaskIdentity\n"
        "from medfed.integrations.flower import messages as wire\n"
        "from medfed.integrations.flower.app import client_app\n"
        "TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1\n"
        f"node = {{'site-config': {str(federation)!r}, 'site-name': 'adult-b'}}\n"
        "context = Context(run_id=1, node_id=11, node_config=node, state=RecordDict(), run_config={})\n"
        "reply = client_app(Message(wire.query_content(), 11, MessageType.QUERY), context)\n"
        "info = wire.parse_site_reply(reply.content)\n"
        "print(info.name, info.error, sorted(m for m in ('torch', 'monai', 'medfed.tasks') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "adult-b None []"


# ----------------------------------------------------------------------------- end to end (processes)
def same_as_in_process(flower_out: Path, reference: Path) -> None:
    flower_run, local_run = flower_out / "runs" / "fedavg", reference / "runs" / "fedavg"
    a, b = load_checkpoint(flower_run / "checkpoints" / "last.pt"), load_checkpoint(local_run / "checkpoints" / "last.pt")
    assert np.asarray(a["global"]).tobytes() == np.asarray(b["global"]).tobytes()  # bit for bit
    pd.testing.assert_frame_equal(pd.read_csv(flower_out / "metrics.csv"), pd.read_csv(reference / "metrics.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(flower_out / "summary.csv"), pd.read_csv(reference / "summary.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(flower_out / "predictions" / "fedavg.csv"),
                                  pd.read_csv(reference / "predictions" / "fedavg.csv"))


def kill_tree(process: subprocess.Popen) -> list[psutil.Process]:
    """SIGKILL a running process and everything below it at once (the machine running the server dies);
    returns the processes still alive 10 s later (none expected)."""
    assert process.poll() is None, f"the run ended by itself (exit {process.returncode}) before it was killed"
    root = psutil.Process(process.pid)
    tree = [root, *root.children(recursive=True)]
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    process.wait()
    _, alive = psutil.wait_procs(tree, timeout=10)
    return alive


def processes_mentioning(text: str) -> list[str]:
    """Command lines of any process on this machine naming ``text`` (orphans of a killed run included)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if text in line and proc.pid != os.getpid():
            found.append(line)
    return found


@pytest.mark.slow(seconds=190)
@needs_cli
def test_a_killed_flower_deployment_run_resumes_to_the_in_process_numbers(federation, tmp_path):
    """`medfed run --engine flower` killed (with its SuperLink and SuperNodes) after round 1 of 2; `--resume`
    starts a new cluster, trains round 2 only, and ends bit-identical to the uninterrupted in-process run.
    (Two hospitals, and the final evaluation only: each Flower message starts a ClientApp process per site, ~9 s of
    CPU importing torch and MONAI, so fewer of them keep the test short; three sites and the per-round evaluation
    in the rounds log are the simulation test's below.)"""
    sites = list(SITES[:2])
    config = experiment(tmp_path / "exp.yaml", only_sites(federation, sites), rounds=2, eval_every=0)
    reference = run_experiment(config, tmp_path / "inprocess", progress=False)
    out = tmp_path / "flower" / "exp"
    run_dir = out / "runs" / "fedavg"
    (tmp_path / "tmp").mkdir()  # the killed cluster cannot remove its temp folder: keep it in pytest's
    with open(tmp_path / "killed-run.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "medfed.cli", "run", str(config), "--out", str(tmp_path / "flower"),
             "--engine", "flower", "--no-progress"],
            env={**os.environ, **same_medfed_env(), "TMPDIR": str(tmp_path / "tmp")}, stdout=log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline and not (
                (run_dir / "rounds.jsonl").is_file() and (run_dir / "rounds.jsonl").read_text().strip()):
            time.sleep(0.05)
        alive = kill_tree(process)  # round 1 is logged and checkpointed; round 2 is under way
    assert alive == [] and processes_mentioning(str(tmp_path)) == [], (tmp_path / "killed-run.log").read_text()[-2000:]
    assert [r["round"] for r in rounds_log(run_dir)] == [1]
    assert not (out / "metrics.csv").exists(), "the run finished before it could be killed"

    began = time.monotonic()
    with LoopbackWatch() as network:
        result = run_experiment_on_flower(config, tmp_path / "flower", "flower", resume=True, progress=False,
                                          timeout=300)
    print(f"flower engine, resumed: {time.monotonic() - began:.1f} s")
    assert network.listening and network.outside() == []  # SuperLink, SuperNodes, apps: loopback only
    assert flower_processes() == []  # SuperLink, SuperNodes and everything they started are gone
    assert processes_mentioning(str(tmp_path)) == []
    assert result.out == out and result.name == "exp" and result.primary_metric == reference.primary_metric
    assert result.stopped == {} and result.failures == []
    assert [r["round"] for r in rounds_log(run_dir)] == [1, 2]
    same_as_in_process(out, reference.out)
    for got, want in zip(rounds_log(run_dir), rounds_log(reference.out / "runs" / "fedavg"),
                         strict=True):  # round 1 from the killed run, round 2 from the resumed one
        assert got["completed"] == want["completed"] == sites
        assert got["train_loss"] == want["train_loss"] and "eval" not in got and "eval" not in want
    pd.testing.assert_frame_equal(result.summary, reference.summary)
    assert len(result.metrics) == len(reference.metrics)
    assert sorted(p.name for p in (out / "flower" / "sites").iterdir()) == [f"{s}.yaml" for s in sites]
    logs = {p.name for p in (out / "flower" / "logs").iterdir()}
    assert {"superlink.log", "supernode-0.log", "supernode-1.log"} <= logs
    assert any(name.startswith("flwr-run-") for name in logs)
    assert [p.name.startswith("logs-") for p in (out / "flower").iterdir()].count(True) == 1  # the killed run's


@pytest.mark.slow(seconds=120)
@needs_cli
@pytest.mark.usefixtures("ray_ready")
def test_flower_simulation_engine_equals_the_in_process_engine(federation, tmp_path):
    config = experiment(tmp_path / "exp.yaml", federation, rounds=1)
    reference = run_experiment(config, tmp_path / "inprocess", progress=False)
    began = time.monotonic()
    with LoopbackWatch() as network:
        result = run_experiment_on_flower(config, tmp_path / "sim", "flower-sim", progress=False, timeout=400)
    print(f"flower-sim engine: {time.monotonic() - began:.1f} s")
    assert network.listening and network.outside() == []  # Ray and Flower on loopback only
    assert flower_processes() == []
    assert result.stopped == {} and result.failures == []
    out = tmp_path / "sim" / "exp"
    same_as_in_process(out, reference.out)
    # the rounds log, round 1's per-site and pooled evaluation included, as in-process (less wall-clock seconds)
    logs = [[without_timing(r) for r in rounds_log(run / "runs" / "fedavg")] for run in (out, reference.out)]
    assert logs[0] == logs[1] and set(logs[0][0]["eval"]) >= {*SITES, "pooled"}
    assert not (out / "flower" / "sites").exists()  # virtual nodes read the experiment's federation
    # resumed: nothing left to train, the final models are evaluated again, the same files come out
    result = run_experiment_on_flower(config, tmp_path / "sim", "flower-sim", resume=True, progress=False, timeout=400)
    assert result.stopped == {} and flower_processes() == []
    same_as_in_process(out, reference.out)
    assert [p.name.startswith("logs-") for p in (out / "flower").iterdir()].count(True) == 1
