"""FeTS-challenge rankings over a long table of per-case scores (Pati et al. 2021, arXiv:2105.05874; FeTS 2022).

Input: a long table ``scores`` with columns ``team``, ``institution``, ``case_id``, ``metric``, ``value``;
``metrics`` maps each ranked metric to the better direction (``"max"``: Dice, ``"min"``: HD95) and ``missing``
to the value a missing entry counts as (FeTS: Dice 0, HD95 1000). Rows of other metrics are ignored.

The grid of a ranking is every team x every case ``(institution, case_id)`` in the table x every metric of
``metrics``: a NaN value, or a team without a row that the grid asks for, counts as ``missing[metric]`` (a
metric absent from a whole case counts as missing for every team there: all tie, which shifts every team's
score equally and leaves the ranks alone).

Ranks run from 1 (best); ties take the lower rank (``rankdata(method="min")``: values 0.9, 0.8, 0.8 rank
1, 2, 2). Per-case ranks ``R[c, m, t]`` are computed once (:class:`ScoreGrid`); every ranking is a function of
case weights ``w`` (how often each case is counted), so the full-data ranking (``w = 1``) and the bootstrap
(:mod:`medfed.challenge.robustness`, ``w`` = resampled case counts) share one code path (:func:`rank_arrays`).
Rank-based scores are kept as integer sums until the final division, so ties are exact, not subject to
floating-point summation order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

Direction = Literal["max", "min"]
Method = Literal["fets2", "fets1", "aggregate"]
METHODS: dict[str, str] = {
    "fets2": "FeTS task 2: per institution, rank per case, mean per metric, re-rank, mean over metrics, "
    "rank; final = mean of institution ranks",
    "fets1": "FeTS task 1: per case, mean of the metric ranks and 3x the convergence rank; mean over all "
    "cases; rank",
    "aggregate": "aggregate-then-rank: per institution, metric means, rank, mean over metrics, rank; final = "
    "mean of institution ranks",
}
#: how often the convergence-score rank counts in FeTS task 1's per-case mean
CONVERGENCE_WEIGHT = 3
COLUMNS = ("team", "institution", "case_id", "metric", "value")


@dataclass(frozen=True, eq=False)
class ScoreGrid:
    """The completed score table as arrays: ``values[c, m, t]`` (missing entries filled), ``imputed[c, m, t]``
    (whether the entry was missing) and the per-case ranks ``ranks[c, m, t]`` (1 = best, ties lower), for
    cases ``c`` sorted by (institution, case_id), metrics in the order of ``metrics``, teams sorted."""

    teams: tuple[str, ...]
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    institutions: tuple[str, ...]
    cases: pd.DataFrame  # institution, case_id: one row per case c
    institution_of_case: np.ndarray  # (C,) index into institutions
    values: np.ndarray
    imputed: np.ndarray
    ranks: np.ndarray

    @property
    def n_cases(self) -> int:
        return int(self.values.shape[0])

    @property
    def oriented(self) -> np.ndarray:
        """Values with lower = better: ``v`` for ``"min"`` metrics, ``-v`` for ``"max"`` metrics."""
        sign = np.array([-1.0 if d == "max" else 1.0 for d in self.directions])
        return self.values * sign[None, :, None]

    def members(self, institution: int) -> np.ndarray:
        """Case positions of one institution."""
        return np.flatnonzero(self.institution_of_case == institution)


@dataclass(frozen=True, eq=False)
class RankArrays:
    """Scores and ranks for ``b`` case weightings: ``final_*`` ``(b, T)``, ``institution_*`` ``(b, I, T)``
    (lower score = better; teams in :attr:`ScoreGrid.teams` order)."""

    final_score: np.ndarray
    final_rank: np.ndarray
    institution_score: np.ndarray
    institution_rank: np.ndarray


@dataclass(frozen=True, eq=False)
class Ranking:
    """``final``: team, score, rank (sorted by rank, then team); ``per_institution``: institution, team, score,
    rank (sorted by institution, rank, team). Lower score = better; rank 1 = best, ties share the lower rank."""

    final: pd.DataFrame
    per_institution: pd.DataFrame
    method: str

    @property
    def order(self) -> list[str]:
        """Teams from best to worst (ties by name)."""
        return list(self.final["team"])


# ----------------------------------------------------------------------------------------------- the grid
def rank_lower_better(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Competition ranks along ``axis``, 1 = smallest, ties take the lower rank (``rankdata(method="min")``)."""
    return rankdata(x, method="min", axis=axis).astype(np.float64)


def score_grid(scores: pd.DataFrame, metrics: Mapping[str, Direction], missing: Mapping[str, float]) -> ScoreGrid:
    """Complete the long table to the (case x metric x team) grid and rank teams per case and metric."""
    _check_inputs(scores, metrics, missing)
    names = tuple(metrics)
    table = scores.loc[scores["metric"].isin(names), list(COLUMNS)]
    absent = [m for m in names if not (table["metric"] == m).any()]
    if absent:
        raise ValueError(f"no rows for metric(s) {absent}")
    duplicated = table.duplicated(["team", "institution", "case_id", "metric"])
    if duplicated.any():
        first = table.loc[duplicated].iloc[0]
        raise ValueError(f"duplicate score rows, e.g. {first[['team', 'institution', 'case_id', 'metric']].tolist()}")
    cases = table[["institution", "case_id"]].drop_duplicates().sort_values(["institution", "case_id"])
    cases = cases.reset_index(drop=True)
    teams = tuple(sorted(table["team"].unique()))
    institutions = tuple(sorted(cases["institution"].unique()))
    c = pd.MultiIndex.from_frame(cases).get_indexer(pd.MultiIndex.from_frame(table[["institution", "case_id"]]))
    m = pd.Index(names).get_indexer(table["metric"])
    t = pd.Index(teams).get_indexer(table["team"])
    values = np.full((len(cases), len(names), len(teams)), np.nan)
    values[c, m, t] = table["value"].to_numpy(dtype=np.float64)
    imputed = np.isnan(values)
    fill = np.array([float(missing[name]) for name in names])
    values = np.where(imputed, fill[None, :, None], values)
    directions = tuple(metrics[name] for name in names)
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return ScoreGrid(
        teams=teams,
        metrics=names,
        directions=directions,
        institutions=institutions,
        cases=cases,
        institution_of_case=pd.Index(institutions).get_indexer(cases["institution"]),
        values=values,
        imputed=imputed,
        ranks=rank_lower_better(values * sign[None, :, None]),
    )


def _check_inputs(scores: pd.DataFrame, metrics: Mapping[str, Direction], missing: Mapping[str, float]) -> None:
    lacking = [col for col in COLUMNS if col not in scores.columns]
    if lacking:
        raise ValueError(f"scores lacks column(s) {lacking}; expected {list(COLUMNS)}")
    if not metrics:
        raise ValueError("no metrics to rank on")
    for name, direction in metrics.items():
        if direction not in ("max", "min"):
            raise ValueError(f"metric {name!r}: direction {direction!r}, expected 'max' or 'min'")
        if name not in missing:
            raise ValueError(f"metric {name!r} has no value for missing entries in `missing`")


def case_ranks(scores: pd.DataFrame, metrics: Mapping[str, Direction], missing: Mapping[str, float]) -> pd.DataFrame:
    """Per (institution, case, metric), the teams' ranks (1 = best, ties lower). Columns: institution, case_id,
    metric, team, value (missing entries filled), imputed (the entry was missing), rank."""
    grid = score_grid(scores, metrics, missing)
    c, m, t = (a.ravel() for a in np.indices(grid.values.shape))
    return pd.DataFrame({
        "institution": grid.cases["institution"].to_numpy()[c],
        "case_id": grid.cases["case_id"].to_numpy()[c],
        "metric": np.asarray(grid.metrics, dtype=object)[m],
        "team": np.asarray(grid.teams, dtype=object)[t],
        "value": grid.values.ravel(),
        "imputed": grid.imputed.ravel(),
        "rank": grid.ranks.ravel().astype(np.int64),
    })


# ------------------------------------------------------------------------------------ rankings on weights
def convergence_ranks(grid: ScoreGrid, convergence: Mapping[str, float]) -> np.ndarray:
    """Rank of each team's convergence score (higher = better, ties lower), ``(T,)``; every team needs one."""
    lacking = [team for team in grid.teams if not np.isfinite(float(convergence.get(team, np.nan)))]
    if lacking:
        raise ValueError(f"no finite convergence score for team(s) {lacking}")
    return rank_lower_better(-np.array([float(convergence[team]) for team in grid.teams]))


def _institution_sums(grid: ScoreGrid, counts: np.ndarray, per_case: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``S[b, i, k] = Σ_{c ∈ i} counts[b, c] · per_case[c, k]`` and the weights ``n[b, i] = Σ_{c ∈ i} counts[b, c]``."""
    n_inst = len(grid.institutions)
    sums = np.empty((counts.shape[0], n_inst, per_case.shape[1]))
    n = np.empty((counts.shape[0], n_inst))
    for i in range(n_inst):
        members = grid.members(i)
        w = counts[:, members].astype(np.float64)
        sums[:, i] = w @ per_case[members]
        n[:, i] = w.sum(axis=1)
    return sums, n


def _mean_rank_institutions(
    grid: ScoreGrid, counts: np.ndarray, per_case: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared by fets2 and aggregate: per institution the case mean of ``per_case`` ``(C, M, T)`` (lower =
    better), ranked per metric, ``s_i(t) = mean_m rank``, institution rank; final ``mean_i rank_i(t)``, rank."""
    n_cases, n_metrics, n_teams = per_case.shape
    sums, n = _institution_sums(grid, counts, per_case.reshape(n_cases, n_metrics * n_teams))
    means = (sums / n[:, :, None]).reshape(counts.shape[0], len(grid.institutions), n_metrics, n_teams)
    metric_ranks = rank_lower_better(means)  # (b, I, M, T), integers
    institution_score = metric_ranks.sum(axis=2) / n_metrics
    institution_rank = rank_lower_better(institution_score)
    final_score = institution_rank.sum(axis=1) / len(grid.institutions)
    return final_score, rank_lower_better(final_score), institution_score, institution_rank


def rank_arrays(
    grid: ScoreGrid,
    method: Method,
    counts: np.ndarray | None = None,
    convergence: Mapping[str, float] | None = None,
) -> RankArrays:
    """Scores and ranks of ``method`` for each row of case weights ``counts`` ``(b, C)`` (default: one row of
    ones, the full-data ranking). A bootstrap resample is a row of case counts: per-case ranks do not change
    when cases are resampled, so a resampled mean of per-case ranks is ``counts @ R / n``.

    - ``fets2``: ``r_im(t)`` = rank of ``mean_{c∈i} R[c,m,t]``; ``s_i(t) = mean_m r_im(t)``; ``ρ_i(t)`` = rank of
      ``s_i``; ``score(t) = mean_i ρ_i(t)`` (each institution counts once, whatever its size); rank.
    - ``fets1``: ``q_c(t) = (Σ_m R[c,m,t] + 3·ρ_conv(t)) / (M + 3)``; ``score(t) = mean_c q_c(t)`` over all cases
      pooled; rank. Institution scores: the same mean over the institution's cases.
    - ``aggregate``: as ``fets2`` with ``R`` replaced by the oriented values (metric means, then ranks).
    """
    counts = np.ones((1, grid.n_cases)) if counts is None else np.atleast_2d(np.asarray(counts))
    if counts.shape[1] != grid.n_cases:
        raise ValueError(f"counts cover {counts.shape[1]} cases, the grid has {grid.n_cases}")
    if method != "fets1" and convergence is not None:
        raise ValueError(f"convergence scores are used by method 'fets1' only, not {method!r}")
    if method == "fets2":
        return RankArrays(*_mean_rank_institutions(grid, counts, grid.ranks))
    if method == "aggregate":
        return RankArrays(*_mean_rank_institutions(grid, counts, grid.oriented))
    if method == "fets1":
        if convergence is None:
            raise ValueError("method 'fets1' needs convergence scores (team -> score, higher = better)")
        n_metrics = len(grid.metrics)
        totals = grid.ranks.sum(axis=1) + CONVERGENCE_WEIGHT * convergence_ranks(grid, convergence)[None, :]
        sums, n = _institution_sums(grid, counts, totals)  # integer sums: ties exact
        per_case = n_metrics + CONVERGENCE_WEIGHT
        institution_score = sums / (n[:, :, None] * per_case)
        final_score = sums.sum(axis=1) / (n.sum(axis=1)[:, None] * per_case)
        return RankArrays(
            final_score, rank_lower_better(final_score), institution_score, rank_lower_better(institution_score)
        )
    raise ValueError(f"unknown ranking method {method!r}; expected one of {', '.join(METHODS)}")


def ranking_from_arrays(grid: ScoreGrid, arrays: RankArrays, method: str, row: int = 0) -> Ranking:
    """One row of :class:`RankArrays` as a :class:`Ranking`."""
    final = pd.DataFrame({
        "team": list(grid.teams),
        "score": arrays.final_score[row],
        "rank": arrays.final_rank[row].astype(np.int64),
    }).sort_values(["rank", "team"], kind="stable").reset_index(drop=True)
    n_inst, n_teams = len(grid.institutions), len(grid.teams)
    per_institution = pd.DataFrame({
        "institution": np.repeat(np.asarray(grid.institutions, dtype=object), n_teams),
        "team": np.tile(np.asarray(grid.teams, dtype=object), n_inst),
        "score": arrays.institution_score[row].ravel(),
        "rank": arrays.institution_rank[row].ravel().astype(np.int64),
    }).sort_values(["institution", "rank", "team"], kind="stable").reset_index(drop=True)
    return Ranking(final=final, per_institution=per_institution, method=method)


# ------------------------------------------------------------------------------------------ public rankings
def fets_task2_ranking(
    scores: pd.DataFrame, metrics: Mapping[str, Direction], missing: Mapping[str, float]
) -> Ranking:
    """FeTS task 2 (generalisation across institutions): within each institution, rank teams per case and
    metric, average the ranks over the institution's cases, re-rank those means per metric, average the
    metric ranks (institution score) and rank them; final score = mean over institutions of the institution
    ranks (each institution counts equally), final rank = its rank."""
    grid = score_grid(scores, metrics, missing)
    return ranking_from_arrays(grid, rank_arrays(grid, "fets2"), "fets2")


def fets_task1_ranking(
    scores: pd.DataFrame,
    metrics: Mapping[str, Direction],
    missing: Mapping[str, float],
    convergence: Mapping[str, float],
) -> Ranking:
    """FeTS task 1 (federated training): per case, the mean of the teams' ranks on each metric and of their
    convergence-score rank (higher = better) counted 3 times, ``(Σ_m R_m + 3 R_conv) / (M + 3)``; score = mean
    over all cases pooled across institutions; rank. ``per_institution``: the same over each institution's
    cases."""
    grid = score_grid(scores, metrics, missing)
    return ranking_from_arrays(grid, rank_arrays(grid, "fets1", convergence=convergence), "fets1")


def aggregate_then_rank(
    scores: pd.DataFrame, metrics: Mapping[str, Direction], missing: Mapping[str, float]
) -> Ranking:
    """Aggregate-then-rank: per institution, each metric's mean over cases (missing entries filled), teams
    ranked per metric, the mean of those ranks (institution score) ranked; final score = mean over
    institutions of the institution ranks; rank."""
    grid = score_grid(scores, metrics, missing)
    return ranking_from_arrays(grid, rank_arrays(grid, "aggregate"), "aggregate")


def rank(
    scores: pd.DataFrame,
    method: Method,
    metrics: Mapping[str, Direction],
    missing: Mapping[str, float],
    convergence: Mapping[str, float] | None = None,
) -> Ranking:
    """Dispatch to :func:`fets_task2_ranking` (``fets2``), :func:`fets_task1_ranking` (``fets1``, needs
    ``convergence``) or :func:`aggregate_then_rank` (``aggregate``)."""
    if method not in METHODS:
        raise ValueError(f"unknown ranking method {method!r}; expected one of {', '.join(METHODS)}")
    grid = score_grid(scores, metrics, missing)
    return ranking_from_arrays(grid, rank_arrays(grid, method, convergence=convergence), method)
