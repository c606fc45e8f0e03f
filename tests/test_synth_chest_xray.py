"""The synthetic chest X-ray federation: layout, headers, label states, patients, heterogeneity, determinism."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from PIL import Image

from medfed.seeding import rng_for
from medfed.sites import load_federation
from medfed.synth.chest_xray import (
    FAKE_MARKER,
    IMAGES_PER_PATIENT,
    SITES,
    acquire,
    draw_anatomy,
    draw_cases,
    draw_patients,
    render_chest,
    write_chest_xray,
)

SPECS = {spec.name: spec for spec in SITES}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cxr") / "small"
    write_chest_xray(out, scale="small", seed=0)
    return out


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_config_loads_with_zero_problems_and_expected_counts(small):
    config = small / "sites" / "chest_xray.yaml"
    federation = load_federation(config)  # strict: raises on any indexing problem
    assert federation.site_names == [s.name for s in SITES]
    # the synthetic radiographs share their low frequencies, so the perceptual hash of the leakage check
    # finds near-duplicates between patients (warnings); nothing else may come up
    problems = federation.validate()
    assert [p for p in problems if p.severity != "warning" or "near-duplicate" not in p.reason] == []
    for site in federation:
        assert len(site) == SPECS[site.name].cases["small"]
        assert site.label_columns == ["Pneumonia"]
    sources = yaml.safe_load(config.read_text())["sources"]
    assert all(not Path(s["root"]).is_absolute() for s in sources)


def test_layouts_formats_and_dicom_headers(small):
    data = small / "chest_xray"
    assert (data / "pediatric" / "NORMAL").is_dir() and (data / "pediatric" / "PNEUMONIA").is_dir()
    assert not (data / "pediatric" / "labels.csv").exists()
    c_files = sorted(str(p.relative_to(data / "adult-c")) for p in (data / "adult-c" / "images").rglob("*.*"))
    assert len(c_files) == 8
    assert all(re.fullmatch(r"images/patient\d{5}/study\d/view1_frontal\.png", f) for f in c_files)
    kermany = [str(p.relative_to(data / "pediatric")) for p in (data / "pediatric").rglob("*.png")]
    assert all(re.fullmatch(r"PNEUMONIA/person\d+_(bacteria|virus)_\d+\.png|NORMAL/IM-\d{4}-\d{4}\.png", f)
               for f in kermany)
    a = pydicom.dcmread(min((data / "adult-a" / "images").glob("*.dcm")))
    b = pydicom.dcmread(min((data / "adult-b" / "images").glob("*.dcm")))
    assert (a.Modality, a.PhotometricInterpretation, float(a.RescaleSlope)) == ("DX", "MONOCHROME2", 1.0)
    assert (b.Modality, b.PhotometricInterpretation) == ("CR", "MONOCHROME1")
    assert (float(b.RescaleSlope), float(b.RescaleIntercept), b.BitsStored) == (2.0, -1024.0, 12)
    assert b.pixel_array.shape == (64, 56) and a.pixel_array.shape == (64, 64)
    assert b.pixel_array.max() <= 4095
    for ds in (a, b):
        assert FAKE_MARKER in str(ds.PatientName) and str(ds.PatientName).startswith("DOE^")
        assert FAKE_MARKER in ds.PatientID and FAKE_MARKER in ds.InstitutionName
        assert ds.AccessionNumber and len(ds.PatientBirthDate) == 8
        assert ds.PatientAge.endswith("Y") and ds.ViewPosition in ("AP", "PA") and ds.PatientSex in ("M", "F")
        assert ds.PixelSpacing and ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in data.rglob("*.dcm")]
    assert len(set(uids)) == len(uids)


def test_tables_hold_every_chexpert_label_state(small):
    a = pd.read_csv(small / "chest_xray" / "adult-a" / "labels.csv", dtype=str, keep_default_na=False)
    assert {"Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Pneumonia"} <= set(a.columns)
    assert {"1.0", "0.0", "-1.0", ""} <= set(a["Pneumonia"])
    b = pd.read_csv(small / "chest_xray" / "adult-b" / "labels.csv", dtype=str, keep_default_na=False)
    assert "Age" not in b.columns and "Sex" not in b.columns  # adult-b metadata lives in DICOM headers only
    c = pd.read_csv(small / "chest_xray" / "adult-c" / "labels.csv", dtype=str, keep_default_na=False)
    assert {"1", "0", "-1", ""} <= set(c["Pneumonia"])


def test_prevalence_is_higher_at_the_pediatric_site(small):
    federation = load_federation(small / "sites" / "chest_xray.yaml")
    prevalence = {s.name: s.cases["Pneumonia"].mean() for s in federation}
    assert prevalence["pediatric"] > max(v for k, v in prevalence.items() if k != "pediatric")


def test_sites_differ_in_exposure():
    """adult-b is under-exposed (gain, gamma) against adult-a: mean stored signal differs clearly."""
    means = {}
    for name in ("adult-a", "adult-b"):
        rng = rng_for(0, "exposure-test")
        means[name] = acquire(rng, render_chest(rng, (64, 64)), SPECS[name]).mean()
    assert means["adult-a"] > means["adult-b"] + 0.05


def test_pneumonia_adds_density_inside_the_lungs_only():
    clear = render_chest(rng_for(5, "r"), (96, 96), pneumonia=0.0)
    sick = render_chest(rng_for(5, "r"), (96, 96), pneumonia=1.0)
    assert clear.shape == (96, 96) and 0 <= clear.min() and clear.max() <= 1
    diff = sick - clear
    assert diff.min() >= -1e-12 and diff.max() > 0.05
    assert np.allclose(diff[:5], 0) and np.allclose(diff[:, :5], 0)  # background and border untouched
    big_heart = render_chest(rng_for(5, "r"), (96, 96), cardiomegaly=True)
    assert big_heart.sum() > clear.sum()


def test_same_seed_same_files_other_seed_other_pixels(small, tmp_path):
    again = tmp_path / "again"
    write_chest_xray(again, scale="small", seed=0)
    assert digests(again / "chest_xray") == digests(small / "chest_xray")
    assert (again / "sites" / "chest_xray.yaml").read_bytes() == (small / "sites" / "chest_xray.yaml").read_bytes()
    other = tmp_path / "other"
    write_chest_xray(other, scale="small", seed=1)
    first = small / "chest_xray" / "adult-c" / "images" / "patient00001" / "study1" / "view1_frontal.png"
    second = other / "chest_xray" / "adult-c" / "images" / "patient00001" / "study1" / "view1_frontal.png"
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    a0 = pydicom.dcmread(min((small / "chest_xray" / "adult-a" / "images").glob("*.dcm")))
    a1 = pydicom.dcmread(other / "chest_xray" / "adult-a" / "images" / "cxr00000.dcm")
    assert a0.SOPInstanceUID != a1.SOPInstanceUID and a0.PixelData != a1.PixelData


def test_rewrite_replaces_previous_data_and_knobs_reach_the_config(tmp_path):
    out = tmp_path / "out"
    write_chest_xray(out, scale="small", seed=0)
    (out / "chest_xray" / "adult-a" / "images" / "stale.png").write_bytes(b"x")
    config = write_chest_xray(out, scale="small", seed=2, uncertain="ignore", image_size=48)
    assert not (out / "chest_xray" / "adult-a" / "images" / "stale.png").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    sources = yaml.safe_load(config.read_text())["sources"]
    assert {s["image_size"] for s in sources} == {48}
    assert {s.get("uncertain") for s in sources if s["layout"] == "table"} == {"ignore"}
    federation = load_federation(config)
    assert (federation["adult-a"].cases["Pneumonia"] == -1).any()
    with pytest.raises(ValueError, match="uncertain"):
        write_chest_xray(out, scale="small", uncertain="maybe")
    with pytest.raises(ValueError, match="unknown scale"):
        write_chest_xray(out, scale="huge")


# ---------------------------------------------------------------------------- patients
def pneumonia_follows_the_patient(values: list[str]) -> bool:
    """A patient's Pneumonia values in study order: negative throughout (0 or blank), uncertain throughout,
    or positive first and then positive or uncertain (resolving), never positive again after uncertain."""
    states = [0 if v in ("", "0", "0.0") else int(float(v)) for v in values]
    if 0 in states or states[0] == -1:
        return len(set(states)) == 1
    return states == sorted(states, reverse=True)


def groups_of(keys: list[str]) -> dict[str, list[int]]:
    """Positions of each key, in order."""
    out: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        out[key].append(i)
    return out


def test_patients_have_one_to_four_images_with_shared_sex_age_and_labels(small):
    data = small / "chest_xray"
    # adult-a: Patient column, one PatientID / name / birth date per patient, a new study per image
    a = pd.read_csv(data / "adult-a" / "labels.csv", dtype=str, keep_default_na=False)
    assert a["Patient"].str.fullmatch(r"patient\d{5}").all()
    headers = [pydicom.dcmread(data / "adult-a" / p, stop_before_pixels=True) for p in a["Path"]]
    patients = groups_of(list(a["Patient"]))
    assert len(patients) < len(a)  # follow-ups exist even at small scale
    for rows in patients.values():
        assert 1 <= len(rows) <= max(IMAGES_PER_PATIENT)
        assert a["Sex"].iloc[rows].nunique() == 1
        ages = a["Age"].iloc[rows].astype(int).tolist()
        assert ages == sorted(ages) and ages[-1] - ages[0] <= 1
        assert pneumonia_follows_the_patient(a["Pneumonia"].iloc[rows].tolist())
        same = {(h.PatientID, str(h.PatientName), h.PatientBirthDate, h.PatientSex) for h in (headers[i] for i in rows)}
        assert len(same) == 1
        dates = [headers[i].StudyDate for i in rows]
        assert dates == sorted(dates) and len(set(dates)) == len(dates)
    assert len({h.PatientID for h in headers}) == len(patients)  # PatientID <-> Patient column: one to one
    assert len({h.StudyInstanceUID for h in headers}) == len(headers)
    assert all(FAKE_MARKER in h.PatientID for h in headers)

    # adult-b: no patient column; the patient is the DICOM PatientID
    b = pd.read_csv(data / "adult-b" / "labels.csv", dtype=str, keep_default_na=False)
    assert "Patient" not in b.columns
    b_headers = [pydicom.dcmread(data / "adult-b" / p, stop_before_pixels=True) for p in b["Path"]]
    b_patients = groups_of([h.PatientID for h in b_headers])
    assert len(b_patients) < len(b)
    for rows in b_patients.values():
        assert 1 <= len(rows) <= max(IMAGES_PER_PATIENT)
        assert len({(b_headers[i].PatientSex, b_headers[i].PatientBirthDate) for i in rows}) == 1
        assert pneumonia_follows_the_patient(b["Pneumonia"].iloc[rows].tolist())

    # adult-c: the patient is in the path, studies numbered 1..k
    c = pd.read_csv(data / "adult-c" / "labels.csv", dtype=str, keep_default_na=False)
    c_patients = groups_of([re.search(r"(patient\d+)/", p).group(1) for p in c["Path"]])
    for patient, rows in c_patients.items():
        assert 1 <= len(rows) <= max(IMAGES_PER_PATIENT) and c["Sex"].iloc[rows].nunique() == 1
        assert c["Path"].iloc[rows].tolist() == [f"images/{patient}/study{k}/view1_frontal.png"
                                                  for k in range(1, len(rows) + 1)]
        assert pneumonia_follows_the_patient(c["Pneumonia"].iloc[rows].tolist())

    # pediatric: Kermany names carry the patient and the image number; a patient stays in one class folder
    kermany = defaultdict(list)
    for path in sorted((data / "pediatric").rglob("*.png")):
        match = re.fullmatch(r"(person\d+)_(?:bacteria|virus)_(\d+)\.png|(IM-\d{4})-(\d{4})\.png", path.name)
        kermany[match.group(1) or match.group(3)].append((path.parent.name, int(match.group(2) or match.group(4))))
    assert len(kermany) < sum(map(len, kermany.values()))
    for images in kermany.values():
        assert 1 <= len(images) <= max(IMAGES_PER_PATIENT) and len({folder for folder, _ in images}) == 1
        assert sorted(number for _, number in images) == list(range(1, len(images) + 1))


def test_patient_draws_fill_the_label_quotas_at_every_scale():
    """Cheap (no pixels): image counts and label quotas as per image, 1-4 images per patient, follow-ups
    that resolve to uncertain at the adult sites, one label per patient at the pediatric site."""
    for scale in ("small", "demo", "full"):
        for spec in SITES:
            n = spec.cases[scale]
            patients = draw_patients(spec, n, seed=0)
            cases = draw_cases(spec, n, seed=0, patients=patients)
            assert len(cases) == n == sum(len(p.states) for p in patients)
            assert {len(p.states) for p in patients} <= set(IMAGES_PER_PATIENT)
            if scale != "small":
                assert {len(p.states) for p in patients} == set(IMAGES_PER_PATIENT)
            assert len({p.mrn for p in patients}) == len(patients)
            states = np.array([c.pneumonia for c in cases])
            assert (states == 1).sum() == max(2, round(spec.prevalence * n))
            if spec.uncertain_rate:
                assert (states == -1).sum() == max(1, round(spec.uncertain_rate * n))
            blanks = sum(c.blank for c in cases)
            assert (blanks >= 1 and (states == 0).sum() > blanks) if spec.blank_rate else blanks == 0
            by_patient = groups_of([str(c.patient) for c in cases])
            for rows in by_patient.values():
                assert len({(cases[i].sex, cases[i].cardiomegaly) for i in rows}) == 1
                assert [cases[i].visit for i in rows] == list(range(len(rows)))
                days = [cases[i].day for i in rows]
                assert days[0] == 0 and all(d1 > d0 for d0, d1 in zip(days, days[1:]))
            if spec.resolving == 0:
                assert all(len(set(p.states)) == 1 for p in patients)
            elif scale == "full":
                assert any(p.states[0] == 1 and -1 in p.states for p in patients)


def test_images_of_one_patient_look_alike():
    """Same anatomy, other positioning and noise: closer than two patients' radiographs."""
    def image(patient: int, shot: int) -> np.ndarray:
        anatomy = draw_anatomy(rng_for(0, "anatomy", patient))
        return render_chest(rng_for(0, "shot", patient, shot), (64, 64), anatomy=anatomy)

    same = np.mean([np.abs(image(p, 0) - image(p, 1)).mean() for p in range(6)])
    other = np.mean([np.abs(image(p, 0) - image(p + 6, 0)).mean() for p in range(6)])
    assert same < 0.8 * other


def test_config_names_where_the_patient_is_and_the_adapter_groups_by_it(small):
    sources = {s["name"]: s for s in yaml.safe_load((small / "sites" / "chest_xray.yaml").read_text())["sources"]}
    assert sources["adult-a"]["group_column"] == "Patient"
    assert sources["adult-c"]["group_pattern"] == r"(patient\d+)/"
    grouping = {"group_column", "group_pattern", "group_level"}
    assert not grouping & set(sources["adult-b"]) and not grouping & set(sources["pediatric"])
    federation = load_federation(small / "sites" / "chest_xray.yaml")
    for site in federation:
        spec = SPECS[site.name]
        patients = draw_patients(spec, spec.cases["small"], seed=0)
        assert site.cases["group"].nunique() == len(patients)
        assert (site.cases.groupby("group")["split"].nunique() == 1).all()  # a patient never straddles splits


def test_demo_sites_are_large_enough_for_a_tested_comparison():
    """Cheap (no pixels): at a test fraction of 0.25, every demo site needs about 120 images for 30 test cases;
    each holds at least 144 (the grouped split moves a few), and enough positives for a validation AUROC."""
    for spec in SITES:
        n = spec.cases["demo"]
        assert n >= 144, spec.name
        assert round(spec.prevalence * n) >= 30, spec.name
