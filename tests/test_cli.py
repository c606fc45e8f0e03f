"""End-to-end through the `medfed` command: synth -> validate -> run, privacy of every output, determinism."""

from __future__ import annotations

import hashlib
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


def test_run_writes_summaries_and_leaks_no_identifier(small_data, tmp_path, capsys):
    identifiers = fake_identifiers(small_data)
    assert identifiers, "the synthetic DICOM sites must carry fake identifiers for this test to mean anything"
    data_dir = tmp_path / "data"
    shutil.copytree(small_data, data_dir / "small")
    out = tmp_path / "reports"
    assert main(["run", "--data", str(data_dir), "--scale", "small", "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    texts = [captured.out, captured.err] + [p.read_text() for p in out.rglob("*") if p.is_file()]
    assert (out / "sites.csv").is_file() and (out / "federations.json").is_file()
    for text in texts:
        for identifier in identifiers:
            assert identifier not in text


def test_run_generates_missing_demo_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFED_DATA", str(tmp_path / "d"))
    out = tmp_path / "r"
    assert main(["run", "--scale", "small", "--out", str(out), "--no-progress"]) == 0
    config = tmp_path / "d" / "small" / "sites" / "brain_mri.yaml"
    stamp = config.stat().st_mtime_ns
    assert main(["run", "--scale", "small", "--out", str(out), "--no-progress"]) == 0
    assert config.stat().st_mtime_ns == stamp


def test_validate_reports_problems_across_federations_at_once(small_data, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(small_data, broken)
    nifti = sorted((broken / "brain_mri").rglob("*flair*.nii.gz"))[0]
    nifti.write_bytes(nifti.read_bytes()[:200])
    dicom = sorted((broken / "chest_xray").rglob("*.dcm"))[0]
    dicom.write_bytes(dicom.read_bytes()[:300])
    stone = sorted(p for p in (broken / "ureteroscopy").rglob("*") if p.suffix.lower() in (".png", ".jpg"))[0]
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
