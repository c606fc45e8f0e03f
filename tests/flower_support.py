"""Shared by the Flower tests: three synthetic hospitals, a loopback-only network watch, a Ray gate."""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Self

import psutil
import pytest
import yaml

from medfed.integrations.flower.local_cluster import ray_start_problem
from medfed.synth import write_federation

SITES = ("adult-a", "adult-b", "adult-c")


def write_hospitals(folder: Path, scale: str = "small", min_count: int | None = 2) -> dict[str, Path]:
    """The three adult sites of the synthetic chest X-ray federation (the demo federation at ``scale="demo"``).

    Returns ``{"federation": the three-site file (in-process reference), site: that hospital's own site config
    (one SuperNode each)}``; ``min_count`` overrides the federation's (2: some metrics visible, some suppressed).
    """
    full = write_federation("chest_xray", folder, scale=scale, seed=0)
    config = yaml.safe_load(full.read_text())
    if min_count is not None:
        config["min_count"] = min_count
    sources = {s["name"]: s for s in config["sources"]}
    files = {"federation": full.parent / "three.yaml"}
    files["federation"].write_text(yaml.safe_dump({**config, "sources": [sources[s] for s in SITES]}))
    for site in SITES:
        files[site] = full.parent / f"hospital_{site}.yaml"
        files[site].write_text(yaml.safe_dump({**config, "name": f"hospital-{site}", "sources": [sources[site]]}))
    return files


def experiment(path: Path, federation: Path, rounds: int = 1, methods: list | None = None, eval_every: int = 1,
               **extra) -> Path:
    """A small classification experiment on ``federation`` (seed 7, a tiny ResNet, evaluated every ``eval_every``
    rounds and after the last), written to ``path``; ``extra`` adds top-level keys."""
    path.write_text(yaml.safe_dump({
        "name": "exp", "federation": str(federation), "seed": 7,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 4,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": rounds, "local_epochs": 1, "eval_every": eval_every}, "methods": methods or ["fedavg"],
        **extra}))
    return path


def only_sites(federation: Path, sites: list[str]) -> Path:
    """The federation file with only ``sites`` (in its order), written beside it so its relative paths hold."""
    config = yaml.safe_load(federation.read_text())
    path = federation.parent / f"{'+'.join(sites)}.yaml"
    path.write_text(yaml.safe_dump({**config, "sources": [s for s in config["sources"] if s["name"] in sites]}))
    return path


def rounds_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a method's ``rounds.jsonl``, one per round."""
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def without_timing(record: dict[str, Any]) -> dict[str, Any]:
    """A round record less what depends on the machine's speed (wall-clock seconds)."""
    record = {k: v for k, v in record.items() if k != "seconds"}
    if "work" in record:
        record["work"] = {s: {k: v for k, v in w.items() if k != "seconds"} for s, w in record["work"].items()}
    return record


def node_configs(hospitals: dict[str, Path]) -> list[dict[str, str]]:
    """One ``--node-config`` per SuperNode: its own site config and site name."""
    return [{"site-config": str(hospitals[s]), "site-name": s} for s in SITES]


@functools.cache
def _ray_problem() -> str | None:
    return ray_start_problem()


@pytest.fixture(scope="session")
def ray_ready() -> None:
    """Skip (with Ray's own reason) only where Ray, in loopback mode, cannot start on this machine."""
    problem = _ray_problem()
    if problem is not None:
        pytest.skip(f"Flower's Simulation Engine cannot run here: {problem}")


class LoopbackWatch:
    """Records every listening (TCP) or bound (UDP) and every connected address of this process's descendants
    while it runs.

    ``outside()`` lists the ones that are not loopback (127.0.0.0/8, ::1, or IPv4-mapped loopback): the
    Flower tests must neither listen on nor talk to any other interface. A failure of the sampling thread is
    raised when the watch ends, so a broken watch cannot pass silently.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.listening: set[str] = set()
        self.remote: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._error: BaseException | None = None

    def _sample(self) -> None:
        for proc in psutil.Process().children(recursive=True):
            try:
                connections = proc.net_connections(kind="inet")
            except psutil.Error:
                continue
            for c in connections:
                if c.raddr:
                    self.remote.add(c.raddr.ip)
                elif c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and c.laddr):
                    self.listening.add(c.laddr.ip)

    def _poll(self) -> None:
        try:
            while not self._stop.is_set():
                self._sample()
                time.sleep(self.interval)
        except BaseException as err:  # noqa: BLE001 - re-raised in __exit__
            self._error = err

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("LoopbackWatch stopped sampling") from self._error

    @staticmethod
    def _is_loopback(address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def outside(self) -> list[str]:
        return sorted(a for a in self.listening | self.remote if not self._is_loopback(a))
