"""``medfed score``: federated evaluation of submissions on a federation of ground truth, then rankings.

Scoring directory (``<out>/``)::

    per_case.csv           team, site, institution, case_id (hashed), metric, value, status
    per_institution.csv    team, institution, n_cases, mean and median of every metric, AUROC (suppressed below min_count)
    site_metrics.csv       team, site, metric, value, n_cases: metrics a site computes on all its cases (AUROC)
    ranking.csv            team, score, rank: the final ranking (procedure in summary.json)
    institution_ranks.csv  institution, team, score, rank: every institution's own ranking
    rank_stability.csv     team, median rank, 95% rank interval, share of bootstrap resamples at rank 1
    rank_frequencies.csv   team, rank, fraction of bootstrap resamples (the blob plot)
    significance.csv       Holm-adjusted one-sided Wilcoxon P: row team better than column team
    problems.csv           site, case (hashed), team, reason: every prediction that could not be scored as is
    summary.json           options, counts, ranking, Kendall's tau of the bootstrap rankings
    leaderboard.html       the self-contained page

Each site runs :func:`~medfed.challenge.site_scoring.score_site` and sends back its message; only those
messages reach this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medfed.challenge.leaderboard import write_leaderboard
from medfed.challenge.options import ScoringOptions, ScoringResult
from medfed.challenge.ranking import rank
from medfed.challenge.robustness import bootstrap_rankings, pairwise_significance
from medfed.challenge.site_scoring import SiteScores, score_site
from medfed.challenge.submissions import Submission
from medfed.errors import MedfedError
from medfed.io import atomic_write_text
from medfed.sites.federation import Federation
from medfed.stats import suppress_count
from medfed.stats.disclosure import is_primary, secondary_marker

#: ranked metrics by prefix: direction, and whether a missing case counts as the ``missing_dice`` /
#: ``missing_hd95`` option or a fixed worst value. Segmentation ranks Dice and HD95 of ET, TC, WT (FeTS's 6
#: pairs); classification ranks the Brier score of each finding.
RANKED_PREFIXES: dict[str, Literal["max", "min"]] = {"Dice": "max", "HD95": "min", "Brier": "min"}
RANKINGS = {
    "fets2": "FeTS task 2: per institution, rank the teams per case on each ranked metric, average over the "
             "institution's cases, re-rank, average these ranks; average the institution ranks (each institution "
             "counts equally); rank",
    "fets1": "FeTS task 1: per case, the ranks on each ranked metric plus the convergence-score rank counted 3 "
             "times, averaged; averaged over all cases; rank",
    "aggregate": "aggregate then rank: per institution, the mean of each ranked metric over cases, ranked per "
                 "metric and averaged; averaged over institutions; rank",
}


def ranked_metrics(records: pd.DataFrame) -> dict[str, Literal["max", "min"]]:
    """The ranked metrics present in ``records`` (Dice/HD95 per region, or Brier per finding), in order."""
    names = list(dict.fromkeys(records["metric"]))
    return {name: RANKED_PREFIXES[name.split("_", 1)[0]] for name in names if name.split("_", 1)[0] in RANKED_PREFIXES}


def collect_site_scores(
    federation: Federation, submissions: Sequence[Submission], options: ScoringOptions, progress: bool = True
) -> list[SiteScores]:
    """Every site scores every submission locally; what returns is each site's message (records + counts)."""
    return [SiteScores.from_message(score_site(site, submissions, split=options.split, rules=options.rules,
                                               progress=progress).to_message())
            for site in federation]


def ranking_table(records: pd.DataFrame) -> pd.DataFrame:
    """The ranked metrics of ``records``; a case whose prediction was unscorable counts as missing (NaN)."""
    ranked = records[records["metric"].isin(list(ranked_metrics(records)))].copy()
    ranked.loc[ranked["status"] != "ok", "value"] = np.nan
    return ranked[["team", "institution", "case_id", "metric", "value"]]


def _total_cases(messages: Sequence[Any], min_counts: Mapping[str, int]) -> int | str:
    """All institutions' cases, hidden (``">=k"``) when an institution's count is suppressed: the total beside
    the shown counts would give the small one away (rule 2 of :mod:`medfed.stats.disclosure`)."""
    total = int(sum(m.n_cases for m in messages))
    if not any(is_primary(int(m.n_cases), min_counts[m.site]) for m in messages):
        return total
    k = max(min_counts.values())
    return secondary_marker(k) if total >= k else f"<{k}"


def institution_table(records: pd.DataFrame, summaries: pd.DataFrame, min_counts: Mapping[str, int]) -> pd.DataFrame:
    """Per team and institution: case count, mean and median of every per-case metric and the site-level
    metrics (AUROC); values hidden below the institution's ``min_count`` (the count shown as ``<min_count``)."""
    site_level = summaries.set_index(["team", "site", "metric"])["value"] if len(summaries) else pd.Series(dtype=float)
    rows = []
    for (team, institution, site), group in records.groupby(["team", "institution", "site"], sort=False):
        n = int(group["case_id"].nunique())
        minimum = int(min_counts.get(str(site), 1))
        row: dict[str, Any] = {"team": team, "institution": institution, "site": site,
                               "n_cases": suppress_count(n, minimum), "suppressed": n < minimum,
                               "unscorable": suppress_count(int(group.loc[group["status"] != "ok", "case_id"].nunique()),
                                                            minimum) if n >= minimum else ""}
        for metric, values in group.groupby("metric", sort=False)["value"]:
            row[f"{metric}_mean"] = np.nan if n < minimum else float(values.mean())
            row[f"{metric}_median"] = np.nan if n < minimum else float(values.median())
        for (t, s, metric), value in site_level.items():
            if t == team and s == site:
                row[metric] = np.nan if n < minimum else float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def score(
    federation: Federation, submissions: Sequence[Submission], out: Path | str, options: ScoringOptions | None = None,
    progress: bool = True,
) -> ScoringResult:
    """Score, rank and write the scoring directory (module docstring); returns the tables."""
    options = options or ScoringOptions()
    teams = [s.team for s in submissions]
    if options.ranking == "fets1":
        given = options.convergence or {}
        lacking = [t for t in teams if t not in given]
        if lacking:
            raise MedfedError(f"ranking fets1 needs a convergence score for every team; missing: {', '.join(lacking)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    messages = collect_site_scores(federation, submissions, options, progress)
    records = pd.concat([m.records for m in messages], ignore_index=True)
    summaries = pd.concat([m.summaries for m in messages if len(m.summaries)] or [messages[0].summaries],
                          ignore_index=True)
    problems = pd.DataFrame([{"site": p.site, "case": p.case, "team": (p.file or "").removeprefix("team "),
                              "reason": p.reason} for m in messages for p in m.problems],
                            columns=["site", "case", "team", "reason"])
    scored_sites = [m for m in messages if m.n_cases > 0]
    if not scored_sites:
        raise MedfedError(f"no site has a case in split {options.split!r} to score")
    table = ranking_table(records)
    metrics = ranked_metrics(table)
    missing = options.missing(list(metrics))
    ranking = rank(table, options.ranking, metrics, missing, convergence=options.convergence)
    boot = bootstrap_rankings(table, metrics, missing, method=options.ranking, convergence=options.convergence,
                              n_resamples=options.n_resamples, seed=options.seed)
    stability, frequencies = boot.summary(), boot.rank_frequencies()
    significance = pairwise_significance(table, metrics, missing, alpha=options.alpha)
    min_counts = {site.name: site.min_count for site in federation}
    per_institution = institution_table(records, summaries, min_counts)
    tau = np.asarray(boot.kendall_tau, dtype=float)
    tau = tau[np.isfinite(tau)]  # NaN: a ranking with one team, or all tied
    summary = {
        "ranking": options.ranking, "procedure": RANKINGS[options.ranking], "split": options.split,
        "ranked_metrics": metrics,
        "teams": teams, "institutions": [{"site": m.site, "institution": m.institution,
                                          "cases": suppress_count(m.n_cases, min_counts[m.site])} for m in messages],
        "cases": _total_cases(messages, min_counts), "rules": asdict(options.rules),
        "missing": missing,
        "bootstrap": {"resamples": options.n_resamples, "seed": options.seed,
                      "kendall_tau_median": float(np.median(tau)) if tau.size else None,
                      "kendall_tau_q025": float(np.quantile(tau, 0.025)) if tau.size else None},
        "alpha": options.alpha, "convergence": options.convergence,
        "final": ranking.final.to_dict("records"), "problems": len(problems),
    }
    _write(out / "per_case.csv", records)
    _write(out / "per_institution.csv", per_institution)
    _write(out / "site_metrics.csv", summaries)
    _write(out / "ranking.csv", ranking.final)
    _write(out / "institution_ranks.csv", ranking.per_institution)
    _write(out / "rank_stability.csv", stability)
    _write(out / "rank_frequencies.csv", frequencies)
    atomic_write_text(out / "significance.csv", significance.adjusted.to_csv())
    _write(out / "problems.csv", problems)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=_json_default))
    result = ScoringResult(out, records, ranking, stability, significance.adjusted, problems, summary)
    write_leaderboard(result, per_institution, frequencies, significance, options)
    return result


def _write(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["RANKED_PREFIXES", "RANKINGS", "ScoringOptions", "ScoringResult", "ranked_metrics", "score"]
