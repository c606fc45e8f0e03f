"""Read what ``medfed run`` wrote into a run directory (the report's only input), and merge run directories.

Used files: ``config.yaml`` (task kind), ``sites.json`` (suppressed site summaries, min_count),
``predictions/<method>.csv`` (per-case records), ``runs/<method>/rounds.jsonl`` (learning curves) and
``metrics.csv`` (pooled metrics). Only the model a site would deploy under each method is reported: the
global model, or for local-only the site's own model.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medfed.errors import MedfedError
from medfed.fl.names import deployed_model


@dataclass
class RunData:
    """One experiment's results, or several merged (``name`` then joins their names)."""

    name: str
    paths: list[Path]
    task_kind: str
    methods: list[str]
    #: per method: the deployed model's per-case records (all splits)
    records: dict[str, pd.DataFrame]
    #: per method: the parsed rounds.jsonl entries
    rounds: dict[str, list[dict[str, Any]]]
    #: per site: the site summary of sites.json (counts already suppressed) with ``min_count``
    sites: list[dict[str, Any]]
    #: metrics.csv rows of the deployed models (for the pooled column)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: extra metrics the run asks to compare between methods (``report_compare`` in config.yaml)
    compare: list[str] = field(default_factory=list)
    #: non-inferiority / equivalence margins of the run's config (``report.margins``): metric -> delta
    margins: dict[str, float] = field(default_factory=dict)

    @property
    def site_names(self) -> list[str]:
        return [s["site"] for s in self.sites]

    def min_count(self, site: str) -> int:
        return int(next(s for s in self.sites if s["site"] == site).get("min_count", 5))


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise MedfedError(f"{path}: missing ({what}); is this a run directory written by `medfed run`?")
    return path


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise MedfedError(f"{path}: unreadable CSV ({err})") from err


def _read_rounds(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rounds = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rounds.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise MedfedError(f"{path}: line {number} is not JSON ({err.msg})") from err
    return rounds


def load_run(path: Path | str) -> RunData:
    """Read one run directory; a missing or unreadable file is a :class:`MedfedError` naming it."""
    path = Path(path)
    if not path.is_dir():
        raise MedfedError(f"{path}: not a directory (give the run directory, e.g. reports/demo_chest_xray)")
    config = yaml.safe_load(_need(path / "config.yaml", "the resolved experiment config").read_text()) or {}
    kind = str((config.get("task") or {}).get("kind", ""))
    if not kind:
        raise MedfedError(f"{path / 'config.yaml'}: no task.kind")
    sites = json.loads(_need(path / "sites.json", "site summaries; re-run `medfed run` to write it").read_text())
    predictions = _need(path / "predictions", "per-case predictions")
    labels = [m.get("name") or m.get("strategy") if isinstance(m, dict) else str(m) for m in config.get("methods", [])]
    files = sorted(predictions.glob("*.csv"))
    if not files:
        raise MedfedError(f"{predictions}: no predictions (did every method stop early?)")
    by_name = {f.stem: f for f in files}
    order = [m for m in labels if m in by_name] + [m for m in by_name if m not in labels]
    records, rounds = {}, {}
    for method in order:
        frame = _read_csv(by_name[method])
        missing = {"case_id", "site", "split", "model"} - set(frame.columns)
        if missing:
            raise MedfedError(f"{by_name[method]}: missing column(s) {', '.join(sorted(missing))}")
        model = deployed_model(frame["model"].astype(str).unique().tolist())
        records[method] = frame[frame["model"].astype(str) == model].reset_index(drop=True)
        rounds[method] = _read_rounds(path / "runs" / method / "rounds.jsonl")
    metrics = _read_csv(path / "metrics.csv") if (path / "metrics.csv").is_file() else pd.DataFrame()
    if len(metrics):
        deployed = {m: deployed_model(g["model"].astype(str).unique().tolist()) for m, g in metrics.groupby("method")}
        metrics = metrics[metrics["model"].astype(str) == metrics["method"].map(deployed)].reset_index(drop=True)
    margins = {str(k): float(v) for k, v in ((config.get("report") or {}).get("margins") or {}).items()}
    return RunData(str(config.get("name", path.name)), [path], kind, order, records, rounds, sites, metrics,
                   [str(m) for m in config.get("report_compare", [])], margins)


def merge_runs(runs: list[RunData]) -> RunData:
    """Several runs on the same federation and task as one: methods side by side (a label used by two runs
    becomes ``<experiment>/<label>``). Different tasks or sites are an error."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    for run in runs[1:]:
        if run.task_kind != first.task_kind:
            raise MedfedError(f"{run.paths[0]}: task {run.task_kind!r} differs from {first.paths[0]} ({first.task_kind!r})")
        if run.site_names != first.site_names:
            raise MedfedError(
                f"{run.paths[0]}: sites {run.site_names} differ from {first.paths[0]} ({first.site_names}); "
                "only runs on the same federation can share a report"
            )
    counts = Counter(method for run in runs for method in run.methods)
    methods, records, rounds, metrics = [], {}, {}, []
    for run in runs:
        labels = {m: m if counts[m] == 1 else f"{run.name}/{m}" for m in run.methods}
        for method, label in labels.items():
            methods.append(label)
            records[label] = run.records[method]
            rounds[label] = run.rounds[method]
        if len(run.metrics):
            metrics.append(run.metrics.assign(method=run.metrics["method"].map(labels)))
    return RunData(
        " + ".join(r.name for r in runs), [p for r in runs for p in r.paths], first.task_kind, methods, records, rounds,
        first.sites, pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(), first.compare,
        {k: v for run in runs for k, v in run.margins.items()},
    )
