"""Robustness of a challenge ranking (Wiesenfarth et al. 2021, Sci. Rep., "Methods and open-source toolkit for
analyzing and visualizing challenge results", challengeR): bootstrap rank stability with Kendall's tau, and
significance maps of one-sided Wilcoxon signed-rank tests between every ordered pair of teams, Holm-adjusted.

Bootstrap: cases are resampled with replacement within each institution (stratified, so each institution
keeps its case count and no resample loses an institution) and the whole ranking is recomputed. Per-case ranks
do not change under resampling (a case's ranks depend on that case only), so a resample is a row of case
counts ``w`` and every mean of per-case quantities is ``w @ X / n``: :func:`medfed.challenge.ranking.rank_arrays`
ranks whole blocks of resamples at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, wilcoxon

from medfed.challenge.ranking import (
    Direction,
    Method,
    Ranking,
    rank_arrays,
    ranking_from_arrays,
    score_grid,
)
from medfed.stats.multiple import CORRECTIONS, adjust_p_values
from medfed.stats.resampling import bootstrap_resamples


# -------------------------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True, eq=False)
class BootstrapRanks:
    """``ranks[r, t]``: rank of team ``teams[t]`` in bootstrap resample ``r`` ``(B, T)`` (``scores`` likewise);
    ``full``: the ranking on all cases; ``kendall_tau[r]``: Kendall's tau-b between the full-data ranks and
    resample ``r``'s (NaN when either ranking is constant, e.g. a single team)."""

    teams: tuple[str, ...]
    ranks: np.ndarray
    scores: np.ndarray
    full: Ranking
    kendall_tau: np.ndarray
    method: str
    n_resamples: int

    @property
    def full_ranks(self) -> np.ndarray:
        """The full-data ranks in :attr:`teams` order, ``(T,)``."""
        return self.full.final.set_index("team").loc[list(self.teams), "rank"].to_numpy(dtype=np.float64)

    def summary(self, confidence: float = 0.95) -> pd.DataFrame:
        """Per team (sorted by full-data rank, then team): ``full_rank``, ``median_rank``, ``rank_low`` /
        ``rank_high`` (the ``(1 ∓ confidence)/2`` quantiles of the bootstrap ranks, linear interpolation;
        2.5 % / 97.5 % by default) and ``p_first`` (fraction of resamples in which the team ranks 1)."""
        tail = (1.0 - confidence) / 2.0
        table = pd.DataFrame({
            "team": list(self.teams),
            "full_rank": self.full_ranks.astype(np.int64),
            "median_rank": np.median(self.ranks, axis=0),
            "rank_low": np.quantile(self.ranks, tail, axis=0),
            "rank_high": np.quantile(self.ranks, 1.0 - tail, axis=0),
            "p_first": (self.ranks == 1).mean(axis=0),
        })
        return table.sort_values(["full_rank", "team"], kind="stable").reset_index(drop=True)

    def rank_frequencies(self) -> pd.DataFrame:
        """Long table for a blob plot: team, rank, fraction of resamples in which the team has that rank
        (ranks that never occur are left out; fractions sum to 1 per team)."""
        n_teams = len(self.teams)
        ranks = self.ranks.astype(np.int64)
        counts = np.stack([np.bincount(ranks[:, t], minlength=n_teams + 1)[1:] for t in range(n_teams)])
        fractions = counts / max(ranks.shape[0], 1)
        t, r = np.nonzero(counts)
        return pd.DataFrame({
            "team": np.asarray(self.teams, dtype=object)[t],
            "rank": r + 1,
            "fraction": fractions[t, r],
        })


def kendall_tau_b(reference: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Kendall's tau-b (scipy) between ``reference`` ``(T,)`` and each row of ``ranks`` ``(B, T)``; NaN where
    either side is constant. Computed once per distinct row (bootstrap rankings repeat a lot)."""
    reference = np.asarray(reference, dtype=np.float64)
    ranks = np.atleast_2d(np.asarray(ranks, dtype=np.float64))
    if ranks.shape[0] == 0:
        return np.empty(0)
    distinct, inverse = np.unique(ranks, axis=0, return_inverse=True)
    taus = np.full(distinct.shape[0], np.nan)
    if np.ptp(reference) > 0:
        for k, row in enumerate(distinct):
            if np.ptp(row) > 0:
                taus[k] = kendalltau(reference, row, variant="b").statistic
    return taus[np.asarray(inverse).ravel()]


def bootstrap_rankings(
    scores: pd.DataFrame,
    metrics: Mapping[str, Direction],
    missing: Mapping[str, float],
    method: Method = "fets2",
    convergence: Mapping[str, float] | None = None,
    n_resamples: int = 1000,
    seed: int | np.random.Generator = 0,
) -> BootstrapRanks:
    """Rank stability: ``n_resamples`` stratified bootstrap resamples of the cases (within each institution,
    drawn by :func:`medfed.stats.resampling.bootstrap_resamples` with the institution as stratum from
    ``np.random.default_rng(seed)``), the full ``method`` ranking recomputed on each, and Kendall's tau-b
    between the full-data ranking and each resample's."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    grid = score_grid(scores, metrics, missing)
    full = rank_arrays(grid, method, convergence=convergence)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    ranks, values = [], []
    for block in bootstrap_resamples(grid.n_cases, n_resamples, rng, strata=grid.institution_of_case):
        arrays = rank_arrays(grid, method, block.counts, convergence)
        ranks.append(arrays.final_rank)
        values.append(arrays.final_score)
    rank_matrix = np.concatenate(ranks)
    return BootstrapRanks(
        teams=grid.teams,
        ranks=rank_matrix,
        scores=np.concatenate(values),
        full=ranking_from_arrays(grid, full, method),
        kendall_tau=kendall_tau_b(full.final_rank[0], rank_matrix),
        method=method,
        n_resamples=n_resamples,
    )


# ------------------------------------------------------------------------------------ significance maps
@dataclass(frozen=True, eq=False)
class Significance:
    """Square tables over ``teams`` (rows = A, columns = B): ``p_values`` one-sided P that A is better than B,
    ``adjusted`` after ``correction`` over all ``K(K-1)`` ordered pairs, ``significant`` = ``adjusted < alpha``
    (diagonal NaN / False). ``quantity``: what was compared per case."""

    p_values: pd.DataFrame
    adjusted: pd.DataFrame
    significant: pd.DataFrame
    alpha: float
    correction: str
    quantity: str
    n_cases: int


def one_sided_wilcoxon(differences: np.ndarray) -> float:
    """P of the one-sided Wilcoxon signed-rank test that the differences tend to be negative (scipy,
    ``alternative="less"``); zero differences are dropped (Wilcoxon's method), so all-equal pairs get P = 1;
    exact null distribution up to 50 pairs without tied ``|d|``, normal approximation otherwise."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(wilcoxon(d, alternative="less").pvalue)


def pairwise_significance(
    scores: pd.DataFrame,
    metrics: Mapping[str, Direction],
    missing: Mapping[str, float],
    alpha: float = 0.05,
    correction: str = "holm",
    metric: str | None = None,
    order: Sequence[str] | None = None,
) -> Significance:
    """Significance map: for each ordered pair (A, B), a one-sided Wilcoxon signed-rank test over all cases
    (pooled across institutions) that A is better than B, on the paired per-case differences ``q_A - q_B``
    with lower ``q`` = better, adjusted over the ``K(K-1)`` ordered pairs (``holm``, ``bh`` or ``none``).

    ``q`` is by default a case's mean rank over the metrics, ``q_c(t) = mean_m R[c,m,t]`` (the per-case
    quantity FeTS averages; a team's ``q`` depends on the other teams' values in that case, as its ranks do).
    With ``metric=``, ``q`` is that metric's value (missing filled), negated when higher is better, as in
    challengeR's per-metric significance maps. Rows and columns follow ``order`` (default: ascending mean
    ``q``, then team name).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {', '.join(CORRECTIONS)}")
    grid = score_grid(scores, metrics, missing)
    if metric is None:
        q, quantity = grid.ranks.mean(axis=1), "mean case rank over " + ", ".join(grid.metrics)
    else:
        if metric not in grid.metrics:
            raise ValueError(f"metric {metric!r} is not among the ranked metrics {list(grid.metrics)}")
        q = grid.oriented[:, grid.metrics.index(metric), :]
        quantity = f"{metric} ({metrics[metric]} is better)"
    teams = list(grid.teams)
    if order is None:
        means = q.mean(axis=0)
        order = sorted(teams, key=lambda team: (means[teams.index(team)], team))
    elif sorted(order) != sorted(teams):
        raise ValueError(f"order {list(order)} does not list the teams {teams} exactly once")
    columns = [teams.index(team) for team in order]
    q = q[:, columns]
    n_teams = len(columns)
    p = np.full((n_teams, n_teams), np.nan)
    for a in range(n_teams):
        for b in range(n_teams):
            if a != b:
                p[a, b] = one_sided_wilcoxon(q[:, a] - q[:, b])
    adjusted = adjust_p_values(p.ravel(), correction).reshape(p.shape)  # NaN diagonal stays out of the family
    labels = list(order)
    return Significance(
        p_values=pd.DataFrame(p, index=labels, columns=labels),
        adjusted=pd.DataFrame(adjusted, index=labels, columns=labels),
        significant=pd.DataFrame(np.nan_to_num(adjusted, nan=1.0) < alpha, index=labels, columns=labels),
        alpha=alpha,
        correction=correction,
        quantity=quantity,
        n_cases=grid.n_cases,
    )
