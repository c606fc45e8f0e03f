"""Leaderboard figures as inline SVG: per-institution rank heat map, rank-stability blob plot, significance map.

The blob plot and the significance map follow challengeR (Wiesenfarth et al. 2021, Sci. Rep. 11:2369): blob
area = share of bootstrap resamples giving a team a rank, with the median rank and the 95 % rank interval;
the significance map marks pairs where the row team is significantly better than the column team.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medfed.report.plots import STYLE, plt, to_svg


def institution_rank_heatmap(per_institution: pd.DataFrame, teams: Sequence[str]) -> str:
    """Teams (rows, in final-rank order) x institutions; each cell the team's rank at that institution."""
    institutions = list(dict.fromkeys(per_institution["institution"].astype(str)))
    grid = (per_institution.assign(institution=per_institution["institution"].astype(str))
            .pivot(index="team", columns="institution", values="rank").reindex(index=list(teams), columns=institutions))
    values = grid.to_numpy(dtype=float)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        figure, axis = plt.subplots(figsize=(1.0 + 0.7 * len(institutions), 0.8 + 0.45 * len(teams)))
        image = axis.imshow(values, cmap="viridis_r", vmin=1, vmax=max(len(teams), 2), aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                axis.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8,
                          color="black" if value <= (len(teams) + 1) / 2 else "white")  # viridis_r: light is best
        axis.set_xticks(range(len(institutions)), institutions)
        axis.set_yticks(range(len(teams)), list(teams))
        axis.set_xlabel("institution")
        axis.set_title("Rank per institution (1 = best)", fontsize=9)
        figure.colorbar(image, ax=axis, shrink=0.8, label="rank", ticks=range(1, max(len(teams), 2) + 1))
        return to_svg(figure)


def rank_blob_plot(frequencies: pd.DataFrame, stability: pd.DataFrame, teams: Sequence[str]) -> str:
    """Blob per (team, rank) with area proportional to its bootstrap share; black: median rank and 95 % interval."""
    order = {team: i for i, team in enumerate(teams)}
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(1.2 + 0.8 * len(teams), 3.0))
        shown = frequencies[frequencies["fraction"] > 0]
        axis.scatter(shown["team"].map(order), shown["rank"], s=600 * shown["fraction"], alpha=0.55,
                     color="#1f77b4", edgecolors="none")
        rows = stability.set_index("team").reindex(list(teams))
        x = np.arange(len(teams))
        axis.vlines(x, rows["rank_low"], rows["rank_high"], color="black", linewidth=1)
        axis.scatter(x, rows["median_rank"], marker="x", color="black", s=25, zorder=3)
        axis.set_xticks(x, list(teams), rotation=30, ha="right")
        axis.set_xlim(-0.6, len(teams) - 0.4)
        axis.set_yticks(range(1, len(teams) + 1))
        axis.set_ylim(len(teams) + 0.5, 0.5)
        axis.set_ylabel("rank")
        axis.set_title("Rank stability over bootstrap resamples of the cases", fontsize=9)
        return to_svg(figure)


def significance_map(p_adjusted: pd.DataFrame, teams: Sequence[str], alpha: float) -> str:
    """Rows A, columns B; dark cell: A significantly better than B (adjusted one-sided P < ``alpha``)."""
    matrix = p_adjusted.reindex(index=list(teams), columns=list(teams)).to_numpy(dtype=float)
    significant = np.where(np.isfinite(matrix), (matrix < alpha).astype(float), np.nan)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        size = 1.2 + 0.6 * len(teams)
        figure, axis = plt.subplots(figsize=(size, size * 0.85))
        axis.imshow(significant, cmap="Blues", vmin=-0.3, vmax=1.2)
        for (i, j), p in np.ndenumerate(matrix):
            if np.isfinite(p):
                axis.text(j, i, "<0.001" if p < 0.001 else f"{p:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if p < alpha else "black")
        axis.set_xticks(range(len(teams)), list(teams), rotation=30, ha="right")
        axis.set_yticks(range(len(teams)), list(teams))
        axis.set_xlabel("team B")
        axis.set_ylabel("team A")
        axis.set_title(f"A better than B (Holm-adjusted P; dark: P < {alpha:g})", fontsize=9)
        return to_svg(figure)
