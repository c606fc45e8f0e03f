"""Minimum detectable difference (medfed.stats.power)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower

from medfed.stats.power import minimum_detectable_difference


def test_formula_by_hand_and_against_statsmodels():
    # z_0.975 + z_0.8 = 1.959964 + 0.841621 = 2.801585
    assert minimum_detectable_difference(0.01) == pytest.approx(0.02801585, abs=1e-7)
    # statsmodels: the standardised effect detectable with nobs1=1, ratio=0 (one sample, sd 1): the same factor,
    # up to the far tail's rejections that statsmodels also counts (1.2e-6 relative here)
    effect = NormalIndPower().solve_power(nobs1=1, alpha=0.05, power=0.8, ratio=0, alternative="two-sided")
    assert minimum_detectable_difference(1.0) == pytest.approx(effect, rel=1e-5)
    assert np.isnan(minimum_detectable_difference(float("nan"))) and np.isnan(minimum_detectable_difference(0.0))
    with pytest.raises(ValueError):
        minimum_detectable_difference(0.1, power=1.0)


def test_a_true_difference_of_the_mdd_is_detected_eighty_percent_of_the_time():
    """Seeded simulation: estimates drawn around a true difference equal to the MDD reject H0 in about 80% of
    draws; around half of it, far less often."""
    rng = np.random.default_rng(0)
    se = 0.03
    mdd = minimum_detectable_difference(se)
    critical = stats.norm.ppf(0.975) * se
    for truth, low, high in ((mdd, 0.77, 0.83), (mdd / 2, 0.2, 0.4)):
        estimates = rng.normal(truth, se, 20_000)
        rate = np.mean(np.abs(estimates) > critical)
        assert low < rate < high, (truth, rate)
