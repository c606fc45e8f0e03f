"""One contract for every strategy, then each new strategy's maths on a hand-computable case and its
paper's claim on a seeded synthetic federation."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from medfed.fl.checkpoint import load_checkpoint, save_checkpoint
from medfed.fl.protocols import ClientHook
from medfed.fl.strategies import (
    STRATEGIES,
    Cyclic,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedBN,
    FedMedian,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Scaffold,
    build_strategy,
)
from medfed.fl.strategies.fedbn import norm_mask
from medfed.fl.update import ClientUpdate

#: strategies whose result does not depend on the order sites report in (all but the per-site ones)
SYMMETRIC = sorted(n for n, c in STRATEGIES.items() if c.order_invariant and not c.pooled and n != "local_only")
P = 8  # parameters of MODEL: Linear(1, 2) weight and bias, GroupNorm(1, 2) weight and bias


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 2), nn.GroupNorm(1, 2))
#: configurations that run without a server benchmark set (FedAgain's server signal is tested in test_fedagain)
STANDALONE = {"fedagain": {"reliability": "client"}}
#: every strategy, plus Multi-Krum as a configuration of its own
CONFIGS = [(n, STANDALONE.get(n, {})) for n in sorted(STRATEGIES)] + [("krum", {"num_clients_to_keep": 2})]
IDS = [n + ("-multi" if p else "") for n, p in CONFIGS]


def _sites(strategy) -> list[str]:
    return ["pooled"] if strategy.pooled else ["a", "b", "c", "d"]


def _round(strategy, start, state, weights, counts, sites):
    # what the runner reports with each update (SCAFFOLD uses steps and lr, FedAgain's client signal start_loss)
    info = {"steps": 2, "lr": 0.5, "start_loss": 0.5}
    batch = [ClientUpdate(s, w, int(n), info) for s, w, n in zip(sites, weights, counts, strict=True)]
    return strategy.aggregate(start, iter(batch), state)


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_contract(name, params, tmp_path):
    strategy = build_strategy(name, params)
    strategy.prepare(model())
    rng = np.random.default_rng(0)
    sites = _sites(strategy)
    start = rng.normal(size=P).astype(np.float32)
    state = strategy.initial_state(start, sites)

    # clients that return the global model leave it unchanged
    new, state_1, diagnostics = _round(strategy, start, state, [start] * len(sites), [3] * len(sites), sites)
    assert isinstance(state_1, dict) and isinstance(diagnostics, dict)
    for site in sites:
        np.testing.assert_allclose(strategy.client_weights(new, site, state_1), start, atol=1e-7)

    # identical updates aggregate to themselves (server optimisers step towards them instead)
    agreed = rng.normal(size=P).astype(np.float32)
    new, state_2, _ = _round(strategy, start, strategy.initial_state(start, sites), [agreed] * len(sites),
                             [1, 2, 3, 4][: len(sites)], sites)
    target = [strategy.client_weights(new, s, state_2) for s in sites]
    if strategy.consensus_fixed_point:
        for vector in target:
            np.testing.assert_allclose(vector, agreed, rtol=1e-6)
    else:  # every coordinate moves from start towards the agreed model
        assert np.all(np.sign(new - start) == np.sign(agreed - start))

    # inputs are never modified; outputs keep dtype and layout
    weights = rng.normal(size=(len(sites), P)).astype(np.float32)
    copies = (start.copy(), weights.copy())
    counts = np.array([5, 1, 7, 2][: len(sites)])
    new, state_3, _ = _round(strategy, start, strategy.initial_state(start, sites), list(weights), counts, sites)
    np.testing.assert_array_equal(start, copies[0])
    np.testing.assert_array_equal(weights, copies[1])
    assert new.dtype == np.float32 and new.shape == start.shape
    for vector in strategy.final_models(new, state_3).values():
        assert vector.dtype == np.float32 and vector.shape == start.shape

    # num_examples: scaling every count changes nothing; a relative change matters only to weighted methods
    scaled, _, _ = _round(strategy, start, strategy.initial_state(start, sites), list(weights), counts * 10, sites)
    np.testing.assert_allclose(scaled, new, rtol=1e-6, atol=1e-7)
    if len(sites) > 1:
        skewed, _, _ = _round(strategy, start, strategy.initial_state(start, sites), list(weights),
                              np.array([100, 1, 1, 1]), sites)
        assert (not np.allclose(skewed, new)) == bool(strategy.weights_by_examples) or name == "local_only"

    # client hooks are ClientHooks (e.g. FedProx's proximal term, SCAFFOLD's gradient correction)
    assert all(isinstance(hook, ClientHook) for hook in strategy.client_hooks(model(), sites[0], state_3))

    # state survives a checkpoint round trip: the next round is bit-identical
    save_checkpoint(tmp_path / "state.pt", {"state": state_3})
    restored = load_checkpoint(tmp_path / "state.pt")["state"]
    following = list(rng.normal(size=(len(sites), P)).astype(np.float32))
    a, _, _ = _round(strategy, new, state_3, following, counts, sites)
    b, _, _ = _round(strategy, new, restored, following, counts, sites)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", SYMMETRIC)
def test_site_order_does_not_matter(name):
    strategy = build_strategy(name, STANDALONE.get(name))
    strategy.prepare(model())
    rng = np.random.default_rng(1)
    start = rng.normal(size=P).astype(np.float32)
    weights, counts, sites = rng.normal(size=(4, P)).astype(np.float32), np.array([3, 9, 4, 6]), ["a", "b", "c", "d"]
    forward, _, _ = _round(strategy, start, strategy.initial_state(start, sites), list(weights), counts, sites)
    order = [2, 0, 3, 1]
    backward, _, _ = _round(strategy, start, strategy.initial_state(start, sites), list(weights[order]), counts[order],
                            [sites[i] for i in order])
    np.testing.assert_allclose(forward, backward, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------- hand-computed cases
def one(value: float) -> np.ndarray:
    return np.array([value], np.float32)


def test_fedavgm_by_hand():
    strategy = FedAvgM(server_learning_rate=1.0, server_momentum=0.9)
    state = strategy.initial_state(one(1), ["a"])
    # round 1: w = 1, average 0 -> g = 1, v = 1, w = 0; round 2: g = 0, v = 0.9, w = -0.9
    w, state, _ = strategy.aggregate(one(1), iter([ClientUpdate("a", one(0), 1)]), state)
    assert w[0] == pytest.approx(0.0)
    w, state, _ = strategy.aggregate(w, iter([ClientUpdate("a", one(0), 1)]), state)
    assert w[0] == pytest.approx(-0.9) and state["momentum"][0] == pytest.approx(0.9)
    # defaults (eta 1, momentum 0) are FedAvg
    plain, _, _ = FedAvgM().aggregate(one(3), iter([ClientUpdate("a", one(1), 1), ClientUpdate("b", one(2), 3)]),
                                      FedAvgM().initial_state(one(3), ["a", "b"]))
    assert plain[0] == pytest.approx(1.75)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # delta = 1: m = 0.1, v = 0.01, eta_1 = 0.1 sqrt(1 - 0.99^2) / (1 - 0.9^2); step = eta_1 m / (sqrt(v) + tau)
        (FedAdam(), 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2) * 0.1 / (0.1 + 1e-9)),
        # v = (1 - 0.99) * 1 = 0.01: step = 0.01 * 0.1 / (0.1 + 0.001)
        (FedYogi(), 0.01 * 0.1 / (0.1 + 0.001)),
        # beta_1 = 0: m = 1, v = 1: step = 0.1 / (1 + 1e-9)
        (FedAdagrad(), 0.1 / (1 + 1e-9)),
    ],
    ids=["fedadam", "fedyogi", "fedadagrad"],
)
def test_fedopt_first_step_by_hand(strategy, expected):
    state = strategy.initial_state(one(0), ["a"])
    w, state, diagnostics = strategy.aggregate(one(0), iter([ClientUpdate("a", one(1), 4)]), state)
    assert w[0] == pytest.approx(expected, rel=1e-6) and diagnostics["server_step"] == 1 and state["step"] == 1


def test_median_trimmed_mean_and_krum_by_hand():
    weights = [np.array(v, np.float32) for v in ([1, 5], [2, 0], [10, 1])]
    updates = [ClientUpdate(s, w, n) for s, w, n in zip("abc", weights, (1, 1, 100), strict=True)]
    median, _, _ = FedMedian().aggregate(np.zeros(2, np.float32), iter(updates), {})
    np.testing.assert_array_equal(median, [2, 1])  # unweighted: the 100 examples of c do not count
    values = [ClientUpdate(s, one(v), 1) for s, v in zip("abcde", (0, 1, 2, 3, 100), strict=True)]
    trimmed, _, diag = FedTrimmedAvg(beta=0.2).aggregate(one(0), iter(values), {})
    assert trimmed[0] == pytest.approx(2.0) and diag["trimmed_per_side"] == 1  # mean of 1, 2, 3
    # 1-D points 0, 1, 2, 100 with f = 0: K - f - 2 = 2 neighbours; scores 5, 2, 5, 19405
    points = [ClientUpdate(s, one(v), n) for s, v, n in zip("abcd", (0, 1, 2, 100), (1, 3, 1, 1), strict=True)]
    chosen, _, diag = Krum().aggregate(one(0), iter(points), {})
    assert chosen[0] == 1.0 and diag["selected"] == ["b"] and diag["scores"]["d"] == pytest.approx(9604 + 9801)
    multi, _, diag = Krum(num_clients_to_keep=2).aggregate(one(0), iter(points), {})
    assert diag["selected"] == ["a", "b"] and multi[0] == pytest.approx((0 * 1 + 1 * 3) / 4)


def test_bad_hyper_parameters_are_rejected():
    for name, params in (("fedavgm", {"server_momentum": 1.0}), ("fedadam", {"beta_1": 1.5}),
                         ("fedtrimmedavg", {"beta": 0.5}), ("krum", {"num_malicious_clients": -1}),
                         ("fedyogi", {"tau": 0})):
        with pytest.raises(Exception, match=name):
            build_strategy(name, params)


# ----------------------------------------------------------------- what the papers claim
def test_robust_aggregators_resist_a_byzantine_site_where_fedavg_does_not():
    # Blanchard et al. 2017, Yin et al. 2018: one arbitrary update moves the mean arbitrarily far, not the
    # median, the trimmed mean or Krum's choice.
    rng = np.random.default_rng(3)
    honest = rng.normal(loc=1.0, scale=0.1, size=(6, 50)).astype(np.float32)
    attacker = np.full((1, 50), 1e4, np.float32)
    batch = np.concatenate([honest, attacker])
    sites = [f"s{i}" for i in range(7)]
    centre = honest.mean(axis=0)
    errors = {}
    for strategy in (FedAvg(), FedMedian(), FedTrimmedAvg(beta=0.2), Krum(num_malicious_clients=1)):
        new, _, _ = _round(strategy, np.zeros(50, np.float32), {}, list(batch), [10] * 7, sites)
        errors[strategy.name] = float(np.abs(new - centre).max())
    assert errors["fedavg"] > 1000
    assert errors["fedmedian"] < 0.2 and errors["fedtrimmedavg"] < 0.2 and errors["krum"] < 0.5


def test_server_momentum_speeds_up_a_consistent_descent():
    # Hsu et al. 2019: momentum on the pseudo-gradient accelerates progress along a consistent direction.
    # Clients take one gradient step towards their optimum t_k of ||w - t_k||^2; the federation's optimum is
    # the mean of the t_k.
    targets = np.array([[2.0], [4.0], [6.0]], np.float32)
    sites = ["a", "b", "c"]

    def distance_after(strategy, rounds: int = 10) -> float:
        w = np.zeros(1, np.float32)
        state = strategy.initial_state(w, sites)
        for _ in range(rounds):
            local = [w - 0.1 * 2 * (w - t) for t in targets]
            w, state, _ = _round(strategy, w, state, local, [1, 1, 1], sites)
        return float(abs(w[0] - 4.0))

    assert distance_after(FedAvgM(server_momentum=0.9)) < 0.5 * distance_after(FedAvg())


def test_every_new_strategy_trains_through_the_runner(tmp_path):
    """End to end on a small synthetic federation: strategy state goes through the runner's checkpoints."""
    import yaml

    from medfed.fl.experiment import run_experiment
    from medfed.synth import write_federation

    federation = write_federation("chest_xray", tmp_path / "fed", scale="small", seed=0)
    methods = ["scaffold", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedbn", "fedmedian", "fedtrimmedavg", "cyclic",
               {"strategy": "krum", "num_malicious_clients": 1, "name": "krum"}]
    config = {
        "name": "zoo", "federation": str(federation), "seed": 1,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 4,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": 2, "local_epochs": 1, "eval_every": 2},
        "methods": methods,
    }
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_experiment(path, tmp_path / "out", progress=False)
    assert not result.stopped and set(result.metrics["method"]) == {
        "scaffold", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedbn", "fedmedian", "fedtrimmedavg", "cyclic",
        "krum"}
    fedbn = result.metrics[result.metrics["method"] == "fedbn"]
    assert {"global", "own"} <= set(fedbn["model"])  # each site evaluated with its own normalisation
    assert np.isfinite(result.metrics.loc[result.metrics["metric"] == "auroc", "value"].dropna()).all()


def test_fedbn_keeps_normalisation_local_and_averages_the_rest():
    strategy = FedBN()
    strategy.prepare(model())
    mask = norm_mask(model())
    assert mask.tolist() == [False] * 4 + [True] * 4  # Linear weight/bias shared, GroupNorm weight/bias local
    start = np.zeros(P, np.float32)
    state = strategy.initial_state(start, ["a", "b"])
    a, b = np.arange(P, dtype=np.float32), -np.arange(P, dtype=np.float32) * 3
    new, state, diag = strategy.aggregate(start, iter([ClientUpdate("a", a, 1), ClientUpdate("b", b, 3)]), state)
    np.testing.assert_allclose(new, (a + 3 * b) / 4)  # global: FedAvg of everything
    start_a = strategy.client_weights(new, "a", state)
    np.testing.assert_allclose(start_a[:4], new[:4])  # shared part from the global model
    np.testing.assert_array_equal(start_a[4:], a[4:])  # own normalisation back
    assert diag["local_entries"] == 4 and set(strategy.final_models(new, state)) == {"global", "local:a", "local:b"}
    with pytest.raises(RuntimeError, match="prepare"):
        FedBN().aggregate(start, iter([]), state)


def test_fedbn_adapts_each_site_to_its_own_feature_shift():
    # Li et al. 2021: with feature shift (sites differ in input scale), local normalisation fits each site,
    # a shared one cannot. A GroupNorm-only "model" whose optimum per site is its own scale: local entries
    # converge to each site's value while FedAvg's shared entries settle on the mean.
    net = nn.Sequential(nn.Linear(1, 2), nn.GroupNorm(1, 2))
    targets = {"a": 1.0, "b": 5.0}
    results = {}
    for strategy in (FedAvg(), FedBN()):
        strategy.prepare(net)
        w = np.zeros(P, np.float32)
        state = strategy.initial_state(w, list(targets))
        for _ in range(30):
            local = []
            for site, t in targets.items():
                start = strategy.client_weights(w, site, state)
                local.append(ClientUpdate(site, start + 0.5 * (t - start), 1))  # a step towards the site's optimum
            w, state, _ = strategy.aggregate(w, iter(local), state)
        results[strategy.name] = {s: strategy.client_weights(w, s, state) for s in targets}
    for site, t in targets.items():
        assert np.allclose(results["fedbn"][site][4:], t, atol=1e-3)  # own normalisation reaches its optimum
        assert np.allclose(results["fedavg"][site][4:], 3.0, atol=1e-3)  # shared normalisation: the compromise


def test_cyclic_passes_the_model_from_site_to_site():
    # Chang et al. 2018: site k starts from site k-1's model. A fake runner that, like the real one, trains a
    # site only when the strategy pulls it; each "training" adds 1 to the weights it starts from.
    strategy = Cyclic()
    start = np.zeros(3, np.float32)
    seen = []

    def train_lazily():
        for site in ("a", "b", "c"):
            begin = strategy.client_weights(start, site, {})
            seen.append(float(begin[0]))
            yield ClientUpdate(site, begin + 1, 10)

    new, _, diag = strategy.aggregate(start, train_lazily(), {})
    assert seen == [0.0, 1.0, 2.0] and new[0] == 3.0 and diag["path"] == ["a", "b", "c"]
    fedavg, _, _ = FedAvg().aggregate(start, (ClientUpdate(s, start + 1, 10) for s in "abc"), {})
    assert fedavg[0] == 1.0  # averaging does not chain
    assert strategy.client_weights(new, "a", {}) is new  # between rounds, sites start from the global model


def test_robust_aggregators_give_the_same_result_block_by_block(monkeypatch):
    from scipy.stats import trim_mean

    from medfed.fl.strategies import robust
    from medfed.fl.strategies.fedmedian import coordinate_median
    from medfed.fl.strategies.fedtrimmedavg import trimmed_mean
    from medfed.fl.strategies.krum import krum_scores

    weights = np.random.default_rng(4).normal(size=(7, 50)).astype(np.float32)
    monkeypatch.setattr(robust, "BLOCK", 21)  # 7 clients: 3 columns a block, 50 columns in 17 blocks
    np.testing.assert_allclose(coordinate_median(list(weights)), np.median(weights.astype(np.float64), axis=0),
                               rtol=1e-6)
    np.testing.assert_allclose(trimmed_mean(list(weights), 0.2), trim_mean(weights.astype(np.float64), 0.2, axis=0),
                               rtol=1e-6)
    w = weights.astype(np.float64)
    distances = ((w[:, None, :] - w[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(distances, np.inf)
    expected = np.sort(distances, axis=1)[:, :5].sum(axis=1)  # K - f - 2 = 5 neighbours
    np.testing.assert_allclose(krum_scores(list(weights), 0), expected, rtol=1e-9)


def test_scaffold_removes_client_drift_where_fedavg_keeps_it():
    # Karimireddy et al. 2020: with heterogeneous clients and several local steps FedAvg converges to a biased
    # point; SCAFFOLD's control variates correct the drift and reach the global optimum. Clients minimise
    # a_i / 2 (w - t_i)^2 with a = (1, 10), t = (0, 1): optimum sum(a t) / sum(a) = 10 / 11.
    import torch

    curvature, target = {"a": 1.0, "b": 10.0}, {"a": 0.0, "b": 1.0}
    net = nn.Linear(1, 1, bias=False)

    def run(strategy, rounds: int = 60, steps: int = 10, lr: float = 0.05) -> float:
        strategy.prepare(net)
        w = np.zeros(1, np.float32)
        state = strategy.initial_state(w, ["a", "b"])
        for _ in range(rounds):
            updates = []
            for site in ("a", "b"):
                with torch.no_grad():
                    net.weight.fill_(float(w[0]))
                hooks = strategy.client_hooks(net, site, state)
                for _ in range(steps):
                    net.zero_grad()
                    loss = 0.5 * curvature[site] * (net.weight - target[site]).pow(2).sum()
                    loss.backward()
                    for hook in hooks:
                        hook.after_backward(net)
                    with torch.no_grad():
                        net.weight -= lr * net.weight.grad
                updates.append(ClientUpdate(site, net.weight.detach().numpy().ravel().copy(), 1,
                                            {"steps": steps, "lr": lr}))
            w, state, _ = strategy.aggregate(w, iter(updates), state)
        return float(w[0])

    optimum = 10 / 11
    assert abs(run(Scaffold()) - optimum) < 0.01
    assert abs(run(FedAvg()) - optimum) > 0.1


def test_scaffold_control_variates_by_hand():
    # one site, x = 0, y = 1 after K = 2 steps of lr 0.5: c_i = 0 - 0 + (0 - 1) / (2 * 0.5) = -1;
    # two sites in the federation: c = 0 + (1/2)(-1 - 0) = -0.5; x = y = 1
    strategy = Scaffold()
    strategy.prepare(nn.Linear(1, 1, bias=False))
    state = strategy.initial_state(one(0), ["a", "b"])
    new, state, _ = strategy.aggregate(one(0), iter([ClientUpdate("a", one(1), 3, {"steps": 2, "lr": 0.5})]), state)
    assert new[0] == 1.0 and state["c_sites"]["a"][0] == -1.0 and state["c"][0] == -0.5
    with pytest.raises(ValueError, match="local steps and learning rate of site a"):
        strategy.aggregate(one(0), iter([ClientUpdate("a", one(1), 3)]), state)
