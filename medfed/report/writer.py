"""Write a report: ``report.html``, ``per_site.csv``, ``comparisons.csv``, ``meta_analysis.csv``, ``calibration.csv``,
``summary.json``, ``summary.md``, and each meta-analysis forest plot as ``plots/forest_*.svg``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medfed.errors import MedfedError
from medfed.fl.names import POOLED, read_seeds
from medfed.io import atomic_write_text
from medfed.report.analysis import Analysis, ReportOptions, analyse
from medfed.report.formatting import json_safe
from medfed.report.html import context, render_html
from medfed.report.markdown import render_markdown
from medfed.report.run_data import load_run, merge_runs
from medfed.report.seed_report import write_seed_report


@dataclass
class ReportResult:
    out: Path
    #: the analysis (of a multi-seed run: its first seed's; the across-seed tables are in ``out``)
    analysis: Analysis
    seeds: list[int] | None = None
    #: of a multi-seed run: the seed-averaged comparisons (``across_seeds.csv``)
    across_seeds: pd.DataFrame | None = None

    @property
    def html(self) -> Path:
        return self.out / "report.html"


def summary_dict(analysis: Analysis) -> dict[str, Any]:
    run = analysis.run
    comparisons = analysis.comparisons
    if len(comparisons):  # the per-site family; the pooled (site-stratified) rows are in comparisons.csv
        comparisons = comparisons[comparisons["site"] != POOLED]
    significant = comparisons[comparisons["p_adjusted"].astype(float) < 0.05] if len(comparisons) else comparisons
    return json_safe({
        "experiment": run.name, "task": run.task_kind, "primary_metric": analysis.primary,
        "methods": run.methods, "baselines": analysis.baselines, "options": asdict(analysis.options),
        "sites": [{"site": s["site"], "test_cases": s.get("splits", {}).get("test"),
                   "split_unit": s.get("split_unit"), "groups_per_split": s.get("groups_per_split"),
                   "shown": s["site"] in analysis.shown_sites} for s in run.sites],
        "aggregates": analysis.aggregates.to_dict(orient="records"), "pooled_withheld": analysis.pooled_withheld,
        "significant_comparisons": significant.to_dict(orient="records"),
        "n_comparisons_tested": int(comparisons["p_value"].notna().sum()) if len(comparisons) else 0,
        "sources": [str(p) for p in run.paths],
    })


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6g")


def write_report(
    run_dirs: list[Path | str], out: Path | str | None = None, options: ReportOptions | None = None
) -> ReportResult:
    """Analyse one run directory (or several on the same federation, merged) and write the report files into
    ``out`` (default: the run directory itself; required when merging several)."""
    if not run_dirs:
        raise MedfedError("give at least one run directory")
    if out is None:
        if len(run_dirs) > 1:
            raise MedfedError("several run directories are merged into one report: give --out for it")
        out = run_dirs[0]
    out = Path(out)
    seeded = {Path(p): seeds for p in run_dirs if (seeds := read_seeds(Path(p))) is not None}
    if seeded:
        if len(run_dirs) > 1:
            raise MedfedError(f"{next(iter(seeded))}: a multi-seed run is reported on its own (one run directory)")
        path, seeds = next(iter(seeded.items()))
        analyses, across = write_seed_report(path, seeds, out, options)
        return ReportResult(out, analyses[min(analyses)], seeds=sorted(analyses), across_seeds=across)
    analysis = analyse(merge_runs([load_run(p) for p in run_dirs]), options)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "per_site.csv", _csv(analysis.per_site))
    atomic_write_text(out / "comparisons.csv", _csv(analysis.comparisons))
    atomic_write_text(out / "calibration.csv", _csv(analysis.calibration))
    atomic_write_text(out / "meta_analysis.csv", _csv(analysis.meta))
    atomic_write_text(out / "summary.json", json.dumps(summary_dict(analysis), indent=1))
    atomic_write_text(out / "summary.md", render_markdown(analysis))
    prepared = context(analysis)
    plots_dir = out / "plots"
    for stale in plots_dir.glob("forest_*.svg"):  # a report written again leaves no plot of an older analysis
        stale.unlink()
    for section in prepared["meta"]:
        if section["svg"]:
            plots_dir.mkdir(exist_ok=True)
            atomic_write_text(plots_dir / section["file"], section["svg"])
    atomic_write_text(out / "report.html", render_html(analysis, prepared))
    return ReportResult(out, analysis)
