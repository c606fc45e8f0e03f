"""FeTS task-1 convergence score: the formula by hand, simulated round times, reading a run's log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfed.challenge.convergence import (
    SiteProfile,
    SiteWork,
    TimingProfiles,
    convergence_score,
    round_seconds,
    run_convergence,
    site_round_seconds,
)
from medfed.fl.checkpoint import save_checkpoint


def test_convergence_score_by_hand():
    # best so far: 0.5, 0.5 (round 2 not evaluated), 0.8, 0.8; t_R = 500 of T_max = 1000
    dice, times = [0.5, np.nan, 0.8, 0.7], [100, 100, 200, 100]
    assert convergence_score(dice, times, t_max=1000) == pytest.approx((50 + 50 + 160 + 80 + 500 * 0.8) / 1000)
    # only rounds that end within the budget count: 2 rounds (200 s) of T_max = 350
    assert convergence_score(dice, times, t_max=350) == pytest.approx((50 + 50 + 150 * 0.5) / 350)
    assert convergence_score([], [], t_max=10) == 0.0
    assert convergence_score([0.9], [20], t_max=10) == 0.0  # the first round already overruns the budget


def test_reaching_the_same_dice_sooner_scores_higher():
    slow = convergence_score([0.2, 0.4, 0.6, 0.8], [1000] * 4, t_max=10_000)
    fast = convergence_score([0.8, 0.8, 0.8, 0.8], [1000] * 4, t_max=10_000)
    assert fast == pytest.approx(0.8) and slow < fast


def test_round_time_is_the_slowest_sites_download_validation_training_upload():
    profile = SiteProfile(training_speed=2.0, validation_speed=8.0, download_mbps=100.0, upload_mbps=20.0,
                          compute_factor=2.0)
    work = SiteWork(seconds=3.0, examples=10, val_examples=4)
    # 8 Mbit model: 0.08 s down, 0.4 s up; 4 / 8 = 0.5 s validation; 10 / 2 = 5 s training (measured: 3 / 2)
    assert site_round_seconds(work, profile, 1_000_000) == pytest.approx(0.08 + 0.5 + 5.0 + 0.4)
    assert site_round_seconds(work, profile, 1_000_000, "measured") == pytest.approx(0.08 + 0.5 + 1.5 + 0.4)
    profiles = TimingProfiles(default=profile, sites={"slow": SiteProfile(training_speed=0.5)})
    times = round_seconds([{"a": work, "slow": SiteWork(1.0, 2, 0)}, {}], profiles, 1_000_000)
    slow = 8 / 100 + 0 + 2 / 0.5 + 8 / 20  # the default link speeds of SiteProfile
    assert times[0] == pytest.approx(max(0.08 + 0.5 + 5.0 + 0.4, slow)) and times[1] == 0.0


def test_run_convergence_reads_the_runners_log(tmp_path):
    run = tmp_path / "fedavg"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run / "checkpoints" / "last.pt", {"global": np.zeros(250_000, np.float32)})  # 1 MB
    rounds = [{"round": k, "completed": ["a"], "work": {"a": {"seconds": 1.0, "examples": 10, "val_examples": 4}},
               "eval": {"pooled": {"val": {"dice_mean": dice}}}} for k, dice in ((1, 0.5), (2, 0.8))]
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    result = run_convergence(run, TimingProfiles(t_max=100.0, default=SiteProfile()))
    tau = 0.08 + 0.5 + 5.0 + 0.4
    assert result.round_times == pytest.approx([tau, tau])
    assert result.score == pytest.approx((0.5 * tau + 0.8 * tau + (100 - 2 * tau) * 0.8) / 100)
    assert result.rounds_counted == 2 and result.notes == []


def test_the_shipped_timing_profiles_parse():
    from pathlib import Path

    from medfed.config import read_yaml, validate_model

    path = Path(__file__).parents[1] / "sites" / "profiles" / "fets_timing.yaml"
    profiles = validate_model(TimingProfiles, read_yaml(path), str(path))
    assert profiles.t_max == 604_800 and profiles.profile("inst-5").training_speed == 0.5
    assert profiles.profile("unknown") == profiles.default
