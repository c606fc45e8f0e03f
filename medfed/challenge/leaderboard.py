"""``leaderboard.html``: one self-contained page (inline CSS, SVG and a short sorting script; nothing loaded)."""

from __future__ import annotations

from typing import Any

import jinja2
import numpy as np
import pandas as pd

from medfed.challenge.leaderboard_plots import (
    institution_rank_heatmap,
    rank_blob_plot,
    significance_map,
)
from medfed.challenge.options import ScoringOptions, ScoringResult
from medfed.challenge.robustness import Significance
from medfed.io import atomic_write_text



def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medfed.challenge", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


def _num(value: float, digits: int = 3) -> dict[str, Any]:
    finite = value is not None and np.isfinite(value)
    return {"num": True, "value": f"{value:.6g}" if finite else "NaN", "text": f"{value:.{digits}f}" if finite else "–"}


def _label(metric: str) -> str:
    """``"HD95_ET"`` -> ``"HD95 ET (mm)"``, ``"Brier_Effusion"`` -> ``"Brier Effusion"``."""
    kind, _, target = metric.partition("_")
    return f"{kind} {target}" + (" (mm)" if kind == "HD95" else "")


def _digits(metric: str) -> int:
    return 1 if metric.startswith("HD95") else 3


def _site_level_means(per_institution: pd.DataFrame) -> pd.DataFrame:
    """Per team, the mean over (unsuppressed) institutions of each site-level metric (AUROC)."""
    columns = [c for c in per_institution.columns if c.startswith("AUROC_")]
    if not columns:
        return pd.DataFrame()
    return per_institution[~per_institution["suppressed"]].groupby("team")[columns].mean()


def _leaderboard_rows(
    result: ScoringResult, teams: list[str], per_institution: pd.DataFrame
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Columns and rows of the sortable table: rank, score, bootstrap ranks, ranked-metric means, AUROC, ranks
    per institution."""
    records = result.records
    metrics = list(result.summary["ranked_metrics"])
    means = records.groupby(["team", "metric"])["value"].mean()
    site_level = _site_level_means(per_institution)
    stability = result.stability.set_index("team")
    final = result.ranking.final.set_index("team")
    per_rank = result.ranking.per_institution.assign(institution=lambda t: t["institution"].astype(str))
    institutions = list(dict.fromkeys(per_rank["institution"]))
    inst_rank = per_rank.set_index(["team", "institution"])["rank"]
    columns = [{"label": "rank", "type": "num"}, {"label": "team", "type": "text"}, {"label": "score", "type": "num"},
               {"label": "median bootstrap rank", "type": "num"}, {"label": "rank 95% interval", "type": "text"},
               {"label": "P(rank 1)", "type": "num"}]
    columns += [{"label": _label(m), "type": "num"} for m in metrics]
    columns += [{"label": f"{_label(c)} (mean over sites)", "type": "num"} for c in site_level.columns]
    columns += [{"label": f"rank at {i}", "type": "num"} for i in institutions]
    rows = []
    for team in teams:
        s = stability.loc[team]
        rank = int(final.loc[team, "rank"])
        cells = [{"num": True, "value": str(rank), "text": str(rank)}, {"num": False, "text": team},
                 _num(float(final.loc[team, "score"])), _num(float(s["median_rank"]), 1),
                 {"num": False, "text": f"{s['rank_low']:g}–{s['rank_high']:g}"}, _num(float(s["p_first"]), 2)]
        cells += [_num(float(means.get((team, m), np.nan)), _digits(m)) for m in metrics]
        cells += [_num(float(site_level.loc[team, c]) if team in site_level.index else np.nan) for c in site_level]
        cells += [_num(float(inst_rank.get((team, i), np.nan)), 0) for i in institutions]
        rows.append({"first": rank == 1, "cells": cells})
    return columns, rows


def _institution_rows(per_institution: pd.DataFrame, metrics: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    site_level = [c for c in per_institution.columns if c.startswith("AUROC_")]
    names = [*metrics, *site_level]
    rows = []
    for _, row in per_institution.sort_values(["institution", "team"], key=lambda c: c.astype(str)).iterrows():
        cells = []
        for metric in names:
            value = row.get(f"{metric}_mean", row.get(metric, np.nan))
            cells.append("" if row["suppressed"] or not np.isfinite(value) else f"{value:.{_digits(metric)}f}")
        rows.append({"institution": row["institution"], "team": row["team"], "n": row["n_cases"], "cells": cells})
    return [_label(n) for n in names], rows


def write_leaderboard(
    result: ScoringResult, per_institution: pd.DataFrame, frequencies: pd.DataFrame, significance: Significance,
    options: ScoringOptions,
) -> None:
    """Render ``leaderboard.html`` into ``result.out``."""
    teams = list(result.ranking.final["team"])
    columns, rows = _leaderboard_rows(result, teams, per_institution)
    metrics = list(result.summary["ranked_metrics"])
    institution_metrics, institution_rows = _institution_rows(per_institution, metrics)
    summary = result.summary
    boot = summary["bootstrap"]
    rules = options.rules
    page = _environment().get_template("leaderboard.html.j2").render(
        title=result.out.name, n_teams=len(teams), n_institutions=len(summary["institutions"]),
        n_cases=summary["cases"], split=options.split, ranking=options.ranking, procedure=summary["procedure"],
        columns=columns, rows=rows, penalty=f"{rules.one_empty_hd95:g}", missing_dice=f"{options.missing_dice:g}",
        missing_hd95=f"{options.missing_hd95:g}", both_dice=f"{rules.both_empty_dice:g}",
        both_hd=f"{rules.both_empty_hd95:g}", one_dice=f"{rules.one_empty_dice:g}", resamples=options.n_resamples,
        heatmap_svg=institution_rank_heatmap(result.ranking.per_institution, teams),
        institution_metrics=institution_metrics, institution_rows=institution_rows,
        blob_svg=rank_blob_plot(frequencies, result.stability, teams),
        tau_median=_fmt(boot["kendall_tau_median"]), tau_low=_fmt(boot["kendall_tau_q025"]),
        significance_svg=significance_map(significance.adjusted, teams, options.alpha),
        n_pairs=len(teams) * (len(teams) - 1), alpha=f"{options.alpha:g}", n_metrics=len(metrics),
        segmentation=any(m.startswith("Dice") for m in metrics),
        problems=result.problems.to_dict("records"),
    )
    atomic_write_text(result.out / "leaderboard.html", page)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"
