"""The BraTS/FeTS adapter: partitions, both namings, ET conventions, every indexing and per-case problem, loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from medfed.errors import ConfigError, DataProblems
from medfed.sites import load_federation
from medfed.sites.brats import FILES, MODALITIES, BratsSite
from medfed.sites.nifti_io import UnreadableNifti, read_geometry, read_volume
from medfed.synth.brain_mri import SCALE_SPECS, write_brain_mri

COUNTS = SCALE_SPECS["small"].counts


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("brats") / "small"
    write_brain_mri(out, scale="small", seed=0)
    return out


@pytest.fixture(scope="module")
def fets2_et3(tmp_path_factory) -> Path:
    """FeTS task-2 file names and the BraTS 2023 label convention (ET = 3)."""
    out = tmp_path_factory.mktemp("fets2") / "small"
    write_brain_mri(out, scale="small", seed=1, naming="fets2", enhancing_label=3)
    return out


@pytest.fixture()
def broken(small, tmp_path) -> Path:
    """A private copy of the small federation to damage."""
    copy = tmp_path / "copy"
    shutil.copytree(small, copy)
    return copy


def config_of(out: Path) -> Path:
    return out / "sites" / "brain_mri.yaml"


def edit_source(out: Path, **changes) -> Path:
    """Merge ``changes`` into the config's only source (``None`` removes a key)."""
    path = config_of(out)
    config = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            config["sources"][0].pop(key, None)
        else:
            config["sources"][0][key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def subjects(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "brain_mri").iterdir() if p.is_dir())


def nifti(out: Path, subject: str, key: str) -> Path:
    return out / "brain_mri" / subject / f"{subject}_{key}.nii.gz"


def rewrite(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> None:
    """Save ``path`` again with new voxels and/or affine."""
    img = nib.load(path)
    data = np.asarray(img.dataobj) if data is None else data
    nib.Nifti1Image(data, img.affine if affine is None else affine).to_filename(path)


def reasons(problems) -> str:
    return "\n".join(str(p) for p in problems)


def partition_csv(out: Path, rows: list[tuple[str, str]] | None = None, text: str | None = None) -> None:
    path = out / "brain_mri" / "partitioning_1.csv"
    if text is None:
        text = "Partition_ID,Subject_ID\n" + "".join(f"{p},{s}\n" for p, s in rows)
    path.write_text(text)


# ---------------------------------------------------------------------------- clean data
def test_partitions_become_sites_with_public_columns_only(small):
    federation = load_federation(config_of(small))
    assert federation.site_names == ["inst-1", "inst-2", "inst-3"]
    assert [len(s) for s in federation] == list(COUNTS)
    assert federation.problems == [] and federation.validate() == []
    table = federation.case_table()
    assert list(table.columns) == ["case_id", "site", "group", "institution", "shape", "spacing_mm", "split"]
    assert list(table.groupby("site")["institution"].first()) == ["1", "2", "3"]
    assert set(table["shape"]) == {"32x32x32"}
    for site in federation:
        assert site.modality == "brain_mri" and site.label_kind == "segmentation"
        assert site.label_columns == [] and site.primary_label is None
        zooms = read_geometry(site._table["_t1"].iloc[0]).zooms
        assert set(site.cases["spacing_mm"]) == {"x".join(f"{z:.1f}" for z in zooms)}
    csv = table.to_csv()
    assert not any(s in csv for s in subjects(small)), "subject ids must not reach the public table"


def test_load_case_arrays_and_default_transform_batches(small):
    site = load_federation(config_of(small))["inst-1"]
    row = site._table.iloc[0]
    item = site._load_case(row)
    assert item["image"].shape == (4, 32, 32, 32) and item["image"].dtype == np.float32
    assert item["label"].shape == (1, 32, 32, 32) and item["label"].dtype == np.uint8
    assert set(np.unique(item["label"])) == {0, 1, 2, 4}
    flair, _ = read_volume(row["_flair"])
    np.testing.assert_array_equal(item["image"][MODALITIES.index("flair")], flair)
    assert item["spacing"] == tuple(round(z, 6) for z in read_geometry(row["_seg"]).zooms)

    batch = next(iter(DataLoader(site.dataset("train"), batch_size=2)))
    assert batch["image"].shape == (2, 4, 32, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 3, 32, 32, 32) and batch["label"].dtype == torch.float32
    tc, wt, et = batch["label"][0]
    first = site._table[site._table["split"] == "train"].iloc[0]
    raw = torch.as_tensor(site._load_case(first)["label"][0])
    assert torch.equal(tc.bool(), (raw == 1) | (raw == 4))
    assert torch.equal(wt.bool(), raw > 0) and torch.equal(et.bool(), raw == 4)
    brain = batch["image"][0, 0] != 0
    assert abs(float(batch["image"][0, 0][brain].mean())) < 1e-3  # z-scored over nonzero voxels
    assert abs(float(batch["image"][0, 0][brain].std()) - 1) < 1e-2


def test_spatial_size_pads_or_crops(broken):
    federation = load_federation(edit_source(broken, spatial_size=[24, 40, 32]))
    item = federation["inst-2"].dataset("train")[0]
    assert tuple(item["image"].shape) == (4, 24, 40, 32) and tuple(item["label"].shape) == (3, 24, 40, 32)


def test_without_partition_csv_one_site_named_by_name(broken):
    federation = load_federation(edit_source(broken, partition_csv=None, name="upenn"))
    assert federation.site_names == ["upenn"] and len(federation[0]) == sum(COUNTS)
    assert set(federation[0].cases["institution"]) == {"upenn"}


def test_partitioning_2_gives_more_sites_same_cases(broken):
    one = load_federation(config_of(broken))
    two = load_federation(edit_source(broken, partition_csv="partitioning_2.csv"))
    assert len(two) == len(one) + SCALE_SPECS["small"].split_largest
    assert sum(len(s) for s in two) == sum(COUNTS)


def test_site_names_map_partitions(broken):
    federation = load_federation(edit_source(broken, site_names={1: "upenn", "3": "tcia"}))
    assert federation.site_names == ["upenn", "inst-2", "tcia"]
    assert set(federation["upenn"].cases["institution"]) == {"1"}


def test_fets2_naming_and_enhancing_label_3_are_remapped(fets2_et3):
    federation = load_federation(config_of(fets2_et3))
    assert [len(s) for s in federation] == list(COUNTS) and federation.validate() == []
    site = federation[0]
    assert set(site._table["_naming"]) == {"fets2"}
    assert site._table["_seg"].iloc[0].endswith("_final_seg.nii.gz")
    raw = np.unique(read_volume(site._table["_seg"].iloc[0])[0])
    assert set(raw) == {0, 1, 2, 3}
    assert set(np.unique(site._load_case(site._table.iloc[0])["label"])) == {0, 1, 2, 4}


def test_wrong_naming_or_label_convention_is_reported(fets2_et3, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(fets2_et3, copy)
    federation = load_federation(edit_source(copy, enhancing_label=4), strict=False)
    problems = federation.validate()
    assert len(problems) == sum(COUNTS)
    assert all("unexpected label value(s) 3" in p.reason for p in problems)
    federation = load_federation(edit_source(copy, naming="brats", enhancing_label=3), strict=False)
    problems = [p for s in federation for p in s.index_problems]
    assert sum("missing" in p.reason for p in problems) == 5 * sum(COUNTS)


# ---------------------------------------------------------------------------- per-case problems
def test_affine_mismatch_is_reported_and_case_excluded(broken):
    subject = subjects(broken)[0]
    path = nifti(broken, subject, "t2")
    affine = nib.load(path).affine.copy()
    affine[0, 3] += 2.0
    rewrite(path, affine=affine)
    with pytest.raises(DataProblems) as caught:
        load_federation(config_of(broken))
    assert len(caught.value.problems) == 1
    problem = caught.value.problems[0]
    assert "affine differs from the t1 file by up to 2 mm" in problem.reason
    assert problem.file == f"{subject}/{subject}_t2.nii.gz"
    federation = load_federation(config_of(broken), strict=False)
    assert sum(len(s) for s in federation) == sum(COUNTS) - 1


def test_shape_mismatch_and_4d_are_reported(broken):
    first, second = subjects(broken)[:2]
    path = nifti(broken, first, "flair")
    rewrite(path, np.asarray(nib.load(path).dataobj)[:, :, :30])
    path = nifti(broken, second, "seg")
    rewrite(path, np.asarray(nib.load(path).dataobj)[..., None])
    federation = load_federation(config_of(broken), strict=False)
    text = reasons(p for s in federation for p in s.index_problems)
    assert "shape 32x32x30 differs from the t1 file (32x32x32)" in text
    assert "expected a 3-D volume, got shape 32x32x32x1" in text


def test_truncated_nifti_is_reported_by_validate(broken):
    subject = subjects(broken)[0]
    path = nifti(broken, subject, "t1ce")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UnreadableNifti):
        read_volume(path)
    federation = load_federation(config_of(broken))  # the header still parses: indexing cannot see it
    problems = federation.validate()
    assert len(problems) == 1 and problems[0].reason.startswith("unreadable NIfTI:")
    assert problems[0].file == f"{subject}/{subject}_t1ce.nii.gz"


def test_truncated_header_is_reported_by_indexing(broken):
    subject = subjects(broken)[1]
    path = nifti(broken, subject, "flair")
    path.write_bytes(path.read_bytes()[:200])
    federation = load_federation(config_of(broken), strict=False)
    problems = [p for s in federation for p in s.index_problems]
    assert len(problems) == 1 and "unreadable NIfTI header" in problems[0].reason
    assert path.name in str(problems[0])


def test_nan_blank_and_bad_labels_are_reported(broken):
    names = subjects(broken)
    t2 = nifti(broken, names[0], "t2")
    data = nib.load(t2).get_fdata(dtype=np.float32)
    data[3, 3, 3] = np.nan
    data[4, 4, 4] = np.inf
    rewrite(t2, data)
    rewrite(nifti(broken, names[1], "t1"), np.zeros((32, 32, 32), np.int16))
    seg = nifti(broken, names[2], "seg")
    labels = np.asarray(nib.load(seg).dataobj).astype(np.float32)
    labels[0, 0, 0], labels[0, 0, 1], labels[0, 0, 2] = 5, 7, 0.5
    rewrite(seg, labels)
    problems = load_federation(config_of(broken)).validate()
    text = reasons(problems)
    assert len(problems) == 4, text
    assert "2 NaN/inf value(s)" in text and "image is empty" in text
    assert "unexpected label value(s) 5, 7" in text and "non-integer label value(s) 0.5" in text


def test_missing_modality_is_reported(broken):
    subject = subjects(broken)[0]
    nifti(broken, subject, "t1ce").unlink()
    with pytest.raises(DataProblems, match=r"missing t1ce file"):
        load_federation(config_of(broken))


# ---------------------------------------------------------------------------- partition problems
def test_partition_csv_defects_are_federation_problems(broken):
    names = subjects(broken)
    rows = [("1", s) for s in names[:4]] + [("2", names[4]), ("2", names[0]), ("2", "BraTS2021_99999"), ("3", names[5])]
    partition_csv(broken, rows)
    federation = load_federation(config_of(broken), strict=False)
    text = reasons(federation.problems)
    assert "listed in partitions 1, 2; excluded from all" in text
    assert "BraTS2021_99999" in text and "has no folder" in text
    unlisted = names[6:]
    assert sum("in no partition" in p.reason for p in federation.problems) == len(unlisted)
    assert len(federation.problems) == 2 + len(unlisted)
    assert [len(s) for s in federation] == [3, 1, 1]


def test_empty_partition_is_reported(broken):
    names = subjects(broken)
    partition_csv(broken, [("1", s) for s in names] + [("2", "BraTS2021_99999")])
    federation = load_federation(config_of(broken), strict=False)
    assert federation.site_names == ["inst-1", "inst-2"]
    assert "site is empty" in reasons(federation["inst-2"].index_problems)
    with pytest.raises(DataProblems):
        load_federation(config_of(broken))


def test_partition_csv_missing_column_or_file(broken):
    partition_csv(broken, text="Partition,Subject_ID\n1,x\n")
    federation = load_federation(config_of(broken), strict=False)
    assert federation.sites == [] and len(federation.problems) == 1
    assert "lacks column(s) Partition_ID; columns found: Partition, Subject_ID" in federation.problems[0].reason
    federation = load_federation(edit_source(broken, partition_csv="nope.csv"), strict=False)
    assert "partition CSV not found" in federation.problems[0].reason


def test_all_problems_of_a_broken_copy_at_once(broken):
    names = subjects(broken)
    nifti(broken, names[0], "t1").unlink()  # index: missing
    affine = nib.load(nifti(broken, names[1], "seg")).affine.copy()
    affine[2, 2] *= 1.5
    rewrite(nifti(broken, names[1], "seg"), affine=affine)  # index: affine
    path = nifti(broken, names[2], "flair")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # validate: truncated
    seg = nifti(broken, names[3], "seg")
    labels = np.asarray(nib.load(seg).dataobj).copy()
    labels[0, 0, 0] = 3
    rewrite(seg, labels)  # validate: label 3
    shutil.copytree(broken / "brain_mri" / names[4], broken / "brain_mri" / "BraTS2021_77777")  # no partition
    federation = load_federation(config_of(broken), strict=False)
    problems = federation.validate()
    assert len(problems) == 5, reasons(problems)
    assert sum(len(s) for s in federation) == sum(COUNTS) - 2


# ---------------------------------------------------------------------------- config
def test_config_errors_name_the_field(broken):
    with pytest.raises(ConfigError, match=r"sources\.0\.enhancing_label"):
        load_federation(edit_source(broken, enhancing_label=5))
    with pytest.raises(ConfigError, match=r"sources\.0\.colour"):
        load_federation(edit_source(broken, enhancing_label=4, colour="red"))
    edit_source(broken, colour=None)
    with pytest.raises(ConfigError, match=r"used more than once"):
        load_federation(edit_source(broken, site_names={"1": "same", "2": "same"}))


def test_missing_root_is_a_problem(broken):
    federation = load_federation(edit_source(broken, root="../nowhere"), strict=False)
    assert federation.sites == [] and "data folder (root) not found" in federation.problems[0].reason


def test_site_class_is_usable_directly(small):
    from medfed.sites.brats import BratsSource

    options = BratsSource(root=str(small / "brain_mri"))
    site = BratsSite("direct", small / "brain_mri", subjects(small)[:2], options, institution="x")
    assert len(site) == 2 and site.index_problems == [] and site.validate() == []
    assert list(pd.unique(site.cases["institution"])) == ["x"] and len(FILES) == 5
