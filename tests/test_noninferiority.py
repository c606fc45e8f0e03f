"""Non-inferiority and equivalence (medfed.stats.noninferiority): hand cases, agreement with intervals, and
statsmodels' TOST on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ztost

from medfed.stats.noninferiority import equivalence_p, noninferiority_p


def test_hand_computed_cases():
    # d = -0.01, se = 0.01, margin 0.02: z = (-0.01 + 0.02) / 0.01 = 1 -> P = 1 - Phi(1) = 0.158655
    assert noninferiority_p(-0.01, 0.01, 0.02) == pytest.approx(0.1586553, abs=1e-6)
    # lower is better (HD95): d = +1 mm, se 0.5, margin 2 mm: z = (2 - 1) / 0.5 = 2 -> 0.0227501
    assert noninferiority_p(1.0, 0.5, 2.0, higher_is_better=False) == pytest.approx(0.0227501, abs=1e-6)
    # TOST: d = 0, se = 0.01, margin 0.02: both z = 2 -> 0.0227501
    assert equivalence_p(0.0, 0.01, 0.02) == pytest.approx(0.0227501, abs=1e-6)
    assert np.isnan(noninferiority_p(0.1, float("nan"), 0.02)) and np.isnan(equivalence_p(0.1, 0.0, 0.02))


def test_decisions_agree_with_the_intervals():
    rng = np.random.default_rng(0)
    for _ in range(500):
        d, se, margin = rng.normal(0, 0.03), rng.uniform(0.005, 0.03), 0.03
        lower_95 = d - stats.norm.ppf(0.95) * se  # one-sided 95% bound
        assert (noninferiority_p(d, se, margin) < 0.05) == (lower_95 > -margin)
        low, high = d - stats.norm.ppf(0.95) * se, d + stats.norm.ppf(0.95) * se  # 90% CI
        assert (equivalence_p(d, se, margin) < 0.05) == (low > -margin and high < margin)


def test_tost_matches_statsmodels_ztost_on_paired_differences():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.004, 0.05, 400)
    p_statsmodels = ztost(differences, -0.01, 0.01)[0]
    se = differences.std(ddof=1) / np.sqrt(differences.size)
    assert equivalence_p(differences.mean(), se, 0.01) == pytest.approx(p_statsmodels, abs=1e-10)


def test_effect_on_seeded_data():
    """A method truly 0.005 worse is shown non-inferior within 0.02 with enough cases, and not within 0.002."""
    rng = np.random.default_rng(2)
    differences = rng.normal(-0.005, 0.05, 2_000)
    d, se = differences.mean(), differences.std(ddof=1) / np.sqrt(differences.size)
    assert noninferiority_p(d, se, 0.02) < 0.001 and noninferiority_p(d, se, 0.002) > 0.5
