"""A Markdown summary for papers: the headline metric per site with CIs, across-site summaries, and the
significant comparisons."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfed.fl.names import POOLED
from medfed.report.analysis import Analysis
from medfed.report.formatting import digits_for, fmt, fmt_ci, fmt_p
from medfed.stats import CORRECTIONS


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(analysis: Analysis) -> str:
    run, options = analysis.run, analysis.options
    spec = {s.name: s for s in analysis.specs}[analysis.primary]
    digits = digits_for(spec.unit)
    per_site = analysis.per_site[analysis.per_site["metric"] == spec.name]
    method_line = (
        f"{options.confidence:.0%} CIs: {options.ci_method} bootstrap, {options.n_resamples} resamples over "
        f"{options.split} cases; P-values corrected with {CORRECTIONS[options.correction]} across sites x comparisons."
    )
    lines = [f"# {run.name}: {spec.label} per site", "", method_line, ""]
    rows = []
    for site in run.site_names:
        part = per_site[per_site["site"] == site].set_index("method")
        rows.append([site, str(part["n_cases"].iloc[0])] + [
            fmt_ci(*part.loc[m, ["estimate", "ci_low", "ci_high"]], digits=digits) for m in run.methods
        ] + [analysis.site_notes.get(site, "")])
    lines += _table(["site", "n", *run.methods, "note"], rows)
    lines += ["", f"## Across sites ({spec.label})", ""]
    agg = analysis.aggregates[analysis.aggregates["metric"] == spec.name]
    lines += _table(
        ["method", "sites", "mean over sites", "median", "worst site", "case-weighted mean", "pooled"],
        [[r.method, str(r.n_sites), fmt(r.site_mean, digits), fmt(r.site_median, digits),
          f"{fmt(r.worst, digits)} ({r.worst_site})" if r.worst_site else "–", fmt(r.case_weighted_mean, digits),
          fmt(r.pooled, digits)] for r in agg.itertuples()],
    )
    if analysis.pooled_withheld:
        lines += ["", "Pooled values are withheld: they include suppressed sites' cases."]
    comparisons = analysis.comparisons
    if len(comparisons):  # the per-site family; the pooled (site-stratified) rows are in comparisons.csv
        comparisons = comparisons[comparisons["site"] != POOLED]
    significant = comparisons[np.isfinite(comparisons["p_adjusted"].astype(float))
                              & (comparisons["p_adjusted"].astype(float) < 0.05)] if len(comparisons) else comparisons
    lines += ["", "## Significant differences (corrected P < 0.05)", ""]
    if len(significant):
        lines += _table(
            ["site", "metric", "method vs baseline", "difference (CI)", "test", "corrected P"],
            [[r.site, r.label, f"{r.method} vs {r.baseline}", fmt_ci(r.difference, r.ci_low, r.ci_high, digits_for(r.unit)),
              r.test, fmt_p(r.p_adjusted)] for r in significant.itertuples()],
        )
    else:
        tested = int(np.isfinite(comparisons["p_value"].astype(float)).sum()) if len(comparisons) else 0
        lines.append(f"None of the {tested} tested comparisons.")
    return "\n".join(lines) + "\n"
