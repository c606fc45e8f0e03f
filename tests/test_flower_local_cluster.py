"""End-to-end: a real Flower deployment (SuperLink + SuperNodes) on 127.0.0.1.

Runs tests/flower_echo_app through ``flwr run`` against a
:class:`medfed.integrations.flower.local_cluster.LocalCluster`.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flower_support import LoopbackWatch, ray_ready  # noqa: F401  (fixture)

from medfed.integrations.flower.certificates import write_credentials
from medfed.integrations.flower.local_cluster import (
    SUPERNODE_BIN,
    LocalCluster,
    find_binary,
    flower_cli_available,
    free_port,
    with_interpreter_bin_first,
)

APP_DIR = Path(__file__).parent / "flower_echo_app"

_CLI_OK, _CLI_REASON = flower_cli_available()
pytestmark = [
    pytest.mark.slow(seconds=50),
    pytest.mark.skipif(not _CLI_OK, reason=_CLI_REASON or "Flower CLI missing"),
]


def _echo_config(out: Path, **overrides: object) -> dict:
    cfg = {"output-path": str(out), "reply-timeout": 30.0, "min-nodes": 1, "node-wait-timeout": 20.0}
    cfg.update(overrides)
    return cfg


def test_three_supernodes_echo_site_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as from an environment that is not activated: no folder on PATH holds Flower's flower-superexec (the cluster
    # puts the interpreter's bin folder first on its processes' PATH)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "flower-superexec").exists()))
    assert shutil.which("flower-superexec") is None
    out = tmp_path / "echo.json"
    t0 = time.monotonic()
    with LoopbackWatch() as network, LocalCluster([{"site-index": i} for i in range(3)],
                                                  log_dir=tmp_path / "logs") as cluster:
        t_ready = time.monotonic() - t0
        assert len(set(cluster.node_ids)) == 3
        result = cluster.run_app(APP_DIR, _echo_config(out, **{"min-nodes": 3}), timeout=90)
        assert result.ok, result.output
        data = json.loads(out.read_text(encoding="utf-8"))
        workdir = cluster.workdir
    print(f"cluster ready in {t_ready:.1f}s, run {result.seconds:.1f}s, total {time.monotonic() - t0:.1f}s")
    assert data["values"] == [0, 1, 2]
    # node i answered with its own --node-config site-index
    assert data["received"] == {str(nid): i for i, nid in enumerate(cluster.node_ids)}
    assert data["missing"] == [] and data["errors"] == {}
    assert network.listening and network.outside() == []  # SuperLink, SuperNodes, apps: loopback only
    # everything torn down, temp dir gone, logs kept
    assert cluster.processes_alive() == []
    assert workdir is not None and not workdir.exists()
    assert (tmp_path / "logs" / "superlink.log").is_file()
    assert (tmp_path / "logs" / "supernode-2.log").is_file()


def test_run_completes_after_a_supernode_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "echo.json"
    reply_timeout = 20.0  # the live nodes reply within it even while the other test worker loads both cores
    t0 = time.monotonic()
    with LocalCluster([{"site-index": i} for i in range(3)], log_dir=tmp_path / "logs") as cluster:
        dead = cluster.node_ids[1]
        cluster.kill_node(1)  # SIGKILL: a crash, the SuperLink still lists it for ~1 min
        assert not cluster.supernodes[1].any_alive()
        assert cluster.processes_alive() == ["supernode-0", "supernode-2", "superlink"]
        cfg = _echo_config(out, **{"reply-timeout": reply_timeout, "min-nodes": 2})
        result = cluster.run_app(APP_DIR, cfg, timeout=90)
        assert result.ok, result.output
        data = json.loads(out.read_text(encoding="utf-8"))
    print(f"dropout run {result.seconds:.1f}s, missing={data['missing']}, total {time.monotonic() - t0:.1f}s")
    assert data["values"] == [0, 2]
    assert str(dead) not in data["received"]
    # the crashed node is either still listed (then recorded as missing after the
    # bounded wait) or already dropped by the SuperLink
    assert set(data["missing"]) <= {str(dead)}
    if data["missing"]:
        assert data["seconds"] >= reply_timeout - 0.5
    assert cluster.processes_alive() == []


@pytest.mark.usefixtures("ray_ready")
def test_simulation_engine_echo_on_loopback_only(tmp_path: Path) -> None:
    out = tmp_path / "echo.json"
    with LoopbackWatch() as network, LocalCluster(simulation=True, log_dir=tmp_path / "logs") as cluster:
        result = cluster.run_app(
            APP_DIR,
            _echo_config(out, **{"min-nodes": 3}),
            federation_config={"num-supernodes": 3},
            timeout=110,
        )
        assert result.ok, result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    # simulated SuperNodes carry partition-id 0..2 instead of a site-index
    assert data["values"] == [0, 1, 2]
    assert cluster.processes_alive() == []
    # Ray in loopback mode: its servers listen on, and its processes connect to, 127.0.0.1 only
    assert network.listening and network.outside() == []


_CLOUD_PROBE = """
import json, sys
seen = []
sys.addaudithook(lambda event, args: seen.append([event, str(args[1] if event == "socket.connect" else args[0])])
                 if event in ("socket.connect", "socket.getaddrinfo") else None)
from ray._common.usage.usage_lib import get_cloud_from_metadata_requests
cloud = get_cloud_from_metadata_requests()
print(json.dumps({"cloud": cloud, "seen": seen}))
"""


def test_rays_cloud_metadata_requests_stay_on_loopback_in_the_simulation_environment(tmp_path: Path) -> None:
    """Ray's dashboard asks 169.254.169.254 / metadata.google.internal which cloud it runs on at every start
    (CI caught the simulation engine's SuperLink connecting there); in the SuperLink's environment the very
    same request resolves and connects nothing but loopback (the dead proxy refuses it)."""
    pytest.importorskip("ray")
    with contextlib.closing(LocalCluster(simulation=True)) as cluster:  # its environment only: nothing started
        env = cluster.superlink_env(tmp_path / "home")
        probe = subprocess.run([sys.executable, "-c", _CLOUD_PROBE], env=env, capture_output=True, text=True, check=False,
                               timeout=60)
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["cloud"] == "unknown"
    assert report["seen"], "the audit hook saw no socket at all: the probe did not run"
    touched = {target for _, target in report["seen"]}
    assert all("127.0.0.1" in t for t in touched), touched
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_tls_and_supernode_authentication_admit_registered_nodes_only(tmp_path: Path) -> None:
    """The secured deployment of app.py's docstring, on loopback: TLS on every API, `--enable-supernode-auth`,
    `flwr supernode register` per hospital. Registered nodes run the app; a node whose key was never
    registered is refused by the SuperLink and never listed."""
    out = tmp_path / "echo.json"
    intruder = write_credentials(tmp_path / "intruder", ["127.0.0.1"], ["intruder"]).node_keys["intruder"]
    with LoopbackWatch() as network, LocalCluster([{"site-index": i} for i in range(2)], tls=True,
                                                  log_dir=tmp_path / "logs") as cluster:
        assert cluster.credentials is not None
        result = cluster.run_app(APP_DIR, _echo_config(out, **{"min-nodes": 2}), timeout=90)
        assert result.ok, result.output
        cmd = [find_binary(SUPERNODE_BIN), "--root-certificates", str(cluster.credentials.ca_certificate),
               "--auth-supernode-private-key", str(intruder), "--superlink", cluster.address,
               "--host", "127.0.0.1", "--port", str(free_port()), "--max-wait-time", "10"]
        with open(tmp_path / "intruder.log", "wb") as log:
            rogue = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=cluster.process_env(tmp_path / "intruder-home"))  # no telemetry
            try:
                rogue.wait(timeout=60)  # Flower gives up: the SuperLink refuses to activate the node
            finally:
                with contextlib.suppress(ProcessLookupError):  # its SuperExec may have gone already
                    os.killpg(rogue.pid, signal.SIGKILL)
                rogue.wait()
        listed = {int(n["node-id"]) for n in cluster.list_nodes()}
    assert rogue.returncode not in (0, None)
    assert "Failed to activate SuperNode" in (tmp_path / "intruder.log").read_text()
    assert listed == set(cluster.node_ids)  # only the two registered hospitals
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["values"] == [0, 1] and data["missing"] == [] and data["errors"] == {}
    assert cluster.processes_alive() == []
    assert network.listening and network.outside() == []


def test_child_processes_find_the_interpreters_bin_folder_first(tmp_path: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)
    assert with_interpreter_bin_first("/usr/bin:/bin").split(os.pathsep) == [bin_dir, "/usr/bin", "/bin"]
    assert with_interpreter_bin_first(f"/usr/bin:{bin_dir}").split(os.pathsep) == [bin_dir, "/usr/bin"]
    env = LocalCluster([{"site-index": 0}], log_dir=tmp_path / "logs").process_env(tmp_path / "home")
    assert env["PATH"].split(os.pathsep)[0] == bin_dir
