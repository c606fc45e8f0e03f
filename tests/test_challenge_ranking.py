"""medfed.challenge: FeTS rankings on a hand-computed example, institution weighting, bootstrap rank stability
(the count-matrix shortcut against an explicit loop) and Holm-adjusted one-sided Wilcoxon significance maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, wilcoxon

from medfed.challenge.ranking import (
    aggregate_then_rank,
    case_ranks,
    fets_task1_ranking,
    fets_task2_ranking,
    rank,
    score_grid,
)
from medfed.challenge.robustness import (
    bootstrap_rankings,
    kendall_tau_b,
    one_sided_wilcoxon,
    pairwise_significance,
)
from medfed.stats.resampling import bootstrap_resamples

METRICS = {"Dice_ET": "max", "HD95_ET": "min"}
MISSING = {"Dice_ET": 0.0, "HD95_ET": 1000.0}


def _long(rows: list[tuple[str, str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["team", "institution", "case_id", "metric", "value"])


def hand_example() -> pd.DataFrame:
    """3 teams, institution I1 (2 cases) and I2 (1 case), Dice (higher better) and HD95 (lower better).

    c1 (I1): Dice A .9  B .8  C .8   -> A1 B2 C2 (tie: lower rank)   HD95 A 2  B 5  C 3     -> A1 B3 C2
    c2 (I1): Dice A .7  B .9  C NaN  -> A2 B1 C3 (NaN = 0)           HD95 A 4  B 1  C (no row = 1000) -> A2 B1 C3
    c3 (I2): Dice A .5  B .9  C .6   -> A3 B1 C2                     HD95 A 10 B 10 C 3     -> A2 B2 C1
    """
    values = {
        ("I1", "c1"): {"A": (0.9, 2.0), "B": (0.8, 5.0), "C": (0.8, 3.0)},
        ("I1", "c2"): {"A": (0.7, 4.0), "B": (0.9, 1.0), "C": (np.nan, None)},
        ("I2", "c3"): {"A": (0.5, 10.0), "B": (0.9, 10.0), "C": (0.6, 3.0)},
    }
    rows = []
    for (inst, case), teams in values.items():
        for team, (dice, hd) in teams.items():
            rows.append((team, inst, case, "Dice_ET", dice))
            if hd is not None:
                rows.append((team, inst, case, "HD95_ET", hd))
    rows.append(("A", "I1", "c1", "Sensitivity", 0.1))  # a metric not ranked on: ignored
    return _long(rows)


def _final(ranking) -> dict[str, tuple[float, int]]:
    return {r.team: (r.score, r.rank) for r in ranking.final.itertuples()}


def _institution(ranking, inst: str) -> dict[str, tuple[float, int]]:
    table = ranking.per_institution[ranking.per_institution["institution"] == inst]
    return {r.team: (r.score, r.rank) for r in table.itertuples()}


# ---------------------------------------------------------------------------------- hand-computed ranks
def test_case_ranks_ties_take_the_lower_rank_and_missing_counts_as_worst():
    table = case_ranks(hand_example(), METRICS, MISSING)
    assert list(table.columns) == ["institution", "case_id", "metric", "team", "value", "imputed", "rank"]
    assert len(table) == 3 * 2 * 3
    got = {(r.case_id, r.metric, r.team): r.rank for r in table.itertuples()}
    expected = {
        "c1": {"Dice_ET": (1, 2, 2), "HD95_ET": (1, 3, 2)},
        "c2": {"Dice_ET": (2, 1, 3), "HD95_ET": (2, 1, 3)},
        "c3": {"Dice_ET": (3, 1, 2), "HD95_ET": (2, 2, 1)},
    }
    for case, per_metric in expected.items():
        for metric, ranks in per_metric.items():
            assert tuple(got[(case, metric, team)] for team in "ABC") == ranks, (case, metric)
    filled = table.set_index(["case_id", "metric", "team"])
    assert filled.loc[("c2", "Dice_ET", "C"), "value"] == 0.0 and filled.loc[("c2", "Dice_ET", "C"), "imputed"]
    assert filled.loc[("c2", "HD95_ET", "C"), "value"] == 1000.0 and filled.loc[("c2", "HD95_ET", "C"), "imputed"]
    assert not filled.loc[("c1", "Dice_ET", "A"), "imputed"]


def test_fets_task2_by_hand():
    # I1: Dice mean ranks A 1.5 B 1.5 C 2.5 -> 1 1 3; HD95 A 1.5 B 2 C 2.5 -> 1 2 3
    #     institution scores A 1 B 1.5 C 3 -> ranks 1 2 3
    # I2: Dice 3 1 2, HD95 2 2 1 -> scores A 2.5 B 1.5 C 1.5 -> ranks A3 B1 C1 (tie: lower)
    # final: A (1+3)/2 = 2, B (2+1)/2 = 1.5, C (3+1)/2 = 2 -> B1, A2, C2 (tie: lower)
    ranking = fets_task2_ranking(hand_example(), METRICS, MISSING)
    assert ranking.method == "fets2"
    assert list(ranking.final.columns) == ["team", "score", "rank"]
    assert list(ranking.per_institution.columns) == ["institution", "team", "score", "rank"]
    assert _final(ranking) == {"B": (1.5, 1), "A": (2.0, 2), "C": (2.0, 2)}
    assert ranking.order == ["B", "A", "C"]
    assert _institution(ranking, "I1") == {"A": (1.0, 1), "B": (1.5, 2), "C": (3.0, 3)}
    assert _institution(ranking, "I2") == {"A": (2.5, 3), "B": (1.5, 1), "C": (1.5, 1)}


def test_fets_task1_by_hand():
    # convergence A .8 B .5 C .9 -> ranks A2 B3 C1, counted 3 times; per case (Dice + HD95 + 3 conv) / 5:
    # c1: A 8/5 B 14/5 C 7/5; c2: A 10/5 B 11/5 C 9/5; c3: A 11/5 B 12/5 C 6/5
    # pooled: A 29/15 B 37/15 C 22/15 -> C1 A2 B3; I1: A 18/10 B 25/10 C 16/10; I2: A 11/5 B 12/5 C 6/5
    convergence = {"A": 0.8, "B": 0.5, "C": 0.9, "D": 0.1}  # D: no scores, ignored
    ranking = fets_task1_ranking(hand_example(), METRICS, MISSING, convergence)
    final = _final(ranking)
    assert ranking.order == ["C", "A", "B"]
    assert [final[t][1] for t in "ABC"] == [2, 3, 1]
    assert [final[t][0] for t in "ABC"] == pytest.approx([29 / 15, 37 / 15, 22 / 15], abs=1e-12)
    i1, i2 = _institution(ranking, "I1"), _institution(ranking, "I2")
    assert [i1[t][0] for t in "ABC"] == pytest.approx([1.8, 2.5, 1.6], abs=1e-12)
    assert [i2[t][0] for t in "ABC"] == pytest.approx([2.2, 2.4, 1.2], abs=1e-12)
    assert [i1[t][1] for t in "ABC"] == [2, 3, 1] and [i2[t][1] for t in "ABC"] == [2, 3, 1]
    with pytest.raises(ValueError, match="convergence"):
        fets_task1_ranking(hand_example(), METRICS, MISSING, {"A": 0.8, "B": 0.5})


def test_aggregate_then_rank_by_hand():
    # I1 means: Dice A .8 B .85 C .4 -> 2 1 3; HD95 A 3 B 3 C 501.5 -> 1 1 3 (tie: lower)
    #     scores A 1.5 B 1 C 3 -> 2 1 3
    # I2: Dice A .5 B .9 C .6 -> 3 1 2; HD95 A 10 B 10 C 3 -> 2 2 1; scores 2.5 1.5 1.5 -> 3 1 1
    # final: A 2.5 B 1 C 2 -> B1 C2 A3
    ranking = aggregate_then_rank(hand_example(), METRICS, MISSING)
    assert _final(ranking) == {"B": (1.0, 1), "C": (2.0, 2), "A": (2.5, 3)}
    assert _institution(ranking, "I1") == {"A": (1.5, 2), "B": (1.0, 1), "C": (3.0, 3)}
    assert _institution(ranking, "I2") == {"A": (2.5, 3), "B": (1.5, 1), "C": (1.5, 1)}


def test_dispatcher_and_input_checks():
    scores = hand_example()
    for method, direct in [("fets2", fets_task2_ranking(scores, METRICS, MISSING)),
                           ("aggregate", aggregate_then_rank(scores, METRICS, MISSING))]:
        pd.testing.assert_frame_equal(rank(scores, method, METRICS, MISSING).final, direct.final)
    conv = {"A": 0.8, "B": 0.5, "C": 0.9}
    pd.testing.assert_frame_equal(
        rank(scores, "fets1", METRICS, MISSING, conv).per_institution,
        fets_task1_ranking(scores, METRICS, MISSING, conv).per_institution,
    )
    with pytest.raises(ValueError, match="unknown ranking method"):
        rank(scores, "borda", METRICS, MISSING)
    with pytest.raises(ValueError, match="fets1"):
        rank(scores, "fets2", METRICS, MISSING, conv)
    with pytest.raises(ValueError, match="duplicate"):
        rank(pd.concat([scores, scores.iloc[:1]]), "fets2", METRICS, MISSING)
    with pytest.raises(ValueError, match="no rows"):
        rank(scores, "fets2", {**METRICS, "Dice_TC": "max"}, {**MISSING, "Dice_TC": 0.0})
    with pytest.raises(ValueError, match="missing"):
        rank(scores, "fets2", METRICS, {"Dice_ET": 0.0})


def test_institutions_count_equally_whatever_their_size():
    # I1 (10 cases): A beats B on every case; I2, I3 (1 case each): B beats A.
    rows = [(t, "I1", f"a{k}", "Dice", v) for k in range(10) for t, v in [("A", 0.9), ("B", 0.8)]]
    rows += [(t, inst, "x", "Dice", v) for inst in ("I2", "I3") for t, v in [("A", 0.7), ("B", 0.8)]]
    scores = _long(rows)
    metrics, missing = {"Dice": "max"}, {"Dice": 0.0}
    pooled = case_ranks(scores, metrics, missing).groupby("team")["rank"].mean()
    assert pooled["A"] < pooled["B"]  # pooled over cases A wins (10 of 12 cases) ...
    for method in ("fets2", "aggregate"):  # ... institution-averaged, B wins 2 of 3 institutions
        ranking = rank(scores, method, metrics, missing)
        assert _final(ranking) == {"B": (4 / 3, 1), "A": (5 / 3, 2)}
    # growing I1 tenfold changes nothing
    bigger = _long(rows + [(t, "I1", f"b{k}", "Dice", v) for k in range(90) for t, v in [("A", 0.9), ("B", 0.8)]])
    pd.testing.assert_frame_equal(rank(bigger, "fets2", metrics, missing).final,
                                  rank(scores, "fets2", metrics, missing).final)
    # whereas FeTS task 1 pools cases: A first
    assert rank(scores, "fets1", metrics, missing, {"A": 1.0, "B": 1.0}).order == ["A", "B"]


# ------------------------------------------------------------------------------------------- synthetic data
def synthetic(seed: int = 0, sizes=(20, 30, 15)) -> pd.DataFrame:
    """``best`` much better on every case (Dice ~.9, HD95 ~2), ``twin1``/``twin2`` the same distribution,
    ``worst`` clearly worse; noise on every value."""
    rng = np.random.default_rng(seed)
    centres = {"best": (0.9, 2.0), "twin1": (0.7, 8.0), "twin2": (0.7, 8.0), "worst": (0.5, 15.0)}
    rows = []
    for i, n in enumerate(sizes):
        for k in range(n):
            for team, (dice, hd) in centres.items():
                rows.append((team, f"inst{i}", f"case{k}", "Dice_ET", float(np.clip(dice + rng.normal(0, 0.04), 0, 1))))
                rows.append((team, f"inst{i}", f"case{k}", "HD95_ET", float(max(0.0, hd + rng.normal(0, 1.0)))))
    return _long(rows)


def test_bootstrap_clear_winner_and_significance():
    scores = synthetic()
    boot = bootstrap_rankings(scores, METRICS, MISSING, method="fets2", n_resamples=1000, seed=1)
    assert boot.ranks.shape == (1000, 4) and boot.kendall_tau.shape == (1000,)
    summary = boot.summary().set_index("team")
    assert list(summary.columns) == ["full_rank", "median_rank", "rank_low", "rank_high", "p_first"]
    assert summary.loc["best", "full_rank"] == 1 and summary.loc["best", "p_first"] > 0.95
    assert summary.loc["best", "median_rank"] == 1 and summary.loc["worst", "rank_low"] == 4
    freq = boot.rank_frequencies()
    assert list(freq.columns) == ["team", "rank", "fraction"]
    assert freq.groupby("team")["fraction"].sum().to_numpy() == pytest.approx(np.ones(4))
    assert freq[(freq.team == "best") & (freq["rank"] == 1)]["fraction"].item() == summary.loc["best", "p_first"]

    sig = pairwise_significance(scores, METRICS, MISSING)
    assert sig.correction == "holm" and sig.n_cases == 65
    assert list(sig.adjusted.index) == list(sig.adjusted.columns) and sig.adjusted.index[0] == "best"
    assert np.isnan(np.diag(sig.adjusted.to_numpy())).all() and not np.diag(sig.significant.to_numpy()).any()
    for other in ("twin1", "twin2", "worst"):
        assert sig.adjusted.loc["best", other] < 0.05 and sig.significant.loc["best", other]
        assert not sig.significant.loc[other, "best"]
    assert not sig.significant.loc["twin1", "twin2"] and not sig.significant.loc["twin2", "twin1"]
    assert sig.adjusted.loc["twin1", "twin2"] >= 0.05 and sig.adjusted.loc["twin2", "twin1"] >= 0.05
    # the same on one metric's raw values, with its direction
    for metric in METRICS:
        one = pairwise_significance(scores, METRICS, MISSING, metric=metric)
        assert all(one.significant.loc["best", o] for o in ("twin1", "twin2", "worst"))
        assert not one.significant.loc["twin1", "twin2"] and not one.significant.loc["twin2", "twin1"]


def test_significance_p_values_match_scipy_and_holm():
    scores = synthetic(seed=3, sizes=(8, 6))
    sig = pairwise_significance(scores, METRICS, MISSING, correction="none", order=["twin1", "best", "twin2", "worst"])
    grid = score_grid(scores, METRICS, MISSING)
    q = grid.ranks.mean(axis=1)
    teams = list(grid.teams)
    d = q[:, teams.index("twin1")] - q[:, teams.index("twin2")]
    d = d[d != 0]
    assert sig.p_values.loc["twin1", "twin2"] == pytest.approx(wilcoxon(d, alternative="less").pvalue)
    hd = grid.values[:, 1]
    one = pairwise_significance(scores, METRICS, MISSING, metric="HD95_ET", correction="none")
    assert one.p_values.loc["best", "worst"] == pytest.approx(
        wilcoxon(hd[:, teams.index("best")] - hd[:, teams.index("worst")], alternative="less").pvalue)
    holm = pairwise_significance(scores, METRICS, MISSING, order=list(sig.p_values.index))
    raw = sig.p_values.to_numpy()
    off = ~np.eye(4, dtype=bool)
    m = off.sum()
    order = np.argsort(raw[off])
    expected = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * raw[off][order]))
    np.testing.assert_allclose(holm.adjusted.to_numpy()[off][order], expected)


def test_significance_edge_cases():
    assert one_sided_wilcoxon(np.zeros(5)) == 1.0 and one_sided_wilcoxon(np.array([])) == 1.0
    assert one_sided_wilcoxon(np.array([-1.0])) == pytest.approx(0.5)
    rows = [(t, "I1", "c1", "Dice", v) for t, v in [("A", 0.9), ("B", 0.9), ("C", 0.5)]]
    sig = pairwise_significance(_long(rows), {"Dice": "max"}, {"Dice": 0.0})  # one case, A and B tie
    assert sig.p_values.loc["A", "B"] == 1.0 and sig.p_values.loc["B", "A"] == 1.0
    assert not sig.significant.to_numpy().any()
    assert np.isfinite(sig.adjusted.to_numpy()[~np.eye(3, dtype=bool)]).all()


# ------------------------------------------------------------------------------------------------ bootstrap
def test_kendall_tau_is_one_when_every_resample_agrees():
    # every case ranks the teams A < B < C < D on both metrics: any resample gives the same ranking
    rng = np.random.default_rng(0)
    rows = []
    for inst, n in [("I1", 7), ("I2", 3)]:
        for k in range(n):
            base = rng.uniform(0.3, 0.5)
            for j, team in enumerate("ABCD"):
                rows.append((team, inst, f"c{k}", "Dice_ET", base + 0.1 * (3 - j)))
                rows.append((team, inst, f"c{k}", "HD95_ET", 2.0 + 3 * j + rng.uniform(0, 1)))
    for method, conv in [("fets2", None), ("fets1", {"A": 4, "B": 3, "C": 2, "D": 1}), ("aggregate", None)]:
        boot = bootstrap_rankings(_long(rows), METRICS, MISSING, method=method, convergence=conv, n_resamples=200)
        assert (boot.kendall_tau == 1.0).all()
        assert (boot.ranks == np.arange(1, 5)).all()
        assert boot.summary()["p_first"].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_kendall_tau_b_matches_scipy_and_is_nan_safe():
    rng = np.random.default_rng(2)
    reference = np.array([1.0, 2.0, 2.0, 4.0, 5.0])
    ranks = rng.integers(1, 6, size=(30, 5)).astype(float)
    ranks[0] = 3.0  # constant row
    got = kendall_tau_b(reference, ranks)
    assert np.isnan(got[0])
    for row, tau in zip(ranks[1:], got[1:], strict=True):
        assert tau == pytest.approx(kendalltau(reference, row).statistic)
    assert np.isnan(kendall_tau_b(np.ones(5), ranks)).all()


def test_bootstrap_is_deterministic_given_the_seed():
    scores = synthetic(seed=5, sizes=(6, 4))
    a = bootstrap_rankings(scores, METRICS, MISSING, n_resamples=300, seed=7)
    b = bootstrap_rankings(scores, METRICS, MISSING, n_resamples=300, seed=7)
    c = bootstrap_rankings(scores, METRICS, MISSING, n_resamples=300, seed=8)
    np.testing.assert_array_equal(a.ranks, b.ranks)
    np.testing.assert_array_equal(a.kendall_tau, b.kendall_tau)
    assert not np.array_equal(a.scores, c.scores)


@pytest.mark.parametrize("method", ["fets2", "fets1", "aggregate"])
def test_count_matrix_shortcut_equals_an_explicit_loop(method):
    # values on a coarse grid (multiples of 1/8: exact in binary) so ties occur, plus a missing value
    rng = np.random.default_rng(11)
    rows = []
    for inst, n in [("I1", 4), ("I2", 2), ("I3", 3)]:
        for k in range(n):
            for team in "ABC":
                rows.append((team, inst, f"c{k}", "Dice_ET", rng.integers(0, 4) / 8))
                rows.append((team, inst, f"c{k}", "HD95_ET", rng.integers(0, 4) / 8))
    scores = _long(rows)
    scores.loc[5, "value"] = np.nan
    conv = {"A": 0.5, "B": 0.5, "C": 0.7} if method == "fets1" else None
    boot = bootstrap_rankings(scores, METRICS, MISSING, method=method, convergence=conv, n_resamples=40, seed=3)

    grid = score_grid(scores, METRICS, MISSING)
    draws = np.concatenate([block.indices for block in bootstrap_resamples(
        grid.n_cases, 40, np.random.default_rng(3), strata=grid.institution_of_case)])
    keyed = scores.set_index(["institution", "case_id"]).sort_index()
    for r, drawn in enumerate(draws):
        parts = []
        for j, c in enumerate(drawn):  # the resampled table: each drawn case again, under a fresh id
            inst, case = grid.cases.iloc[c]
            part = keyed.loc[[(inst, case)]].reset_index()
            part["case_id"] = f"draw{j}"
            parts.append(part)
        resampled = pd.concat(parts, ignore_index=True)
        assert (resampled.groupby("institution")["case_id"].nunique() == pd.Series({"I1": 4, "I2": 2, "I3": 3})).all()
        explicit = rank(resampled, method, METRICS, MISSING, conv).final.set_index("team")
        np.testing.assert_array_equal(boot.ranks[r], explicit.loc[list(boot.teams), "rank"].to_numpy())
        np.testing.assert_allclose(boot.scores[r], explicit.loc[list(boot.teams), "score"].to_numpy(), rtol=1e-12)
    assert boot.full.final.equals(rank(scores, method, METRICS, MISSING, conv).final)
