"""Scenario sweeps: one experiment config run once per value of a parameter, with a combined table.

An experiment config with a ``sweep`` block is a family of experiments:

.. code-block:: yaml

    sweep:
      parameter: corruption                      # the column of the combined table
      values: corruptions                        # a list, or ``corruptions`` (the 16 endoscopy corruptions)
      set: [site_conditions.site-6.corruption.type, task.test_corruption.types]   # dotted paths set to each value

Each value ``v`` gives the experiment ``<name>-<v>`` (its config written to ``<out>/<name>/configs/<v>.yaml``,
run into ``<out>/<name>/<name>-<v>/``); :func:`combine` then stacks their report rows (``per_site.csv``:
estimate and CI per site, method and metric) into ``<out>/<name>/sweep.csv`` and ``sweep.md`` (pooled primary
metric, precision and F1 with CIs).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfed.config import read_yaml, resolve_path, validate_model
from medfed.errors import ConfigError
from medfed.fl.config import resolve_init
from medfed.io import atomic_write_text
from medfed.corruptions import CORRUPTION_NAMES


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parameter: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    values: list[int | float | str] = Field(min_length=1)
    set: list[str] = Field(min_length=1)

    @field_validator("values", mode="before")
    @classmethod
    def _named_lists(cls, value: Any) -> Any:
        return list(CORRUPTION_NAMES) if value == "corruptions" else value


def _set_path(data: dict[str, Any], path: str, value: Any, source: str) -> None:
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        if not isinstance(node, dict) or key not in node or not isinstance(node[key], dict):
            raise ConfigError(f"{source}: sweep.set path {path!r}: no mapping {key!r} in the experiment config")
        node = node[key]
    node[keys[-1]] = value


def expand(config_path: Path, out_root: Path) -> tuple[SweepConfig, str, list[tuple[str, Path]]] | None:
    """``None`` for a plain experiment config; else ``(sweep, name, [(value, variant config path)])``."""
    raw = read_yaml(config_path)
    if "sweep" not in raw:
        return None
    sweep = validate_model(SweepConfig, raw.pop("sweep"), f"{config_path}: sweep")
    name = str(raw.get("name", config_path.stem))
    folder = out_root / name / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    federation = str(raw.get("federation", ""))
    if federation and not federation.startswith("demo:"):  # variants live elsewhere: make paths absolute
        raw["federation"] = str(resolve_path(federation, config_path.parent))
    if isinstance(raw.get("partition"), dict) and raw["partition"].get("file"):
        raw["partition"]["file"] = str(resolve_path(str(raw["partition"]["file"]), config_path.parent))
    model = raw.get("task", {}).get("model") if isinstance(raw.get("task"), dict) else None
    if isinstance(model, dict) and model.get("init") is not None:
        model["init"] = resolve_init(model["init"], config_path.parent)
    for method in raw.get("methods", []):
        if isinstance(method, dict) and method.get("init") is not None:
            method["init"] = resolve_init(method["init"], config_path.parent)
    variants = []
    for value in sweep.values:
        data = copy.deepcopy(raw)
        data["name"] = f"{name}-{value}"
        for path in sweep.set:
            _set_path(data, path, value, str(config_path))
        target = folder / f"{value}.yaml"
        atomic_write_text(target, yaml.safe_dump(data, sort_keys=False))
        variants.append((str(value), target))
    return sweep, name, variants


def combine(sweep: SweepConfig, folder: Path, runs: Sequence[tuple[str, Path]]) -> pd.DataFrame:
    """Stack the runs' ``per_site.csv`` with the sweep value as the first column; write ``sweep.csv``/``.md``."""
    frames = [pd.read_csv(run / "per_site.csv").assign(**{sweep.parameter: value})
              for value, run in runs if (run / "per_site.csv").is_file()]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    table = table[[sweep.parameter, *[c for c in table.columns if c != sweep.parameter]]]
    atomic_write_text(folder / "sweep.csv", table.to_csv(index=False))
    atomic_write_text(folder / "sweep.md", markdown_table(table, sweep.parameter, metrics=table_metrics(runs)))
    return table


def table_metrics(runs: Sequence[tuple[str, Path]]) -> tuple[str, ...]:
    """The runs' primary metric (from ``summary.json``), then precision and F1."""
    for _, run in runs:
        summary = run / "summary.json"
        if summary.is_file():
            primary = json.loads(summary.read_text()).get("primary_metric", "auroc")
            return tuple(dict.fromkeys([primary, "precision", "f1"]))
    return ("precision", "f1")


def markdown_table(table: pd.DataFrame, parameter: str, site: str = "pooled",
                   metrics: Sequence[str] = ("precision", "f1")) -> str:
    """Rows: sweep values; columns: method x metric as ``estimate [ci_low, ci_high]`` on ``site``."""
    rows = table[(table["site"] == site) & table["metric"].isin(metrics)]
    methods = list(dict.fromkeys(rows["method"]))
    header = [parameter] + [f"{m} {metric}" for metric in metrics for m in methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for value, group in rows.groupby(parameter, sort=False):
        cells = [str(value)]
        for metric in metrics:
            for method in methods:
                hit = group[(group["method"] == method) & (group["metric"] == metric)]
                if hit.empty or pd.isna(hit["estimate"].iloc[0]):
                    cells.append("")
                    continue
                r = hit.iloc[0]
                ci = f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if pd.notna(r["ci_low"]) else ""
                cells.append(f"{r['estimate']:.3f}{ci}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
