"""Suite-wide settings: one torch thread per test process, and the long end-to-end tests first.

The suite runs on pytest-xdist workers (``-n 2`` in pyproject.toml), one per core. Each worker (and every
process a test starts: the Flower SuperNodes' ClientApps, the CLI runs) uses one torch thread
(``OMP_NUM_THREADS=1`` unless it is set already): two workers with two threads each on two cores spend their
time spinning at OpenMP barriers (the FedAgain forger test took 222 s instead of 33 s). Numbers depend on the
thread count (README, Determinism), so every comparison in the suite is between runs made with this same setting.

xdist's load scheduler hands tests out in collection order, two to each worker at first and then one at a time
as a worker's queue runs low (``--maxschedchunk 1``; by default it hands the first quarter of each worker's share
out at once, which put every long test on one worker). The order here: the long tests (``@pytest.mark.slow``)
first, the real Flower deployments (``tests/test_flower_*``, the longest, mostly waiting on Flower's polling and
timeouts) before the seeded paper claims, then the rest in collection order. So the first worker runs the two
deployment tests one after the other while the second takes the other long tests and both then share the short
ones. Measured on 2 cores: this order 10 min 44 s; interleaving long and short tests so that the two deployment
tests ran at the same time on both workers, 11 min 39 s (their ClientApps then compete for the cores: 375 s and
262 s instead of 257 s and 221 s).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool; inherited by child processes

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin imported torch before this file


def _order(item: pytest.Item) -> int:
    """0: slow Flower deployments, 1: other slow tests, 2: the rest."""
    if item.get_closest_marker("slow") is None:
        return 2
    return 0 if item.path.name.startswith("test_flower_") else 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_order)
