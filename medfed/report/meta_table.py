"""``meta_analysis.csv``: a random-effects meta-analysis over sites of every paired comparison.

For each (metric, method, baseline), the per-site differences and their standard errors of ``comparisons.csv``
(the site's paired bootstrap; DeLong's SE for AUROC) go to :func:`medfed.stats.meta.meta_analysis`; one row per
model (``fixed``, ``dl``, ``pm``). Sites without a difference or a standard error (suppressed, too few cases,
undefined) are left out and named in ``sites_left_out``; with fewer than 2 sites left there is no row but a note.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medfed.fl.names import POOLED
from medfed.stats.meta import meta_analysis, usable

META_COLUMNS = ("metric", "method", "baseline", "model", "estimate", "se", "ci_low", "ci_high", "pi_low", "pi_high",
                "tau2", "i2", "i2_low", "i2_high", "q", "q_p", "p_value", "n_sites", "ci_method", "sites",
                "sites_left_out", "note")


def meta_analysis_table(comparisons: pd.DataFrame, ci_method: str = "hksj", confidence: float = 0.95) -> pd.DataFrame:
    """One row per (metric, method, baseline, model) over the sites of ``comparisons`` (the pooled row excluded)."""
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
        rows += [{**base, **result.as_dict(), "note": ""} for result in results]
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
