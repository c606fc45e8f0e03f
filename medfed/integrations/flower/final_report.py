"""After a Flower run: the final models' evaluation replies of every site turned into medfed's result tables
(``predictions/<method>.csv``, this method's rows of ``metrics.csv``, ``summary.csv``), written by the run ledger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medfed.fl.evaluation import METRIC_COLUMNS, metric_table
from medfed.fl.ledger import RunDirectory
from medfed.fl.names import OWN_MODEL, POOLED
from medfed.fl.strategies.local_only import local_key
from medfed.integrations.flower import messages as wire
from medfed.integrations.flower.settings import (  # noqa: F401 - re-exported
    _POLL_SECONDS,
    RUN_CONFIG,
    ServerSettings,
)

if TYPE_CHECKING:
    from medfed.integrations.flower.server import MedfedStrategy


def _rows_by_split(rows: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """``{split: {metric: value or None}}`` from a site's metric rows (as ``metrics_by_site`` logs them)."""
    out: dict[str, dict[str, float | None]] = {}
    for row in rows.itertuples(index=False):
        value = float(row.value)
        keep = not bool(row.suppressed) and np.isfinite(value)
        out.setdefault(str(row.split), {})[str(row.metric)] = round(value, 6) if keep else None
    return out


class _RemoteSite:
    """A site as its node described it (name, ``min_count``, suppressed summary), for ``sites.csv``/``.json``."""

    def __init__(self, info: wire.SiteReply) -> None:
        self.name, self.min_count, self._summary = info.name, info.min_count, info.summary

    def summary(self) -> dict[str, Any]:
        return dict(self._summary)


def write_final_report(strategy: MedfedStrategy, run_dir: RunDirectory, methods: Sequence[str], names: Sequence[str],
                       got: Mapping[str, wire.EvalReply]) -> pd.DataFrame:
    """The files ``medfed run`` writes after training one method, through the run ledger: ``predictions/<method>.csv``
    (when every site sent its per-case records), this method's rows of ``metrics.csv`` (merged with the other
    methods' in experiment order) and ``summary.csv``; returns this method's metric rows."""
    task, label, sites = strategy.task, strategy.name, strategy.clients
    min_counts = strategy.min_counts()
    pooled_min = max(min_counts.values(), default=1)
    records = None
    if sites and all(s in got and got[s].kind == wire.EVAL_RECORDS for s in sites):
        records = pd.concat([got[s].tables[i].assign(model=name) for i, name in enumerate(names) for s in sites],
                            ignore_index=True)
        if any(m == local_key(n) for m in names for n in sites):
            own = pd.concat([records[(records["model"] == local_key(n)) & (records["site"] == n)] for n in sites])
            records = pd.concat([records, own.assign(model=OWN_MODEL)], ignore_index=True)
        metrics = metric_table(task, records, label, min_counts, pooled_min)
    else:  # some site kept its case records (or did not answer): per-site rows only, no pooled value
        parts = []
        for i, name in enumerate(names):
            for site in sites:
                if site not in got:
                    continue
                table = got[site].tables[i]
                if got[site].kind == wire.EVAL_RECORDS:
                    table = metric_table(task, table.assign(model=name), label, {site: min_counts.get(site, 1)},
                                         min_counts.get(site, 1))
                    table = table[table["site"] != POOLED]
                parts.append(table.assign(method=label, model=name))
        metrics = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(METRIC_COLUMNS))
        own_rows = [metrics[(metrics["model"] == local_key(n)) & (metrics["site"] == n)] for n in sites]
        if any(len(r) for r in own_rows):
            metrics = pd.concat([metrics, pd.concat(own_rows).assign(model=OWN_MODEL)], ignore_index=True)
        # metric_table's order: model, then split (as first met), then site; metrics in their order within
        models = {m: i for i, m in enumerate([*names, OWN_MODEL])}
        splits = {s: i for i, s in enumerate(dict.fromkeys(metrics["split"]))} if len(metrics) else {}
        order = np.lexsort((metrics["site"].map({s: i for i, s in enumerate(sites)}).to_numpy(),
                            metrics["split"].map(splits).to_numpy(), metrics["model"].map(models).to_numpy()))
        metrics = metrics.iloc[order].reset_index(drop=True)
    run_dir.write_predictions(label, records)
    run_dir.merge_method_results(label, metrics, methods, task.primary_metric)
    return metrics
