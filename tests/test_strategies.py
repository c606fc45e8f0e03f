"""Strategy maths on hand-computable updates, and the contract every strategy keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medfed.errors import ConfigError
from medfed.fl.client import ProximalTerm
from medfed.fl.sampling import sample_sites, sample_size
from medfed.fl.strategies import (
    Centralised,
    FedAvg,
    FedProx,
    LocalOnly,
    StreamingWeightedMean,
    build_strategy,
    weighted_average,
)
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import get_weights, layout_of, set_weights
from medfed.tasks.base import Task, TaskConfigBase


def updates(*pairs: tuple[list[float], int]) -> list[ClientUpdate]:
    return [ClientUpdate(f"s{i}", np.array(w, np.float32), n) for i, (w, n) in enumerate(pairs)]


def test_weighted_average_by_hand():
    # (1*[1, 2] + 3*[3, 4]) / 4 = [2.5, 3.5]
    out = weighted_average(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 3]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [2.5, 3.5])


def test_fedavg_equals_flowers_formula_and_streams():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(5, 50)).astype(np.float32)
    counts = rng.integers(1, 100, size=5)
    # Flower's FedAvg: sum_k n_k w_k / sum_k n_k (flwr.server.strategy.aggregate.aggregate)
    expected = sum(n * w.astype(np.float64) for w, n in zip(weights, counts)) / counts.sum()
    consumed = []

    def stream():
        for i, (w, n) in enumerate(zip(weights, counts)):
            consumed.append(i)
            yield ClientUpdate(f"s{i}", w, int(n))

    new, _, diag = FedAvg().aggregate(np.zeros(50, np.float32), stream(), {})
    np.testing.assert_allclose(new, expected, rtol=1e-6)
    np.testing.assert_array_equal(new, weighted_average(weights, counts))
    assert consumed == [0, 1, 2, 3, 4] and diag["clients"] == 5


def test_streaming_mean_rejects_empty_and_mismatched():
    mean = StreamingWeightedMean()
    with pytest.raises(ValueError):
        mean.result()
    mean.add(np.zeros(3), 1)
    with pytest.raises(ValueError):
        mean.add(np.zeros(4), 1)


def test_fedavg_without_updates_keeps_global():
    start = np.arange(3, dtype=np.float32)
    new, _, diag = FedAvg().aggregate(start, iter(()), {})
    np.testing.assert_array_equal(new, start)
    assert diag["clients"] == 0


def test_proximal_term_by_hand():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0]]))
    term = ProximalTerm(model, mu=0.5)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    penalty = term.penalty(model)
    assert penalty.item() == pytest.approx(0.5 * 0.5 * (1 + 4))  # mu/2 ||w - w0||^2
    penalty.backward()
    np.testing.assert_allclose(model.weight.grad.numpy(), [[0.5, 1.0]])  # mu (w - w0)


class _Quadratic(Task):
    """A client whose local optimum is ``target``: loss ``||w - target||^2`` (for drift tests)."""

    kind = "quadratic"
    primary_metric = "none"

    def __init__(self, target: float) -> None:
        super().__init__(TaskConfigBase(batch_size=1, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.0}))
        self.target = target

    def build_model(self, seed: int) -> nn.Module:
        return nn.Linear(1, 1, bias=False)

    def check_site(self, site):  # pragma: no cover - unused
        return []

    def train_dataset(self, site):  # pragma: no cover - unused
        return None

    def eval_dataset(self, site, split):  # pragma: no cover - unused
        return None

    def forward(self, model, batch):
        return model.weight

    def criterion(self, outputs, batch):
        return ((outputs - self.target) ** 2).sum()

    def evaluate(self, model, dataset):  # pragma: no cover - unused
        return None

    def metrics(self, records):  # pragma: no cover - unused
        return {}


def _train_from_zero(hooks_for) -> float:
    task = _Quadratic(target=4.0)
    model = task.build_model(0)
    with torch.no_grad():
        model.weight.zero_()
    task.local_train(model, [{"x": 0}] * 20, epochs=1, seed=0, hooks=hooks_for(model))
    return float(model.weight.item())


def test_fedprox_limits_client_drift_as_the_paper_says():
    # Li et al. 2020: the proximal term keeps local models near the global one; mu = 0 is FedAvg.
    plain = _train_from_zero(lambda m: FedAvg().client_hooks(m))
    prox = _train_from_zero(lambda m: FedProx(proximal_mu=1.0).client_hooks(m))
    assert plain == pytest.approx(4.0, abs=0.1)
    # the proximal optimum of ||w - 4||^2 + (1/2)||w||^2 is w = 8/3
    assert prox == pytest.approx(8 / 3, abs=0.05)
    assert FedProx(proximal_mu=0.0).client_hooks(nn.Linear(1, 1)) == []


def test_local_only_keeps_one_model_per_site():
    strategy = LocalOnly()
    start = np.zeros(2, np.float32)
    state = strategy.initial_state(start, ["a", "b"])
    new, state, _ = strategy.aggregate(start, iter([ClientUpdate("a", np.ones(2), 3)]), state)
    np.testing.assert_array_equal(new, start)
    np.testing.assert_array_equal(strategy.client_weights(new, "a", state), [1, 1])
    np.testing.assert_array_equal(strategy.client_weights(new, "b", state), [0, 0])
    assert set(strategy.final_models(new, state)) == {"local:a", "local:b"}


def test_centralised_adopts_the_pooled_model_and_says_it_is_not_private():
    new, _, _ = Centralised().aggregate(np.zeros(2, np.float32), iter(updates(([5, 6], 10))), {})
    np.testing.assert_array_equal(new, [5, 6])
    assert Centralised.pooled and not Centralised.privacy_preserving


def test_unknown_strategy_and_bad_parameter_are_config_errors():
    with pytest.raises(ConfigError, match="unknown strategy 'fedsgd'"):
        build_strategy("fedsgd")
    with pytest.raises(ConfigError, match="proximal_mu"):
        build_strategy("fedprox", {"proximal_mu": -1})
    with pytest.raises(ConfigError, match="fedavg"):
        build_strategy("fedavg", {"proximal_mu": 0.1})


def test_weights_round_trip_including_integer_buffers():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model[1].num_batches_tracked.fill_(7)
    vector = get_weights(model)
    assert vector.dtype == np.float32 and vector.size == layout_of(model).size
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    set_weights(other, vector)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    with pytest.raises(ValueError, match="shape"):
        set_weights(other, vector[:-1])


def test_sampling_follows_flower_rule_and_is_seeded():
    sites = [f"s{i}" for i in range(10)]
    assert sample_size(10, 0.3, 2) == 3 and sample_size(10, 0.1, 2) == 2 and sample_size(3, 1.0, 5) == 3
    a = sample_sites(sites, 0.3, 1, np.random.default_rng(5))
    assert a == sample_sites(sites, 0.3, 1, np.random.default_rng(5))
    assert a == sorted(a, key=sites.index) and len(a) == 3
