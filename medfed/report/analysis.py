"""The numbers of a report: per-site estimates with CIs, paired comparisons with corrected P-values, and
summaries across sites. Pure given the loaded run: same run + options = same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from medfed.errors import MedfedError
from medfed.fl.names import POOLED
from medfed.report.calibration_table import calibration_rows
from medfed.report.cases import SiteCases, site_cases
from medfed.report.margins import check_margins, with_margin_tests
from medfed.report.meta_table import meta_analysis_table
from medfed.report.metrics import PRIMARY, MetricSpec, specs_for
from medfed.report.run_data import RunData
from medfed.seeding import rng_for
from medfed.stats.bootstrap import order_statistic_interval
from medfed.stats.meta import CI_METHODS as META_CI_METHODS
from medfed.stats.power import minimum_detectable_difference
from medfed.stats import (
    CI_METHODS,
    CORRECTIONS,
    across_sites,
    adjust_p_values,
    bootstrap_distributions,
    confidence_interval,
    delong_test,
    paired_difference,
    paired_wilcoxon,
    point_estimate,
    suppress_count,
)

DEFAULT_BASELINES = ("local_only", "fedavg")
#: the test behind ``p_value`` and the row's CI; Dice / HD95 rows add the Wilcoxon signed-rank P as ``p_wilcoxon``
TEST_NAMES = {"delong": "DeLong", "wilcoxon": "paired bootstrap", "": "paired bootstrap"}


@dataclass(frozen=True)
class ReportOptions:
    """How the report computes its statistics (all written into summary.json)."""

    baselines: tuple[str, ...] = ()  #: compared against; default: local_only and fedavg where present
    split: str = "test"
    n_resamples: int = 1000
    confidence: float = 0.95
    ci_method: str = "bca"  #: "bca" or "percentile" (per-method CIs; differences use the percentile interval)
    correction: str = "holm"  #: "holm", "bh" or "none"; family = sites x comparisons, per metric
    seed: int = 0
    min_ci_cases: int = 10  #: fewer test cases than this: no CI and no test ("too few cases")
    meta_ci: str = "hksj"  #: CI of the random-effects meta-analysis across sites: "hksj" (default) or "wald"
    #: non-inferiority / equivalence margins, ``(metric, delta)`` pairs (added to the run config's ``report.margins``)
    margins: tuple[tuple[str, float], ...] = ()

    def check(self) -> None:
        if self.meta_ci not in META_CI_METHODS:
            raise MedfedError(f"unknown meta-analysis CI {self.meta_ci!r}; choose {' or '.join(META_CI_METHODS)}")
        if self.ci_method not in CI_METHODS:
            raise MedfedError(f"unknown CI method {self.ci_method!r}; choose {' or '.join(CI_METHODS)}")
        if self.correction not in CORRECTIONS:
            raise MedfedError(f"unknown correction {self.correction!r}; choose one of {', '.join(CORRECTIONS)}")
        if self.n_resamples < 100:
            raise MedfedError(f"n_resamples={self.n_resamples}: use at least 100 bootstrap resamples")
        if not 0 < self.confidence < 1:
            raise MedfedError(f"confidence={self.confidence}: must lie between 0 and 1")


@dataclass
class Analysis:
    run: RunData
    options: ReportOptions
    specs: list[MetricSpec]
    primary: str
    baselines: list[str]
    per_site: pd.DataFrame
    comparisons: pd.DataFrame
    aggregates: pd.DataFrame
    #: sites whose test cases are at least min_count (their per-case values may be plotted)
    shown_sites: list[str] = field(default_factory=list)
    #: per site: why its results are suppressed or have no CI ("" when complete)
    site_notes: dict[str, str] = field(default_factory=dict)
    #: whether pooled values are withheld: they include suppressed sites' cases, and with the shown sites'
    #: exact estimates and counts they would reveal the suppressed sites' results by subtraction
    pooled_withheld: bool = False
    #: non-inferiority / equivalence margins in force: metric -> (delta, higher is better)
    margins: dict[str, tuple[float, bool]] = field(default_factory=dict)
    #: ``meta_analysis.csv``: the comparisons pooled across sites (:func:`medfed.report.meta_table.meta_analysis_table`)
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: ``calibration.csv`` rows and the reliability curve of each (site, method, label)
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration_curves: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _normalise(name: str) -> str:
    return name.replace("-", "_").lower()


def choose_baselines(methods: list[str], requested: tuple[str, ...]) -> list[str]:
    """Requested baselines (``local-only`` matches ``local_only``); default local_only and fedavg if run,
    else the first method."""
    by_key = {_normalise(m): m for m in methods}
    if requested:
        unknown = [b for b in requested if _normalise(b) not in by_key]
        if unknown:
            raise MedfedError(f"baseline(s) {', '.join(unknown)} not among the methods: {', '.join(methods)}")
        return [by_key[_normalise(b)] for b in requested]
    found = [by_key[b] for b in DEFAULT_BASELINES if b in by_key]
    return found or methods[:1]


def comparison_pairs(methods: list[str], baselines: list[str]) -> list[tuple[str, str]]:
    """(method, baseline) for every other method against each baseline; two baselines are compared once."""
    pairs: list[tuple[str, str]] = []
    for baseline in baselines:
        for method in methods:
            if method != baseline and (baseline, method) not in pairs:
                pairs.append((method, baseline))
    return pairs


def _site_frames(run: RunData, site: str, split: str) -> dict[str, pd.DataFrame]:
    frames = {}
    for method in run.methods:
        records = run.records[method]
        frames[method] = records[(records["site"].astype(str) == site) & (records["split"] == split)]
    return frames


def _ci_note(n: int, min_count: int, cases: SiteCases | None, options: ReportOptions) -> str:
    if n == 0:
        return "no test cases"
    if n < min_count:
        return f"fewer than {min_count} test cases: suppressed"
    if n < options.min_ci_cases:
        return f"too few test cases for a CI or test (n < {options.min_ci_cases})"
    if cases is not None and cases.smallest_stratum() < 2:
        return "a class has fewer than 2 test cases: no CI or test"
    return ""


def analyse(run: RunData, options: ReportOptions | None = None) -> Analysis:
    """Compute every table of the report from a loaded run."""
    options = options or ReportOptions()
    options.check()
    labels = finding_labels(run)
    specs = specs_for(run.task_kind, labels=labels, compare=run.compare)
    baselines = choose_baselines(run.methods, options.baselines)
    pairs = comparison_pairs(run.methods, baselines)
    per_site_rows: list[dict[str, Any]] = []
    comparison_rows: list[dict[str, Any]] = []
    shown: list[str] = []
    notes: dict[str, str] = {}
    n_by_site: dict[str, int] = {}
    for site in run.site_names:
        frames = _site_frames(run, site, options.split)
        n = int(frames[run.methods[0]]["case_id"].nunique()) if run.methods else 0
        n_by_site[site] = n
        min_count = run.min_count(site)
        cases = site_cases(run.task_kind, site, frames, labels) if n else None
        note = _ci_note(n, min_count, cases, options)
        notes[site] = note
        if n >= min_count and n:
            shown.append(site)
        rows, distributions, estimates = _estimate_rows(run, site, specs, cases, n, min_count, note, options)
        per_site_rows += rows
        for method, baseline in pairs:
            for spec in (s for s in specs if s.compare):
                comparison_rows.append(_compare(site, method, baseline, spec, cases, distributions, estimates,
                                                note, suppress_count(n, min_count), options))
    per_site = pd.DataFrame(per_site_rows)
    margins = check_margins({**run.margins, **dict(options.margins)}, specs)
    differences = [row.pop("_differences") for row in comparison_rows]
    comparisons = _correct(pd.DataFrame(comparison_rows, columns=list(COMPARISON_COLUMNS)), options.correction,
                           len(pairs), options.confidence, differences)
    withheld = any(0 < n < run.min_count(site) for site, n in n_by_site.items())
    aggregates = _aggregates(run, per_site, specs, n_by_site, options.split, withheld)
    if not withheld and run.methods:  # the pooled test set as one more row group, with its own CIs
        frames = {m: r[r["split"] == options.split] for m, r in run.records.items() if m in run.methods}
        n = int(frames[run.methods[0]]["case_id"].nunique())
        min_count = max((run.min_count(site) for site in run.site_names), default=1)
        cases = site_cases(run.task_kind, POOLED, frames, labels) if n else None
        if cases is not None:  # resample within each site (and class): every site keeps its share of the pool
            cases.strata = site_strata(cases, frames[run.methods[0]])
        note = _ci_note(n, min_count, cases, options)
        rows, distributions, estimates = _estimate_rows(run, POOLED, specs, cases, n, min_count, note, options)
        per_site = pd.concat([per_site, pd.DataFrame(rows)], ignore_index=True)
        pooled_rows = [_pooled_compare(method, baseline, spec, distributions, estimates, note, n, options)
                       for method, baseline in pairs for spec in specs if spec.compare]
        if pooled_rows:
            comparisons = pd.concat([comparisons, pd.DataFrame(pooled_rows)], ignore_index=True)
    comparisons = with_margin_tests(comparisons, margins)
    meta = meta_analysis_table(comparisons, options.meta_ci, options.confidence, margins)
    calibration, curves = calibration_rows(run.task_kind, run.records, shown, options.split)
    return Analysis(run, options, specs, PRIMARY[run.task_kind], baselines, per_site, comparisons, aggregates, shown,
                    notes, withheld, margins, meta, calibration, curves)


def _estimate_rows(
    run: RunData, site: str, specs: list[MetricSpec], cases: SiteCases | None, n: int, min_count: int, note: str,
    options: ReportOptions,
) -> tuple[list[dict[str, Any]], dict, dict]:
    """Per-method, per-metric estimate rows (bootstrap CI when ``note`` is empty), the bootstrap
    distributions and the point estimates of one group of cases."""
    suppressed = n < min_count
    with_ci = cases is not None and not note
    distributions = {}
    if with_ci:
        distributions = bootstrap_distributions(
            cases.statistics, n, n_resamples=options.n_resamples, seed=rng_for(options.seed, "report", site),
            strata=cases.strata,
        )
    estimates = {key: point_estimate(stat) for key, stat in cases.statistics.items()} if cases else {}
    rows = []
    for method in run.methods:
        for spec in specs:
            key = (method, spec.name)
            row = {"site": site, "method": method, "metric": spec.name, "label": spec.label, "unit": spec.unit,
                   "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "ci_method": "",
                   "n_cases": suppress_count(n, min_count), "note": note}
            if cases is not None and not suppressed and key in cases.statistics:
                row["estimate"] = estimates[key]
                if with_ci:
                    interval = confidence_interval(cases.statistics[key], distributions[key], estimates[key],
                                                   options.confidence, options.ci_method)
                    row.update(ci_low=interval.low, ci_high=interval.high, ci_method=options.ci_method)
                if not np.isfinite(row["estimate"]) and not note:
                    row["note"] = "undefined on these cases"
            rows.append(row)
    return rows, distributions, estimates


def finding_labels(run: RunData) -> list[str] | None:
    """The findings of a classification run in record order (None for other tasks)."""
    if run.task_kind != "classification" or not run.methods:
        return None
    return list(dict.fromkeys(run.records[run.methods[0]]["label"].astype(str)))


#: columns of a comparison row (also of an empty table: a report with one method compares nothing)
COMPARISON_COLUMNS = ("site", "metric", "label", "unit", "method", "baseline", "difference", "se", "mdd_80", "ci_low",
                      "ci_high", "ci_test", "p_bootstrap", "test", "p_value", "p_wilcoxon", "effect_size", "effect_size_name",
                      "n_cases", "note")


def _compare(
    site: str, method: str, baseline: str, spec: MetricSpec, cases: SiteCases | None,
    distributions: dict, estimates: dict, note: str, n_cases: int | str, options: ReportOptions,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "site": site, "metric": spec.name, "label": spec.label, "unit": spec.unit, "method": method,
        "baseline": baseline, "difference": np.nan, "se": np.nan, "mdd_80": np.nan, "ci_low": np.nan, "ci_high": np.nan,
        "ci_test": "",
        "p_bootstrap": np.nan,
        "test": TEST_NAMES[spec.test], "p_value": np.nan, "p_wilcoxon": np.nan, "effect_size": np.nan,
        "effect_size_name": "", "n_cases": n_cases, "note": note, "_differences": None,
    }
    a, b = (method, spec.name), (baseline, spec.name)
    if note or cases is None or a not in distributions:
        row["note"] = note or "not computed"
        return row
    diff = paired_difference(estimates[a], estimates[b], distributions[a], distributions[b], options.confidence)
    row.update(difference=diff.estimate, se=diff.se, ci_low=diff.low, ci_high=diff.high, p_bootstrap=diff.p_value,
               p_value=diff.p_value, effect_size_name=f"difference in {spec.label}", ci_test="paired bootstrap",
               _differences=distributions[a] - distributions[b])
    row["effect_size"] = diff.estimate
    stat_a, stat_b = cases.statistics[a], cases.statistics[b]
    if spec.test == "delong":
        result = delong_test(stat_a.scores, stat_b.scores, stat_a.targets, options.confidence)
        # the interval of the same test as the P-value (DeLong's normal interval), so the two never disagree
        row.update(p_value=result.p_value, effect_size=result.z, effect_size_name="z (difference / DeLong SE)",
                   se=result.se, ci_low=result.low, ci_high=result.high, ci_test="DeLong")
    elif spec.test == "wilcoxon":
        # P and CI stay the paired bootstrap's (one test per row, so they agree); the Wilcoxon signed-rank test of the
        # per-case differences is kept beside them, with its rank-biserial effect size
        result = paired_wilcoxon(stat_a.values, stat_b.values)
        row.update(p_wilcoxon=result.p_value, effect_size=result.rank_biserial,
                   effect_size_name="matched-pairs rank-biserial r")
    row["mdd_80"] = minimum_detectable_difference(row["se"])  # 80% power, two-sided 5% (medfed.stats.power)
    if not np.isfinite(row["difference"]):
        row["note"] = "undefined on these cases"
    return row


def site_strata(cases: SiteCases, records: pd.DataFrame) -> np.ndarray:
    """Strata of the pooled cases for a site-stratified bootstrap: (site, class) pairs, as integer codes."""
    site_of = records.drop_duplicates("case_id").set_index(records["case_id"].drop_duplicates().astype(str))["site"]
    ids = np.array(sorted(site_of.index))
    sites = np.unique(site_of.reindex(ids).astype(str).to_numpy(), return_inverse=True)[1]
    classes = np.zeros(ids.size, dtype=np.int64) if cases.strata is None else np.asarray(cases.strata) + 1
    return sites * (int(classes.max()) + 1 if classes.size else 1) + classes


def _pooled_compare(method: str, baseline: str, spec: MetricSpec, distributions: dict, estimates: dict, note: str,
                    n: int, options: ReportOptions) -> dict[str, Any]:
    """The pooled difference with sites as strata: paired bootstrap CI, P and SE on all shown sites' cases,
    resampled within each site. Outside the per-site correction family (``p_adjusted`` empty)."""
    row = {c: np.nan for c in COMPARISON_COLUMNS}
    row.update(site=POOLED, metric=spec.name, label=spec.label, unit=spec.unit, method=method, baseline=baseline,
               test="site-stratified paired bootstrap", effect_size_name="", n_cases=n, note=note,
               p_adjusted=np.nan, correction="", ci_test="site-stratified paired bootstrap", ci_low_adjusted=np.nan,
               ci_high_adjusted=np.nan)
    a, b = (method, spec.name), (baseline, spec.name)
    if note or a not in distributions or b not in distributions:
        row["note"] = note or "not computed"
        return row
    diff = paired_difference(estimates[a], estimates[b], distributions[a], distributions[b], options.confidence)
    row.update(difference=diff.estimate, se=diff.se, ci_low=diff.low, ci_high=diff.high, p_bootstrap=diff.p_value,
               p_value=diff.p_value, effect_size=diff.estimate, effect_size_name=f"difference in {spec.label}",
               mdd_80=minimum_detectable_difference(diff.se))
    return row


def _correct(comparisons: pd.DataFrame, method: str, n_pairs: int, confidence: float = 0.95,
             differences: list[np.ndarray | None] | None = None) -> pd.DataFrame:
    """Adjust ``p_value`` within each metric's family (every site x comparison with a P-value), and add the adjusted
    intervals (:func:`adjusted_intervals`; ``differences``: each row's paired bootstrap differences, or None)."""
    if comparisons.empty:
        return comparisons.assign(p_adjusted=pd.Series(dtype=float), correction=pd.Series(dtype=str),
                                  ci_low_adjusted=pd.Series(dtype=float), ci_high_adjusted=pd.Series(dtype=float))
    comparisons = comparisons.copy()
    comparisons["p_adjusted"] = np.nan
    comparisons["correction"] = ""
    for metric, group in comparisons.groupby("metric", sort=False):
        p = group["p_value"].to_numpy(dtype=float)
        m = int(np.isfinite(p).sum())
        comparisons.loc[group.index, "p_adjusted"] = adjust_p_values(p, method)
        comparisons.loc[group.index, "correction"] = (
            f"{CORRECTIONS[method]} over {m} tests of {metric} (sites x {n_pairs} comparisons)" if m else ""
        )
    low, high = adjusted_intervals(comparisons, confidence, differences)
    return comparisons.assign(ci_low_adjusted=low, ci_high_adjusted=high)


def adjusted_intervals(comparisons: pd.DataFrame, confidence: float,
                       differences: list[np.ndarray | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicity-adjusted CIs that agree with the corrected P. With ``c = p_adjusted / p`` and ``alpha = 1 -
    confidence``, each row's own test is inverted at level ``alpha / c``:

    - DeLong rows: ``d +- z_{1 - alpha / (2 c)} se``, which excludes 0 exactly when ``p_adjusted < alpha``;
    - paired-bootstrap rows (``differences`` given, in row order): the order-statistic interval at ``alpha / c``
      (:func:`medfed.stats.bootstrap.order_statistic_interval`), which excludes 0 exactly when ``p < alpha / c``.

    NaN where there is no adjusted P (pooled rows, rows without a test)."""
    alpha = 1 - confidence
    d, se = comparisons["difference"].to_numpy(dtype=float), comparisons["se"].to_numpy(dtype=float)
    p, adjusted = comparisons["p_value"].to_numpy(dtype=float), comparisons["p_adjusted"].to_numpy(dtype=float)
    normal = (comparisons["ci_test"] == "DeLong").to_numpy() & np.isfinite(se) & (se > 0) & (p > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(normal, adjusted / p, np.nan)
        half = stats.norm.ppf(1 - alpha / (2 * factor)) * se
    low, high = np.where(normal, d - half, np.nan), np.where(normal, d + half, np.nan)
    tests = comparisons["ci_test"].to_numpy()
    for i, values in enumerate(differences or []):
        if values is None or tests[i] != "paired bootstrap" or not (np.isfinite(adjusted[i]) and p[i] > 0):
            continue
        low[i], high[i] = order_statistic_interval(values, alpha * p[i] / adjusted[i])
    return low, high


def _aggregates(
    run: RunData, per_site: pd.DataFrame, specs: list[MetricSpec], n_by_site: dict[str, int], split: str,
    pooled_withheld: bool,
) -> pd.DataFrame:
    """Across-site summaries over the sites with a value; ``pooled`` from metrics.csv unless withheld."""
    rows = []
    pooled = pd.DataFrame() if pooled_withheld else run.metrics
    for method in run.methods:
        for spec in specs:
            part = per_site[(per_site["method"] == method) & (per_site["metric"] == spec.name)]
            summary = across_sites(part["site"].tolist(), part["estimate"].tolist(),
                                   [n_by_site[s] for s in part["site"]], spec.higher_is_better)
            pooled_value = np.nan
            if len(pooled):
                match = pooled[(pooled["method"] == method) & (pooled["site"] == POOLED) & (pooled["split"] == split)
                               & (pooled["metric"] == spec.name)]
                if len(match) and not bool(match["suppressed"].iloc[0]):
                    pooled_value = float(match["value"].iloc[0])
            rows.append({"method": method, "metric": spec.name, "label": spec.label, **summary, "pooled": pooled_value})
    return pd.DataFrame(rows)
