"""``leaderboard.html``: one self-contained page (inline CSS, SVG and a short sorting script; nothing loaded)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd

from medfed.challenge.case_metrics import REGIONS, metric_name
from medfed.challenge.leaderboard_plots import (
    institution_rank_heatmap,
    rank_blob_plot,
    significance_map,
)
from medfed.challenge.robustness import Significance
from medfed.io import atomic_write_text

if TYPE_CHECKING:
    from medfed.challenge.scoring import ScoringOptions, ScoringResult


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medfed.challenge", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


def _num(value: float, digits: int = 3) -> dict[str, Any]:
    finite = value is not None and np.isfinite(value)
    return {"num": True, "value": f"{value:.6g}" if finite else "NaN", "text": f"{value:.{digits}f}" if finite else "–"}


def _leaderboard_rows(result: ScoringResult, teams: list[str]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Columns and rows of the sortable table: rank, score, bootstrap rank interval, means per region."""
    records = result.records
    means = records.groupby(["team", "metric"])["value"].mean()
    stability = result.stability.set_index("team")
    final = result.ranking.final.set_index("team")
    per_institution = result.ranking.per_institution.assign(institution=lambda t: t["institution"].astype(str))
    institutions = list(dict.fromkeys(per_institution["institution"]))
    inst_rank = per_institution.set_index(["team", "institution"])["rank"]
    columns = [{"label": "rank", "type": "num"}, {"label": "team", "type": "text"}, {"label": "score", "type": "num"},
               {"label": "median bootstrap rank", "type": "num"}, {"label": "rank 95% interval", "type": "text"},
               {"label": "P(rank 1)", "type": "num"}]
    columns += [{"label": f"Dice {r}", "type": "num"} for r in REGIONS]
    columns += [{"label": f"HD95 {r} (mm)", "type": "num"} for r in REGIONS]
    columns += [{"label": f"rank at {i}", "type": "num"} for i in institutions]
    rows = []
    for team in teams:
        s = stability.loc[team]
        cells = [{"num": True, "value": str(int(final.loc[team, "rank"])), "text": str(int(final.loc[team, "rank"]))},
                 {"num": False, "text": team}, _num(float(final.loc[team, "score"])),
                 _num(float(s["median_rank"]), 1), {"num": False, "text": f"{s['rank_low']:g}–{s['rank_high']:g}"},
                 _num(float(s["p_first"]), 2)]
        cells += [_num(float(means.get((team, metric_name("Dice", r)), np.nan))) for r in REGIONS]
        cells += [_num(float(means.get((team, metric_name("HD95", r)), np.nan)), 1) for r in REGIONS]
        cells += [_num(float(inst_rank.get((team, i), np.nan)), 0) for i in institutions]
        rows.append({"first": int(final.loc[team, "rank"]) == 1, "cells": cells})
    return columns, rows


def _institution_rows(per_institution: pd.DataFrame) -> tuple[list[str], list[dict[str, Any]]]:
    metrics = [metric_name(m, r) for m in ("Dice", "HD95") for r in REGIONS]
    rows = []
    for _, row in per_institution.sort_values(["institution", "team"], key=lambda c: c.astype(str)).iterrows():
        cells = []
        for metric in metrics:
            value = row.get(f"{metric}_mean", np.nan)
            cells.append("" if row["suppressed"] or not np.isfinite(value) else f"{value:.3f}" if "Dice" in metric
                         else f"{value:.1f}")
        rows.append({"institution": row["institution"], "team": row["team"], "n": row["n_cases"], "cells": cells})
    return metrics, rows


def write_leaderboard(
    result: ScoringResult, per_institution: pd.DataFrame, frequencies: pd.DataFrame, significance: Significance,
    options: ScoringOptions,
) -> None:
    """Render ``leaderboard.html`` into ``result.out``."""
    teams = list(result.ranking.final["team"])
    columns, rows = _leaderboard_rows(result, teams)
    institution_metrics, institution_rows = _institution_rows(per_institution)
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
        n_pairs=len(teams) * (len(teams) - 1), alpha=f"{options.alpha:g}",
        problems=result.problems.to_dict("records"),
    )
    atomic_write_text(result.out / "leaderboard.html", page)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"
