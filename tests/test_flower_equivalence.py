"""Where Flower has the strategy, medfed's aggregation equals Flower's on the same arrays, round after round.

Flower's strategy objects are driven directly through ``aggregate_fit`` (no server, no network). The module is
skipped where flwr is not installed; CI installs it with the ``flower`` extra.
"""

from __future__ import annotations

import numpy as np
import pytest

from medfed.fl.strategies import build_strategy
from medfed.fl.update import ClientUpdate

fl_common = pytest.importorskip("flwr.common")
fl_strategy = pytest.importorskip("flwr.server.strategy")

SITES = ["a", "b", "c", "d", "e", "f", "g"]
SHAPES = [(3, 4), (4,), (2, 2, 2)]  # a model of several arrays, as Flower sees it
ROUNDS = 4


def _fit_result(arrays: list[np.ndarray], num_examples: int):
    return None, fl_common.FitRes(
        status=fl_common.Status(code=fl_common.Code.OK, message=""),
        parameters=fl_common.ndarrays_to_parameters(arrays),
        num_examples=num_examples,
        metrics={},
    )


def _split(flat: np.ndarray) -> list[np.ndarray]:
    sizes = np.cumsum([int(np.prod(s)) for s in SHAPES])[:-1]
    return [part.reshape(shape) for part, shape in zip(np.split(flat, sizes), SHAPES, strict=True)]


def _flower(name: str, params: dict, start: list[np.ndarray]):
    initial = fl_common.ndarrays_to_parameters(start)
    if name == "fedavg":
        return fl_strategy.FedAvg(initial_parameters=initial)
    if name == "fedavgm":
        return fl_strategy.FedAvgM(initial_parameters=initial, **params)
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        cls = {"fedadam": fl_strategy.FedAdam, "fedyogi": fl_strategy.FedYogi, "fedadagrad": fl_strategy.FedAdagrad}
        return cls[name](initial_parameters=initial, **params)
    if name == "fedmedian":
        return fl_strategy.FedMedian(initial_parameters=initial)
    if name == "fedtrimmedavg":
        return fl_strategy.FedTrimmedAvg(initial_parameters=initial, **params)
    if name == "krum":
        return fl_strategy.Krum(initial_parameters=initial, **params)
    raise AssertionError(name)


CASES = [
    ("fedavg", {}),
    ("fedavgm", {"server_learning_rate": 0.7, "server_momentum": 0.9}),
    ("fedadam", {}),
    ("fedadam", {"eta": 0.05, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-3}),
    ("fedyogi", {}),
    ("fedadagrad", {}),
    ("fedmedian", {}),
    ("fedtrimmedavg", {"beta": 0.2}),
    ("fedtrimmedavg", {"beta": 0.3}),
    ("krum", {"num_malicious_clients": 1}),
    ("krum", {"num_malicious_clients": 2, "num_clients_to_keep": 3}),
]


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_medfed_equals_flower_round_after_round(name, params):
    rng = np.random.default_rng(7)
    size = sum(int(np.prod(s)) for s in SHAPES)
    start = rng.normal(size=size).astype(np.float32)
    ours = build_strategy(name, params)
    state = ours.initial_state(start, SITES)
    theirs = _flower(name, params, _split(start))
    weights = start
    for server_round in range(1, ROUNDS + 1):
        # clients move from the current model by site-specific amounts; one site is far off (a robust
        # aggregator's reason to exist) and counts differ (FedAvg's weights)
        local = [weights + rng.normal(scale=0.1 + 0.05 * k, size=size).astype(np.float32) for k in range(len(SITES))]
        local[-1] = local[-1] + 5.0
        counts = [int(c) for c in rng.integers(5, 60, size=len(SITES))]
        batch = [ClientUpdate(s, w, n) for s, w, n in zip(SITES, local, counts, strict=True)]
        weights, state, _ = ours.aggregate(weights, iter(batch), state)
        flower_parameters, _ = theirs.aggregate_fit(
            server_round, [_fit_result(_split(w), n) for w, n in zip(local, counts, strict=True)], []
        )
        expected = np.concatenate([a.ravel() for a in fl_common.parameters_to_ndarrays(flower_parameters)])
        assert weights.dtype == np.float32
        # Flower computes in float32 where medfed accumulates in float64: agreement to float32 rounding
        np.testing.assert_allclose(weights, expected, rtol=2e-5, atol=2e-6, err_msg=f"round {server_round}")
