"""FedAgain (Reyes-Amezcua et al. 2025/2026): trust and gain on hand-computed cases, the server benchmark
signal, the adversaries (the expert forger as specified), simulated site conditions, and the papers' claim
on the seeded forger scenario of tasks/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from medfed.cli import main
from medfed.errors import ConfigError
from medfed.fl.adversaries import (
    AttackContext,
    ExpertForger,
    RandomUpdate,
    ScaledUpdate,
    cosine_divergence,
    match_divergence,
)
from medfed.fl.strategies import FedAgain, build_strategy
from medfed.fl.strategies.fedagain import gains, trust_scores
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import get_weights, layout_of
from medfed.sites import load_federation
from medfed.sites.conditioned import ConditionedSite, CorruptionConfig, flip_labels
from medfed.synth.ureteroscopy import write_ureteroscopy
from medfed.tasks import AnomalyConfig, build_task

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def _update(site: str, values, n: int = 1, **diagnostics) -> ClientUpdate:
    return ClientUpdate(site, np.asarray(values, np.float32), n, diagnostics)


# ----------------------------------------------------------------- formulas by hand
def test_trust_and_gain_by_hand():
    trust = trust_scores(np.array([0.1, 0.2, 0.1]), np.array([0.01, 0.01, 0.02]), epsilon=0.0)
    np.testing.assert_allclose(trust, [1000.0, 500.0, 500.0])  # 1 / (e d)
    np.testing.assert_allclose(gains(trust), [0.5, 0.25, 0.25])
    with_eps = trust_scores(np.array([0.0]), np.array([0.0]))  # identical model, perfect error: 1 / eps^2
    np.testing.assert_allclose(with_eps, [1e12])
    assert trust_scores(np.array([np.nan, 0.1]), np.array([0.1, np.inf])).tolist() == [0.0, 0.0]
    assert gains(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_aggregate_by_hand_with_client_reported_reliability():
    # global (1, 1); divergences: a and b point the same way as the global model (d = 0), c is orthogonal-ish
    strategy = FedAgain(reliability="client", epsilon=1e-6)
    g = np.array([1.0, 1.0], np.float32)
    updates = [_update("a", [2, 2], start_loss=0.1), _update("b", [3, 3], start_loss=0.3),
               _update("c", [1, -1], start_loss=0.1)]
    new, _, info = strategy.aggregate(g, iter(updates), {})
    e = np.array([0.1, 0.3, 0.1])
    d = np.array([0.0, 0.0, 1.0])  # 1 - cos((1,1),(1,-1)) = 1
    tau = 1 / ((e + 1e-6) * (d + 1e-6))
    gamma = tau / tau.sum()
    np.testing.assert_allclose(new, gamma @ np.array([[2, 2], [3, 3], [1, -1]]), rtol=1e-6)
    np.testing.assert_allclose(list(info["gain"].values()), gamma, rtol=1e-9)
    assert info["divergence"]["c"] == pytest.approx(1.0)
    assert info["gain"]["c"] < 1e-5 < info["gain"]["b"] < info["gain"]["a"]  # error 3x -> gain 1/3 of a's


def test_a_far_update_gets_a_lower_gain_than_honest_sites():
    rng = np.random.default_rng(0)
    g = rng.normal(size=200).astype(np.float32)
    honest = [g + 0.01 * rng.normal(size=200).astype(np.float32) for _ in range(4)]
    far = g + 0.5 * rng.normal(size=200).astype(np.float32)
    updates = [_update(f"h{i}", w, start_loss=0.05) for i, w in enumerate(honest)] + [_update("far", far, start_loss=0.05)]
    _, _, info = FedAgain(reliability="client").aggregate(g, iter(updates), {})
    assert info["gain"]["far"] < min(v for k, v in info["gain"].items() if k != "far")


class _RegressionTask:
    """Test input for the server signal: mean squared error of a linear model on fixed data."""

    def __init__(self) -> None:
        self.x = torch.tensor([[1.0], [2.0], [3.0]])

    def mean_loss(self, model: nn.Module, dataset) -> float:
        with torch.no_grad():
            return float(((model(self.x) - 2 * self.x) ** 2).mean())


def test_server_reliability_is_each_model_loss_on_the_server_benchmark():
    model = nn.Linear(1, 1)
    strategy = FedAgain()  # reliability "server"
    strategy.prepare(model)
    strategy.attach_server_data(_RegressionTask(), nn.Linear(1, 1), benchmark=[0])  # type: ignore[arg-type]
    g = np.array([1.0, 0.0], np.float32)  # weight 1, bias 0 -> y = x; the target is 2x
    exact, off = np.array([2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)
    _, _, info = strategy.aggregate(g, iter([_update("exact", exact), _update("off", off)]), {})
    assert info["reliability_error"]["exact"] == pytest.approx(0.0, abs=1e-12)
    assert info["reliability_error"]["off"] == pytest.approx(1.0)  # bias 1: every error is 1
    assert info["gain"]["exact"] > 0.99
    with pytest.raises(ValueError, match="server_benchmark"):
        FedAgain().aggregate(g, iter([_update("a", exact)]), {})


def test_integer_buffers_are_kept_from_the_global_model():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    strategy = FedAgain(reliability="client")
    strategy.prepare(model)
    g = get_weights(model)
    mask = layout_of(model).is_float()
    client = g + 1.0  # every entry moves, the batch counter too
    new, _, _ = strategy.aggregate(g, iter([_update("a", client, start_loss=0.1)]), {})
    np.testing.assert_allclose(new[mask], client[mask])
    np.testing.assert_array_equal(new[~mask], g[~mask])


def test_no_trusted_client_keeps_the_global_model():
    g = np.ones(3, np.float32)
    new, _, info = FedAgain(reliability="client").aggregate(g, iter([_update("a", [5, 5, 5], start_loss=np.nan)]), {})
    np.testing.assert_array_equal(new, g)
    assert "kept_global" in info


def test_fedagain_parameters_are_validated():
    with pytest.raises(ConfigError, match="reliability"):
        build_strategy("fedagain", {"reliability": "oracle"})
    with pytest.raises(ConfigError, match="epsilon"):
        build_strategy("fedagain", {"epsilon": 0})


# ----------------------------------------------------------------- adversaries
def test_match_divergence_by_hand():
    g, d = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    # 1 - cos(g, g + s d) = 1 - 1 / sqrt(1 + s^2): the target 1 - 1/sqrt(2) needs s = 1
    assert match_divergence(g, d, 1 - 1 / np.sqrt(2)) == pytest.approx(1.0, rel=1e-9)
    assert cosine_divergence(g, g + d) == pytest.approx(1 - 1 / np.sqrt(2))


def _context(task, model, data, g, h, **kw) -> AttackContext:
    return AttackContext(task, model, data, g, h, np.ones(g.shape, bool), {"epochs": 2}, 0, **kw)


def test_scaled_and_noise_updates_by_formula():
    g, h = np.zeros(4, np.float32), np.array([1, 2, 3, 4], np.float32)
    np.testing.assert_allclose(ScaledUpdate(10).forge(_context(None, None, None, g, h)), 10 * h)
    noisy = RandomUpdate(0.5).forge(_context(None, None, None, g, h))
    assert noisy.shape == g.shape and not np.allclose(noisy, h)
    np.testing.assert_array_equal(noisy, RandomUpdate(0.5).forge(_context(None, None, None, g, h)))  # seeded


def test_expert_forger_has_an_honest_divergence_and_a_harmful_direction():
    task = build_task(AnomalyConfig(target="corruption", batch_size=4, optimizer={"lr": 0.01},
                                    model={"name": "conv_autoencoder", "channels": [4, 8], "image_size": 16}))
    generator = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(3, 16, 16, generator=generator) * 0.5 + 0.25, "case_id": str(i)} for i in range(8)]
    model = task.build_model(0)
    g = get_weights(model)
    task.local_train(model, data, epochs=2, seed=1)
    h = get_weights(model)
    mask = layout_of(model).is_float()
    context = AttackContext(task, model, data, g, h, mask, {"epochs": 2}, seed=2)
    forged = ExpertForger().forge(context)
    assert cosine_divergence(g[mask], forged[mask]) == pytest.approx(cosine_divergence(g[mask], h[mask]), rel=1e-6)
    np.testing.assert_array_equal(forged[~mask], h[~mask])  # integer buffers untouched

    def loss(weights):
        from medfed.fl.weights import set_weights

        set_weights(model, weights)
        return task.mean_loss(model, data)

    assert loss(forged) > loss(g) > loss(h)  # honest training helps; the forged update hurts


# ----------------------------------------------------------------- site conditions
@pytest.fixture(scope="module")
def stones(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fedagain_stones")
    write_ureteroscopy(out, scale="small", seed=0)
    return out / "sites" / "ureteroscopy.yaml"


def test_corrupted_site_changes_only_the_configured_split_and_is_deterministic(stones):
    site = load_federation(stones)[0]
    spec = CorruptionConfig(type="gaussian_noise", severity=3)
    conditioned = ConditionedSite(site, corruption=spec, seed=0)
    assert conditioned.cases.equals(site.cases)
    train, clean = conditioned.dataset("train")[0], site.dataset("train")[0]
    assert train["case_id"] == clean["case_id"] and "corrupted" not in train
    assert not torch.allclose(train["image"], clean["image"])
    torch.testing.assert_close(train["image"], conditioned.dataset("train")[0]["image"])
    torch.testing.assert_close(conditioned.dataset("test")[0]["image"], site.dataset("test")[0]["image"])


def test_label_flip_poisons_training_labels_only():
    table = pd.DataFrame({"finding": [0, 1, -1, 1], "stone": ["a", "b", "c", "a"],
                          "split": ["train", "train", "train", "test"]})
    flipped = flip_labels(table, ["finding", "stone"], (table["split"] == "train").to_numpy())
    assert flipped["finding"].tolist() == [1, 0, -1, 1]  # uncertain kept, test row kept
    assert flipped["stone"].tolist() == ["b", "c", "a", "a"]  # the next class in sorted order


# ----------------------------------------------------------------- the paper's claim, seeded
@pytest.mark.slow(seconds=80)
def test_fedagain_suppresses_the_expert_forger(tmp_path_factory):
    """tasks/fedagain_ureteroscopy_forger.yaml as configured (FedAvg and FedAgain only), seed 0: the server's
    benchmark finds the forger (its reliability error is the highest of all sites), FedAgain gives it the lowest
    mean gain of all sites (the paper's claim; it holds at seeds 0, 1 and 2 on the demo of synth format 3, see the
    README) and well under the weight FedAvg gives its inflated example count, and FedAgain's pooled AUROC beats
    FedAvg's (by 0.10 at seed 0 with one thread)."""
    config = yaml.safe_load((TASKS / "fedagain_ureteroscopy_forger.yaml").read_text())
    config["methods"] = ["fedavg", "fedagain"]
    path = tmp_path_factory.mktemp("forger") / "forger.yaml"
    path.write_text(yaml.safe_dump(config))
    data = tmp_path_factory.getbasetemp() / "fedagain_demo_data"
    out = tmp_path_factory.mktemp("forger_reports")
    assert main(["run", str(path), "--data", str(data), "--out", str(out), "--no-progress", "--resamples", "200"]) == 0
    run = out / config["name"]
    metrics = pd.read_csv(run / "metrics.csv")
    pooled = metrics[(metrics["site"] == "pooled") & (metrics["split"] == "test") & (metrics["metric"] == "auroc")]
    auroc = pooled.set_index("method")["value"]
    assert auroc["fedagain"] > auroc["fedavg"] + 0.05
    rounds = [json.loads(line) for line in (run / "runs" / "fedagain" / "rounds.jsonl").read_text().splitlines()]
    aggregation = {key: pd.DataFrame([r["aggregation"][key] for r in rounds]).mean() for key in ("gain", "reliability_error")}
    forger = next(site for site, c in config["site_conditions"].items() if c["adversary"]["kind"] == "forger")
    assert aggregation["reliability_error"].idxmax() == forger
    assert aggregation["gain"].idxmin() == forger
    # the log shows counts as sites.csv does: a suppressed one ("<k") enters by its upper bound k - 1, which
    # makes this FedAvg share of the forger a lower bound, and the assertion below stricter
    counts = rounds[0]["num_examples"]
    assert not any(str(n).startswith(">=") for n in counts.values()), counts  # only lower bounds known: no check
    examples = {site: int(n) if not isinstance(n, str) else int(n.lstrip("<")) - 1 for site, n in counts.items()}
    fedavg_share = examples[forger] / sum(examples.values())
    assert aggregation["gain"][forger] < fedavg_share / 2
    per_site = pd.read_csv(run / "per_site.csv")
    shown = per_site[(per_site["metric"].isin(["precision", "f1"])) & per_site["ci_low"].notna()]
    assert "pooled" in set(shown["site"]) and len(set(shown["site"])) > 1
    assert "Aggregation gains per site" in (run / "report.html").read_text()


# ----------------------------------------------------------------- experiment wiring
def _experiment(tmp_path: Path, stones: Path, **extra) -> Path:
    config = {
        "name": "wiring", "federation": str(stones), "seed": 0,
        "task": {"kind": "anomaly", "target": "corruption", "test_corruption": {"types": "gaussian_noise"},
                 "model": {"name": "conv_autoencoder", "channels": [4, 8], "image_size": 32}, "batch_size": 8},
        "training": {"rounds": 1, "local_steps": 1}, "methods": ["fedavg", "fedagain"], **extra,
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fedagain_without_a_server_benchmark_is_refused_before_any_output(tmp_path, stones):
    from medfed.fl.experiment import run_experiment

    with pytest.raises(ConfigError, match="server_benchmark"):
        run_experiment(_experiment(tmp_path, stones), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="unknown site"):
        run_experiment(_experiment(tmp_path, stones, server_benchmark={"cases": 4},
                                   site_conditions={"nowhere": {"adversary": {"kind": "noise"}}}),
                       tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="label_flip has no effect"):
        run_experiment(_experiment(tmp_path, stones, server_benchmark={"cases": 4},
                                   site_conditions={"dataset-a": {"adversary": {"kind": "label_flip"}}}),
                       tmp_path / "out", progress=False)


def test_server_benchmark_cases_leave_their_sites_and_conditions_are_reported(tmp_path, stones, monkeypatch):
    from medfed.fl.experiment import run_experiment

    config = _experiment(tmp_path, stones, server_benchmark={"cases": 5},
                         site_conditions={"dataset-b": {"corruption": {"type": "fog", "severity": 4},
                                                        "adversary": {"kind": "scaled", "factor": 3}}})
    from medfed.fl.ledger import RunDirectory

    kept: dict[str, int] = {}  # cases left at each site (sites.json may hide small totals: disclosure control)
    write_sites = RunDirectory.write_sites

    def recording(self, federation, *args, **kwargs):
        kept.update({site.name: len(site) for site in federation})
        return write_sites(self, federation, *args, **kwargs)

    monkeypatch.setattr(RunDirectory, "write_sites", recording)
    result = run_experiment(config, tmp_path / "out", progress=False)
    sites = json.loads((result.out / "sites.json").read_text())
    original = {s.name: len(s) for s in load_federation(stones)}
    assert sum(original.values()) - sum(kept.values()) == 5
    assert [s["site"] for s in sites] == list(original)
    assert sites[1]["conditions"] == "corruption fog severity 4 on 100% of train; adversary scaled (factor 3.0)"
    log = [json.loads(line) for line in (result.out / "runs" / "fedagain" / "rounds.jsonl").read_text().splitlines()]
    assert log[0]["adversarial"] == {"dataset-b": "scaled"}
    assert set(log[0]["aggregation"]["gain"]) == {"dataset-a", "dataset-b"}
    assert sum(log[0]["aggregation"]["gain"].values()) == pytest.approx(1.0, abs=1e-5)


def test_sweep_runs_one_experiment_per_value_and_stacks_pooled_cis(tmp_path, stones):
    config = yaml.safe_load(_experiment(tmp_path, stones).read_text())
    config.update(server_benchmark={"cases": 4}, site_conditions={"dataset-b": {"corruption": {"type": "fog"}}},
                  sweep={"parameter": "corruption", "values": ["fog", "shot_noise"],
                         "set": ["site_conditions.dataset-b.corruption.type", "task.test_corruption.types"]})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--resamples", "100"]) == 0
    table = pd.read_csv(out / "wiring" / "sweep.csv")
    assert table["corruption"].unique().tolist() == ["fog", "shot_noise"]
    assert {"pooled", "dataset-a", "dataset-b"} <= set(table["site"])
    shot = yaml.safe_load((out / "wiring" / "configs" / "shot_noise.yaml").read_text())
    assert shot["site_conditions"]["dataset-b"]["corruption"]["type"] == "shot_noise"
    assert shot["task"]["test_corruption"]["types"] == "shot_noise"
    assert "| corruption |" in (out / "wiring" / "sweep.md").read_text()
