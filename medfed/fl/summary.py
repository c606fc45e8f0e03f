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
    over the seeds with a value, ``"0.812 ± 0.013"`` (the mean alone for one seed), from the unrounded values; a
    site suppressed in any seed keeps its suppression marker."""
    rows = metrics[(metrics["metric"] == metric) & (metrics["split"] == split)]
    cells: dict[str, dict[str, str]] = {}
    for method, group in rows.groupby("method", sort=False):
        deployed = group[group["model"] == deployed_model(group["model"].unique().tolist())]
        for site, part in deployed.groupby("site", sort=False):
            hidden = part[part["suppressed"].astype(bool)]
            values = pd.to_numeric(part["value"], errors="coerce").dropna()
            if len(hidden):
                cell = _cell(hidden.iloc[0])
            elif len(values):
                cell = f"{values.mean():.3f}" + (f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else "")
            else:
                cell = "nan"
            cells.setdefault(str(method), {})[str(site)] = cell
    table = pd.DataFrame(cells)
    sites = [s for s in table.index if s != POOLED] + ([POOLED] if POOLED in table.index else [])
    return table.loc[sites].fillna("")
