"""Challenge scoring end to end: submissions scored at the sites, bad files, rankings, leaderboard, predict."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from browser import chromium, load_in_browser
from scipy import ndimage

from medfed.challenge.case_metrics import EmptyRules, score_case, worst_case
from medfed.challenge.scoring import ScoringOptions, score
from medfed.challenge.site_scoring import SiteScores, score_site
from medfed.challenge.submissions import Submission, parse_submissions
from medfed.cli import main
from medfed.errors import MedfedError
from medfed.sites.federation import load_federation
from medfed.synth import write_federation


@pytest.fixture(scope="module")
def brain(tmp_path_factory) -> Path:
    """The small synthetic FeTS-layout federation (10 subjects, 3 institutions)."""
    return write_federation("brain_mri", tmp_path_factory.mktemp("brain"), scale="small", seed=0)


def erode_predictions(federation, folder: Path, iterations: int) -> None:
    """A synthetic team: every case's truth with the tumour eroded ``iterations`` times (0: perfect)."""
    for site in federation:
        for reference in site.reference_cases("all"):
            label = reference.label
            if iterations:
                keep = ndimage.binary_erosion(label > 0, iterations=iterations)
                label = np.where(keep, label, 0).astype(np.uint8)
            site.write_label_map(reference.case_id, label, folder)


@pytest.fixture(scope="module")
def teams(brain, tmp_path_factory) -> dict[str, Path]:
    federation = load_federation(brain)
    root = tmp_path_factory.mktemp("teams")
    folders = {"perfect": root / "perfect", "eroded": root / "eroded", "worse": root / "worse"}
    for iterations, folder in enumerate(folders.values()):
        erode_predictions(federation, folder, iterations)
    return folders


def damaged_copy(folder: Path, target: Path) -> dict[str, str]:
    """A copy of a submission with one missing, one corrupt, one misshapen and one unknown-label file."""
    shutil.copytree(folder, target)
    files = sorted(target.glob("*_seg.nii.gz"))
    files[0].unlink()
    files[1].write_bytes(gzip.compress(b"not a nifti at all"))
    affine = nib.load(files[2]).affine
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), affine), files[2])
    image = nib.load(files[3])
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, image.affine), files[3])
    return {"missing": files[0].name, "unreadable": files[1].name, "shape": files[2].name, "label": files[3].name}


def test_site_scoring_returns_only_hashed_records_and_is_serialisable(brain, teams):
    federation = load_federation(brain)
    site = federation.sites[0]
    result = score_site(site, [Submission("perfect", teams["perfect"]), Submission("worse", teams["worse"])],
                        split="all")
    message = json.loads(json.dumps(result.to_message()))
    back = SiteScores.from_message(message)
    pd.testing.assert_frame_equal(back.records, result.records)
    assert result.n_cases == len(site)
    assert set(result.records["case_id"]) == set(site.cases["case_id"])
    assert "BraTS" not in json.dumps(message)  # no subject id leaves the site
    perfect = result.records[result.records["team"] == "perfect"].set_index(["case_id", "metric"])["value"]
    assert (perfect.xs("Dice_WT", level="metric") == 1.0).all()
    assert (perfect.xs("HD95_WT", level="metric") == 0.0).all()
    worse = result.records[result.records["team"] == "worse"]
    assert (worse.loc[worse["metric"] == "Dice_WT", "value"] < 1.0).all()


def test_bad_prediction_files_are_scored_worst_and_listed_not_fatal(brain, teams, tmp_path):
    damaged = tmp_path / "damaged"
    broken = damaged_copy(teams["eroded"], damaged)
    federation = load_federation(brain)
    submissions = [Submission("eroded", teams["eroded"]), Submission("damaged", damaged)]
    result = score(federation, submissions, tmp_path / "out", ScoringOptions(split="all", n_resamples=50),
                   progress=False)
    problems = result.problems
    assert len(problems) == 4 and set(problems["team"]) == {"damaged"}
    reasons = " | ".join(problems["reason"])
    for expected in ("missing: no prediction file", "unreadable prediction", "prediction shape 8x8x8 differs",
                     "unknown label value(s) 3"):
        assert expected in reasons
    for name in broken.values():  # the listing names hashed cases, never the subject's file name
        assert name.split("_seg")[0] not in reasons
    bad = result.records[(result.records["team"] == "damaged") & (result.records["status"] != "ok")]
    assert bad["case_id"].nunique() == 4
    worst = worst_case(EmptyRules())
    for metric, value in bad.groupby("metric")["value"].unique().items():
        assert list(value) == [worst[metric]], metric
    assert set(bad["status"]) == {"missing", "unreadable", "invalid"}
    assert list(result.ranking.final["team"]) == ["eroded", "damaged"]  # the 4 bad cases count as missing


def test_score_command_writes_rankings_and_a_leaderboard_that_opens_in_chromium(brain, teams, tmp_path, capsys):
    out = tmp_path / "scores"
    args = ["score", str(brain), *(f"{team}={folder}" for team, folder in teams.items()), "--split", "all",
            "--out", str(out), "--resamples", "200", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fets2 ranking of 3 submission(s)" in printed
    ranking = pd.read_csv(out / "ranking.csv")
    assert list(ranking["team"]) == ["perfect", "eroded", "worse"] and list(ranking["rank"]) == [1, 2, 3]
    institutions = pd.read_csv(out / "institution_ranks.csv")
    assert institutions["institution"].nunique() == 3
    stability = pd.read_csv(out / "rank_stability.csv").set_index("team")
    assert stability.loc["perfect", "p_first"] > 0.95
    significance = pd.read_csv(out / "significance.csv", index_col=0)
    assert significance.loc["perfect", "worse"] < 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranking"] == "fets2" and summary["cases"] == 10
    for name in ("per_case.csv", "per_institution.csv", "rank_frequencies.csv", "problems.csv"):
        assert (out / name).is_file(), name
    everything = "".join(p.read_text() for p in out.iterdir() if p.suffix in (".csv", ".json", ".html"))
    assert "BraTS2021_" not in everything
    dom, problems = load_in_browser(chromium(), out / "leaderboard.html")
    assert problems == []
    for heading in ("Ranking", "Ranks per institution", "Ranking stability", "Pairwise significance"):
        assert heading in dom
    assert dom.count("<svg") >= 3 and 'class="sortable"' in dom
    for option in ("aggregate",):
        assert main([*args[:-3], "--out", str(tmp_path / option), "--ranking", option, "--no-progress"]) == 0
        assert pd.read_csv(tmp_path / option / "ranking.csv")["team"].iloc[0] == "perfect"


def test_task1_ranking_needs_convergence_scores_and_uses_them(brain, teams, tmp_path, capsys):
    base = ["score", str(brain), f"a={teams['eroded']}", f"b={teams['eroded']}", "--split", "all",
            "--ranking", "fets1", "--resamples", "50", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "x")]) == 1
    assert "needs a convergence score for every team" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "y"), "--convergence", "a=0.2", "--convergence", "b=0.6"]) == 0
    ranking = pd.read_csv(tmp_path / "y" / "ranking.csv")
    assert list(ranking["team"]) == ["b", "a"]  # equal segmentations: the faster-converging method wins


def test_submission_errors_are_clear(tmp_path):
    with pytest.raises(MedfedError, match="neither a folder of label maps nor a CSV"):
        parse_submissions([f"x={tmp_path / 'nope'}"])
    (tmp_path / "a").mkdir()
    with pytest.raises(MedfedError, match="more than one submission"):
        parse_submissions([f"x={tmp_path / 'a'}", f"x={tmp_path / 'a'}"])
    with pytest.raises(MedfedError, match="team name"):
        Submission("bad name!", tmp_path)


def test_scoring_matches_score_case_on_each_file(brain, teams):
    federation = load_federation(brain)
    site = federation.sites[1]
    result = score_site(site, [Submission("eroded", teams["eroded"])], split="all")
    by_case = result.records.set_index(["case_id", "metric"])["value"]
    for reference in site.reference_cases("all"):
        path = Submission("eroded", teams["eroded"]).prediction_path(reference.source_id)
        expected = score_case(np.asarray(nib.load(path).dataobj), reference.label, reference.spacing)
        for metric, value in expected.items():
            assert by_case[(reference.case_id, metric)] == pytest.approx(value)


@pytest.mark.slow(seconds=20)
def test_medfed_strategies_predict_and_are_scored_with_convergence(brain, tmp_path, capsys):
    """Three medfed methods trained on the federation, their label maps written by `medfed predict`, scored
    and ranked with FeTS task 1 (convergence scores computed from the runs' logs)."""
    federation = yaml.safe_load(brain.read_text())  # enough validation cases for a pooled validation Dice
    federation.update(split={"seed": 0, "val": 0.4, "test": 0.2}, min_count=1)
    brain = brain.with_name("brain_mri_val.yaml")
    brain.write_text(yaml.safe_dump(federation))
    config = {"name": "seg", "federation": str(brain), "seed": 0,
              "task": {"kind": "segmentation", "model": {"name": "unet", "channels": [4, 8], "strides": [2],
                                                         "num_res_units": 0}, "batch_size": 2},
              "training": {"rounds": 2, "eval_every": 1, "min_fit_clients": 2},
              "methods": ["fedavg", "local_only", "centralised"]}
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(config))
    reports = tmp_path / "reports"
    assert main(["run", str(path), "--out", str(reports), "--no-progress", "--resamples", "100"]) == 0
    teams = []
    for method in config["methods"]:
        assert main(["predict", str(path), "--method", method, "--out", str(tmp_path / method), "--split", "all",
                     "--reports", str(reports), "--no-progress"]) == 0
        assert len(list((tmp_path / method).glob("*_seg.nii.gz"))) == 10
        teams.append(f"{method}={tmp_path / method}")
    rounds = [json.loads(line) for line in (reports / "seg" / "runs" / "fedavg" / "rounds.jsonl").open()]
    assert all(r["work"] and r["eval"]["pooled"]["val"]["dice_mean"] is not None for r in rounds)
    out = tmp_path / "scores"
    convergence = [f"--convergence={m}={reports / 'seg' / 'runs' / m}" for m in config["methods"]]
    assert main(["score", str(brain), *teams, "--split", "all", "--ranking", "fets1", *convergence,
                 "--out", str(out), "--resamples", "100", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "convergence score" in printed
    ranking = pd.read_csv(out / "ranking.csv")
    assert sorted(ranking["team"]) == sorted(config["methods"])
    assert (out / "leaderboard.html").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert all(0 <= v <= 1 for v in summary["convergence"].values())
