"""The one-screen summary: each site's test score under each method, with the model that site would deploy."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from medfed.fl.names import OWN_MODEL, POOLED, deployed_model

__all__ = ["OWN_MODEL", "deployed_model", "seed_summary_table", "summary_table"]


def summary_table(metrics: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Rows = sites then ``pooled``; columns = methods; cells = ``metric`` on ``split`` (``<n`` if suppressed)."""
    rows = metrics[(metrics["metric"] == metric) & (metrics["split"] == split)]
    cells: dict[str, dict[str, str]] = {}
    for method, group in rows.groupby("method", sort=False):
        model = deployed_model(group["model"].unique().tolist())
        for _, row in group[group["model"] == model].iterrows():
            cells.setdefault(str(method), {})[str(row["site"])] = _cell(row)
    table = pd.DataFrame(cells)
    sites = [s for s in table.index if s != POOLED] + ([POOLED] if POOLED in table.index else [])
    return table.loc[sites].fillna("")


def _cell(row: Mapping) -> str:
    if bool(row["suppressed"]):
        if str(row["n_cases"]).startswith("<"):
            return f"n{row['n_cases']}"  # e.g. "n<5": too few cases to show a value
        return "withheld"  # pooled over a suppressed site: would reveal it by subtraction
    value = row["value"]
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def seed_summary_table(metrics: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """:func:`summary_table` over the seeds of ``metrics`` (a ``seed`` column): each cell is the mean and sample SD
    over the seeds with a value, ``"0.812 ± 0.013"`` (the mean alone for one seed); a site suppressed in any seed
    keeps its suppression marker."""
    tables = {seed: summary_table(group, metric, split) for seed, group in metrics.groupby("seed", sort=True)}
    first = next(iter(tables.values()))
    out = pd.DataFrame(index=first.index, columns=first.columns, dtype=object)
    for site in first.index:
        for method in first.columns:
            cells = [str(t.loc[site, method]) if site in t.index and method in t.columns else "" for t in tables.values()]
            values = [float(c) for c in cells if _is_number(c)]
            marked = [c for c in cells if c and not _is_number(c)]
            if marked:
                out.loc[site, method] = marked[0]
            elif values:
                mean = sum(values) / len(values)
                sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
                out.loc[site, method] = f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
            else:
                out.loc[site, method] = ""
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text != "nan"
