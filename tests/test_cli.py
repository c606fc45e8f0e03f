"""End-to-end through the `medfed` command: synth -> validate -> run, privacy of every output, determinism."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pydicom
import pytest

from medfed.cli import main
from medfed.synth import MODALITIES

IDENTIFIER_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    assert main(["synth", "--out", str(out), "--scale", "small", "--seed", "0"]) == 0
    return out


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def fake_identifiers(root: Path) -> set[str]:
    values = set()
    for path in root.rglob("*.dcm"):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for tag in IDENTIFIER_TAGS:
            value = str(header.get(tag, "") or "")
            if len(value) >= 4:
                values.add(value)
                values.update(part for part in value.split("^") if len(part) >= 4)
    return values


def test_synth_writes_every_modality_config(small_data):
    for modality in MODALITIES:
        assert (small_data / "sites" / f"{modality}.yaml").is_file()


def test_validate_clean_federations(small_data, capsys):
    configs = [str(small_data / "sites" / f"{m}.yaml") for m in MODALITIES]
    assert main(["validate", *configs, "--no-progress"]) == 0
    assert "no problems" in capsys.readouterr().out


def test_main_job_trains_every_demo_experiment_and_leaks_no_identifier(small_data, tmp_path, capsys):
    identifiers = fake_identifiers(small_data)
    assert identifiers, "the synthetic DICOM sites must carry fake identifiers for this test to mean anything"
    data_dir = tmp_path / "data"
    shutil.copytree(small_data, data_dir / "small")
    out = tmp_path / "reports"
    args = ["run", "--data", str(data_dir), "--scale", "small", "--rounds", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    captured = capsys.readouterr()
    for name in ("demo_brain_mri", "demo_chest_xray", "demo_ureteroscopy"):
        assert (out / name / "metrics.csv").is_file() and (out / name / "summary.csv").is_file()
        for report_file in ("report.html", "per_site.csv", "comparisons.csv", "meta_analysis.csv", "calibration.csv",
                            "summary.json", "summary.md"):
            assert (out / name / report_file).is_file(), (name, report_file)
        assert f"== {name}:" in captured.out
    assert "not privacy-preserving" in captured.out
    texts = [captured.out.encode(), captured.err.encode()] + [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    for text in texts:  # every file a run writes (checkpoints included), as bytes: no raw PatientID or other identifier
        for identifier in identifiers:
            assert identifier.encode() not in text
    chest = json.loads((out / "demo_chest_xray" / "summary.json").read_text())
    assert {s["split_unit"] for s in chest["sites"]} == {"patient"}
    assert all(set(s["groups_per_split"]) == {"train", "val", "test"} for s in chest["sites"])
    assert "split unit" in (out / "demo_chest_xray" / "report.html").read_text()
    sites = (out / "demo_ureteroscopy" / "sites.csv").read_text()
    assert "split_unit" in sites.splitlines()[0] and ",stone," in sites


def test_run_generates_missing_demo_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDFED_DATA", str(tmp_path / "d"))
    out = tmp_path / "r"
    config = str(Path(__file__).resolve().parents[1] / "tasks" / "demo_ureteroscopy.yaml")
    args = ["run", config, "--scale", "small", "--rounds", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    written = tmp_path / "d" / "small" / "sites" / "ureteroscopy.yaml"
    stamp = written.stat().st_mtime_ns
    assert not (tmp_path / "d" / "small" / "sites" / "brain_mri.yaml").exists()  # only what the config needs
    assert main(args) == 0
    assert written.stat().st_mtime_ns == stamp
    # demo data written by an older generator (no format mark) is written again, with a note
    lines = written.read_text().splitlines()
    written.write_text("\n".join(line for line in lines if "medfed synth format" not in line) + "\n")
    assert main(args) == 0
    assert "demo data from an older medfed (format 1, now 3)" in capsys.readouterr().out
    assert "medfed synth format 3" in written.read_text()


def test_run_validates_every_case_before_training(small_data, tmp_path, capsys):
    broken = tmp_path / "data" / "small"
    shutil.copytree(small_data, broken)
    stones = sorted(p for p in (broken / "ureteroscopy").rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    for stone in stones[:2]:
        stone.write_bytes(b"broken")
    config = str(Path(__file__).resolve().parents[1] / "tasks" / "demo_ureteroscopy.yaml")
    args = ["run", config, "--data", str(tmp_path / "data"), "--scale", "small", "--out", str(tmp_path / "r"),
            "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert stones[0].name in err and stones[1].name in err and "Traceback" not in err
    assert not (tmp_path / "r" / "demo_ureteroscopy" / "runs").exists()


def test_validate_reports_problems_across_federations_at_once(small_data, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(small_data, broken)
    nifti = min((broken / "brain_mri").rglob("*flair*.nii.gz"))
    nifti.write_bytes(nifti.read_bytes()[:200])
    dicom = min((broken / "chest_xray").rglob("*.dcm"))
    dicom.write_bytes(dicom.read_bytes()[:300])
    stone = min(p for p in (broken / "ureteroscopy").rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    stone.write_bytes(stone.read_bytes()[:100])
    configs = [str(broken / "sites" / f"{m}.yaml") for m in MODALITIES]
    assert main(["validate", *configs, "--no-progress", "--json", str(tmp_path / "p.json")]) == 1
    err = capsys.readouterr().err
    for damaged in (nifti, dicom, stone):
        assert damaged.name in err, f"{damaged.name} not named in:\n{err}"
    assert "Traceback" not in err


def test_config_errors_exit_2_with_message(tmp_path, capsys):
    config = tmp_path / "x.yaml"
    config.write_text("name: x\nadapter: nosuch\nsources: [{root: .}]\n")
    assert main(["validate", str(config)]) == 2
    assert "unknown adapter 'nosuch'" in capsys.readouterr().err


def test_same_seed_same_bytes_other_seed_other_pixels(small_data, tmp_path):
    again = tmp_path / "again"
    assert main(["synth", "--out", str(again), "--scale", "small", "--seed", "0"]) == 0
    assert tree_digest(again) == tree_digest(small_data)
    other = tmp_path / "other"
    assert main(["synth", "--out", str(other), "--scale", "small", "--seed", "1", "--only", "brain_mri"]) == 0
    first = tree_digest(small_data / "brain_mri")
    second = tree_digest(other / "brain_mri")
    assert first != second
