"""medfed's Flower App on a real Flower deployment: a SuperLink and two SuperNodes (one synthetic hospital
each: two adult sites of the small chest X-ray federation) as subprocesses on 127.0.0.1, driven by `flwr run`, one
of them killed during a round (two, not three: each Flower message starts a ClientApp process per site, ~9 s of CPU
importing torch and MONAI). (The same deployment's bit-identity with the in-process engine, before and after a
resume, is tests/test_flower_engine.py's.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from flower_support import (
    SITES,
    experiment,
    node_configs,
    only_sites,
    rounds_log,
    write_hospitals,
)

from medfed.integrations.flower.local_cluster import LocalCluster, flower_cli_available

APP = Path(__file__).resolve().parents[1] / "medfed" / "integrations" / "flower"
_CLI_OK, _CLI_REASON = flower_cli_available()
pytestmark = [pytest.mark.slow(seconds=145), pytest.mark.skipif(not _CLI_OK, reason=_CLI_REASON or "Flower CLI missing")]


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory) -> dict[str, Path]:
    """The three hospitals at the small scale."""
    return write_hospitals(tmp_path_factory.mktemp("small"))


def test_a_supernode_killed_during_a_round_is_recorded_and_the_round_completes(hospitals, tmp_path):
    sites = list(SITES[:2])
    config = experiment(tmp_path / "exp.yaml", only_sites(hospitals["federation"], sites), rounds=2,
                        eval_every=0)  # final eval only
    out = tmp_path / "flower"
    run_dir = out / "exp" / "runs" / "fedavg"
    with LocalCluster(node_configs(hospitals)[:2], log_dir=tmp_path / "logs") as cluster:
        outcome: dict = {}

        def run() -> None:
            outcome["result"] = cluster.run_app(
                APP, {"experiment": str(config), "method": "fedavg", "out": str(out), "sites": ",".join(sites),
                      "round-timeout": 90.0, "query-timeout": 60.0}, timeout=420, check=False)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run_dir / "rounds.jsonl").is_file():
            time.sleep(0.5)  # the ServerApp has mapped the nodes to sites and started round 1
        while time.monotonic() < deadline and not rounds_log(run_dir):
            if "train" in cluster.supernodes[1].log_text().lower():
                break
            time.sleep(0.2)
        cluster.kill_node(1)  # a crash of hospital adult-b's SuperNode during round 1 (or 2)
        thread.join(timeout=450)
        assert not thread.is_alive()
        assert outcome["result"].ok, outcome["result"].output[-3000:]
    log = rounds_log(run_dir)
    assert len(log) == 2
    hit = [r for r in log if "adult-b" not in r["completed"]]
    assert hit, log
    for record in hit:  # the other finished the round; the dropout is recorded
        assert record["completed"] == ["adult-a"]
        lost = {f["site"] for f in record["failed"]} | set(record.get("unreachable", []))
        assert "adult-b" in lost
    # in the round it died in, adult-b's message is answered by the SuperLink once its heartbeats have stopped for
    # 2 x 30 s (Flower's NODE_UNAVAILABLE), before the 90-s round timeout; later rounds find no node for it
    [died] = [f for f in hit[0]["failed"] if f["site"] == "adult-b"]
    assert died["error"].startswith("Flower error 5: Error: Node Unavailable"), died
    assert all(r.get("unreachable") == ["adult-b"] for r in hit[1:]), hit
