"""Report figures as inline SVG text (matplotlib, Agg backend; no files, no network).

Every figure is deterministic: fixed SVG hash salt, no timestamp in the metadata.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medfed.metrics.segmentation import REGIONS
from medfed.report.metrics import MetricSpec

STYLE = {
    "svg.fonttype": "none", "svg.hashsalt": "medfed", "font.size": 9, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 96,
}


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {m: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, m in enumerate(methods)}


def to_svg(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype for inline use
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.DOTALL)


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "P n/a"
    return "P < 0.001" if p < 0.001 else f"P = {p:.3f}"


def forest_plot(comparisons: pd.DataFrame, specs: Sequence[MetricSpec], confidence: float) -> str | None:
    """Difference to the baseline (dot) with its paired-bootstrap CI (bar), one row per comparison and
    metric, corrected P at the right; ``None`` when nothing could be compared."""
    wanted = {s.name: s for s in specs if s.compare and not s.unit}
    rows = comparisons[comparisons["metric"].isin(wanted) & np.isfinite(comparisons["difference"].astype(float))]
    if rows.empty:
        return None
    with plt.rc_context(STYLE):
        height = 0.9 + 0.32 * len(rows)
        figure, axis = plt.subplots(figsize=(7.5, height))
        y = np.arange(len(rows))[::-1]
        diff = rows["difference"].to_numpy(dtype=float)
        low, high = rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float)
        significant = rows["p_adjusted"].to_numpy(dtype=float) < 0.05
        colours = np.where(significant, "#1f6fb4", "#555555")
        if "ci_low_adjusted" in rows:  # thin: the multiplicity-adjusted interval, which agrees with the corrected P
            adj_low, adj_high = (rows[c].to_numpy(dtype=float) for c in ("ci_low_adjusted", "ci_high_adjusted"))
            finite = np.concatenate([v[np.isfinite(v)] for v in (diff, low, high, adj_low, adj_high)] + [[0.0]])
            pad = 0.05 * (finite.max() - finite.min() or 1.0)
            edge = (finite.min() - pad, finite.max() + pad)  # an unbounded end (bootstrap too coarse) runs to the frame
            axis.set_xlim(*edge)
            axis.hlines(y, np.clip(adj_low, *edge), np.clip(adj_high, *edge), colors=colours, linewidth=0.8)
        axis.hlines(y, low, high, colors=colours, linewidth=2)
        axis.scatter(diff, y, c=colours, zorder=3, s=22)
        axis.axvline(0, color="black", linewidth=0.8)
        labels = [f"{r.method} vs {r.baseline} — {wanted[r.metric].label}" for r in rows.itertuples()]
        axis.set_yticks(y, labels)
        axis.set_xlabel(f"difference to baseline (method − baseline), {confidence:.0%} CI")
        axis.grid(axis="y", visible=False)
        for yi, row in zip(y, rows.itertuples(), strict=True):
            axis.annotate(f"{_p_text(row.p_value)}, corrected {_p_text(row.p_adjusted)} ({row.test})", xy=(1.01, yi),
                          xycoords=("axes fraction", "data"), va="center", fontsize=8)
        return to_svg(figure)


def meta_forest_plot(sites: pd.DataFrame, pooled: pd.Series, label: str, confidence: float) -> str:
    """One comparison across sites: each site's difference with its CI and n (rows), the random-effects estimate
    as a diamond spanning its CI, and the prediction interval for a new site as a line through it."""
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(7.5, 1.2 + 0.3 * (len(sites) + 1)))
        y = np.arange(len(sites))[::-1] + 1.0
        axis.hlines(y, sites["ci_low"], sites["ci_high"], colors="#555555", linewidth=2)
        axis.scatter(sites["difference"], y, c="#555555", zorder=3, s=22)
        centre, low, high = float(pooled["estimate"]), float(pooled["ci_low"]), float(pooled["ci_high"])
        if np.isfinite(pooled["pi_low"]):
            axis.hlines(0, pooled["pi_low"], pooled["pi_high"], colors="#1f6fb4", linewidth=1, linestyles="dotted")
        axis.fill([low, centre, high, centre], [0, 0.25, 0, -0.25], color="#1f6fb4", zorder=3)
        axis.axvline(0, color="black", linewidth=0.8)
        labels = [f"{row.site} (n={row.n_cases})" for row in sites.itertuples()]
        axis.set_yticks([*y, 0], [*labels, f"random effects ({int(pooled['n_sites'])} sites)"])
        axis.set_xlabel(f"{label}: difference (method − baseline), {confidence:.0%} CI; dotted: prediction interval")
        axis.grid(axis="y", visible=False)
        return to_svg(figure)


def reliability_diagram(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, colours: dict[str, str]) -> str:
    """Observed rate against mean predicted risk per equal-mass bin, one line per method; the diagonal is
    perfect calibration."""
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(4.2, 3.6))
        axis.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="dotted")
        for method, (predicted, observed) in curves.items():
            axis.plot(predicted, observed, marker="o", markersize=3, label=method, color=colours.get(method))
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("mean predicted risk (equal-mass bins)")
        axis.set_ylabel("observed rate")
        axis.set_title(title)
        axis.legend(fontsize=7, frameon=False)
        return to_svg(figure)


def estimates_plot(per_site: pd.DataFrame, metric: MetricSpec, methods: Sequence[str], confidence: float) -> str | None:
    """Each site's estimate (dot) and CI (bar) per method, for one metric."""
    rows = per_site[(per_site["metric"] == metric.name) & np.isfinite(per_site["estimate"].astype(float))]
    if rows.empty:
        return None
    sites = list(dict.fromkeys(rows["site"]))
    colours = method_colours(methods)
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(max(5.0, 1.3 * len(sites) + 2), 3.4))
        width = 0.8 / max(len(methods), 1)
        for i, method in enumerate(methods):
            part = rows[rows["method"] == method].set_index("site").reindex(sites)
            x = np.arange(len(sites)) - 0.4 + width * (i + 0.5)
            est = part["estimate"].to_numpy(dtype=float)
            low, high = part["ci_low"].to_numpy(dtype=float), part["ci_high"].to_numpy(dtype=float)
            has_ci = np.isfinite(low) & np.isfinite(high)
            axis.errorbar(x[has_ci], est[has_ci], yerr=[est[has_ci] - low[has_ci], high[has_ci] - est[has_ci]],
                          fmt="none", ecolor=colours[method], elinewidth=1.5)
            axis.scatter(x, est, color=colours[method], label=method, zorder=3, s=20)
        axis.set_xticks(np.arange(len(sites)), sites)
        axis.set_ylabel(f"{metric.label}{f' ({metric.unit})' if metric.unit else ''}")
        axis.set_title(f"{metric.label} per site, {confidence:.0%} CI", fontsize=9)
        axis.legend(fontsize=8, frameon=False, ncol=min(len(methods), 4), loc="upper center",
                    bbox_to_anchor=(0.5, -0.12))
        return to_svg(figure)


def learning_curves(
    rounds: dict[str, list[dict]], sites: Sequence[str], metric: MetricSpec, split: str = "val"
) -> str | None:
    """Per site (one panel each): ``metric`` on the site's ``split`` after the rounds the runner evaluated."""
    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for method, entries in rounds.items():
        for entry in entries:
            for site in sites:
                value = ((entry.get("eval") or {}).get(site) or {}).get(split, {}).get(metric.name)
                if value is not None:
                    xs, ys = series.setdefault(site, {}).setdefault(method, ([], []))
                    xs.append(int(entry["round"]))
                    ys.append(float(value))
    shown = [s for s in sites if s in series]
    if not shown:
        return None
    colours = method_colours(list(rounds))
    columns = min(len(shown), 3)
    rows_n = int(np.ceil(len(shown) / columns))
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(rows_n, columns, figsize=(3.2 * columns, 2.6 * rows_n), squeeze=False,
                                    sharey=True)
        for axis, site in zip(axes.ravel(), shown, strict=False):
            for method, (xs, ys) in series[site].items():
                axis.plot(xs, ys, marker="o", markersize=3, color=colours[method], label=method)
            axis.set_title(site, fontsize=9)
            axis.set_xlabel("round")
        for axis in axes.ravel()[len(shown):]:
            axis.set_visible(False)
        axes[0, 0].set_ylabel(f"{metric.label} ({split})")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False,
                      bbox_to_anchor=(0.5, -0.04), fontsize=8)
        figure.tight_layout(rect=(0, 0.05, 1, 1))
        return to_svg(figure)


def step_ratios(rounds: dict[str, list[dict]]) -> str | None:
    """Each method's ``step_ratio`` per round (its step against FedAvg's on the same updates, :mod:`medfed.fl.step`),
    one line per method that logged it, the FedAvg line at 1 dotted; ``None`` when no method logged one."""
    series = {}
    for method, entries in rounds.items():
        points = [(int(e["round"]), float(e["step_ratio"])) for e in entries if e.get("step_ratio") is not None]
        if points:
            series[method] = points
    if not series:
        return None
    colours = method_colours(list(rounds))
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(6.0, 2.8))
        for method, points in series.items():
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, marker="o", markersize=3, color=colours[method], label=method)
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        axis.set_xlabel("round")
        axis.set_ylabel("step / FedAvg's step")
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return to_svg(figure)


def aggregation_gains(rounds: dict[str, list[dict]], sites: Sequence[str]) -> str | None:
    """One panel per method whose aggregation logs per-site gains (FedAgain): each site's gain per round."""
    panels = {}
    for method, entries in rounds.items():
        gains = {site: ([], []) for site in sites}
        for entry in entries:
            for site, value in ((entry.get("aggregation") or {}).get("gain") or {}).items():
                if site in gains and value is not None:
                    gains[site][0].append(int(entry["round"]))
                    gains[site][1].append(float(value))
        if any(xs for xs, _ in gains.values()):
            panels[method] = gains
    if not panels:
        return None
    colours = method_colours(list(sites))
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 2.8), squeeze=False, sharey=True)
        for axis, (method, gains) in zip(axes.ravel(), panels.items(), strict=True):
            for site, (xs, ys) in gains.items():
                if xs:
                    axis.plot(xs, ys, marker="o", markersize=3, color=colours[site], label=site)
            axis.axhline(1 / max(len(sites), 1), color="grey", linewidth=0.6, linestyle=":")
            axis.set_title(method, fontsize=9)
            axis.set_xlabel("round")
        axes[0, 0].set_ylabel("aggregation gain")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                      bbox_to_anchor=(0.5, -0.06), fontsize=8)
        figure.tight_layout(rect=(0, 0.08, 1, 1))
        return to_svg(figure)


def segmentation_boxplots(records: dict[str, pd.DataFrame], sites: Sequence[str], split: str = "test") -> str | None:
    """Per-case Dice (top) and HD95 in mm (bottom) per region; boxes per site, one colour per method."""
    if not sites:
        return None
    methods = list(records)
    colours = method_colours(methods)
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(2, len(REGIONS), figsize=(3.6 * len(REGIONS), 5.6), squeeze=False)
        width = 0.8 / len(methods)
        for column, region in enumerate(REGIONS):
            for row, (value, label) in enumerate((("dice", "Dice"), ("hd95", "HD95 (mm)"))):
                axis = axes[row, column]
                for i, method in enumerate(methods):
                    frame = records[method]
                    part = frame[(frame["split"] == split) & (frame["region"] == region)]
                    data = [part.loc[part["site"].astype(str) == s, value].to_numpy(dtype=float) for s in sites]
                    data = [d[np.isfinite(d)] for d in data]
                    positions = np.arange(len(sites)) - 0.4 + width * (i + 0.5)
                    keep = [j for j, d in enumerate(data) if d.size]
                    if keep:
                        box = axis.boxplot([data[j] for j in keep], positions=positions[keep], widths=width * 0.85,
                                           patch_artist=True, showfliers=True, flierprops={"markersize": 3})
                        for patch in box["boxes"]:
                            patch.set_facecolor(colours[method])
                            patch.set_alpha(0.7)
                axis.set_xticks(np.arange(len(sites)), sites)
                axis.set_title(f"{region}: {label}", fontsize=9)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m], alpha=0.7) for m in methods]
        figure.legend(handles, methods, loc="lower center", ncol=min(len(methods), 4), frameon=False,
                      bbox_to_anchor=(0.5, -0.03), fontsize=8)
        figure.tight_layout(rect=(0, 0.04, 1, 1))
        return to_svg(figure)
