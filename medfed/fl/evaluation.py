"""Evaluate models on sites' splits: per-case records in, per-site and pooled metric rows out.

Each (model, site) pair is calibrated on that site's validation records (a hospital sets its own
operating point on its own data; tasks with a fixed rule ignore it), then predictions are made on every
split. Pooled metrics concatenate the records of all sites. Metric values computed on fewer than the
site's ``min_count`` cases are suppressed (value empty, ``suppressed`` true, ``n_cases`` shown as
``<min_count``): the small-cell privacy rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from medfed.fl.names import POOLED
from medfed.fl.weights import set_weights
from medfed.sites.base import Site
from medfed.stats import suppress_count
from medfed.stats.disclosure import is_primary, pool_members, secondary_marker
from medfed.tasks.base import Task

SPLITS = ("val", "test")
#: key of a round log's ``eval`` listing, per split, the sites left out of the pooled value (suppressed counts)
POOLED_LEFT_OUT = "pooled_left_out"
METRIC_COLUMNS = ("method", "model", "site", "split", "metric", "value", "n_cases", "suppressed")


class EvalDatasets:
    """Evaluation datasets of every site and split, built once (inside each site)."""

    def __init__(self, task: Task, sites: Sequence[Site], splits: Sequence[str] = SPLITS) -> None:
        self.splits = tuple(splits)
        self._data: dict[tuple[str, str], Dataset] = {
            (site.name, split): task.eval_dataset(site, split) for site in sites for split in splits
        }

    def __getitem__(self, key: tuple[str, str]) -> Dataset:
        return self._data[key]


def evaluate_on_site(
    task: Task, model: nn.Module, site: str, datasets: EvalDatasets
) -> pd.DataFrame:
    """Records of ``model`` on every split of ``site`` with ``prediction`` and the ``threshold`` used."""
    records = {split: task.evaluate(model, datasets[site, split]) for split in datasets.splits}
    val = records.get("val")
    threshold = task.calibrate(val) if val is not None and len(val) else None
    parts = [
        task.predict(frame, threshold).assign(site=site, split=split, threshold=threshold)
        for split, frame in records.items()
    ]
    return pd.concat(parts, ignore_index=True)


def evaluate_models(
    task: Task,
    model: nn.Module,
    weights: Mapping[str, np.ndarray],
    sites: Sequence[str],
    datasets: EvalDatasets,
    progress: Any = None,
) -> pd.DataFrame:
    """Every named model (flat weights) on every site: the cross-site matrix as records."""
    frames = []
    for name, vector in weights.items():
        set_weights(model, vector)
        for site in sites:
            frames.append(evaluate_on_site(task, model, site, datasets).assign(model=name))
            if progress is not None:
                progress.update(1)
    return pd.concat(frames, ignore_index=True)


def _rows(
    task: Task, records: pd.DataFrame, min_count: int, withhold: bool = False, **keys: Any
) -> list[dict[str, Any]]:
    """Rows of one (site or pool, split): values hidden below ``min_count`` or when ``withhold``; a withheld
    pool's count is hidden too (rule 2 of :mod:`medfed.stats.disclosure`: it is the sum of the sites' counts)."""
    n = int(records["case_id"].nunique())
    if n == 0:
        return []
    suppressed = n < min_count or withhold
    shown_n = suppress_count(n, min_count)
    if withhold and not is_primary(n, min_count):
        shown_n = secondary_marker(min_count)
    return [
        {**keys, "metric": metric, "value": float("nan") if suppressed else value, "n_cases": shown_n,
         "suppressed": suppressed}
        for metric, value in task.metrics(records).items()
    ]


def metric_table(
    task: Task, records: pd.DataFrame, method: str, min_counts: Mapping[str, int], pooled_min_count: int
) -> pd.DataFrame:
    """Long table: one row per (model, site or ``pooled``, split, metric).

    A pooled value and its count are withheld when a site of its group is suppressed (rule 3 of
    :mod:`medfed.stats.disclosure`): with the other sites' exact values and counts they would reveal the small
    site's result and count by subtraction.
    """
    rows: list[dict[str, Any]] = []
    for (model, split), group in records.groupby(["model", "split"], sort=False):
        small_site = False
        for site, site_records in group.groupby("site", sort=False):
            site_min = min_counts.get(str(site), pooled_min_count)
            small_site |= 0 < site_records["case_id"].nunique() < site_min
            rows += _rows(task, site_records, site_min, method=method, model=model, site=site, split=split)
        rows += _rows(task, group, pooled_min_count, small_site, method=method, model=model, site=POOLED, split=split)
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def metrics_by_site(
    task: Task, records: pd.DataFrame, min_counts: Mapping[str, int]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{site: {split: {metric: value or None if suppressed}}}`` for per-round logs."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for (site, split), group in records.groupby(["site", "split"], sort=False):
        n = int(group["case_id"].nunique())
        if n == 0:
            continue
        values = task.metrics(group)
        keep = n >= min_counts.get(str(site), 1)
        out.setdefault(str(site), {})[str(split)] = {
            k: (None if not keep or not np.isfinite(v) else round(float(v), 6)) for k, v in values.items()
        }
    return out


def pooled_round_metrics(
    task: Task, records: pd.DataFrame, min_counts: Mapping[str, int]
) -> tuple[dict[str, dict[str, float | None]], dict[str, list[str]]]:
    """Per-round pooled metrics ``{split: {metric: value}}`` over the sites whose count of that split is shown,
    and the sites left out per split (rule 3 of :mod:`medfed.stats.disclosure`: a site with a suppressed count
    never enters a published pooled value, so the pool cannot give its result away)."""
    metrics: dict[str, dict[str, float | None]] = {}
    left_out: dict[str, list[str]] = {}
    for split, group in records.groupby("split", sort=False):
        counts = group.groupby("site", sort=True)["case_id"].nunique()
        keep, dropped = pool_members({str(s): int(n) for s, n in counts.items()}, min_counts)
        if dropped:
            left_out[str(split)] = dropped
        pool = group[group["site"].astype(str).isin(keep)].assign(site=POOLED)
        if len(pool):
            pool_min = max((int(min_counts.get(s, 1)) for s in keep), default=1)
            metrics.update(metrics_by_site(task, pool, {POOLED: pool_min}).get(POOLED, {}))
    return metrics, left_out
