"""medfed.stats: formulas on hand-computable cases, agreement with scipy, and calibration of the tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from medfed.metrics.classification import auroc, confusion_metrics
from medfed.stats import (
    AurocStatistic,
    MacroStatistic,
    MeanStatistic,
    RateStatistic,
    across_sites,
    adjust_p_values,
    benjamini_hochberg,
    bootstrap_ci,
    bootstrap_distributions,
    bootstrap_p_value,
    delong_test,
    holm,
    paired_difference,
    paired_wilcoxon,
    point_estimate,
    rank_biserial,
)
from medfed.stats.resampling import bootstrap_resamples


# ----------------------------------------------------------------- weighted statistics
def test_weighted_statistics_equal_the_metrics_on_repeated_cases():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=80), 1)  # many ties
    targets = rng.integers(-1, 2, size=80)  # -1 = uncertain, masked
    predictions = (scores > 0).astype(int)
    counts = rng.integers(0, 3, size=(5, 80))
    got = AurocStatistic(scores, targets)(counts)
    for row, c in zip(got, counts, strict=True):
        assert row == pytest.approx(auroc(np.repeat(scores, c), np.repeat(targets, c)), abs=1e-12)
    for rate in ("accuracy", "sensitivity", "specificity", "precision", "f1"):
        got = RateStatistic(rate, predictions, targets)(counts)
        for row, c in zip(got, counts, strict=True):
            expected = confusion_metrics(np.repeat(predictions, c), np.repeat(targets, c), 0.5)[rate]
            assert row == pytest.approx(expected, abs=1e-12)


def test_mean_skips_undefined_cases_and_macro_ignores_undefined_parts():
    values = np.array([1.0, np.nan, 3.0, np.inf])
    assert point_estimate(MeanStatistic(values)) == 2.0
    counts = np.array([[2, 5, 0, 1]])
    assert MeanStatistic(values)(counts)[0] == 1.0
    no_positive = AurocStatistic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 0, 0]))
    perfect = AurocStatistic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1]))
    assert np.isnan(point_estimate(no_positive))
    assert point_estimate(MacroStatistic([no_positive, perfect])) == 1.0


def test_gathered_and_counted_means_agree():
    rng = np.random.default_rng(1)
    values = rng.normal(size=50)
    values[3] = np.nan
    block = next(bootstrap_resamples(50, 20, rng))
    statistic = MeanStatistic(values)
    assert np.allclose(statistic(block), statistic(block.counts))


# ----------------------------------------------------------------- resampling
def test_stratified_resamples_keep_every_class_size_and_are_seeded():
    strata = np.array([0] * 7 + [1] * 3)
    a = [b.counts for b in bootstrap_resamples(10, 700, np.random.default_rng(5), strata)]
    b = [b.counts for b in bootstrap_resamples(10, 700, np.random.default_rng(5), strata)]
    c = [b.counts for b in bootstrap_resamples(10, 700, np.random.default_rng(6), strata)]
    counts = np.concatenate(a)
    assert counts.shape == (700, 10)
    assert np.all(counts[:, :7].sum(axis=1) == 7) and np.all(counts[:, 7:].sum(axis=1) == 3)
    assert np.array_equal(counts, np.concatenate(b))
    assert not np.array_equal(counts, np.concatenate(c))


# ----------------------------------------------------------------- confidence intervals vs scipy
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_ci_on_the_mean_agrees_with_scipy_bootstrap(method):
    rng = np.random.default_rng(2)
    data = rng.exponential(size=150)  # skewed: BCa and percentile differ
    ours = bootstrap_ci(MeanStatistic(data), n_resamples=20000, method=method, seed=3)
    ref = sps.bootstrap((data,), np.mean, n_resamples=20000, method="BCa" if method == "bca" else method,
                        random_state=4).confidence_interval
    width = ref.high - ref.low
    assert ours.estimate == pytest.approx(data.mean())
    assert abs(ours.low - ref.low) < 0.04 * width
    assert abs(ours.high - ref.high) < 0.04 * width


def test_bca_shifts_the_interval_the_way_the_skew_goes():
    data = np.random.default_rng(7).exponential(size=60)
    pct = bootstrap_ci(MeanStatistic(data), n_resamples=4000, method="percentile", seed=1)
    bca = bootstrap_ci(MeanStatistic(data), n_resamples=4000, method="bca", seed=1)
    assert bca.high > pct.high and bca.low > pct.low  # right skew: BCa moves both ends up


def test_unknown_ci_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown CI method"):
        bootstrap_ci(MeanStatistic(np.ones(5)), method="student")


# ----------------------------------------------------------------- paired tests
def test_bootstrap_p_value_by_hand():
    assert bootstrap_p_value(np.array([0.1, 0.2, 0.3])) == pytest.approx(2 * 1 / 4)
    assert bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(2 * 2 / 5)
    assert bootstrap_p_value(np.zeros(9)) == 1.0


def test_wilcoxon_matches_scipy_and_rank_biserial_by_hand():
    rng = np.random.default_rng(3)
    a, b = rng.random(30), rng.random(30)
    ours = paired_wilcoxon(a, b)
    ref = sps.wilcoxon(a - b)
    assert ours.p_value == pytest.approx(ref.pvalue) and ours.statistic == pytest.approx(ref.statistic)
    assert rank_biserial(np.array([1.0, -2.0, 3.0, 4.0])) == pytest.approx((8 - 2) / 10)
    with_nan = paired_wilcoxon(np.r_[a, np.nan], np.r_[b, 0.5])
    assert with_nan.n_pairs == 30 and with_nan.p_value == pytest.approx(ref.pvalue)


def test_delong_on_a_hand_computed_example():
    # positives 0,1; negatives 2,3.  A: V10 = [1, .5], V01 = [.5, 1] -> AUROC .75
    #                                B: V10 = [.5, .5], V01 = [1, 0] -> AUROC .5
    # S = S10/2 + S01/2: S_AA = .125, S_BB = .25, S_AB = -.125 -> Var(A - B) = .625
    targets = np.array([1, 1, 0, 0])
    result = delong_test(np.array([0.9, 0.4, 0.5, 0.1]), np.array([0.8, 0.7, 0.6, 0.9]), targets)
    assert (result.auroc_a, result.auroc_b) == (0.75, 0.5)
    assert result.se == pytest.approx(np.sqrt(0.625))
    assert result.p_value == pytest.approx(2 * sps.norm.sf(0.25 / np.sqrt(0.625)))


def _two_scorers(rng, n, effect):
    targets = (rng.random(n) < 0.4).astype(int)
    shared = rng.normal(size=n)
    a = shared + rng.normal(size=n) + (1.0 + effect) * targets
    b = shared + rng.normal(size=n) + 1.0 * targets
    return a, b, targets


def test_delong_agrees_with_the_paired_bootstrap_on_a_large_sample():
    rng = np.random.default_rng(11)
    a, b, targets = _two_scorers(rng, 2000, 0.15)
    delong = delong_test(a, b, targets)
    stats_ = {"a": AurocStatistic(a, targets), "b": AurocStatistic(b, targets)}
    dist = bootstrap_distributions(stats_, 2000, n_resamples=2000, seed=0, strata=targets)
    boot = paired_difference(point_estimate(stats_["a"]), point_estimate(stats_["b"]), dist["a"], dist["b"])
    assert delong.difference == pytest.approx(boot.estimate)
    assert np.std(dist["a"] - dist["b"]) == pytest.approx(delong.se, rel=0.1)
    assert boot.low == pytest.approx(delong.low, abs=0.01) and boot.high == pytest.approx(delong.high, abs=0.01)


def test_a_large_effect_is_significant_for_every_test():
    rng = np.random.default_rng(12)
    a, b, targets = _two_scorers(rng, 300, 1.5)
    assert delong_test(a, b, targets).p_value < 0.01
    stats_ = {"a": AurocStatistic(a, targets), "b": AurocStatistic(b, targets)}
    dist = bootstrap_distributions(stats_, 300, n_resamples=1000, seed=0, strata=targets)
    assert bootstrap_p_value(dist["a"] - dist["b"]) < 0.01
    dice_a, dice_b = rng.beta(8, 2, size=40), rng.beta(4, 4, size=40)
    assert paired_wilcoxon(dice_a, dice_b).p_value < 0.01


def test_null_effect_gives_roughly_uniform_p_values():
    rng = np.random.default_rng(13)
    p = {"delong": [], "bootstrap": [], "wilcoxon": []}
    for _ in range(200):
        a, b, targets = _two_scorers(rng, 80, 0.0)
        p["delong"].append(delong_test(a, b, targets).p_value)
        stats_ = {"a": MeanStatistic(a), "b": MeanStatistic(b)}
        dist = bootstrap_distributions(stats_, 80, n_resamples=400, seed=rng)
        p["bootstrap"].append(bootstrap_p_value(dist["a"] - dist["b"]))
        p["wilcoxon"].append(paired_wilcoxon(a, b).p_value)
    for name, values in p.items():
        values = np.asarray(values)
        assert 0.01 <= np.mean(values < 0.05) <= 0.11, name
        assert sps.kstest(values, "uniform").pvalue > 0.001, name


# ----------------------------------------------------------------- corrections and aggregates
def test_holm_and_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    assert np.allclose(benjamini_hochberg(p), sps.false_discovery_control(p, method="bh"))
    with_nan = adjust_p_values(np.array([0.01, np.nan, 0.04]), "holm")
    assert np.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]], [0.02, 0.04])
    with pytest.raises(ValueError, match="unknown correction"):
        adjust_p_values(p, "bonferroni-ish")


def test_across_sites_by_hand():
    out = across_sites(["a", "b", "c", "d"], [0.9, 0.6, np.nan, 0.75], [100, 10, 3, 40])
    assert out["n_sites"] == 3 and out["worst_site"] == "b" and out["worst"] == 0.6
    assert out["site_mean"] == pytest.approx(0.75) and out["site_median"] == pytest.approx(0.75)
    assert out["case_weighted_mean"] == pytest.approx((90 + 6 + 30) / 150)
    lower = across_sites(["a", "b"], [5.0, 9.0], [10, 10], higher_is_better=False)
    assert lower["worst_site"] == "b"


def test_undefined_inputs_give_undefined_statistics_not_numbers():
    # a diverged model's NaN score leaves the AUROC undefined, as medfed.metrics.auroc says
    scores, targets = np.array([0.1, np.nan, 0.7, 0.9]), np.array([0, 0, 1, 1])
    assert np.isnan(point_estimate(AurocStatistic(scores, targets))) and np.isnan(auroc(scores, targets))
    # DeLong without variance: equal AUROCs agree, a difference has no P-value
    targets = np.array([1, 1, 0, 0])
    constant, perfect = np.full(4, 0.5), np.array([0.9, 0.8, 0.2, 0.1])
    result = delong_test(constant, perfect, targets)
    assert result.difference == -0.5 and np.isnan(result.p_value)
    assert delong_test(perfect, perfect, targets).p_value == 1.0
    # Wilcoxon counts only the pairs it tests (zero differences dropped)
    assert paired_wilcoxon(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0, 1.0])).n_pairs == 3


def test_support_weighted_f1_equals_scikit_learn_weighted_average():
    from sklearn.metrics import f1_score

    from medfed.stats import RateStatistic, SupportWeightedStatistic, point_estimate

    rng = np.random.default_rng(3)
    targets = rng.integers(0, 2, size=(40, 3))
    targets[:, 2] = (rng.random(40) < 0.15).astype(int)  # a rare label counts little
    predictions = np.where(rng.random((40, 3)) < 0.75, targets, 1 - targets)
    parts = [RateStatistic("f1", predictions[:, j], targets[:, j]) for j in range(3)]
    weighted = SupportWeightedStatistic(parts, [targets[:, j] == 1 for j in range(3)])
    assert point_estimate(weighted) == pytest.approx(f1_score(targets, predictions, average="weighted"))
    # by hand on a resample: label supports in the resample weight the per-label F1s
    counts = rng.multinomial(40, np.full(40, 1 / 40), size=1)
    values = np.array([p(counts)[0] for p in parts])
    support = counts[0] @ targets
    assert weighted(counts)[0] == pytest.approx((support * values).sum() / support.sum())
