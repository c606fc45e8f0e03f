"""medfed.report on run directories written here (synthetic per-case records) and by the real runner."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from browser import chromium, load_in_browser

from medfed.cli import main
from medfed.errors import MedfedError
from medfed.metrics.segmentation import REGIONS
from medfed.report import ReportOptions, analyse, load_run, write_report
from medfed.report.cases import site_cases
from medfed.report.meta_table import meta_analysis_table
from medfed.report.metrics import PRIMARY
from medfed.seeding import rng_for
from medfed.stats import point_estimate
from medfed.tasks import TASKS, build_task
from medfed.tasks.anomaly import AnomalyConfig
from medfed.tasks.classification import ClassificationConfig
from medfed.tasks.segmentation import SegmentationConfig

REPO = Path(__file__).resolve().parents[1]
SITES = {"big": 80, "mid": 30, "small": 8, "tiny": 3}  # test cases per site; min_count 5, CIs from 10


# ----------------------------------------------------------------- synthetic run directories
def _classification_records(rng, site: str, n: int, split: str, method: str) -> pd.DataFrame:
    target = (np.arange(n) % 3 == 0).astype(int)  # every site has both classes
    skill = {"strong": 3.0, "weak": 0.3}.get(method, 1.0)
    noise = rng_for(0, site, split, method).normal(size=n)
    score = 1 / (1 + np.exp(-(skill * (2 * target - 1) + noise)))
    return pd.DataFrame({"case_id": [f"{site}-{split}-{i:03d}" for i in range(n)], "label": "Pneumonia",
                         "score": score, "target": target.astype(float), "prediction": (score >= 0.5).astype(int)})


def _segmentation_records(rng, site: str, n: int, split: str, method: str) -> pd.DataFrame:
    local = rng_for(0, site, split, method)
    base = {"strong": 0.85, "weak": 0.6}.get(method, 0.7)
    rows = []
    for i in range(n):
        for region in REGIONS:
            dice = float(np.clip(base + 0.08 * local.normal(), 0, 1))
            hd95 = float("nan") if (i == 0 and region == "ET") else float(30 * (1 - dice) + local.random())
            rows.append({"case_id": f"{site}-{split}-{i:03d}", "region": region, "dice": dice, "hd95": hd95,
                         "pred_voxels": 10, "target_voxels": 12})
    return pd.DataFrame(rows)


def make_run(root: Path, kind: str = "classification", methods=("weak", "fedavg", "strong"), sites=SITES,
             name: str = "synthetic") -> Path:
    """A run directory as `medfed run` writes it, from synthetic per-case records (no training)."""
    out = root / name
    (out / "predictions").mkdir(parents=True)
    rng = np.random.default_rng(0)
    make = _classification_records if kind == "classification" else _segmentation_records
    config = {"name": name, "task": {"kind": kind}, "methods": [{"strategy": m, "name": None} for m in methods]}
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    summaries = [{"site": s, "modality": "x", "cases": n * 2 if n * 2 >= 5 else "<5",
                  "splits": {"train": 0, "val": n if n >= 5 else "<5", "test": n if n >= 5 else "<5"},
                  "labels": {}, "metadata": {"scanner": {"A": n * 2}}, "min_count": 5} for s, n in sites.items()]
    (out / "sites.json").write_text(json.dumps(summaries))
    for method in methods:
        frames = [make(rng, s, n, split, method).assign(site=s, split=split, threshold=0.5, model="global")
                  for s, n in sites.items() for split in ("val", "test")]
        pd.concat(frames).to_csv(out / "predictions" / f"{method}.csv", index=False)
        run = out / "runs" / method
        run.mkdir(parents=True)
        metric = PRIMARY[kind]
        lines = [json.dumps({"round": r, "eval": {s: {"val": {metric: 0.5 + 0.1 * r}} for s in sites}}) for r in (1, 2, 3)]
        (run / "rounds.jsonl").write_text("\n".join(lines) + "\n")
    pooled = [{"method": m, "model": "global", "site": "pooled", "split": "test", "metric": PRIMARY[kind], "value": 0.9,
               "n_cases": sum(sites.values()), "suppressed": False} for m in methods]
    pd.DataFrame(pooled).to_csv(out / "metrics.csv", index=False)
    return out


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("cls"))


@pytest.fixture(scope="module")
def segmentation_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("seg"), kind="segmentation")


# ----------------------------------------------------------------- the numbers
def test_point_estimates_equal_the_task_metrics_for_every_task_kind():
    rng = np.random.default_rng(0)
    tasks = {
        "classification": build_task(ClassificationConfig(labels=["A", "B"])),
        "anomaly": build_task(AnomalyConfig(normal_classes=["n"])),
        "segmentation": build_task(SegmentationConfig()),
    }
    for kind, task in tasks.items():
        assert PRIMARY[kind] == TASKS[kind].primary_metric if hasattr(TASKS[kind], "primary_metric") else True
        if kind == "classification":
            a, b = _classification_records(rng, "s", 40, "test", "fedavg"), _classification_records(rng, "s", 40, "test", "weak")
            records = pd.concat([a, b.assign(label="B", target=np.where(np.arange(40) % 7 == 0, -1.0, b["target"]))])
        elif kind == "anomaly":
            records = _classification_records(rng, "s", 40, "test", "fedavg").drop(columns="label")
        else:
            records = _segmentation_records(rng, "s", 12, "test", "fedavg")
        expected = task.metrics(records)
        cases = site_cases(kind, "s", {"m": records})
        for metric, value in expected.items():
            got = point_estimate(cases.statistics[("m", metric)])
            assert got == pytest.approx(value, nan_ok=True, abs=1e-12), (kind, metric)


def test_per_site_rows_suppress_small_sites_and_withhold_meaningless_cis(classification_run):
    analysis = analyse(load_run(classification_run))
    rows = analysis.per_site[analysis.per_site["metric"] == "auroc"].set_index(["site", "method"])
    tiny = rows.loc["tiny"]
    assert tiny["estimate"].isna().all() and (tiny["n_cases"] == "<5").all() and tiny["note"].str.contains("suppressed").all()
    small = rows.loc["small"]
    assert small["estimate"].notna().all() and small["ci_low"].isna().all()
    assert small["note"].str.contains("too few test cases for a CI").all()
    big = rows.loc["big"]
    assert ((big["ci_low"] <= big["estimate"]) & (big["estimate"] <= big["ci_high"])).all()
    assert (big["ci_method"] == "bca").all()
    assert analysis.shown_sites == ["big", "mid", "small"]


def test_comparisons_find_the_large_effect_with_named_tests_and_correction(classification_run):
    analysis = analyse(load_run(classification_run), ReportOptions(baselines=("weak",)))
    comp = analysis.comparisons.set_index(["site", "method", "baseline"])
    strong = comp.loc[("big", "strong", "weak")]
    assert strong["test"] == "DeLong" and strong["difference"] > 0.2
    assert strong["p_value"] < 0.01 and strong["p_adjusted"] < 0.01 and strong["ci_low"] > 0
    assert strong["correction"] == "Holm-Bonferroni over 4 tests of auroc (sites x 2 comparisons)"
    assert np.isnan(comp.loc[("tiny", "strong", "weak"), "p_value"])  # not tested, not in the family
    # Holm can only raise P-values
    tested = analysis.comparisons.dropna(subset=["p_value"])
    assert (tested["p_adjusted"] >= tested["p_value"] - 1e-15).all()


def test_across_site_summary_matches_the_per_site_rows(classification_run):
    analysis = analyse(load_run(classification_run))
    per_site = analysis.per_site[(analysis.per_site["metric"] == "auroc") & (analysis.per_site["method"] == "weak")]
    row = analysis.aggregates.set_index(["method", "metric"]).loc[("weak", "auroc")]
    shown = per_site.dropna(subset=["estimate"])
    assert row["n_sites"] == 3 and row["site_mean"] == pytest.approx(shown["estimate"].mean())
    assert row["worst"] == pytest.approx(shown["estimate"].min())
    weights = shown["site"].map(SITES)
    assert row["case_weighted_mean"] == pytest.approx((shown["estimate"] * weights).sum() / weights.sum())


def test_baselines_default_normalise_and_reject_unknown(classification_run):
    run = load_run(classification_run)
    assert analyse(run).baselines == ["fedavg"]  # the default baseline that was run
    assert analyse(run, ReportOptions(baselines=("Fed-Avg".replace("-", ""),))).baselines == ["fedavg"]
    with pytest.raises(MedfedError, match="not among the methods"):
        analyse(run, ReportOptions(baselines=("local-only",)))


def test_report_files_are_deterministic_and_the_seed_matters(classification_run, tmp_path):
    a = write_report([classification_run], tmp_path / "a")
    b = write_report([classification_run], tmp_path / "b")
    c = write_report([classification_run], tmp_path / "c", ReportOptions(seed=1))
    for name in ("per_site.csv", "comparisons.csv", "meta_analysis.csv", "summary.md", "report.html"):
        assert (a.out / name).read_bytes() == (b.out / name).read_bytes(), name
    meta = pd.read_csv(a.out / "meta_analysis.csv")
    comparisons = pd.read_csv(a.out / "comparisons.csv")
    rows = meta[(meta["metric"] == "auroc") & meta["model"].notna()]
    assert set(rows["model"]) == {"fixed", "dl", "pm"} and (rows["n_sites"] >= 2).all()
    assert rows["sites_left_out"].fillna("").str.contains("tiny").all()  # suppressed: no difference, no SE
    shown = comparisons[comparisons["difference"].notna() & (comparisons["site"] != "pooled")]
    assert (shown["se"] > 0).all()
    assert (a.out / "per_site.csv").read_bytes() != (c.out / "per_site.csv").read_bytes()
    # each meta-analysis forest plot also as a standalone SVG file, one per fitted (metric, comparison)
    fitted = meta[meta["model"] == "dl"]
    files = sorted(p.name for p in (a.out / "plots").glob("forest_*.svg"))
    assert files == sorted(f"forest_{r.metric}_{r.method}_vs_{r.baseline}.svg" for r in fitted.itertuples())
    for name in files:
        root = ElementTree.fromstring((a.out / "plots" / name).read_bytes())
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert (a.out / "plots" / name).read_bytes() == (b.out / "plots" / name).read_bytes()
    summary = json.loads((a.out / "summary.json").read_text())
    assert summary["options"]["n_resamples"] == 1000 and summary["primary_metric"] == "auroc"
    assert {s["site"] for s in summary["sites"]} == set(SITES)


def test_report_page_shows_every_site_and_no_case_identifier(classification_run, tmp_path):
    result = write_report([classification_run], tmp_path / "r")
    html = result.html.read_text()
    for site in SITES:
        assert f">{site}<" in html
    records = pd.read_csv(classification_run / "predictions" / "weak.csv")
    for text in (html, *(p.read_text() for p in result.out.glob("*.*"))):
        assert not any(case_id in text for case_id in records["case_id"].unique()[:50])
    assert "<script" not in html and not any(f'{attr}="http' in html for attr in ("src", "href"))
    assert html.count("<svg") >= 3  # estimates, forest plots, learning curves


def test_segmentation_report_has_wilcoxon_comparisons_and_boxplots(segmentation_run, tmp_path):
    result = write_report([segmentation_run], tmp_path / "seg")
    comp = result.analysis.comparisons
    dice = comp[(comp["metric"] == "dice_mean") & (comp["site"] == "big") & (comp["method"] == "strong")]
    assert (dice["test"] == "paired bootstrap").all() and (dice["p_value"] < 0.01).all()
    assert (dice["p_wilcoxon"] < 0.001).all()  # the Wilcoxon signed-rank test, kept beside the bootstrap's P
    assert (dice["effect_size_name"] == "matched-pairs rank-biserial r").all() and (dice["effect_size"] > 0.9).all()
    html = result.html.read_text()
    assert 'id="boxplots"' in html and "Not shown (too few test cases): tiny" in html


def test_merged_runs_and_bad_run_directories_give_clear_errors(classification_run, tmp_path):
    other = make_run(tmp_path, methods=("weak", "newmethod"), name="second")
    merged = write_report([classification_run, other], tmp_path / "merged")
    assert merged.analysis.run.methods == ["synthetic/weak", "fedavg", "strong", "second/weak", "newmethod"]
    with pytest.raises(MedfedError, match="give --out"):
        write_report([classification_run, other])
    elsewhere = make_run(tmp_path, sites={"x": 12}, name="third")
    with pytest.raises(MedfedError, match="only runs on the same federation"):
        write_report([classification_run, elsewhere], tmp_path / "bad")
    broken = tmp_path / "broken"
    shutil.copytree(classification_run, broken)
    (broken / "sites.json").unlink()
    with pytest.raises(MedfedError, match="sites.json: missing"):
        load_run(broken)
    shutil.copytree(classification_run, tmp_path / "mismatch")
    frame = pd.read_csv(tmp_path / "mismatch" / "predictions" / "strong.csv")
    frame = frame[frame["case_id"] != "big-test-001"]
    frame.to_csv(tmp_path / "mismatch" / "predictions" / "strong.csv", index=False)
    with pytest.raises(MedfedError, match="site big: method strong was evaluated on other cases"):
        analyse(load_run(tmp_path / "mismatch"))


def test_report_command_exit_codes(classification_run, tmp_path, capsys):
    target = tmp_path / "cli"
    shutil.copytree(classification_run, target)
    assert main(["report", str(target), "--baseline", "weak", "--resamples", "200", "--ci", "percentile"]) == 0
    assert "report:" in capsys.readouterr().out and (target / "report.html").is_file()
    assert main(["report", str(target), "--baseline", "nobody"]) == 1
    assert "not among the methods" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 1


def test_margins_add_noninferiority_and_equivalence_tests(classification_run, tmp_path, capsys):
    target = tmp_path / "margins"
    shutil.copytree(classification_run, target)
    assert main(["report", str(target), "--resamples", "200", "--margin", "auroc=0.05"]) == 0
    comparisons = pd.read_csv(target / "comparisons.csv")
    tested = comparisons[comparisons["difference"].notna()]
    assert (tested["margin"] == 0.05).all() and tested["p_noninferiority"].notna().all()
    row = tested.iloc[0]
    z = (row["difference"] + 0.05) / row["se"]
    assert row["p_noninferiority"] == pytest.approx(float(stats.norm.sf(z)), abs=1e-5)  # CSV values: 6 digits
    meta = pd.read_csv(target / "meta_analysis.csv")
    assert meta.loc[meta["model"] == "dl", "p_equivalence"].notna().all()
    assert "non-inferiority P" in (target / "report.html").read_text()
    # the same margin from the run's config (report.margins), and the bad ones
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["report"] = {"margins": {"auroc": 0.05}}
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["report", str(target), "--resamples", "200"]) == 0
    assert (pd.read_csv(target / "comparisons.csv")["margin"].dropna() == 0.05).all()
    capsys.readouterr()
    assert main(["report", str(target), "--margin", "dice_WT=0.02"]) == 1
    assert "dice_WT, which this report does not compare; metrics compared: auroc" in capsys.readouterr().err
    assert main(["report", str(target), "--margin", "auroc=-1"]) == 2  # a usage error
    assert "expected METRIC=DELTA with DELTA > 0" in capsys.readouterr().err


def test_auroc_intervals_agree_with_their_p_values_adjusted_or_not(classification_run):
    comparisons = analyse(load_run(classification_run), ReportOptions(n_resamples=300)).comparisons
    rows = comparisons[(comparisons["ci_test"] == "DeLong") & comparisons["se"].gt(0)]
    assert len(rows) >= 2
    for row in rows.itertuples():
        assert (row.ci_low > 0 or row.ci_high < 0) == (row.p_value < 0.05)
        assert (row.ci_low_adjusted > 0 or row.ci_high_adjusted < 0) == (row.p_adjusted < 0.05)
        assert row.ci_low_adjusted <= row.ci_low and row.ci_high <= row.ci_high_adjusted  # wider: p_adjusted >= p
    # the adjustment factor by hand on a made-up row: p = 0.01, Holm-adjusted 0.04 -> z_{1 - 0.05 / 8}
    from medfed.report.analysis import adjusted_intervals

    made_up = pd.DataFrame({"difference": [0.1], "se": [0.04], "p_value": [0.01], "p_adjusted": [0.04],
                            "ci_test": ["DeLong"]})
    low, high = adjusted_intervals(made_up, 0.95)
    assert high[0] - 0.1 == pytest.approx(stats.norm.ppf(1 - 0.05 / 8) * 0.04)


def test_bootstrap_intervals_agree_with_their_p_values_adjusted_or_not(segmentation_run):
    comparisons = analyse(load_run(segmentation_run), ReportOptions(n_resamples=199)).comparisons
    rows = comparisons[(comparisons["ci_test"] == "paired bootstrap") & comparisons["p_adjusted"].notna()]
    assert len(rows) >= 10 and rows["metric"].str.startswith("hd95").any()
    for row in rows.itertuples():
        assert (row.ci_low > 0 or row.ci_high < 0) == (row.p_value < 0.05)
        assert (row.ci_low_adjusted > 0 or row.ci_high_adjusted < 0) == (row.p_adjusted < 0.05)
        assert row.ci_low_adjusted <= row.ci_low and row.ci_high <= row.ci_high_adjusted
    # a Holm family of 12 made-up rows where both outcomes occur, adjusted and not
    from medfed.report.analysis import adjusted_intervals
    from medfed.stats import adjust_p_values
    from medfed.stats.bootstrap import bootstrap_p_value, order_statistic_interval

    rng = np.random.default_rng(1)
    differences = [rng.normal(shift, 0.1, 1999) for shift in np.linspace(-0.4, 0.4, 12)]
    p = np.array([bootstrap_p_value(d) for d in differences])
    family = pd.DataFrame({"difference": [d.mean() for d in differences], "se": [d.std() for d in differences],
                           "p_value": p, "p_adjusted": adjust_p_values(p, "holm"), "ci_test": "paired bootstrap"})
    low, high = adjusted_intervals(family, 0.95, differences)
    excluded = (low > 0) | (high < 0)
    assert np.array_equal(excluded, family["p_adjusted"].to_numpy() < 0.05)
    plain = np.array([order_statistic_interval(d, 0.05) for d in differences])
    assert np.array_equal((plain[:, 0] > 0) | (plain[:, 1] < 0), p < 0.05)
    assert excluded.any() and not excluded.all() and (p < 0.05).sum() > excluded.sum()  # the correction bites


def test_order_statistic_interval_by_hand_and_against_the_bootstrap_p():
    from medfed.stats.bootstrap import bootstrap_p_value, order_statistic_interval

    d = np.arange(1.0, 20.0)  # B = 19 values 1..19: (B+1) = 20, alpha 0.2 -> j = largest with 2j/20 < 0.2 = 1
    assert order_statistic_interval(d, 0.2) == (1.0, 19.0)
    assert order_statistic_interval(d, 0.5) == (4.0, 16.0)  # 2j/20 < 0.5 -> j = 4: the 4th and 16th values
    assert order_statistic_interval(d, 0.05) == (-np.inf, np.inf)  # 2/20 = 0.1 >= 0.05: unresolvable
    rng = np.random.default_rng(0)
    for _ in range(300):
        values = rng.normal(rng.uniform(-0.5, 0.5), 0.2, int(rng.integers(19, 400)))
        values[rng.random(values.size) < 0.05] = 0.0  # ties at zero count in both tails
        alpha = float(rng.choice([0.05, 0.01, 0.1, 0.0125, 0.05 / 7]))
        low, high = order_statistic_interval(values, alpha)
        assert (low > 0 or high < 0) == (bootstrap_p_value(values) < alpha)


def test_pooled_difference_uses_a_site_stratified_bootstrap(tmp_path):
    from medfed.report.analysis import site_strata

    complete = make_run(tmp_path, sites={"big": 80, "mid": 30}, name="complete")
    run = load_run(complete)
    analysis = analyse(run, ReportOptions(n_resamples=300))
    pooled = analysis.comparisons[analysis.comparisons["site"] == "pooled"]
    assert len(pooled) and (pooled["test"] == "site-stratified paired bootstrap").all()
    assert pooled["ci_low"].notna().all() and (pooled["p_adjusted"].isna()).all()  # outside the per-site family
    records = run.records[run.methods[0]]
    frames = {m: r[r["split"] == "test"] for m, r in run.records.items()}
    cases = site_cases(run.task_kind, "pooled", frames, None)
    strata = site_strata(cases, frames[run.methods[0]])
    ids = np.array(sorted(frames[run.methods[0]]["case_id"].astype(str).unique()))
    site_of = records.drop_duplicates("case_id").set_index("case_id")["site"].reindex(ids).to_numpy()
    for code in np.unique(strata):  # each stratum lies in one site and one class
        assert len(set(site_of[strata == code])) == 1 and len(set(cases.strata[strata == code])) == 1
    meta = meta_analysis_table(analysis.comparisons)
    assert "pooled_bootstrap" in set(meta["model"])


# ----------------------------------------------------------------- the page in a real browser
@pytest.mark.slow(seconds=10)
def test_report_renders_in_headless_chromium_without_errors(classification_run, tmp_path):
    browser = chromium()
    result = write_report([classification_run], tmp_path / "browser")
    artifacts = Path(os.environ.get("MEDFED_TEST_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    dom, problems = load_in_browser(browser, result.html, artifacts / "report.png")
    assert problems == []
    assert "Results per site" in dom
    for site in SITES:
        assert f">{site}<" in dom
    assert (artifacts / "report.png").stat().st_size > 10_000
    # the check itself can fail: a page with a script error and a missing image is caught
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="missing.png"><script>console.error("x"); nope();</script></body></html>')
    _, bad_problems = load_in_browser(browser, bad)
    assert any("CONSOLE" in p for p in bad_problems) and any("missing.png" in p for p in bad_problems)


# ----------------------------------------------------------------- review fixes: strata, privacy, ground truth
def test_multi_label_and_uncertain_cases_still_get_cis(tmp_path):
    out = make_run(tmp_path, methods=("weak", "strong"), sites={"big": 60, "mid": 30})
    for method in ("weak", "strong"):
        path = out / "predictions" / f"{method}.csv"
        single = pd.read_csv(path)
        second = single.assign(label="Effusion", target=np.where(np.arange(len(single)) % 5 == 0, 1.0, 0.0))
        second.loc[second.index % 17 == 0, "target"] = -1.0  # uncertain findings, masked
        pd.concat([single, second]).to_csv(path, index=False)
    analysis = analyse(load_run(out))
    rows = analysis.per_site.set_index(["site", "method", "metric"])
    for metric in ("auroc", "auroc/Pneumonia", "auroc/Effusion"):
        assert np.isfinite(rows.loc[("big", "strong", metric), "ci_low"]), metric
    effusion = analysis.calibration.set_index(["site", "method", "label"]).loc[("big", "strong", "Effusion")]
    test_targets = pd.read_csv(out / "predictions" / "strong.csv").query("site == 'big' and split == 'test'")
    known = test_targets[(test_targets["label"] == "Effusion") & (test_targets["target"] >= 0)]
    assert effusion["n"] == len(known) and np.isfinite(effusion["brier"])  # uncertain findings are left out
    single_uncertain = make_run(tmp_path / "u", methods=("weak", "strong"), sites={"big": 60})
    for method in ("weak", "strong"):
        path = single_uncertain / "predictions" / f"{method}.csv"
        frame = pd.read_csv(path)
        frame.loc[frame["case_id"] == "big-test-001", "target"] = -1.0
        frame.to_csv(path, index=False)
    rows = analyse(load_run(single_uncertain)).per_site.set_index(["site", "method", "metric"])
    assert np.isfinite(rows.loc[("big", "strong", "auroc"), "ci_low"])


def test_pooled_values_and_totals_are_withheld_when_a_site_is_suppressed(classification_run, tmp_path):
    analysis = analyse(load_run(classification_run))  # site "tiny" is suppressed
    assert analysis.pooled_withheld and analysis.aggregates["pooled"].isna().all()
    html = write_report([classification_run], tmp_path / "w").html.read_text()
    assert "Pooled values are withheld" in html
    tiny_row = next(line for line in html.splitlines() if line.startswith("<tr><td>tiny</td>"))
    # secondary suppression (medfed.stats.disclosure): the total and the descriptor count beside hidden splits
    assert '<td class="num">&gt;=5</td>' in tiny_row and tiny_row.endswith("<td>A: &gt;=5</td></tr>")
    complete = make_run(tmp_path, sites={"big": 80, "mid": 30}, name="complete")
    analysis = analyse(load_run(complete))
    assert not analysis.pooled_withheld and (analysis.aggregates.query("metric == 'auroc'")["pooled"] == 0.9).all()


def test_methods_with_different_ground_truth_are_refused(classification_run, tmp_path):
    shutil.copytree(classification_run, tmp_path / "truth")
    path = tmp_path / "truth" / "predictions" / "strong.csv"
    frame = pd.read_csv(path)
    frame.loc[frame["case_id"] == "mid-test-002", "target"] = 1 - frame.loc[frame["case_id"] == "mid-test-002", "target"]
    frame.to_csv(path, index=False)
    with pytest.raises(MedfedError, match="site mid: method strong has other targets for Pneumonia"):
        analyse(load_run(tmp_path / "truth"))
