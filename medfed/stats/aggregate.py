"""Summaries of one metric across sites: a federation is judged by its worst site as well as its mean."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def across_sites(
    sites: Sequence[str], values: Sequence[float], n_cases: Sequence[int], higher_is_better: bool = True
) -> dict[str, float | str | int]:
    """Mean and median over sites (each site counts once: the site-weighted mean), the worst site, and the
    case-weighted mean ``Σ n_s v_s / Σ n_s``. Sites with an undefined value are left out (``n_sites``)."""
    values_arr = np.asarray(values, dtype=np.float64)
    weights = np.asarray(n_cases, dtype=np.float64)
    keep = np.isfinite(values_arr)
    kept_sites = [s for s, k in zip(sites, keep, strict=True) if k]
    if not kept_sites:
        nan = float("nan")
        return {"n_sites": 0, "site_mean": nan, "site_median": nan, "worst": nan, "worst_site": "",
                "case_weighted_mean": nan}
    v, w = values_arr[keep], weights[keep]
    worst = int(np.argmin(v) if higher_is_better else np.argmax(v))
    return {
        "n_sites": len(kept_sites),
        "site_mean": float(v.mean()),
        "site_median": float(np.median(v)),
        "worst": float(v[worst]),
        "worst_site": kept_sites[worst],
        "case_weighted_mean": float(np.sum(w * v) / np.sum(w)) if w.sum() > 0 else float("nan"),
    }
