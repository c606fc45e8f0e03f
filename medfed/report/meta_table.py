"""``meta_analysis.csv``: a random-effects meta-analysis over sites of every paired comparison.

For each (metric, method, baseline), the per-site differences and their standard errors of ``comparisons.csv``
(the site's paired bootstrap; DeLong's SE for AUROC) go to :func:`medfed.stats.meta.meta_analysis`; one row per
model (``fixed``, ``dl``, ``pm``). Sites without a difference or a standard error (suppressed, too few cases,
undefined) are left out and named in ``sites_left_out``; with fewer than 2 sites left there is no row but a note.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from medfed.fl.names import POOLED
from medfed.stats.meta import meta_analysis, usable
from medfed.stats.noninferiority import equivalence_p, noninferiority_p

META_COLUMNS = ("metric", "method", "baseline", "model", "estimate", "se", "ci_low", "ci_high", "pi_low", "pi_high",
                "tau2", "i2", "i2_low", "i2_high", "q", "q_p", "p_value", "n_sites", "ci_method", "margin",
                "p_noninferiority", "p_equivalence", "sites", "sites_left_out", "note")


def _margin_tests(result: dict, margin: tuple[float, bool] | None) -> dict[str, float]:
    """Non-inferiority and TOST P of a pooled estimate (t with k - 1 df for HKSJ rows, as its CI)."""
    if margin is None:
        return {"margin": np.nan, "p_noninferiority": np.nan, "p_equivalence": np.nan}
    delta, higher = margin
    df = result["n_sites"] - 1 if result["ci_method"] == "hksj" else None
    return {"margin": delta, "p_equivalence": equivalence_p(result["estimate"], result["se"], delta, df),
            "p_noninferiority": noninferiority_p(result["estimate"], result["se"], delta, higher, df)}


def _pooled_row(comparisons: pd.DataFrame, metric: str, method: str, baseline: str, base: dict, n_sites: int,
                margin: tuple[float, bool] | None) -> list[dict]:
    """Beside the meta-analysis: the pooled difference with sites as strata (``model`` ``pooled_bootstrap``; the
    report's site-stratified paired bootstrap on all shown sites' cases), when the report computed one."""
    match = comparisons[(comparisons["site"] == POOLED) & (comparisons["metric"] == metric)
                        & (comparisons["method"] == method) & (comparisons["baseline"] == baseline)]
    if match.empty or not np.isfinite(float(match["difference"].iloc[0])):
        return []
    row = match.iloc[0]
    result = {"model": "pooled_bootstrap", "estimate": float(row["difference"]), "se": float(row["se"]),
              "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"]), "p_value": float(row["p_value"]),
              "n_sites": n_sites, "ci_method": "site-stratified bootstrap"}
    return [{**base, **result, **_margin_tests({**result, "ci_method": "normal"}, margin), "note": ""}]


def meta_analysis_table(comparisons: pd.DataFrame, ci_method: str = "hksj", confidence: float = 0.95,
                        margins: Mapping[str, tuple[float, bool]] | None = None) -> pd.DataFrame:
    """One row per (metric, method, baseline, model) over the sites of ``comparisons`` (the pooled row excluded);
    ``margins`` (metric -> (delta, higher is better)) adds non-inferiority and equivalence P-values."""
    margins = margins or {}
    rows = []
    sites = comparisons[comparisons["site"] != POOLED] if len(comparisons) else comparisons
    for (metric, method, baseline), group in sites.groupby(["metric", "method", "baseline"], sort=False):
        effects = group["difference"].to_numpy(dtype=float)
        ses = group["se"].to_numpy(dtype=float)
        keep = usable(effects, ses)
        names = group["site"].astype(str).to_numpy()
        base = {"metric": metric, "method": method, "baseline": baseline, "sites": ";".join(names[keep]),
                "sites_left_out": ";".join(names[~keep])}
        results = meta_analysis(effects, ses, ci_method=ci_method, confidence=confidence)
        if not results:
            rows.append({**base, "model": "", "n_sites": int(keep.sum()),
                         "note": f"{int(keep.sum())} site(s) with a difference and a standard error: no meta-analysis "
                                 "(needs 2)"})
            continue
        rows += [{**base, **result.as_dict(), **_margin_tests(result.as_dict(), margins.get(metric)), "note": ""}
                 for result in results]
        rows += _pooled_row(comparisons, metric, method, baseline, base, int(keep.sum()), margins.get(metric))
    table = pd.DataFrame(rows, columns=list(META_COLUMNS))
    return table.replace({np.inf: np.nan})


def leave_one_out(comparisons: pd.DataFrame, metric: str, method: str, baseline: str, ci_method: str = "hksj",
                  confidence: float = 0.95) -> pd.DataFrame:
    """The DerSimonian-Laird estimate and CI of one comparison with each usable site left out in turn: does one
    site drive the result? Columns ``site_left_out, estimate, ci_low, ci_high, p_value, n_sites``."""
    part = comparisons[(comparisons["site"] != POOLED) & (comparisons["metric"] == metric)
                       & (comparisons["method"] == method) & (comparisons["baseline"] == baseline)]
    effects, ses = part["difference"].to_numpy(dtype=float), part["se"].to_numpy(dtype=float)
    keep = usable(effects, ses)
    names, effects, ses = part["site"].astype(str).to_numpy()[keep], effects[keep], ses[keep]
    rows = []
    for i, name in enumerate(names):
        others = np.arange(len(names)) != i
        results = {r.model: r for r in meta_analysis(effects[others], ses[others], ci_method=ci_method,
                                                     confidence=confidence, models=("dl",))}
        if "dl" in results:
            r = results["dl"]
            rows.append({"site_left_out": name, "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high,
                         "p_value": r.p_value, "n_sites": r.n_sites})
    return pd.DataFrame(rows, columns=["site_left_out", "estimate", "ci_low", "ci_high", "p_value", "n_sites"])
