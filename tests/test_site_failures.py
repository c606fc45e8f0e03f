"""Issue 22: what a failing site may say and when it stops a run.

A: no path or source id in any message that leaves a site (a NIfTI file emptied mid-run);
B: subjects of one BraTS site on different grids are a validation problem, not a batching error in training;
C: a site that fails the same way round after round stops the run with one short line; a passing fault does not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_brats_adapter import config_of, edit_source, nifti, rewrite
from torch.utils.data import DataLoader

import medfed.sites.datasets as site_datasets
from medfed.cli import main
from medfed.errors import DataProblems, MedfedError
from medfed.fl import runner as runner_module
from medfed.fl.experiment import run_experiment
from medfed.fl.ledger import REPEATED_FAILURE_ROUNDS, FailureStreaks
from medfed.fl.runner import MethodRunner
from medfed.fl.strategies.centralised import POOLED
from medfed.sites import load_federation
from medfed.sites.brats import FILES
from medfed.sites.nifti_io import read_volume
from medfed.sites.redact import HIDDEN, MESSAGE_LIMIT, scrub_message
from medfed.synth import write_federation
from medfed.synth.brain_mri import write_brain_mri
from medfed.tasks.classification import ClassificationTask

#: the subject of the user's report
SUBJECT = "BraTS2021_00003"


@pytest.fixture(scope="module")
def brain(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("brain") / "small"
    write_brain_mri(out, scale="small", seed=0)
    return out


@pytest.fixture()
def brain_copy(brain, tmp_path) -> Path:
    copy = tmp_path / "fed"
    shutil.copytree(brain, copy)
    return copy


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> Path:
    """A small chest X-ray federation: 4 sites of 32x32 images."""
    return write_federation("chest_xray", tmp_path_factory.mktemp("chest"), scale="small", seed=0)


def brain_experiment(tmp_path: Path, federation: Path) -> Path:
    config = {
        "name": "leak", "federation": str(federation), "seed": 0,
        "task": {"kind": "segmentation", "batch_size": 2, "patch_size": None,
                 "model": {"name": "unet", "channels": [4, 8], "strides": [2], "num_res_units": 0},
                 "optimizer": {"name": "adam", "lr": 0.005}},
        "training": {"rounds": 2, "local_epochs": 1, "eval_every": 1, "fraction_fit": 1.0, "min_fit_clients": 1},
        "methods": ["fedavg"],
    }
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def chest_experiment(tmp_path: Path, federation: Path, rounds: int = 3, methods: list | None = None) -> Path:
    config = {
        "name": "faults", "federation": str(federation), "seed": 7,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 4,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": rounds, "local_epochs": 1, "eval_every": 0},
        "methods": methods or ["fedavg"],
    }
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ------------------------------------------------------------------------------------------------ A: privacy
def test_file_emptied_mid_run_leaks_no_path_or_subject_id(brain_copy, tmp_path, monkeypatch, capfd):
    """The user's report: a t1 file becomes empty in round 2. Every file the run wrote (log, checkpoint, CSVs,
    JSON, HTML) and the console name the hashed case and the file's role, never the path, root or subject."""
    root = (brain_copy / "brain_mri").resolve()
    victim = nifti(brain_copy, SUBJECT, "t1").resolve()
    site = next(s for s in load_federation(config_of(brain_copy)) if SUBJECT in set(s._table["_source_id"]))
    row = site._table[site._table["_source_id"] == SUBJECT].iloc[0]
    assert row["split"] == "train"  # read by local training, not by evaluation
    monkeypatch.setattr(site_datasets, "CACHE_BYTES", 0)  # re-read every case each round, as a large data set is
    real_available = MethodRunner._available

    def empty_in_round_2(self, rnd):
        if rnd == 2:
            victim.write_bytes(b"")
        return real_available(self, rnd)

    monkeypatch.setattr(MethodRunner, "_available", empty_in_round_2)
    out = tmp_path / "out"
    code = main(["run", str(brain_experiment(tmp_path, config_of(brain_copy))), "--out", str(out), "--no-progress"])
    console = capfd.readouterr()
    assert code == 0, console.err  # one failed round is a passing fault: the run completes

    log = [json.loads(x) for x in (out / "leak" / "runs" / "fedavg" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in log] == [1, 2] and log[0]["failed"] == []
    (failure,) = log[1]["failed"]
    assert failure["site"] == site.name
    assert failure["error"] == (f"MedfedError: site {site.name}, case {row['case_id']}: could not be loaded "
                                "(t1 file: file is empty (0 bytes)); run `medfed validate` on this site")

    secrets = [str(victim), victim.as_posix(), str(root), root.as_posix(), victim.name, SUBJECT,
               *(s for s in pd.read_csv(root / "partitioning_1.csv")["Subject_ID"])]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"rounds.jsonl", "last.pt", "metrics.csv", "config.yaml", "report.html"} <= {p.name for p in written}
    for path in written:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} in {path.relative_to(out)}"
    for stream in (console.out, console.err):
        for secret in secrets:
            assert secret not in stream
    assert row["case_id"] in console.out  # the console does name the hashed case


def test_load_errors_hide_paths_and_ids_whatever_the_library_says(brain_copy, monkeypatch):
    """Unknown exceptions keep only their type and a scrubbed message (safety net in the base loader)."""
    federation = load_federation(config_of(brain_copy))
    site = next(s for s in federation if SUBJECT in set(s._table["_source_id"]))
    row = site._table[site._table["_source_id"] == SUBJECT].iloc[0]
    path = Path(row["_t2"])

    def odd_reader(p):
        raise RuntimeError(f"cannot map {p} ({Path(p).name}) of {SUBJECT} under {site.root}")

    monkeypatch.setattr("medfed.sites.brats.read_volume", odd_reader)
    dataset = site.dataset(row["split"], transform=lambda item: item)
    position = [r["case_id"] for r in dataset.data].index(row["case_id"])
    with pytest.raises(MedfedError) as caught:
        dataset[position]
    message = str(caught.value)
    assert message.startswith(f"site {site.name}, case {row['case_id']}: could not be loaded (t1 file: RuntimeError:")
    assert HIDDEN in message
    for secret in (str(path), path.name, SUBJECT, str(site.root)):
        assert secret not in message

    def located(case):  # an adapter's own located message is scrubbed too
        raise MedfedError(f"site {site.name}, case {case['case_id']}: bad {case['_flair']} of {SUBJECT}")

    monkeypatch.setattr(site, "_load_case", located)
    with pytest.raises(MedfedError) as caught:
        dataset[position]
    assert SUBJECT not in str(caught.value) and str(site.root) not in str(caught.value)


def test_validate_reasons_name_no_absolute_path(brain_copy):
    """Validation may name files relative to the root (file column), but nibabel's absolute path is not repeated."""
    victim = nifti(brain_copy, SUBJECT, "seg")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    problems = load_federation(config_of(brain_copy)).validate()
    (problem,) = [p for p in problems if p.is_error]
    assert problem.file == f"{SUBJECT}/{SUBJECT}_seg.nii.gz"
    assert problem.reason == "unreadable NIfTI: file is empty or truncated (the compressed stream ends early)"


@pytest.mark.parametrize("damage, reason", [
    (lambda raw, nii: b"", "file is empty (0 bytes)"),
    (lambda raw, nii: raw[: len(raw) // 2], "file is empty or truncated (the compressed stream ends early)"),
    (lambda raw, nii: raw[:40], "not a NIfTI file (unknown format, or the header is truncated)"),
    (lambda raw, nii: b"not a nifti at all" * 30, "not a NIfTI file (unknown format, or the header is truncated)"),
    (lambda raw, nii: nii[: len(nii) - 100], "file is truncated (fewer voxel bytes than the header declares)"),
])
def test_nifti_read_errors_are_fixed_reasons(tmp_path, damage, reason):
    folder = tmp_path / SUBJECT
    folder.mkdir()
    image = nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 16), np.float32), np.eye(4))
    image.to_filename(folder / "ref.nii.gz")
    image.to_filename(folder / "ref.nii")
    raw, nii = (folder / "ref.nii.gz").read_bytes(), (folder / "ref.nii").read_bytes()
    path = folder / (f"{SUBJECT}_t1.nii" if "voxel bytes" in reason else f"{SUBJECT}_t1.nii.gz")
    path.write_bytes(damage(raw, nii))
    with pytest.raises(MedfedError) as caught:
        read_volume(path)
    assert str(caught.value) == reason


def test_scrub_message_hides_whole_words_longest_first_and_cuts():
    text = "read /data/site/BraTS_001/BraTS_001_t1.nii.gz\nfor BraTS_001 (not BraTS_0012) at /data/site"
    scrubbed = scrub_message(text, ["/data/site", "BraTS_001", "/data/site/BraTS_001/BraTS_001_t1.nii.gz"])
    assert scrubbed == f"read {HIDDEN} for {HIDDEN} (not BraTS_0012) at {HIDDEN}"
    long = scrub_message("RuntimeError: " + "\n".join(["[[0., 0., 0.,  ..., 0., 0., 0.],"] * 500), [])
    assert len(long) == MESSAGE_LIMIT and long.endswith("…") and "\n" not in long


# ------------------------------------------------------------------------------------------------ B: grid sizes
def regrid(out: Path, subject: str, size: int) -> None:
    """Write every file of ``subject`` on a ``size``-cubed grid (zero-padded or cropped), affine unchanged."""
    for key in FILES:
        path = nifti(out, subject, key)
        data = np.asarray(nib.load(path).dataobj)
        grid = np.zeros((size,) * 3, dtype=data.dtype)
        n = min(size, data.shape[0])
        grid[:n, :n, :n] = data[:n, :n, :n]
        rewrite(path, grid)


def test_subjects_on_different_grids_are_a_site_problem(brain_copy):
    regrid(brain_copy, SUBJECT, 40)
    with pytest.raises(DataProblems) as caught:
        load_federation(config_of(brain_copy))  # strict: `medfed run` stops here, before any training
    (problem,) = caught.value.problems
    federation = load_federation(config_of(brain_copy), strict=False)
    site = next(s for s in federation if SUBJECT in set(s._table["_source_id"]))
    case_id = site._table.loc[site._table["_source_id"] == SUBJECT, "case_id"].iloc[0]
    others = len(site) - 1
    assert problem.site == site.name and problem.is_error
    assert problem.reason.startswith(f"subjects come in 2 grid sizes: 32x32x32 ({others} subjects), "
                                     f"40x40x40 (1 subject: {case_id}); training batches need one size")
    assert "spatial_size" in problem.reason and SUBJECT not in str(caught.value)
    # lenient loading (`medfed validate`) keeps the cases and reports the same problem once
    assert len(site) == others + 1
    assert [p.reason for p in federation.validate() if p.is_error] == [problem.reason]


def test_sites_on_different_grids_warn_that_a_pooled_method_cannot_batch_them(brain_copy):
    site = next(s for s in load_federation(config_of(brain_copy)) if SUBJECT in set(s._table["_source_id"]))
    for subject in site._table["_source_id"]:  # one whole site on another grid: each site is consistent
        regrid(brain_copy, subject, 40)
    federation = load_federation(config_of(brain_copy))  # strict loading passes: federated methods are fine
    (problem,) = [p for p in federation.problems if "grid sizes" in p.reason]
    assert problem.severity == "warning" and problem.site == "federation"
    assert f"{site.name} 40x40x40" in problem.reason and "32x32x32" in problem.reason
    assert "centralised" in problem.reason and "spatial_size" in problem.reason
    edit_source(brain_copy, spatial_size=[32, 32, 32])
    assert not [p for p in load_federation(config_of(brain_copy)).problems if "grid sizes" in p.reason]


def test_spatial_size_makes_different_grids_fit(brain_copy):
    regrid(brain_copy, SUBJECT, 40)
    edit_source(brain_copy, spatial_size=[32, 32, 32])
    federation = load_federation(config_of(brain_copy))  # no problem
    site = next(s for s in federation if SUBJECT in set(s._table["_source_id"]))
    batch = next(iter(DataLoader(site.dataset("train"), batch_size=len(site.split("train")))))
    assert tuple(batch["image"].shape[2:]) == (32, 32, 32)


# ------------------------------------------------------------------------------------------------ C: stopping
def failing_training(monkeypatch, site: str, errors) -> None:
    """Local training of ``site`` raises ``errors(round)`` (``None``: trains normally); other sites train."""
    broken: set[int] = set()
    calls = {"n": 0}
    real_datasets, real_train = runner_module._train_datasets, ClassificationTask.local_train

    def tagged(task, sites, pooled):
        datasets = real_datasets(task, sites, pooled)
        broken.update(id(d) for name, d in datasets.items() if name == site)
        return datasets

    def train(self, model, dataset, **kwargs):
        if id(dataset) in broken:
            calls["n"] += 1
            error = errors(calls["n"])
            if error is not None:
                raise error
        return real_train(self, model, dataset, **kwargs)

    monkeypatch.setattr(runner_module, "_train_datasets", tagged)
    monkeypatch.setattr(ClassificationTask, "local_train", train)


def collate_error(entry: int) -> RuntimeError:
    """Like torch's batching error: positions vary by round, and the tensors come along (tens of KB)."""
    return RuntimeError(f"stack expects each tensor to be equal size, but got [1, 32, 32] at entry {entry} and "
                        f"[1, 40, 40] at entry {1 - entry}\n{torch.arange(30000.0).reshape(300, 100)}")


def test_site_failing_the_same_way_every_round_stops_the_run(chest, tmp_path, monkeypatch, capsys):
    failing_training(monkeypatch, "adult-b", lambda n: collate_error(n % 2))
    code = main(["run", str(chest_experiment(tmp_path, chest)), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    (line,) = [x for x in err.splitlines() if "STOPPED" in x]
    assert (f"fedavg STOPPED: fedavg, round {REPEATED_FAILURE_ROUNDS}: site adult-b failed the same way in rounds 1 "
            "and 2 (RuntimeError: stack expects each tensor to be equal size") in line
    assert line.endswith("run `medfed validate` on its federation") and len(line) < 800
    assert len(err) < 2000 and len(err.splitlines()) < 6  # no tensor dump: the recorded error is cut to one line
    log = [json.loads(x) for x in (tmp_path / "out" / "faults" / "runs" / "fedavg" / "rounds.jsonl").read_text()
           .splitlines()]
    assert [r["round"] for r in log] == [1, 2] and log[1]["status"] == "stopped"
    assert all(len(r["failed"][0]["error"]) <= MESSAGE_LIMIT for r in log)
    assert log[0]["aggregation"]["clients"] == 3  # round 1 still counted without the site


def test_sites_failing_once_or_differently_do_not_stop_the_run(chest, tmp_path, monkeypatch):
    errors = {1: OSError("disk hiccup"), 2: ValueError("no training case")}  # a different error each round
    failing_training(monkeypatch, "adult-b", errors.get)
    result = run_experiment(chest_experiment(tmp_path, chest), tmp_path / "out", progress=False)
    assert result.stopped == {}
    assert [(f["round"], f["error"]) for f in result.failures] == [(1, "OSError: disk hiccup"),
                                                                   (2, "ValueError: no training case")]
    log = [json.loads(x) for x in (result.out / "runs" / "fedavg" / "rounds.jsonl").read_text().splitlines()]
    assert "adult-b" in log[2]["completed"]


def test_no_update_in_a_round_stops_at_once(chest, tmp_path, monkeypatch):
    failing_training(monkeypatch, POOLED, lambda n: collate_error(0))  # the pooled reference is the only client
    result = run_experiment(chest_experiment(tmp_path, chest, methods=["centralised"]), tmp_path / "out",
                            progress=False)
    message = result.stopped["centralised"]
    assert "round 1: only 0 of the 1 sampled site(s) returned an update (1 needed)" in message
    assert "RuntimeError: stack expects" in message and "\n" not in message and len(message) < 800


def test_failure_streaks_count_only_sampled_rounds():
    def record(rnd, sampled, failed=(), skipped=False):
        return {"round": rnd, "sampled": sampled, "failed": [{"site": s, "error": e} for s, e in failed],
                **({"skipped": "too few"} if skipped else {})}

    streaks = FailureStreaks([record(1, ["a", "b"], [("a", "X: at entry 0")]),
                              record(2, ["b"]),                    # a not sampled: its streak goes on
                              record(3, ["a"], skipped=True)])      # a skipped round changes nothing
    assert streaks.repeated() is None
    streaks.update(record(4, ["a"], [("a", "X: at entry 1")]))  # numbers aside, the same error
    assert streaks.repeated() == ("a", [1, 4], "X: at entry 1")
    streaks.update(record(5, ["a"]))  # a round it completes ends the streak
    assert streaks.repeated() is None
