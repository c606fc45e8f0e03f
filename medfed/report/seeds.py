"""The across-seed summary of a multi-seed run (:mod:`medfed.fl.multiseed`).

Each seed's run is analysed on its own (:func:`medfed.report.analysis.analyse`): methods are paired within seed and
site, on the same test cases. The summary then treats **seeds as replicates inside each site's estimate**: for a
site, the estimand is the seed-averaged difference ``d̄ = (1/S) Σ_s d_s`` between two methods, and its uncertainty
is that of the test cases, from a paired bootstrap:

- when the site's test cases are the same in every seed (a fixed federation; the pooled test set of a re-drawn
  partition), resample ``b`` draws the same cases (stratified by class) in every seed, so
  ``d̄*_b = (1/S) Σ_s d*_{s,b}`` is a paired bootstrap of the seed-averaged difference;
- when they differ (a partition re-drawn per seed gives a site other cases), each seed's cases are resampled
  independently.

P and CI come from ``d̄*`` (:func:`~medfed.stats.bootstrap.bootstrap_p_value` and the order-statistic interval,
which agree), corrected over sites x comparisons per metric (Holm by default), as per seed. The inference is
conditional on the seeds run, so the spread between seeds is given beside it: the SD of ``d_s`` and how many seeds
have ``d_s > 0``. Across sites, the seed-averaged site differences and their bootstrap SEs enter the random-effects
meta-analysis (:func:`medfed.report.meta_table.meta_analysis_table`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from medfed.fl.names import POOLED
from medfed.report.analysis import Analysis, finding_labels
from medfed.report.cases import site_cases
from medfed.report.run_data import RunData
from medfed.seeding import rng_for
from medfed.stats import CORRECTIONS, adjust_p_values, bootstrap_distributions
from medfed.stats.bootstrap import bootstrap_p_value, order_statistic_interval

ACROSS_SEED_COLUMNS = (
    "site", "metric", "label", "unit", "method", "baseline", "difference", "se", "ci_low", "ci_high", "p_value",
    "p_adjusted", "correction", "ci_low_adjusted", "ci_high_adjusted", "seed_sd", "seeds_above_zero", "n_seeds",
    "seeds", "case_sets", "n_cases", "test", "note",
)
TEST_NAME = "paired bootstrap of the seed-averaged difference"


def _frames(run: RunData, site: str, split: str) -> dict[str, pd.DataFrame]:
    """Each method's records of ``site`` (or of every site, for ``pooled``) on ``split``."""
    frames = {}
    for method in run.methods:
        records = run.records[method]
        part = records[records["split"] == split]
        frames[method] = part if site == POOLED else part[part["site"].astype(str) == site]
    return frames


def _site_draws(analyses: Mapping[int, Analysis], site: str, keys: set[tuple[str, str]]) -> tuple[dict, bool]:
    """``{seed: {(method, metric): (B,) bootstrap values}}`` of one site, and whether its cases are the same in
    every seed (then every seed is resampled with the same draws)."""
    seeds = sorted(analyses)
    options = analyses[seeds[0]].options
    cases, ids = {}, {}
    for s in seeds:
        run = analyses[s].run
        frames = _frames(run, site, options.split)
        cases[s] = site_cases(run.task_kind, site, frames, finding_labels(run))
        ids[s] = tuple(sorted(frames[run.methods[0]]["case_id"].astype(str).unique()))
    same = len(set(ids.values())) == 1
    draws = {}
    for s in seeds:
        generator = rng_for(options.seed, "across-seeds", site) if same else rng_for(options.seed, "across-seeds", site, s)
        statistics = {k: v for k, v in cases[s].statistics.items() if k in keys}
        draws[s] = bootstrap_distributions(statistics, cases[s].n_cases, n_resamples=options.n_resamples,
                                           seed=generator, strata=cases[seeds[0]].strata if same else cases[s].strata)
    return draws, same


def across_seeds(analyses: Mapping[int, Analysis], correction: str | None = None) -> pd.DataFrame:
    """One row per (site or ``pooled``, metric, method, baseline) compared in the seeds' analyses: the
    seed-averaged difference, its paired bootstrap SE, CI and P (module docstring), the corrected P and interval,
    and the spread over seeds. ``analyses``: seed -> that seed's analysis (all with the same options)."""
    seeds = sorted(analyses)
    options = analyses[seeds[0]].options
    correction = correction or options.correction
    alpha = 1 - options.confidence
    keys = ["site", "metric", "method", "baseline"]
    tables = {s: analyses[s].comparisons.set_index(keys) for s in seeds}
    rows, all_draws = [], []
    site_cache: dict[str, tuple[dict, bool]] = {}
    for key, first in tables[seeds[0]].iterrows():
        site, metric, method, baseline = key
        row = {c: np.nan for c in ACROSS_SEED_COLUMNS}
        row.update(site=site, metric=metric, label=first["label"], unit=first["unit"], method=method,
                   baseline=baseline, n_seeds=len(seeds), seeds=";".join(map(str, seeds)), correction="",
                   test=TEST_NAME, n_cases=first["n_cases"], note="")
        estimates = np.array([float(tables[s].loc[key, "difference"]) if key in tables[s].index else np.nan
                              for s in seeds])
        if not np.all(np.isfinite(estimates)):
            missing = [str(s) for s, e in zip(seeds, estimates, strict=True) if not np.isfinite(e)]
            row["note"] = f"no difference in seed(s) {', '.join(missing)}" + (f": {first['note']}" if first["note"] else "")
            rows.append(row)
            all_draws.append(None)
            continue
        if site not in site_cache:
            wanted = {(m, k[1]) for k in tables[seeds[0]].index if k[0] == site for m in (k[2], k[3])}
            site_cache[site] = _site_draws(analyses, site, wanted)
        draws, same = site_cache[site]
        mean_draws = np.mean(np.vstack([draws[s][(method, metric)] - draws[s][(baseline, metric)] for s in seeds]),
                             axis=0)
        finite = mean_draws[np.isfinite(mean_draws)]
        low, high = order_statistic_interval(mean_draws, alpha)
        row.update(difference=float(estimates.mean()), se=float(np.std(finite, ddof=1)) if finite.size > 1 else np.nan,
                   ci_low=low, ci_high=high, p_value=bootstrap_p_value(mean_draws),
                   seed_sd=float(np.std(estimates, ddof=1)) if estimates.size > 1 else np.nan,
                   seeds_above_zero=int(np.sum(estimates > 0)), case_sets="same" if same else "differ by seed")
        rows.append(row)
        all_draws.append(mean_draws)
    table = pd.DataFrame(rows, columns=list(ACROSS_SEED_COLUMNS))
    return _correct(table, all_draws, correction, alpha)


def _correct(table: pd.DataFrame, draws: list[np.ndarray | None], correction: str, alpha: float) -> pd.DataFrame:
    """Adjusted P per metric over the site rows (pooled rows stay outside the family, as per seed), and the adjusted
    intervals: the order-statistic interval at level ``alpha · p / p_adjusted``."""
    table = table.copy()
    sites = table["site"] != POOLED
    for metric, group in table[sites].groupby("metric", sort=False):
        p = group["p_value"].to_numpy(dtype=float)
        m = int(np.isfinite(p).sum())
        table.loc[group.index, "p_adjusted"] = adjust_p_values(p, correction)
        table.loc[group.index, "correction"] = f"{CORRECTIONS[correction]} over {m} tests of {metric}" if m else ""
    for i, values in enumerate(draws):
        p, adjusted = float(table.at[i, "p_value"]), float(table.at[i, "p_adjusted"])
        if values is None or not (np.isfinite(adjusted) and p > 0):
            continue
        table.at[i, "ci_low_adjusted"], table.at[i, "ci_high_adjusted"] = order_statistic_interval(
            values, alpha * p / adjusted)
    return table


__all__ = ["ACROSS_SEED_COLUMNS", "across_seeds"]
