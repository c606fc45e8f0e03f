"""Aggregation time and peak memory of every strategy, beside the reference formula that stacks K copies.

For K sites x P parameters, each strategy aggregates K float32 client vectors that arrive one at a time
(as from the runner). Peak memory is the largest amount numpy allocated during the call (tracemalloc),
above the one incoming update: a streaming strategy needs about one model in float64 (8P bytes), the
robust ones hold the K models their maths compares (4KP bytes). The reference is Flower's FedAvg formula
(``aggregate``: every client's arrays scaled by its examples, then summed): the flwr function itself when
flwr is installed, else the same formula in numpy.

The last column times the aggregation alone, on updates drawn beforehand.

    python benchmarks/aggregate.py [--sites 10 100] [--params 1000000 10000000] [--only fedavg krum] [--skip-over-gb 12]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np

from medfed.fl.strategies import STRATEGIES, build_strategy
from medfed.fl.strategies.robust import AllModelsStrategy
from medfed.fl.update import ClientUpdate

SKIP = {"local_only", "centralised", "cyclic"}  # no aggregation maths (kept per site, pooled, or chained)
#: FedAgain's trust maths on client-reported reliability: the server-benchmark variant adds one forward pass of
#: each client model over the benchmark set, a cost of the task's network, not of the aggregation
PARAMS = {"fedagain": {"reliability": "client"}}


def updates(k: int, p: int) -> Iterator[ClientUpdate]:
    rng = np.random.default_rng(0)
    for i in range(k):
        yield ClientUpdate(f"s{i}", rng.standard_normal(p, dtype=np.float32), int(rng.integers(10, 100)),
                           {"steps": 10, "lr": 0.01, "start_loss": 0.1})  # what the runner reports (SCAFFOLD, FedAgain)


def reference(k: int, p: int) -> Callable[[], np.ndarray]:
    """Flower's weighted-average formula on K stacked copies."""
    try:
        from flwr.server.strategy.aggregate import aggregate as flwr_aggregate
    except ImportError:
        flwr_aggregate = None

    def run() -> np.ndarray:
        collected = [(u.weights, u.num_examples) for u in updates(k, p)]
        if flwr_aggregate is not None:
            return flwr_aggregate([([w], n) for w, n in collected])[0]
        total = sum(n for _, n in collected)
        return sum(w * n for w, n in collected) / total

    return run


def cnn_like_layout(p: int) -> list[int]:
    """Tensor sizes of P parameters shaped like a CNN: 20 weight tensors growing 8-fold, 60 small vectors
    (biases, normalisation) of 256 values (fewer for a small P; FedLD works tensor by tensor)."""
    small = [max(1, min(256, p // 400))] * 60  # at most 15% of P, so the weight tensors stay positive
    big = p - sum(small)
    shares = np.geomspace(1, 8, 20)
    sizes = (shares / shares.sum() * big).astype(int)
    sizes[-1] += big - sizes.sum()
    return [int(s) for s in sizes] + small


def measure(work: Callable[[], object], p: int) -> tuple[float, float]:
    """(seconds, peak MiB above one incoming update)."""
    tracemalloc.start()
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, max(peak - 4 * p, 0) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--params", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--only", nargs="+", help="strategies to measure (default: all with aggregation maths)")
    parser.add_argument("--skip-over-gb", type=float, default=12.0,
                        help="skip a K-copy strategy whose stacked models would exceed this (the machine has 24 GB)")
    args = parser.parse_args()
    names = args.only or [n for n in STRATEGIES if n not in SKIP]
    print(f"{'K':>4} {'P':>11} {'strategy':<15} {'seconds':>9} {'peak MiB':>10} {'aggregate s':>12}"
          "  (seconds: drawing the updates included; aggregate s: on updates drawn beforehand)")
    for k in args.sites:
        for p in args.params:
            model_mib = 4 * p / 2**20
            drawn = list(updates(k, p))  # for the pure aggregation time
            print(f"{k:>4} {p:>11,} {'one model':<15} {'':>9} {model_mib:>10.0f}")
            seconds, peak = measure(reference(k, p), p)
            print(f"{k:>4} {p:>11,} {'reference':<15} {seconds:>9.2f} {peak:>10.0f}")
            for name in names:
                strategy = build_strategy(name, PARAMS.get(name))
                if isinstance(strategy, AllModelsStrategy) and 4 * k * p / 1e9 > args.skip_over_gb:
                    print(f"{k:>4} {p:>11,} {name:<15} {'skipped':>9} {'':>10}  (K copies > {args.skip_over_gb} GB)")
                    continue
                start = np.zeros(p, np.float32)
                if name == "fedbn":
                    strategy.mask = np.zeros(p, bool)
                    strategy.mask[-max(2, p // 100):] = True  # 1% of entries in normalisation layers
                if name == "scaffold":
                    strategy.mask = np.ones(p, bool)  # every entry a trainable parameter
                state = strategy.initial_state(start, [f"s{i}" for i in range(k)])
                if name == "fedld":
                    strategy.use_layout(cnn_like_layout(p))
                    state["history"][:] = 1  # past the first round: every tensor takes the principal path
                seconds, peak = measure(
                    lambda s=strategy, st=state, w=start, kk=k, pp=p: s.aggregate(w, updates(kk, pp), st), p)
                began = time.perf_counter()
                strategy.aggregate(start, iter(drawn), state)
                pure = time.perf_counter() - began
                print(f"{k:>4} {p:>11,} {name:<15} {seconds:>9.2f} {peak:>10.0f} {pure:>12.2f}")


if __name__ == "__main__":
    main()
