"""Leakage guards in `medfed validate`: duplicate images across splits and sites, DICOM patient keys, header checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medfed.cli import main

from dicom_support import write_dicom
from medfed.sites import load_federation


def png(path: Path, seed: int, size: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size)).astype(np.uint8)).save(path)
    return path


def dicom(path: Path, seed: int, syntax=ExplicitVRLittleEndian, **header: str) -> Path:
    header.setdefault("Modality", "CR")
    stored = np.random.default_rng(seed).integers(0, 4096, (32, 32))
    return write_dicom(path, stored, syntax=syntax, **header)


def folder_federation(tmp_path: Path) -> Path:
    """A Kermany-style site with its own split folders; one image copied from train into test under another name."""
    root = tmp_path / "kermany"
    for split, n in (("train", 8), ("test", 4)):
        for i in range(n):
            number = i + (100 if split == "test" else 0)  # distinct seeds: no duplicate but the copy below
            png(root / split / "NORMAL" / f"IM-{number:04d}-0001.png", seed=number)
            png(root / split / "PNEUMONIA" / f"person{number}_virus_1.png", seed=1000 + number)
    shutil.copy(root / "train" / "NORMAL" / "IM-0003-0001.png", root / "test" / "NORMAL" / "IM-0777-0001.png")
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump({"name": "f", "adapter": "chest_xray", "sources": [
        {"name": "kids", "root": "kermany", "layout": "class_folders", "split_folders": True}]}))
    return config


def test_a_duplicate_across_train_and_test_fails_validate_naming_both_files(tmp_path, capsys):
    config = folder_federation(tmp_path)
    report = tmp_path / "out" / "problems.json"
    assert main(["validate", str(config), "--no-progress", "--json", str(report)]) == 1
    err = capsys.readouterr().err
    assert "train/NORMAL/IM-0003-0001.png" in err and "test/NORMAL/IM-0777-0001.png" in err
    assert "identical pixels within the site, in train and in test" in err
    problems = json.loads(report.read_text())
    assert [p["severity"] for p in problems if "identical pixels" in p["reason"]] == ["error"]
    assert main(["validate", str(config), "--no-progress", "--allow-duplicates"]) == 0
    assert "warning: " in capsys.readouterr().err


def test_pacs_copies_with_other_transfer_syntax_are_duplicates_across_sites(tmp_path):
    for site, syntax in (("a", ExplicitVRLittleEndian), ("b", ImplicitVRLittleEndian)):
        for i in range(4):
            dicom(tmp_path / site / "images" / f"x{i}.dcm", seed=100 * (site == "b") + i, syntax=syntax,
                  PatientID=f"{site.upper()}-PID-{i:03d}", BodyPartExamined="CHEST")
        pd.DataFrame({"Path": [f"images/x{i}.dcm" for i in range(4)], "Pneumonia": ["0", "1", "0", "1"]}).to_csv(
            tmp_path / site / "labels.csv", index=False)
    dicom(tmp_path / "b" / "images" / "copy.dcm", seed=2, syntax=ImplicitVRLittleEndian, PatientID="B-PID-999")
    labels = pd.read_csv(tmp_path / "b" / "labels.csv", dtype=str)
    pd.concat([labels, pd.DataFrame({"Path": ["images/copy.dcm"], "Pneumonia": ["0"]})]).to_csv(
        tmp_path / "b" / "labels.csv", index=False)
    assert (tmp_path / "a/images/x2.dcm").read_bytes() != (tmp_path / "b/images/copy.dcm").read_bytes()
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump({"name": "f", "adapter": "chest_xray", "sources": [
        {"name": s, "root": s, "findings": ["Pneumonia"]} for s in ("a", "b")]}))
    federation = load_federation(config)
    problems = federation.validate()
    found = [p for p in problems if "identical pixels across sites a, b" in p.reason]
    assert len(found) == 1 and "images/x2.dcm" in found[0].reason and "images/copy.dcm" in found[0].reason
    assert all("PID" not in str(p) for p in problems)
    for site in federation:
        assert site.split_unit == "patient" and "PID" not in site.cases.to_csv()


def test_dicom_patient_id_groups_images_and_never_leaves_the_adapter(tmp_path):
    root = tmp_path / "h"
    rows = []
    for i in range(18):
        rel = f"images/img{i:02d}.dcm"
        dicom(root / rel, seed=i, PatientID=f"SECRET-MRN-{i // 3:04d}")
        rows.append({"Path": rel, "Pneumonia": str(int(i // 3 % 2))})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump({"name": "f", "adapter": "chest_xray", "split": {"val": 0.2, "test": 0.3},
                                      "sources": [{"name": "h", "root": "h", "findings": ["Pneumonia"]}]}))
    site = load_federation(config)[0]
    assert site.cases["group"].nunique() == 6 and site.split_unit == "patient"
    assert (site.cases.groupby("group")["split"].nunique() == 1).all()
    assert "SECRET" not in site.cases.to_csv() and "SECRET" not in json.dumps(site.summary())
    assert not [p for p in site.validate() if p.is_error]


def test_a_hand_radiograph_in_a_chest_site_is_a_warning_naming_it(tmp_path, capsys):
    root = tmp_path / "h"
    for i in range(6):
        dicom(root / "images" / f"x{i}.dcm", seed=i, PatientID=f"P{i}", BodyPartExamined="HAND" if i == 4 else "CHEST",
              **({"Modality": "MR"} if i == 5 else {}))
    pd.DataFrame({"Path": [f"images/x{i}.dcm" for i in range(6)], "Pneumonia": ["0", "1"] * 3,
                  "Frontal/Lateral": ["Frontal"] * 5 + ["Lateral"]}).to_csv(root / "labels.csv", index=False)
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump({"name": "f", "adapter": "chest_xray", "sources": [
        {"name": "h", "root": "h", "findings": ["Pneumonia"]}]}))
    assert main(["validate", str(config), "--no-progress"]) == 0  # warnings do not fail validation
    err = capsys.readouterr().err
    assert "warning: " in err and "file images/x4.dcm: DICOM BodyPartExamined is 'HAND', not a chest" in err
    assert "file images/x5.dcm: DICOM Modality is 'MR'" in err
    assert "file images/x5.dcm: view LAT where this site expects PA, AP" in err


def test_validate_prints_the_split_unit_and_groups(tmp_path, capsys):
    config = folder_federation(tmp_path)
    main(["validate", str(config), "--no-progress", "--allow-duplicates"])
    out = capsys.readouterr().out
    assert "unit" in out and "patient" in out and "max/group" in out


def test_near_duplicates_need_the_fine_hash_to_agree():
    from medfed.sites.duplicates import ImageFingerprint
    from medfed.sites.leakage import FINE_DISTANCE, duplicate_problems

    a = ImageFingerprint("s", "c1", "a.png", "train", "d1", phash=0b1011, fine_phash=(1 << 200) - 1)
    close = ImageFingerprint("s", "c2", "b.png", "test", "d2", phash=0b1010, fine_phash=(1 << 200) - 1 - (1 << 7))
    far = ImageFingerprint("s", "c3", "c.png", "test", "d3", phash=0b1011, fine_phash=(1 << (FINE_DISTANCE + 1)) - 1)
    problems = duplicate_problems([a, close, far])
    assert len(problems) == 1 and "b.png" in problems[0].reason and not problems[0].is_error
    same_patient = duplicate_problems([a, close], groups={("s", "c1"): "g", ("s", "c2"): "g"})
    assert same_patient == []
