"""Suite-wide settings: one torch thread per test process, and the long end-to-end tests first.

The suite runs on three pytest-xdist workers (``-n 3`` in pyproject.toml; why three on two cores: below). Each
worker (and every process a test starts: the Flower SuperNodes' ClientApps, the CLI runs) uses one torch thread
(``OMP_NUM_THREADS=1`` unless it is set already): two workers with two threads each on two cores spent their
time spinning at OpenMP barriers (the FedAgain forger test took 222 s instead of 33 s). Numbers depend on the
thread count (README, Determinism), so every comparison in the suite is between runs made with this same setting.

xdist's load scheduler hands each worker two tests at first, then one more each time one ends, so each worker
always has its next test queued (``--maxschedchunk 1``; by default it hands the first quarter of each worker's
share out at once, which put every long test on one worker). The long tests carry ``@pytest.mark.slow(seconds=S)``,
S being what they took on 2 cores with three workers; they go first, longest first, and the first 2 x workers
of them are paired longest with shortest (worker k starts with the k-th longest, then the (2n-1-k)-th), so that
no worker starts with two of the longest (longest processing time first; the rest follow in collection order).

Three workers on two cores (``-n 3``): the Flower tests spend much of their time waiting (a SuperNode polls
every 3 s, the ServerApp's Grid every 3 s, a crashed node is declared unavailable after 60 s) while the
seeded-claim tests are CPU-bound. Measured on one 2-core machine: ``-n 2`` 12 min 42 s; ``-n 3`` 10 min 49 s
(slow tests in collection order), 11 min 00 s and, on a clean clone, 12 min 00 s (this order). With three
workers the CPU was idle 0.3 % of a full run (sampled from /proc/stat every 5 s), so it has since been made faster
by computing less (README, Tests: 8 min 37 s at commit 1e951a3 on another 2-core machine).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool; inherited by child processes

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin imported torch before this file


def _expected_seconds(item: pytest.Item) -> float:
    """The ``seconds`` of a test's ``slow`` marker (30 when it gives none); 0 for the rest."""
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 30.0))


def longest_first(durations: list[float], workers: int) -> list[int]:
    """Indices of ``durations`` in the order to hand them out: longest first (stable for equal ones), and within
    the first ``2 * workers`` (the workers' first two tests each) the k-th longest followed by the
    ``(2 * workers - 1 - k)``-th."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    head = order[:2 * workers]
    if len(head) == 2 * workers > 2:
        head = [i for k in range(workers) for i in (head[k], head[2 * workers - 1 - k])]
    return head + order[2 * workers:]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    rest = [item for item in items if item.get_closest_marker("slow") is None]
    order = longest_first([_expected_seconds(item) for item in slow], workers)
    items[:] = [slow[i] for i in order] + rest
