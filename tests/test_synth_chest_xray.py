"""The synthetic chest X-ray federation: layout, headers, label states, heterogeneity, determinism."""

from __future__ import annotations

import hashlib
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
    SITES,
    acquire,
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
    assert federation.validate() == []
    for site in federation:
        assert len(site) == SPECS[site.name].cases["small"]
        assert site.label_columns == ["Pneumonia"]
    sources = yaml.safe_load(config.read_text())["sources"]
    assert all(not Path(s["root"]).is_absolute() for s in sources)


def test_layouts_formats_and_dicom_headers(small):
    data = small / "chest_xray"
    assert (data / "pediatric" / "NORMAL").is_dir() and (data / "pediatric" / "PNEUMONIA").is_dir()
    assert not (data / "pediatric" / "labels.csv").exists()
    assert sorted(p.suffix for p in (data / "adult-c" / "images").iterdir()) == [".png"] * 8
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
    first = min((small / "chest_xray" / "adult-c" / "images").glob("*.png"))
    second = other / "chest_xray" / "adult-c" / "images" / first.name
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
