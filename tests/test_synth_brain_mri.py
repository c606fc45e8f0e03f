"""The synthetic BraTS/FeTS generator: layout, labels, contrasts, heterogeneity, determinism, knobs."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from medfed.seeding import rng_for
from medfed.sites import load_federation
from medfed.synth.brain_mri import (
    CONTRASTS,
    PAEDIATRIC_INSTITUTION,
    SCALE_SPECS,
    mni_template,
    smooth_field,
    write_brain_mri,
)

SPEC = SCALE_SPECS["small"]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_brain") / "small"
    write_brain_mri(out, scale="small", seed=0)
    return out


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def subject_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "brain_mri").iterdir() if p.is_dir())


def volume(folder: Path, key: str) -> np.ndarray:
    return np.asarray(nib.load(folder / f"{folder.name}_{key}.nii.gz").dataobj)


def test_layout_partitions_and_config(small):
    folders = subject_dirs(small)
    assert len(folders) == sum(SPEC.counts)
    for folder in folders:
        assert folder.name.startswith("BraTS2021_")
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{folder.name}_{k}.nii.gz" for k in (*CONTRASTS, "seg"))
    first = pd.read_csv(small / "brain_mri" / "partitioning_1.csv", dtype=str)
    second = pd.read_csv(small / "brain_mri" / "partitioning_2.csv", dtype=str)
    assert list(first.columns) == ["Partition_ID", "Subject_ID"] == list(second.columns)
    assert sorted(first["Subject_ID"]) == sorted(second["Subject_ID"]) == [f.name for f in folders]
    assert list(first.groupby("Partition_ID").size()) == list(SPEC.counts)
    assert second["Partition_ID"].nunique() == len(SPEC.counts) + SPEC.split_largest
    config = yaml.safe_load((small / "sites" / "brain_mri.yaml").read_text())
    assert config["adapter"] == "brats" and config["sources"][0]["root"] == "../brain_mri"
    assert config["sources"][0]["partition_csv"] == "partitioning_1.csv"
    federation = load_federation(small / "sites" / "brain_mri.yaml")
    assert [len(s) for s in federation] == list(SPEC.counts) and federation.validate() == []


def test_nifti_headers_dtypes_and_affines(small):
    for folder in subject_dirs(small)[:3]:
        images = [nib.load(folder / f"{folder.name}_{k}.nii.gz") for k in (*CONTRASTS, "seg")]
        for img in images:
            assert img.shape == SPEC.shape
            np.testing.assert_array_equal(img.affine, images[0].affine)
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
            assert img.header["descrip"].tobytes().startswith(b"medfed synthetic")
        assert [img.get_data_dtype() for img in images] == [np.dtype(np.int16)] * 4 + [np.dtype(np.uint8)]
        assert all(5.9 < z < 6.7 for z in images[0].header.get_zooms())


def test_every_subject_has_a_glioma_inside_the_brain(small):
    for folder in subject_dirs(small):
        seg = volume(folder, "seg")
        assert set(np.unique(seg)) == {0, 1, 2, 4}, folder.name
        brain = volume(folder, "flair") > 0
        assert brain[seg > 0].all(), "tumour voxels outside the (skull-stripped) brain"
        assert 0.002 < (seg > 0).sum() / brain.sum() < 0.6


def test_contrasts_follow_tissue_and_lesion_physics(small):
    means = {c: {"ncr": [], "ed": [], "et": [], "normal": []} for c in CONTRASTS}
    for folder in subject_dirs(small):
        seg = volume(folder, "seg")
        for c in CONTRASTS:
            image = volume(folder, c).astype(np.float64)
            normal = (image > 0) & (seg == 0)
            for key, mask in (("ncr", seg == 1), ("ed", seg == 2), ("et", seg == 4), ("normal", normal)):
                means[c][key].append(image[mask].mean() / image[normal].mean())
    m = {c: {k: float(np.median(v)) for k, v in d.items()} for c, d in means.items()}
    assert m["t1ce"]["et"] > 1.3 * m["t1ce"]["ncr"]  # enhancing rim around a dark necrotic core
    assert m["t1ce"]["et"] > m["t1"]["et"] + 0.3  # gadolinium enhancement
    assert m["flair"]["ed"] > 1.3  # oedema hyperintense on FLAIR
    assert m["t2"]["ed"] > 1.2 and m["t1"]["ed"] < 0.9


def test_template_tissue_contrast(small):
    """Within the template brain: T1 WM > GM > CSF, T2 CSF > GM > WM (checked on a subject grid)."""
    template = mni_template()
    assert template.gm.shape == template.wm.shape == template.brain.shape
    assert np.allclose(np.diag(template.affine)[:3], 2.0)
    assert abs(template.centre[0]) < 4  # MNI space is centred left-right
    folder = subject_dirs(small)[0]
    seg, t1, t2 = volume(folder, "seg"), volume(folder, "t1").astype(float), volume(folder, "t2").astype(float)
    inside = (t1 > 0) & (seg == 0)
    bright_t1 = inside & (t1 > np.percentile(t1[inside], 80))
    assert t2[bright_t1].mean() < t2[inside].mean()  # T1-bright white matter is T2-dark


def test_institutions_differ(small):
    federation = load_federation(small / "sites" / "brain_mri.yaml")
    spacings = {s.name: set(s.cases["spacing_mm"]) for s in federation}
    assert all(len(v) == 1 for v in spacings.values()) and len({next(iter(v)) for v in spacings.values()}) > 1
    scale, brains = {}, {}
    for site in federation:
        t1 = [np.asarray(nib.load(p).dataobj) for p in site._table["_t1"]]
        scale[site.name] = np.median([np.percentile(v[v > 0], 90) for v in t1])
        zooms = np.prod(nib.load(site._table["_t1"].iloc[0]).header.get_zooms())
        brains[site.name] = np.median([(v > 0).sum() * zooms for v in t1]) / 1000  # ml
    assert max(scale.values()) / min(scale.values()) > 1.2, scale
    paediatric = f"inst-{PAEDIATRIC_INSTITUTION + 1}"
    assert brains[paediatric] < 0.85 * min(v for k, v in brains.items() if k != paediatric), brains
    assert all(800 < v < 2500 for k, v in brains.items() if k != paediatric), brains


def test_same_seed_same_bytes_other_seed_other_pixels(small, tmp_path):
    write_brain_mri(tmp_path / "again", scale="small", seed=0)
    assert digest(tmp_path / "again" / "brain_mri") == digest(small / "brain_mri")
    assert (tmp_path / "again" / "sites" / "brain_mri.yaml").read_bytes() == (
        small / "sites" / "brain_mri.yaml").read_bytes()
    write_brain_mri(tmp_path / "other", scale="small", seed=1)
    a = subject_dirs(small)[0]
    b = tmp_path / "other" / "brain_mri" / a.name
    assert not np.array_equal(volume(a, "t1"), volume(b, "t1"))


def test_knobs_naming_label_and_partitioning(tmp_path):
    config = write_brain_mri(tmp_path, scale="small", seed=2, naming="fets2", enhancing_label=3, partitioning=2)
    folder = subject_dirs(tmp_path)[0]
    assert folder.name.startswith("FeTS_")
    assert (folder / f"{folder.name}_brain_flair.nii.gz").is_file()
    seg = np.asarray(nib.load(folder / f"{folder.name}_final_seg.nii.gz").dataobj)
    assert set(np.unique(seg)) == {0, 1, 2, 3}
    federation = load_federation(config)
    assert len(federation) == len(SPEC.counts) + SPEC.split_largest and federation.validate() == []
    for bad in ({"naming": "nnunet"}, {"enhancing_label": 2}, {"partitioning": 3}):
        with pytest.raises(ValueError):
            write_brain_mri(tmp_path / "x", scale="small", **bad)
    with pytest.raises(ValueError, match="unknown scale"):
        write_brain_mri(tmp_path / "x", scale="huge")


def test_smooth_field_is_normalised_and_seeded():
    a = smooth_field(rng_for(0, "f"), (20, 24, 16), 4)
    b = smooth_field(rng_for(0, "f"), (20, 24, 16), 4)
    assert a.shape == (20, 24, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert abs(float(a.mean())) < 1e-4 and abs(float(a.std()) - 1) < 1e-3
    assert np.corrcoef(a[:-1].ravel(), a[1:].ravel())[0, 1] > 0.9  # smooth: neighbours nearly equal


def test_demo_scale_shape_counts_and_speed(tmp_path):
    start = time.perf_counter()
    config = write_brain_mri(tmp_path, scale="demo", seed=0)
    elapsed = time.perf_counter() - start
    federation = load_federation(config)
    demo = SCALE_SPECS["demo"]
    assert [len(s) for s in federation] == list(demo.counts)
    assert set(federation.case_table()["shape"]) == {"32x40x32"}
    assert yaml.safe_load(Path(config).read_text())["split"] == {"seed": 0, "val": 0.15, "test": 0.4}
    # every institution has >= 10 test subjects: per-site CIs and tests in the report, no "n<2" rows
    assert [len(s.split("test")) for s in federation] == [21, 14, 11, 10, 10]
    assert min(len(s.split("train")) for s in federation) >= 10
    assert elapsed < 60, f"demo took {elapsed:.1f} s"
