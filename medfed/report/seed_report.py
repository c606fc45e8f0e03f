"""The report of a multi-seed run directory (:mod:`medfed.fl.multiseed`): a full report per seed in ``seed-<s>/``,
and at the top the across-seed files:

- ``per_site.csv`` and ``comparisons.csv``: every seed's tables with a leading ``seed`` column (methods paired within
  seed and site);
- ``across_seeds.csv``: the seed-averaged comparisons (:func:`medfed.report.seeds.across_seeds`);
- ``meta_analysis.csv``: the random-effects meta-analysis over sites of the seed-averaged differences;
- ``summary.json``, ``summary.md`` and ``report.html`` (with ``plots/forest_*.svg``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfed.fl.names import POOLED
from medfed.io import atomic_write_text
from medfed.report import plots
from medfed.report.analysis import Analysis, ReportOptions
from medfed.report.formatting import digits_for, fmt, fmt_ci, fmt_p, json_safe
from medfed.report.html import MODEL_NAMES, _environment, forest_file_name
from medfed.report.meta_table import meta_analysis_table
from medfed.report.seeds import across_seeds
from medfed.stats import CORRECTIONS


def _with_seed(frames: dict[int, pd.DataFrame]) -> pd.DataFrame:
    parts = [frame.assign(seed=seed)[["seed", *frame.columns]] for seed, frame in frames.items() if len(frame)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6g")


def seed_tables(analyses: dict[int, Analysis]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(per_site, comparisons, across_seeds, meta_analysis)`` of the seeds' analyses."""
    first = analyses[min(analyses)]
    per_site = _with_seed({s: a.per_site for s, a in analyses.items()})
    comparisons = _with_seed({s: a.comparisons for s, a in analyses.items()})
    across = across_seeds(analyses)
    meta = meta_analysis_table(across, first.options.meta_ci, first.options.confidence, first.margins)
    return per_site, comparisons, across, meta


def _estimate_rows(per_site: pd.DataFrame, primary: str, methods: list[str]) -> list[dict[str, Any]]:
    """Primary metric per site: mean ± SD over seeds of each method's estimate."""
    rows = []
    part = per_site[per_site["metric"] == primary]
    for site, group in part.groupby("site", sort=False):
        cells = []
        for method in methods:
            values = group.loc[group["method"] == method, "estimate"].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            sd = f" ± {np.std(values, ddof=1):.3f}" if values.size > 1 else ""
            cells.append(f"{values.mean():.3f}{sd}" if values.size else "–")
        rows.append({"site": site, "cells": cells})
    return rows


def _meta_sections(across: pd.DataFrame, meta: pd.DataFrame, labels: dict[str, Any], confidence: float
                   ) -> list[dict[str, Any]]:
    sections = []
    for (metric, method, baseline), rows in meta.groupby(["metric", "method", "baseline"], sort=False):
        spec = labels.get(metric)
        digits = digits_for(spec.unit if spec else "")
        title = f"{method} vs {baseline} — {spec.label if spec else metric}"
        fitted = rows[rows["model"].isin(list(MODEL_NAMES))]
        if fitted.empty:
            sections.append({"title": title, "svg": None, "note": rows["note"].iloc[0], "rows": [], "file": ""})
            continue
        sites = across[(across["metric"] == metric) & (across["method"] == method) & (across["baseline"] == baseline)
                       & across["site"].isin(fitted["sites"].iloc[0].split(";"))]
        svg = plots.meta_forest_plot(sites, fitted.set_index("model").loc["dl"], spec.label if spec else metric,
                                     confidence)
        model_rows = [{"model": MODEL_NAMES[r.model], "estimate": fmt_ci(r.estimate, r.ci_low, r.ci_high, digits),
                       "p": fmt_p(r.p_value),
                       "pi": f"{fmt(r.pi_low, digits)} to {fmt(r.pi_high, digits)}" if np.isfinite(r.pi_low) else "–",
                       "i2": f"{r.i2:.0%}" if np.isfinite(r.i2) else "–", "tau2": fmt(r.tau2, 4)}
                      for r in fitted.itertuples()]
        sections.append({"title": title, "svg": svg, "note": "", "rows": model_rows,
                         "file": forest_file_name(metric, method, baseline)})
    return sections


def write_seed_report(run_dir: Path, seed_dirs: dict[int, Path], out: Path, options: ReportOptions | None = None
                      ) -> tuple[dict[int, Analysis], pd.DataFrame]:
    """Write every seed's report into its ``seed-<s>/`` folder, then the across-seed files into ``out``; returns the
    seeds' analyses and the across-seed table."""
    from medfed.report.writer import write_report

    options = options or ReportOptions()
    analyses = {seed: write_report([path], None, options).analysis for seed, path in sorted(seed_dirs.items())}
    per_site, comparisons, across, meta = seed_tables(analyses)
    first = analyses[min(analyses)]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "per_site.csv", _csv(per_site))
    atomic_write_text(out / "comparisons.csv", _csv(comparisons))
    atomic_write_text(out / "across_seeds.csv", _csv(across))
    atomic_write_text(out / "meta_analysis.csv", _csv(meta))
    sites = across[across["site"] != POOLED]
    significant = sites[sites["p_adjusted"].astype(float) < 1 - options.confidence]
    atomic_write_text(out / "summary.json", json.dumps(json_safe({
        "experiment": first.run.name, "seeds": sorted(analyses), "task": first.run.task_kind,
        "primary_metric": first.primary, "methods": first.run.methods, "baselines": first.baselines,
        "across_seeds": "seeds as replicates inside each site's estimate (paired bootstrap of the seed-averaged "
                        "difference over test cases)",
        "n_comparisons_tested": int(sites["p_value"].notna().sum()),
        "significant_comparisons": significant.to_dict(orient="records"),
        "seed_reports": {str(s): str(p / "report.html") for s, p in sorted(seed_dirs.items())},
    }), indent=1))
    labels = {s.name: s for s in first.specs}
    sections = _meta_sections(across, meta, labels, options.confidence)
    plots_dir = out / "plots"
    for stale in plots_dir.glob("forest_*.svg"):
        stale.unlink()
    for section in sections:
        if section["svg"]:
            plots_dir.mkdir(exist_ok=True)
            atomic_write_text(plots_dir / section["file"], section["svg"])
    rows = [{"site": r.site, "comparison": f"{r.method} vs {r.baseline}", "metric": labels[r.metric].label
             if r.metric in labels else r.metric,
             "difference": fmt_ci(r.difference, r.ci_low, r.ci_high, digits_for(r.unit if isinstance(r.unit, str) else "")),
             "p": fmt_p(r.p_value), "p_adjusted": fmt_p(r.p_adjusted),
             "significant": bool(np.isfinite(r.p_adjusted) and r.p_adjusted < 1 - options.confidence),
             "seed_sd": fmt(r.seed_sd), "above": f"{r.seeds_above_zero:.0f} of {r.n_seeds}" if np.isfinite(r.seeds_above_zero) else "–",
             "cases": r.case_sets if isinstance(r.case_sets, str) else "", "note": r.note}
            for r in across.itertuples()]
    markdown = ["| site | comparison | metric | difference [CI] | P | P corrected | SD over seeds | seeds > 0 |",
                "|---|---|---|---|---|---|---|---|"]
    markdown += [f"| {r['site']} | {r['comparison']} | {r['metric']} | {r['difference']} | {r['p']} | {r['p_adjusted']} "
                 f"| {r['seed_sd']} | {r['above']} |" for r in rows]
    atomic_write_text(out / "summary.md", f"# {first.run.name}: across seeds {sorted(analyses)}\n\n"
                      + "\n".join(markdown) + "\n")
    html = _environment().get_template("seeds.html.j2").render(
        title=first.run.name, seeds=sorted(analyses), methods=first.run.methods, primary=labels[first.primary].label,
        estimate_rows=_estimate_rows(per_site, first.primary, first.run.methods), rows=rows, sections=sections,
        confidence_pct=f"{options.confidence:.0%}", correction=CORRECTIONS[options.correction],
        resamples=options.n_resamples,
        seed_links=[{"seed": s, "href": f"{p.relative_to(out) if p.is_relative_to(out) else p}/report.html"}
                    for s, p in sorted(seed_dirs.items())])
    atomic_write_text(out / "report.html", html)
    return analyses, across


__all__ = ["seed_tables", "write_seed_report"]
