"""Multi-seed runs (medfed.fl.multiseed), their across-seed report (medfed.report.seeds) and the step-matched FedAvg
baseline (``server_learning_rate: match:<method>``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from statsmodels.stats.multitest import multipletests

from browser import chromium, load_in_browser
from medfed.cli import build_parser
from medfed.errors import ConfigError
from medfed.fl.config import load_experiment, run_order
from medfed.fl.experiment import run_experiment
from medfed.fl.names import POOLED
from medfed.fl.step import FedAvgShadow, mean_step_ratio
from medfed.fl.strategies import build_strategy
from medfed.fl.update import ClientUpdate
from medfed.report import ReportOptions, write_report
from medfed.report.analysis import analyse
from medfed.report.run_data import RunData
from medfed.report.seeds import across_seeds
from medfed.synth import write_federation

TINY_TASK = {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 4,
             "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}}


def _config(tmp_path, **extra) -> dict:
    base = {"name": "seeds", "federation": "fed.yaml", "task": TINY_TASK,
            "training": {"rounds": 2, "local_epochs": 1, "eval_every": 0}, "methods": ["fedavg"]}
    return {**base, **extra}


def _write(tmp_path, config: dict):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("seeds, message", [([], "seeds is empty"), ([0, 1, 0], "seeds repeats 0")])
def test_empty_or_repeated_seeds_are_a_clear_error(tmp_path, seeds, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write(tmp_path, _config(tmp_path, seeds=seeds)))


@pytest.mark.parametrize("text", ["0,1,1", "", "a,b"])
def test_cli_seeds_must_be_distinct_integers(text, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--seeds", text])
    assert "--seeds" in capsys.readouterr().err
    assert build_parser().parse_args(["run", "--seeds", "2,0,1"]).seeds == [2, 0, 1]


def test_match_must_name_another_method_of_the_experiment(tmp_path):
    matched = {"strategy": "fedavgm", "name": "fedavg_matched", "server_learning_rate": "match:fedld"}
    with pytest.raises(ConfigError, match="no other method named 'fedld'.*methods: fedavg"):
        load_experiment(_write(tmp_path, _config(tmp_path, methods=["fedavg", matched])))
    selfish = {**matched, "server_learning_rate": "match:fedavg_matched"}
    with pytest.raises(ConfigError, match="no other method named 'fedavg_matched'"):
        load_experiment(_write(tmp_path, _config(tmp_path, methods=["fedavg", selfish])))
    chained = {"strategy": "fedavgm", "name": "twice", "server_learning_rate": "match:fedavg_matched"}
    with pytest.raises(ConfigError, match="itself step-matched"):
        load_experiment(_write(tmp_path, _config(tmp_path, methods=["fedld", matched, chained])))
    config = load_experiment(_write(tmp_path, _config(tmp_path, methods=[matched, "fedld"])))
    assert run_order(config) == ["fedld", "fedavg_matched"]  # the matched method trains after its target


def test_multi_seed_and_match_are_refused_by_the_flower_engine(tmp_path):
    pytest.importorskip("flwr")
    from medfed.integrations.flower.engine import flower_refusals

    matched = {"strategy": "fedavgm", "name": "fedavg_matched", "server_learning_rate": "match:fedld"}
    config = load_experiment(_write(tmp_path, _config(tmp_path, seeds=[0, 1], methods=["fedld", matched])))
    refusals = "\n".join(flower_refusals(config, "x.yaml"))
    assert "seeds: multi-seed runs use the in-process engine" in refusals
    assert "fedavg_matched: server_learning_rate match:fedld is measured in-process only" in refusals


# ---------------------------------------------------------------------------------------------- step matching
def test_step_matched_fedavg_moves_exactly_r_times_fedavgs_step():
    rng = np.random.default_rng(1)
    g = rng.normal(size=20).astype(np.float32)
    rows, counts = rng.normal(size=(4, 20)).astype(np.float32), [5, 2, 7, 1]
    updates = [ClientUpdate(f"s{i}", g + r, n) for i, (r, n) in enumerate(zip(rows, counts, strict=True))]
    fedavg, _, _ = build_strategy("fedavg").aggregate(g, iter(updates), {})
    r = 0.37
    matched = build_strategy("fedavgm", {"server_learning_rate": r, "server_momentum": 0.0})
    shadow = FedAvgShadow(iter(updates))
    new, _, _ = matched.aggregate(g, shadow, matched.initial_state(g, ["s0", "s1", "s2", "s3"]))
    np.testing.assert_allclose(new - g, r * (fedavg - g), rtol=1e-5, atol=1e-6)
    step = shadow.diagnostic(g, new)
    assert step["step_ratio"] == pytest.approx(r, rel=1e-5) and step["step_cosine"] == pytest.approx(1.0, abs=1e-6)


def test_mean_step_ratio_skips_rounds_without_one():
    assert mean_step_ratio([{"step_ratio": 0.2}, {"step_ratio": None}, {}, {"step_ratio": 0.4}]) == pytest.approx(0.3)
    assert mean_step_ratio([{"round": 1}]) is None


# ---------------------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiseed")
    federation = write_federation("chest_xray", root / "fed", scale="small", seed=0)
    matched = {"strategy": "fedavgm", "name": "fedavg_matched", "server_learning_rate": "match:fedld",
               "server_momentum": 0.0}
    config = {**_config(root, methods=["fedavg", "fedld", matched]), "federation": str(federation)}
    path = _write(root, config)
    result = run_experiment(path, root / "out", progress=False, seeds=[0, 1])
    return root, path, result


def test_two_seed_run_writes_per_seed_runs_and_a_seed_column(two_seed_run):
    root, _, result = two_seed_run
    out = result.out
    assert json.loads((out / "seeds.json").read_text())["seeds"] == [0, 1]
    assert yaml.safe_load((out / "config.yaml").read_text())["seeds"] == [0, 1]
    for seed in (0, 1):
        single = yaml.safe_load((out / f"seed-{seed}" / "config.yaml").read_text())
        assert single["seed"] == seed and single["seeds"] is None
        assert (out / f"seed-{seed}" / "predictions" / "fedld.csv").is_file()
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.columns[0] == "seed" and sorted(metrics["seed"].unique()) == [0, 1]
    for seed in (0, 1):  # the combined table is each seed's metrics.csv with its seed
        single = pd.read_csv(out / f"seed-{seed}" / "metrics.csv")
        pd.testing.assert_frame_equal(metrics[metrics["seed"] == seed].drop(columns="seed").reset_index(drop=True),
                                      single)
    # a new seed is a new initialisation and sampling: the pooled scores of the two seeds differ
    scores = {s: pd.read_csv(out / f"seed-{s}" / "predictions" / "fedavg.csv")["score"].to_numpy() for s in (0, 1)}
    assert not np.allclose(scores[0], scores[1])
    assert list(result.summary.columns) == ["fedavg", "fedld", "fedavg_matched"]


def test_step_matched_method_takes_the_mean_step_ratio_of_its_target(two_seed_run):
    _, _, result = two_seed_run
    for seed in (0, 1):
        runs = result.out / f"seed-{seed}" / "runs"
        fedld = [json.loads(line) for line in (runs / "fedld" / "rounds.jsonl").read_text().splitlines()]
        matched = json.loads((runs / "fedavg_matched" / "matched_step.json").read_text())
        rate = np.mean([r["step_ratio"] for r in fedld])
        assert matched["matched"] == "fedld" and matched["server_learning_rate"] == pytest.approx(rate)
        assert 0 < rate < 1  # FedLD's step is shorter than FedAvg's
        log = [json.loads(line) for line in (runs / "fedavg_matched" / "rounds.jsonl").read_text().splitlines()]
        # FedAvgM without momentum at rate r moves r times FedAvg's step, every round (6 decimals in the log)
        assert [r["step_ratio"] for r in log] == pytest.approx([rate] * len(log), abs=2e-6)


def test_two_seed_report_has_per_seed_rows_and_the_across_seed_summary(two_seed_run):
    root, _, result = two_seed_run
    report = write_report([result.out], options=ReportOptions(n_resamples=200))
    assert report.seeds == [0, 1]
    comparisons = pd.read_csv(result.out / "comparisons.csv")
    assert comparisons.columns[0] == "seed" and sorted(comparisons["seed"].unique()) == [0, 1]
    across = pd.read_csv(result.out / "across_seeds.csv")
    pairs = comparisons[comparisons["seed"] == 0][["site", "metric", "method", "baseline"]]
    assert len(across) == len(pairs) and set(across["n_seeds"]) == {2}
    for seed in (0, 1):
        assert (result.out / f"seed-{seed}" / "report.html").is_file()
    html = (result.out / "report.html").read_text()
    assert "across seeds" in html and 'href="seed-1/report.html"' in html
    # the small federation's sites are below their minimum count: suppressed per seed, and so across seeds
    assert across["note"].str.contains("suppressed").all()


# ---------------------------------------------------------------------------------------------- the statistics
def _run(seed: int, effect: float, ids_offset: int = 0) -> RunData:
    """Two sites of 40 test cases; ``better`` separates the classes by ``effect`` more than ``base``."""
    rng = np.random.default_rng(seed)
    records = {"base": [], "better": []}
    sites = []
    for s, site in enumerate(("a", "b")):
        targets = np.tile([0.0, 1.0], 20)
        noise = rng.normal(size=(2, 40))
        ids = [f"{site}{i + ids_offset}" for i in range(40)]
        for method, gain in (("base", 0.6), ("better", 0.6 + effect)):
            own_noise = noise[int(method == "better" and effect != 0)]  # no effect: the very same scores
            score = 1 / (1 + np.exp(-(gain * (2 * targets - 1) + own_noise)))
            records[method].append(pd.DataFrame({
                "case_id": ids, "label": "Pneumonia", "score": score, "target": targets,
                "prediction": (score >= 0.5).astype(int), "site": site, "split": "test", "threshold": 0.5,
                "model": "global"}))
        sites.append({"site": site, "min_count": 5, "splits": {"test": 40}})
    frames = {m: pd.concat(parts, ignore_index=True) for m, parts in records.items()}
    return RunData("toy", [], "classification", ["base", "better"], frames, {"base": [], "better": []}, sites)


def test_across_seed_difference_is_the_mean_of_the_seeds_with_agreeing_ci_and_holm():
    options = ReportOptions(n_resamples=400, baselines=("base",))
    analyses = {seed: analyse(_run(seed, effect=1.0), options) for seed in (0, 1, 2)}
    table = across_seeds(analyses)
    for row in table[table["metric"] == "auroc"].itertuples():
        per_seed = [float(a.comparisons.set_index(["site", "metric"]).loc[(row.site, "auroc"), "difference"])
                    for a in analyses.values()]
        assert row.difference == pytest.approx(np.mean(per_seed))
        assert row.seed_sd == pytest.approx(np.std(per_seed, ddof=1))
        assert row.seeds_above_zero == sum(d > 0 for d in per_seed)
        assert row.case_sets == "same"
        excludes_zero = row.ci_low > 0 or row.ci_high < 0
        assert excludes_zero == (row.p_value < 0.05)  # interval and P agree
    sites = table[(table["site"] != POOLED) & (table["metric"] == "auroc")]
    assert (sites["p_value"] < 0.05).all()  # a large effect, 3 seeds, 40 cases per site
    expected = multipletests(sites["p_value"].to_numpy(), method="holm")[1]
    np.testing.assert_allclose(sites["p_adjusted"].to_numpy(), expected)
    for row in sites.itertuples():  # the corrected interval agrees with the corrected P
        assert (row.ci_low_adjusted > 0 or row.ci_high_adjusted < 0) == (row.p_adjusted < 0.05)


def test_no_effect_gives_no_difference_and_different_cases_are_resampled_independently():
    options = ReportOptions(n_resamples=400, baselines=("base",))
    null = across_seeds({seed: analyse(_run(seed, effect=0.0), options) for seed in (0, 1)})
    auroc = null[null["metric"] == "auroc"]
    assert (auroc["difference"] == 0).all() and (auroc["p_value"] == 1).all()
    assert (auroc["ci_low"] == 0).all() and (auroc["ci_high"] == 0).all() and (auroc["seeds_above_zero"] == 0).all()
    shifted = across_seeds({0: analyse(_run(0, 1.0), options), 1: analyse(_run(1, 1.0, ids_offset=100), options)})
    assert set(shifted["case_sets"].dropna()) == {"differ by seed"}


def test_across_seed_page_renders_in_headless_chromium(two_seed_run, tmp_path):
    _, _, result = two_seed_run
    report = write_report([result.out], options=ReportOptions(n_resamples=200))
    dom, problems = load_in_browser(chromium(), report.html, tmp_path / "seeds.png")
    assert problems == []
    assert "Federated learning report across seeds" in dom and "seed-averaged" in dom
    assert (tmp_path / "seeds.png").stat().st_size > 0


def test_a_multi_seed_run_killed_between_seeds_resumes_to_the_same_numbers(two_seed_run, tmp_path):
    import shutil

    root, path, result = two_seed_run
    out = tmp_path / "out"
    shutil.copytree(result.out, out / result.out.name)
    shutil.rmtree(out / result.out.name / "seed-1")  # killed before the second seed started
    (out / result.out.name / "metrics.csv").unlink()
    resumed = run_experiment(path, out, progress=False, seeds=[0, 1], resume=True)
    pd.testing.assert_frame_equal(pd.read_csv(resumed.out / "metrics.csv"), pd.read_csv(result.out / "metrics.csv"))
    with pytest.raises(ConfigError, match="config changed"):  # other seeds are another experiment
        run_experiment(path, out, progress=False, seeds=[0, 2], resume=True)


def test_seed_summary_averages_the_unrounded_values_and_keeps_suppression():
    from medfed.fl.summary import seed_summary_table

    rows = [{"seed": s, "method": "fedavg", "model": "global", "site": site, "split": "test", "metric": "auroc",
             "value": v, "n_cases": n, "suppressed": hidden}
            for s, (a, b) in enumerate([(0.8004, 0.5), (0.8005, 0.6)])
            for site, v, n, hidden in (("a", a, 40, False), ("b", b, 40 if s == 0 else "<5", s == 1))]
    table = seed_summary_table(pd.DataFrame(rows), "auroc")
    assert table.loc["a", "fedavg"] == "0.800 ± 0.000"  # mean 0.80045 of the unrounded values
    assert table.loc["b", "fedavg"] == "n<5"  # suppressed in one seed: suppressed in the summary
