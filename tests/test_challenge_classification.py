"""Classification submissions (CSV of probabilities): per-case Brier / log loss, site AUROC, bad rows, ranking."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from medfed.challenge.class_metrics import (
    EPSILON,
    case_scores,
    site_auroc,
    worst_probabilities,
)
from medfed.challenge.scoring import ScoringOptions, score
from medfed.challenge.site_scoring import SiteScores, score_site
from medfed.challenge.submissions import Submission
from medfed.cli import main
from medfed.errors import MedfedError
from medfed.sites.federation import load_federation
from medfed.synth import write_federation


def test_brier_and_log_loss_by_hand():
    p = np.array([[0.8, 0.3], [0.1, 0.5]])
    y = np.array([[1, 0], [1, -1]])
    scores = case_scores(p, y, ["A", "B"])
    assert scores[0]["Brier_A"] == pytest.approx(0.04) and scores[0]["Brier_B"] == pytest.approx(0.09)
    assert scores[0]["LogLoss_A"] == pytest.approx(-math.log(0.8)) and scores[1]["LogLoss_A"] == pytest.approx(
        -math.log(0.1))
    assert math.isnan(scores[1]["Brier_B"]) and math.isnan(scores[1]["LogLoss_B"])  # uncertain target
    worst = worst_probabilities(y)
    assert worst.tolist() == [[0.0, 1.0], [0.0, 0.5]]
    assert case_scores(worst[:1], y[:1], ["A", "B"])[0]["LogLoss_A"] == pytest.approx(-math.log(EPSILON))
    assert site_auroc(np.array([[0.9], [0.2], [0.6], [0.1]]), np.array([[1], [0], [0], [1]]), ["A"])["AUROC_A"] == 0.5


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    return write_federation("chest_xray", tmp_path_factory.mktemp("chest"), scale="small", seed=0)


def team_csv(federation, path, quality: float, seed: int, drop: int = 0, bad: int = 0, lacks: str | None = None):
    """A synthetic team: probability ``quality`` on the true class (with noise); ``drop`` cases left out,
    ``bad`` rows with an out-of-range value, finding ``lacks`` left out of the columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for site in federation:
        targets = site.reference_targets("all")
        findings = [c for c in targets.columns if c not in ("case_id", "source_id")]
        for _, case in targets.iterrows():
            row = {"site": site.name, "image": case["source_id"]}  # the path as the site lists it (names repeat)
            for f in findings:
                y = max(case[f], 0)
                row[f] = float(np.clip(quality * y + (1 - quality) * (1 - y) + rng.normal(0, 0.05), 0, 1))
            rows.append(row)
    table = pd.DataFrame(rows).iloc[drop:]
    table.iloc[:bad, 2] = 1.7
    if lacks:
        table = table.drop(columns=lacks)
    table.to_csv(path, index=False)
    return path


def test_classification_submissions_are_scored_at_the_sites_and_ranked(chest, tmp_path):
    federation = load_federation(chest)
    findings = federation.sites[0].label_columns
    teams = [Submission("informed", team_csv(federation, tmp_path / "informed.csv", 0.9, 0)),
             Submission("coin", team_csv(federation, tmp_path / "coin.csv", 0.5, 1)),
             Submission("sloppy", team_csv(federation, tmp_path / "sloppy.csv", 0.8, 2, drop=2, bad=1))]
    message = score_site(federation.sites[0], teams, split="all").to_message()
    text = json.dumps(message)
    assert ".png" not in text and ".dcm" not in text  # no image name leaves the site
    site = SiteScores.from_message(json.loads(text))
    assert set(site.summaries["metric"]) == {f"AUROC_{f}" for f in findings}
    result = score(federation, teams, tmp_path / "out", ScoringOptions(split="all", n_resamples=200), progress=False)
    assert result.ranking.final["team"].iloc[0] == "informed"
    assert result.summary["ranked_metrics"] == {f"Brier_{f}": "min" for f in findings}
    problems = result.problems
    assert set(problems["team"]) == {"sloppy"} and len(problems) == 3
    assert problems["reason"].str.contains("missing: no row").sum() == 2
    assert problems["reason"].str.contains("numbers in \\[0, 1\\]").sum() == 1
    statuses = result.records[result.records["team"] == "sloppy"].groupby("case_id")["status"].first()
    assert (statuses == "missing").sum() == 2 and (statuses == "invalid").sum() == 1
    auroc = pd.read_csv(tmp_path / "out" / "site_metrics.csv")
    informed = auroc[auroc["team"] == "informed"]["value"].dropna()
    coin = auroc[auroc["team"] == "coin"]["value"].dropna()
    assert informed.min() > 0.9 and coin.mean() < informed.mean()
    assert "Brier" in (tmp_path / "out" / "leaderboard.html").read_text()


def test_a_missing_finding_column_scores_that_finding_worst(chest, tmp_path, capsys):
    federation = load_federation(chest)
    finding = federation.sites[0].label_columns[0]
    csv = team_csv(federation, tmp_path / "partial.csv", 0.8, 0, lacks=finding)
    assert main(["score", str(chest), f"partial={csv}", "--split", "all", "--out", str(tmp_path / "o"),
                 "--resamples", "100", "--no-progress"]) == 0
    records = pd.read_csv(tmp_path / "o" / "per_case.csv")
    brier = records[(records["metric"] == f"Brier_{finding}")]["value"].dropna()
    assert (brier == 1.0).all()
    problems = pd.read_csv(tmp_path / "o" / "problems.csv")
    assert problems["reason"].str.contains(f"lacks probability column\\(s\\) {finding}").any()


def test_wrong_submission_kind_is_a_clear_error(chest, tmp_path):
    federation = load_federation(chest)
    (tmp_path / "maps").mkdir()
    with pytest.raises(MedfedError, match="holds image labels"):
        score_site(federation.sites[0], [Submission("maps", tmp_path / "maps")], split="all")


def test_ureteroscopy_classes_are_scored_one_vs_rest(tmp_path):
    federation = load_federation(write_federation("ureteroscopy", tmp_path / "uro", scale="small", seed=0))
    site = federation.sites[0]
    targets = site.reference_targets("all")
    classes = [c for c in targets.columns if c not in ("case_id", "source_id")]
    assert classes == site.classes and (targets[classes].sum(axis=1) == 1).all()
    table = targets[["case_id", *classes]]  # the oracle, by hashed id
    table.to_csv(tmp_path / "oracle.csv", index=False)
    result = score_site(site, [Submission("oracle", tmp_path / "oracle.csv")], split="all")
    briers = result.records[result.records["metric"].str.startswith("Brier")]["value"]
    assert (briers == 0).all() and result.problems == []
