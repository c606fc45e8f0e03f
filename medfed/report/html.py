"""The self-contained HTML page (inline SVG figures, inline CSS, no script, no external resource)."""

from __future__ import annotations

import re
from typing import Any

import jinja2
import numpy as np

from medfed.report import plots
from medfed.report.analysis import Analysis, finding_labels
from medfed.report.formatting import digits_for, fmt, fmt_ci, fmt_p
from medfed.report.meta_table import leave_one_out
from medfed.stats import CORRECTIONS
from medfed.stats.disclosure import protect_summary

TASK_LABELS = {
    "classification": "image classification", "segmentation": "brain tumour segmentation (BraTS regions)",
    "anomaly": "anomaly detection",
}
CI_NAMES = {"bca": "BCa (bias-corrected and accelerated)", "percentile": "percentile"}
TEST_TEXT = {
    "delong": "DeLong's test for two correlated AUROCs (DeLong et al. 1988), effect size z",
    "wilcoxon": "for Dice and HD95 the paired bootstrap of the mean difference gives P and CI; the Wilcoxon signed-rank "
                "test on per-case values is given beside it (comparisons.csv p_wilcoxon), effect size the "
                "matched-pairs rank-biserial r",
}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medfed.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )


def _site_rows(analysis: Analysis) -> tuple[list[dict[str, Any]], list[str]]:
    """Site table rows: split counts plus one column per label / metadata descriptor, as ``sites.json`` has them
    (under disclosure control already: primary and secondary suppression, :mod:`medfed.stats.disclosure`)."""
    rows, columns = [], []
    for site in analysis.run.sites:
        if "splits" in site and "cases" in site:  # the rules again, in case sites.json came from elsewhere
            site = protect_summary(site, int(site.get("min_count", 5)))
        splits = site.get("splits", {})
        described: dict[str, str] = {}
        if "split_unit" in site:  # the split unit and its groups per split (patients, studies, stones, subjects)
            groups = site.get("groups_per_split", {})
            described["split unit"] = site["split_unit"]
            described["groups (train / val / test)"] = " / ".join(str(groups.get(s, "")) for s in ("train", "val", "test"))
            columns += [c for c in ("split unit", "groups (train / val / test)") if c not in columns]
        for group in ("labels", "metadata"):
            for name, counts in (site.get(group) or {}).items():
                if name in ("format", "institution", "population") and group == "metadata" and len(counts) == 1:
                    continue  # one value everywhere says nothing
                described[name] = ", ".join(f"{k}: {v}" for k, v in counts.items())
                if name not in columns:
                    columns.append(name)
        rows.append({"name": site["site"], "cases": site.get("cases", ""), "train": splits.get("train", ""),
                     "val": splits.get("val", ""), "test": splits.get("test", ""), "columns": described})
    return rows, columns


def _metric_cells(analysis: Analysis, site: str, metric: str, unit: str) -> list[str]:
    part = analysis.per_site[(analysis.per_site["site"] == site) & (analysis.per_site["metric"] == metric)]
    by_method = part.set_index("method")
    digits = digits_for(unit)
    return [fmt_ci(*by_method.loc[m, ["estimate", "ci_low", "ci_high"]], digits=digits) if m in by_method.index else "–"
            for m in analysis.run.methods]


def context(analysis: Analysis) -> dict[str, Any]:
    run, options = analysis.run, analysis.options
    spec = {s.name: s for s in analysis.specs}
    primary = spec[analysis.primary]
    per_site = analysis.per_site
    sites, site_columns = _site_rows(analysis)
    primary_rows, all_tables = [], []
    for site in run.site_names:
        first = per_site[(per_site["site"] == site)].iloc[0]
        note = analysis.site_notes.get(site, "")
        primary_rows.append({"site": site, "n": first["n_cases"], "note": note,
                             "cells": _metric_cells(analysis, site, primary.name, primary.unit)})
        all_tables.append({"name": site, "n": first["n_cases"], "note": note, "rows": [
            {"label": s.label + (f" ({s.unit})" if s.unit else ""), "cells": _metric_cells(analysis, site, s.name, s.unit)}
            for s in analysis.specs
        ]})
    aggregate_rows = []
    for row in analysis.aggregates.itertuples():
        digits = digits_for(spec[row.metric].unit)
        if row.metric != primary.name and row.metric not in {s.name for s in analysis.specs if s.compare}:
            continue
        aggregate_rows.append({
            "method": row.method, "label": row.label, "n_sites": row.n_sites, "site_mean": fmt(row.site_mean, digits),
            "site_median": fmt(row.site_median, digits),
            "worst": f"{fmt(row.worst, digits)} ({row.worst_site})" if row.worst_site else "–",
            "case_weighted_mean": fmt(row.case_weighted_mean, digits), "pooled": fmt(row.pooled, digits),
        })
    comparisons = analysis.comparisons
    forest = []
    for site in run.site_names:
        part = comparisons[comparisons["site"] == site]
        svg = plots.forest_plot(part, analysis.specs, options.confidence) if len(part) else None
        reason = part["note"].iloc[0] if len(part) and part["note"].iloc[0] else "nothing to compare"
        forest.append({"name": site, "svg": svg, "reason": reason})
    comparison_rows = []
    for row in comparisons.itertuples():
        digits = digits_for(row.unit)
        comparison_rows.append({
            "site": row.site, "label": row.label, "method": row.method, "baseline": row.baseline,
            "difference": fmt_ci(row.difference, row.ci_low, row.ci_high, digits), "test": row.test,
            "p": fmt_p(row.p_value), "p_adjusted": fmt_p(row.p_adjusted),
            "significant": bool(np.isfinite(row.p_adjusted) and row.p_adjusted < 0.05),
            "effect": f"{fmt(row.effect_size, 2)} ({row.effect_size_name})" if row.effect_size_name else "–",
            "note": "; ".join(x for x in (row.note or _power_note(row.p_adjusted, row.mdd_80, digits),
                                          _margin_text(row.margin, row.p_noninferiority, row.p_equivalence, digits)) if x),
        })
    meta = _meta_sections(analysis)
    calibration = _calibration_section(analysis)
    boxplots = None
    if run.task_kind == "segmentation":
        boxplots = plots.segmentation_boxplots(run.records, analysis.shown_sites, options.split)
    used_tests = sorted({s.test for s in analysis.specs if s.compare and s.test})
    return {
        "title": run.name, "task_label": TASK_LABELS.get(run.task_kind, run.task_kind), "split": options.split,
        "methods": run.methods, "baselines": analysis.baselines, "confidence_pct": f"{options.confidence:.0%}",
        "primary_label": primary.label, "primary_unit": primary.unit, "primary_higher": primary.higher_is_better,
        "sites": sites, "site_columns": site_columns,
        "estimates_svg": plots.estimates_plot(per_site, primary, run.methods, options.confidence),
        "primary_rows": primary_rows, "all_metric_tables": all_tables, "ci_method_name": CI_NAMES[options.ci_method],
        "aggregate_rows": aggregate_rows, "forest": forest, "comparison_rows": comparison_rows,
        "correction_name": CORRECTIONS[options.correction],
        "curves_svg": plots.learning_curves(run.rounds, run.site_names, primary),
        "gains_svg": plots.aggregation_gains(run.rounds, run.site_names),
        "steps_svg": plots.step_ratios(run.rounds),
        "site_conditions": {s["site"]: s["conditions"] for s in run.sites if "conditions" in s},
        "boxplots": boxplots, "hidden_sites": [s for s in run.site_names if s not in analysis.shown_sites],
        "n_resamples": options.n_resamples, "task_kind": run.task_kind,
        "stratified": run.task_kind == "anomaly"
        or (run.task_kind == "classification" and len(finding_labels(run) or []) < 2),
        "tests": [TEST_TEXT[t] for t in used_tests], "min_ci_cases": options.min_ci_cases, "seed": options.seed,
        "sources": [str(p) for p in run.paths], "pooled_withheld": analysis.pooled_withheld, "meta": meta,
        "meta_ci_name": META_CI_NAMES[options.meta_ci], "calibration": calibration,
    }


def _calibration_section(analysis: Analysis) -> dict[str, Any] | None:
    """Calibration rows and one reliability diagram per shown site (first finding), or ``None`` (segmentation)."""
    run = analysis.run
    if run.task_kind not in ("classification", "anomaly"):
        return None
    table, curves = analysis.calibration, analysis.calibration_curves
    colours = plots.method_colours(run.methods)
    figures = []
    for site in analysis.shown_sites:
        labels = [key[2] for key in curves if key[0] == site]
        if labels:
            first = labels[0]
            by_method = {m: curves[(site, m, first)] for m in run.methods if (site, m, first) in curves}
            figures.append({"site": site, "svg": plots.reliability_diagram(by_method, f"{site}: {first}", colours)})
    rows = [{"site": r.site, "method": r.method, "label": r.label, "brier": fmt(r.brier, 3), "ece": fmt(r.ece, 3),
             "slope": fmt(r.slope, 2), "intercept": fmt(r.intercept, 2),
             "threshold": fmt(r.threshold, 3) if np.isfinite(r.threshold) else "0.5 (fixed)",
             "sensitivity": fmt(r.sensitivity, 3), "specificity": fmt(r.specificity, 3), "note": r.note or r.probability}
            for r in table.itertuples()]
    return {"rows": rows, "figures": figures}


def _margin_text(margin: float, p_noninferiority: float, p_equivalence: float, digits: int) -> str:
    """``non-inferior within 0.02: P 0.003; equivalent: P 0.21`` (empty without a margin)."""
    if not np.isfinite(margin):
        return ""
    return (f"within {fmt(margin, digits)}: non-inferiority P {fmt_p(p_noninferiority)}, "
            f"equivalence P {fmt_p(p_equivalence)}")


def _power_note(p_adjusted: float, mdd: float, digits: int) -> str:
    """For a comparison that is not significant: the smallest difference this site could have detected."""
    if not (np.isfinite(p_adjusted) and p_adjusted >= 0.05 and np.isfinite(mdd)):
        return ""
    return f"not significant; this site could detect differences of at least {fmt(mdd, digits)} (80% power)"


META_CI_NAMES = {"hksj": "Hartung-Knapp-Sidik-Jonkman", "wald": "Wald (normal)"}
MODEL_NAMES = {"fixed": "fixed effect (inverse variance)", "dl": "random effects, DerSimonian-Laird",
               "pm": "random effects, Paule-Mandel"}


def _meta_sections(analysis: Analysis) -> list[dict[str, Any]]:
    """One section per (metric, comparison): forest plot, the three models' rows, leave-one-site-out rows."""
    options, comparisons = analysis.options, analysis.comparisons
    if comparisons.empty:
        return []
    table = analysis.meta
    labels = {s.name: s for s in analysis.specs}
    sections = []
    for (metric, method, baseline), rows in table.groupby(["metric", "method", "baseline"], sort=False):
        spec = labels.get(metric)
        digits = digits_for(spec.unit if spec else "")
        title = f"{method} vs {baseline} — {spec.label if spec else metric}"
        fitted = rows[rows["model"].isin(list(MODEL_NAMES))]
        if fitted.empty:
            sections.append({"title": title, "svg": None, "note": rows["note"].iloc[0], "rows": [], "loo": []})
            continue
        sites = comparisons[(comparisons["metric"] == metric) & (comparisons["method"] == method)
                            & (comparisons["baseline"] == baseline)
                            & comparisons["site"].isin(fitted["sites"].iloc[0].split(";"))]
        dl = fitted.set_index("model").loc["dl"]
        svg = plots.meta_forest_plot(sites, dl, spec.label if spec else metric, options.confidence)
        model_rows = [{
            "model": MODEL_NAMES[r.model], "estimate": fmt_ci(r.estimate, r.ci_low, r.ci_high, digits),
            "p": fmt_p(r.p_value),
            "pi": f"{fmt(r.pi_low, digits)} to {fmt(r.pi_high, digits)}" if np.isfinite(r.pi_low) else "–",
            "tau2": fmt(r.tau2, 4), "i2": f"{r.i2:.0%}" + (f" ({r.i2_low:.0%}–{r.i2_high:.0%})" if np.isfinite(r.i2_low) else ""),
            "q": f"{fmt(r.q, 2)} (P {fmt_p(r.q_p)})", "margin": _margin_text(r.margin, r.p_noninferiority,
                                                                             r.p_equivalence, digits)}
            for r in fitted.itertuples()]
        loo = [{"site": r.site_left_out, "estimate": fmt_ci(r.estimate, r.ci_low, r.ci_high, digits),
                "p": fmt_p(r.p_value)}
               for r in leave_one_out(comparisons, metric, method, baseline, options.meta_ci,
                                      options.confidence).itertuples()]
        left_out = rows["sites_left_out"].iloc[0]
        note = f"left out (no difference or SE): {left_out.replace(';', ', ')}" if isinstance(left_out, str) and left_out else ""
        sections.append({"title": title, "svg": svg, "note": note, "rows": model_rows, "loo": loo,
                         "file": forest_file_name(metric, method, baseline)})
    return sections


def forest_file_name(metric: str, method: str, baseline: str) -> str:
    """``forest_<metric>_<method>_vs_<baseline>.svg``, with anything but letters, digits, ``.``, ``-`` and ``_`` as
    ``-`` (method names of merged runs carry a ``/``)."""
    name = f"forest_{metric}_{method}_vs_{baseline}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name) + ".svg"


def render_html(analysis: Analysis, prepared: dict[str, Any] | None = None) -> str:
    """``report.html`` from :func:`context` (``prepared``: a context already computed for this analysis)."""
    return _environment().get_template("report.html.j2").render(**(prepared or context(analysis)))


__all__ = ["context", "forest_file_name", "render_html"]
