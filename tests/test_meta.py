"""Random-effects meta-analysis (medfed.stats.meta): checked against statsmodels on the same inputs, and by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from medfed.stats.meta import i2_interval, meta_analysis, tau2_dl, tau2_pm

EIGHT = (np.array([0.12, 0.31, -0.05, 0.22, 0.40, 0.08, 0.27, 0.15]),
         np.array([0.05, 0.08, 0.06, 0.04, 0.10, 0.07, 0.05, 0.09]))
TWO = (np.array([0.10, 0.45]), np.array([0.06, 0.08]))


def by_model(results):
    return {r.model: r for r in results}


@pytest.mark.parametrize("effects, ses", [EIGHT, TWO], ids=["8 sites", "2 sites"])
def test_matches_statsmodels_on_the_same_inputs(effects, ses):
    variances = ses**2
    dl = combine_effects(effects, variances, method_re="chi2", use_t=True)
    pm = combine_effects(effects, variances, method_re="iterated", use_t=True)
    for ci_method in ("hksj", "wald"):
        ours = by_model(meta_analysis(effects, ses, ci_method=ci_method))
        assert ours["fixed"].estimate == pytest.approx(dl.mean_effect_fe, abs=1e-6)
        assert ours["fixed"].se == pytest.approx(dl.sd_eff_w_fe, abs=1e-6)
        assert ours["fixed"].q == pytest.approx(dl.q, abs=1e-6)
        assert ours["fixed"].i2 == pytest.approx(max(0.0, dl.i2), abs=1e-6)
        for model, reference in (("dl", dl), ("pm", pm)):
            result = ours[model]
            if reference.tau2 > 0:  # statsmodels does not truncate tau^2 at 0 (see the module docstring)
                assert result.tau2 == pytest.approx(reference.tau2, abs=1e-6)
                assert result.estimate == pytest.approx(reference.mean_effect_re, abs=1e-6)
                want_se = reference.sd_eff_w_re_hksj if ci_method == "hksj" else reference.sd_eff_w_re
                assert result.se == pytest.approx(want_se, abs=1e-6)
                ci = reference.conf_int(alpha=0.05, use_t=ci_method == "hksj")
                want_ci = ci[3] if ci_method == "hksj" else ci[1]  # random effect (wls = HKSJ scale) / plain
                assert (result.ci_low, result.ci_high) == pytest.approx(tuple(want_ci), abs=1e-6)
            else:
                assert result.tau2 == 0.0 and result.estimate == pytest.approx(ours["fixed"].estimate, abs=1e-12)


def test_eight_sites_are_heterogeneous_enough_for_the_comparison_to_bite():
    assert tau2_dl(EIGHT[0], EIGHT[1] ** 2) > 0 and tau2_pm(EIGHT[0], EIGHT[1] ** 2) > 0


def test_tau2_is_truncated_at_zero_where_statsmodels_goes_negative():
    effects, variances = np.array([0.1, 0.2, 0.05, 0.3]), np.array([0.01, 0.02, 0.01, 0.03])
    assert combine_effects(effects, variances, method_re="chi2").tau2 < 0  # the trap of the issue
    ours = by_model(meta_analysis(effects, np.sqrt(variances)))
    assert ours["dl"].tau2 == 0.0 and ours["pm"].tau2 == 0.0
    w = 1 / variances
    fixed = float(np.sum(w * effects) / np.sum(w))  # hand formula: 0.12353
    assert fixed == pytest.approx(0.1235294, abs=1e-6)
    assert ours["dl"].estimate == pytest.approx(fixed, abs=1e-12) == ours["fixed"].estimate


def test_hksj_on_a_hand_computed_case():
    # y = 0, 1, 2, v = 1: mu_FE = 1, Q = 2 = k - 1 -> tau^2 = 0; q* = (1 + 0 + 1) / 2 = 1, se = sqrt(1 / 3);
    # t(2) CI = 1 +- 4.302653 * 0.577350; P = 2 * 0.5 * (1 - t / sqrt(t^2 + 2)) at t = sqrt(3): 0.2254033
    dl = by_model(meta_analysis([0.0, 1.0, 2.0], [1.0, 1.0, 1.0]))["dl"]
    assert dl.tau2 == 0.0 and dl.estimate == pytest.approx(1.0) and dl.se == pytest.approx(np.sqrt(1 / 3))
    assert (dl.ci_low, dl.ci_high) == pytest.approx((1 - 4.302653 * 0.5773503, 1 + 4.302653 * 0.5773503), abs=1e-5)
    assert dl.p_value == pytest.approx(1 - np.sqrt(3) / np.sqrt(5), abs=1e-7)
    # the prediction interval: t(1) * sqrt(0 + 1/3)
    assert dl.pi_high - dl.estimate == pytest.approx(stats.t.ppf(0.975, 1) * np.sqrt(1 / 3))


def test_interval_agrees_with_its_p_value():
    for ci_method in ("hksj", "wald"):
        for result in meta_analysis(*EIGHT, ci_method=ci_method):
            excludes_zero = result.ci_low > 0 or result.ci_high < 0
            assert excludes_zero == (result.p_value < 0.05), (ci_method, result)


def test_i2_and_its_interval():
    i2, low, high = i2_interval(20.0, 10)
    assert i2 == pytest.approx(11 / 20)
    # Higgins & Thompson (2002): Q > k, se(ln H) = 0.5 (ln Q - ln df) / (sqrt(2Q) - sqrt(2k - 3))
    se = 0.5 * (np.log(20) - np.log(9)) / (np.sqrt(40) - np.sqrt(17))
    h = np.sqrt(20 / 9)
    assert low == pytest.approx(max(0, 1 - 1 / (h * np.exp(-1.959964 * se)) ** 2), abs=1e-6)
    assert high == pytest.approx(1 - 1 / (h * np.exp(1.959964 * se)) ** 2, abs=1e-6)
    assert low <= i2 <= high


def test_unusable_sites_never_reach_the_estimators():
    effects = [*EIGHT[0], 0.9, 5.0]
    ses = [*EIGHT[1], float("nan"), 0.0]
    frame = lambda results: pd.DataFrame([r.as_dict() for r in results])  # noqa: E731 - NaN == NaN in .equals
    assert frame(meta_analysis(effects, ses)).equals(frame(meta_analysis(*EIGHT)))
    assert meta_analysis([0.2], [0.1]) == []  # one site: no meta-analysis
    assert meta_analysis([0.2, 0.3], [0.1, float("nan")]) == []
    with pytest.raises(ValueError, match="ci_method"):
        meta_analysis(*EIGHT, ci_method="exact")


def test_effect_on_a_seeded_synthetic_federation():
    """Sites drawn around a true difference of 0.05 with between-site SD 0.03: the random-effects CI covers the
    truth, the prediction interval is wider than the CI, and tau^2 is of the planted order."""
    rng = np.random.default_rng(0)
    k, tau = 12, 0.03
    ses = rng.uniform(0.01, 0.03, k)
    effects = 0.05 + rng.normal(0, tau, k) + rng.normal(0, ses)
    dl = by_model(meta_analysis(effects, ses))["dl"]
    assert dl.ci_low < 0.05 < dl.ci_high and dl.pi_high - dl.pi_low > dl.ci_high - dl.ci_low
    assert 0.1 * tau**2 < dl.tau2 < 10 * tau**2 and dl.i2 > 0.3


def test_meta_analysis_table_from_comparisons():
    from medfed.report.meta_table import META_COLUMNS, meta_analysis_table

    rows = [{"site": f"s{i}", "metric": "auroc", "method": "fedavg", "baseline": "local_only", "difference": y,
             "se": s} for i, (y, s) in enumerate(zip(*EIGHT))]
    rows += [{"site": "tiny", "metric": "auroc", "method": "fedavg", "baseline": "local_only", "difference": np.nan,
              "se": np.nan},  # suppressed: left out and named
             {"site": "pooled", "metric": "auroc", "method": "fedavg", "baseline": "local_only", "difference": 0.2,
              "se": 0.01, "ci_low": 0.18, "ci_high": 0.22, "p_value": 0.001},  # not a site: written beside
             {"site": "s0", "metric": "dice", "method": "fedavg", "baseline": "local_only", "difference": 0.1, "se": 0.05}]
    table = meta_analysis_table(pd.DataFrame(rows))
    assert list(table.columns) == list(META_COLUMNS)
    auroc = table[table["metric"] == "auroc"].set_index("model")
    assert list(auroc.index) == ["fixed", "dl", "pm", "pooled_bootstrap"] and set(auroc["n_sites"]) == {8}
    assert auroc.loc["pooled_bootstrap", "estimate"] == 0.2 and auroc.loc["pooled_bootstrap", "ci_high"] == 0.22
    assert set(auroc["sites_left_out"]) == {"tiny"} and "pooled" not in auroc["sites"].iloc[0]
    want = by_model(meta_analysis(*EIGHT))["dl"]
    assert auroc.loc["dl", "estimate"] == pytest.approx(want.estimate) and auroc.loc["dl", "ci_method"] == "hksj"
    (dice,) = table[table["metric"] == "dice"].to_dict("records")
    assert dice["n_sites"] == 1 and "no meta-analysis" in dice["note"]
