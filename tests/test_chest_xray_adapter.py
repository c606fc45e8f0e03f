"""The chest X-ray adapter: label policies, metadata, pixel conventions, validation, privacy."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
import yaml
from PIL import Image

from medfed.errors import ConfigError, MedfedError
from medfed.sites import load_federation
from medfed.sites.chest_xray import (
    ChestXraySite,
    ChestXraySource,
    apply_policy,
    normalise_view,
    parse_age,
    parse_finding,
)
from medfed.sites.dicom_io import DicomReadError, read_dicom_image, read_dicom_metadata
from medfed.sites.identity import age_group, parse_dicom_age
from medfed.sites.raster_io import RasterReadError, read_raster, to_unit
from medfed.synth.chest_xray import write_chest_xray

from dicom_support import write_dicom

IDENTIFIER_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName")


# ---------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cxr-adapter")
    write_chest_xray(out, scale="small", seed=3)
    return out


def site(root: Path, **options) -> ChestXraySite:
    options.setdefault("name", root.name)
    if options.get("layout", "table") == "table":
        options.setdefault("findings", ["Pneumonia"])
    return ChestXraySite(ChestXraySource(root=str(root), **options), root)


def raw_table(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)


def make_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", slope: float = 1.0,
               intercept: float = 0.0, pixels: bool = True, **header: str) -> Path:
    return write_dicom(path, stored, photometric=photometric, bits=12, slope=slope, intercept=intercept,
                       pixels=pixels, **header)


def fake_identifiers(root: Path) -> set[str]:
    values = set()
    for path in root.rglob("*.dcm"):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001, S112 - the tests' deliberately corrupt files carry no identifiers
            continue
        for tag in IDENTIFIER_TAGS:
            value = str(header.get(tag, "") or "")
            if value:
                values.add(value)
                values.update(part for part in value.split("^") if len(part) >= 4)
    return values


# ---------------------------------------------------------------------------- value parsing
@pytest.mark.parametrize(("raw", "value"), [("1", 1), ("1.0", 1), ("0.0", 0), ("-1", -1), ("-1.0", -1), (" ", None)])
def test_parse_finding(raw, value):
    assert parse_finding(raw) == value


@pytest.mark.parametrize("raw", ["2", "yes", "0.5", "nan"])
def test_parse_finding_rejects(raw):
    with pytest.raises(ValueError):
        parse_finding(raw)


@pytest.mark.parametrize(
    ("value", "uncertain", "blank", "expected"),
    [(-1, "zeros", "negative", 0), (-1, "ones", "negative", 1), (-1, "ignore", "negative", -1),
     (None, "ones", "negative", 0), (None, "ones", "uncertain", 1), (None, "ignore", "uncertain", -1),
     (1, "zeros", "negative", 1), (0, "ones", "uncertain", 0)],
)
def test_policies(value, uncertain, blank, expected):
    assert apply_policy(value, uncertain, blank) == expected


def test_metadata_normalisers():
    assert [normalise_view(v) for v in ("PA", "ap", "AP SUPINE", "LL", "LATERAL", "", "LAO")] == [
        "PA", "AP", "AP", "LAT", "LAT", None, "unknown"]
    assert (parse_age("45"), parse_age("045Y"), parse_age("")) == (45.0, 45.0, None)
    with pytest.raises(ValueError):
        parse_age("old")


# ---------------------------------------------------------------------------- reading the federation back
def test_federation_reads_back_with_counts_and_metadata(small):
    federation = load_federation(small / "sites" / "chest_xray.yaml")
    counts = {s.name: len(s) for s in federation}
    assert counts == {"adult-a": 10, "adult-b": 10, "adult-c": 8, "pediatric": 10}
    data = small / "chest_xray"

    a = federation["adult-a"]
    table = raw_table(data / "adult-a")
    expected = sorted(age_group(float(v)) for v in table["Age"])
    assert sorted(a.cases["age_group"]) == expected
    assert sorted(a.cases["sex"]) == sorted(table["Sex"].str[0])
    assert sorted(a.cases["view"]) == sorted(table["AP/PA"])
    assert set(a.cases["format"]) == {"dicom"} and set(a.cases["population"]) == {"adult"}

    b = federation["adult-b"]  # no metadata in the CSV: from DICOM headers
    headers = [read_dicom_metadata(p) for p in sorted((data / "adult-b").rglob("*.dcm"))]
    assert sorted(b.cases["age_group"]) == sorted(age_group(parse_dicom_age(h.age)) for h in headers)
    assert sorted(b.cases["sex"]) == sorted(h.sex for h in headers)
    assert sorted(b.cases["view"]) == sorted(h.view for h in headers)

    c, p = federation["adult-c"], federation["pediatric"]
    assert set(c.cases["format"]) == {"png"}
    assert set(p.cases["population"]) == {"pediatric"} and set(p.cases["age_group"]) == {"unknown"}
    n_pneumonia = len(list((data / "pediatric" / "PNEUMONIA").iterdir()))
    assert p.cases["Pneumonia"].sum() == n_pneumonia
    assert a.cases["Pneumonia"].dtype == np.int64
    assert a.label_kind == "classification" and a.modality == "chest_xray"
    assert a.metadata_columns == ["age_group", "population", "sex", "view", "format"]


@pytest.mark.parametrize("name", ["adult-a", "adult-c"])
def test_uncertain_and_blank_policies_on_the_table(small, name):
    root = small / "chest_xray" / name
    raw = raw_table(root).set_index("Path")["Pneumonia"].map(parse_finding)
    assert (raw == -1).any() and raw.isna().any()
    for uncertain in ("zeros", "ones", "ignore"):
        for blank in ("negative", "uncertain"):
            s = site(root, uncertain=uncertain, blank=blank)
            got = s._table.set_index("_source_id")["Pneumonia"]
            expected = raw.map(lambda v, u=uncertain, b=blank: apply_policy(None if pd.isna(v) else int(v), u, b))
            assert got.sort_index().tolist() == expected.sort_index().tolist()
    ignore = site(root, uncertain="ignore").cases
    assert (ignore["Pneumonia"] == -1).sum() == (raw == -1).sum()


def test_dataset_batches_with_default_transform(small):
    federation = load_federation(small / "sites" / "chest_xray.yaml")
    for s in federation:
        loader = torch.utils.data.DataLoader(s.dataset(["train", "val", "test"]), batch_size=4)
        batch = next(iter(loader))
        assert batch["image"].shape == (4, 1, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (4, 1) and batch["label"].dtype == torch.float32
        assert 0 <= batch["image"].min() and batch["image"].max() <= 1
        assert len(batch["case_id"]) == 4 and set(batch["case_id"]) <= set(s.cases["case_id"])
    raw = federation["adult-b"].dataset("train", transform=None)[0]  # no transform -> as loaded
    raw_item = federation["adult-b"]._load_case(federation["adult-b"]._table.iloc[0])
    assert raw_item["image"].shape == (1, 64, 56) and raw_item["image"].dtype == np.float32
    assert raw["image"].shape[-2:] == (32, 32)


def test_multiple_findings_and_site_column(small, tmp_path):
    root = tmp_path / "multi"
    shutil.copytree(small / "chest_xray" / "adult-a", root)
    table = raw_table(root)
    table["Hospital"] = ["north" if i % 2 else "south" for i in range(len(table))]
    table.to_csv(root / "labels.csv", index=False)
    north = site(root, findings=["Pneumonia", "Cardiomegaly"], site_column="Hospital", site_value="north")
    assert len(north) == len(table) // 2 and north.index_problems == []  # south rows are listed, not "unlisted"
    assert north.label_columns == ["Pneumonia", "Cardiomegaly"]
    item = north._load_case(north._table.iloc[0])
    assert item["label"].shape == (2,)


# ---------------------------------------------------------------------------- pixel conventions
def test_rescale_and_monochrome1_on_a_hand_made_dicom(tmp_path):
    stored = np.array([[0, 100, 200], [1000, 2000, 4095]], dtype=np.uint16)
    mono1 = make_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", slope=2, intercept=-1024)
    image = read_dicom_image(mono1)
    np.testing.assert_array_equal(image.pixels, stored * 2.0 - 1024)
    assert image.value_range == (-1024.0, 4095 * 2.0 - 1024) and image.monochrome1
    np.testing.assert_allclose(image.to_unit("bits"), 1 - stored / 4095, atol=1e-6)
    np.testing.assert_allclose(image.to_unit("minmax"), 1 - stored / 4095, atol=1e-6)
    mono2 = make_dicom(tmp_path / "m2.dcm", stored, slope=0.5, intercept=10)
    image = read_dicom_image(mono2)
    np.testing.assert_array_equal(image.pixels, stored * 0.5 + 10)
    np.testing.assert_allclose(image.to_unit("bits"), stored / 4095, atol=1e-6)
    np.testing.assert_allclose(image.to_unit("minmax"), stored / 4095, atol=1e-6)

    # and through a site: (1, H, W) float32, inverted MONOCHROME1
    root = tmp_path / "site"
    make_dicom(root / "x" / "a.dcm", stored, photometric="MONOCHROME1", slope=2, intercept=-1024, PatientAge="007Y",
               PatientSex="F", ViewPosition="AP")
    (root / "labels.csv").write_text("Path,Pneumonia\nx/a.dcm,1\n")
    s = site(root, intensity="bits")
    assert s.cases[["age_group", "population", "sex", "view"]].iloc[0].tolist() == ["2-11", "pediatric", "F", "AP"]
    item = s._load_case(s._table.iloc[0])
    assert item["image"].dtype == np.float32 and item["image"].shape == (1, 2, 3)
    np.testing.assert_allclose(item["image"][0], 1 - stored / 4095, atol=1e-6)
    np.testing.assert_array_equal(item["label"], np.array([1.0], np.float32))


def test_raster_reader(tmp_path):
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    array = read_raster(tmp_path / "deep.png", "L")
    assert array.dtype == np.uint16 and np.array_equal(array, deep)
    np.testing.assert_allclose(to_unit(array), deep / 65535)
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg")
    assert read_raster(tmp_path / "rgb.jpg", "RGB").shape == (5, 6, 3)
    assert read_raster(tmp_path / "rgb.jpg", "L").shape == (5, 6)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(RasterReadError, match="not a recognised image"):
        read_raster(tmp_path / "bad.png")
    with pytest.raises(RasterReadError, match="not found"):
        read_raster(tmp_path / "missing.png")
    with pytest.raises(DicomReadError):
        read_dicom_image(tmp_path / "rgb.jpg")


# ---------------------------------------------------------------------------- validation
@pytest.fixture(scope="module")
def broken(small, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A copy of the small federation with one of every defect; returns (out, damaged files)."""
    out = tmp_path_factory.mktemp("broken")
    shutil.copytree(small, out, dirs_exist_ok=True)
    data = out / "chest_xray"
    a_files = sorted((data / "adult-a" / "images").glob("*.dcm"))
    truncated = a_files[0]
    truncated.write_bytes(truncated.read_bytes()[:-500])
    missing = a_files[1]
    missing.unlink()
    table = raw_table(data / "adult-a")
    table.loc[2, "Pneumonia"] = "maybe"
    table.loc[3, "Age"] = "old"
    table.to_csv(data / "adult-a" / "labels.csv", index=False)

    b_files = sorted((data / "adult-b" / "images").glob("*.dcm"))
    no_pixels = b_files[0]
    ds = pydicom.dcmread(no_pixels)
    del ds.PixelData
    ds.save_as(no_pixels)
    header_cut = b_files[1]
    header_cut.write_bytes(header_cut.read_bytes()[:400])
    unlisted = data / "adult-b" / "images" / "extra.dcm"
    shutil.copy(b_files[2], unlisted)

    c_table = raw_table(data / "adult-c").rename(columns={"Pneumonia": "Pneumonie"})
    c_table.to_csv(data / "adult-c" / "labels.csv", index=False)

    normals = sorted((data / "pediatric" / "NORMAL").glob("*.png"))
    truncated_png = normals[0]
    truncated_png.write_bytes(truncated_png.read_bytes()[: len(truncated_png.read_bytes()) // 2])
    constant = normals[1]
    Image.fromarray(np.full((64, 64), 77, np.uint8)).save(constant)
    (data / "pediatric" / "COVID").mkdir()
    shutil.copy(normals[2], data / "pediatric" / "COVID" / "c1.png")
    shutil.copy(normals[2], data / "pediatric" / "stray.png")
    files = {"truncated": truncated, "missing": missing, "no_pixels": no_pixels, "header_cut": header_cut,
             "unlisted": unlisted, "truncated_png": truncated_png, "constant": constant}
    return out, files


def find(problems, site_name: str, text: str, file: str | None = None) -> list:
    return [
        p for p in problems if p.site == site_name and text in p.reason and (file is None or file in (p.file or ""))
    ]


def test_every_problem_of_a_broken_copy_is_reported_at_once(broken):
    out, files = broken
    with pytest.raises(Exception, match="problem"):
        load_federation(out / "sites" / "chest_xray.yaml")  # strict: indexing problems raise
    federation = load_federation(out / "sites" / "chest_xray.yaml", strict=False)
    problems = federation.validate()
    assert find(problems, "adult-a", "unreadable DICOM: file is truncated", files["truncated"].name)
    assert find(problems, "adult-a", "image file does not exist", files["missing"].name)
    assert find(problems, "adult-a", "'Pneumonia' has value 'maybe'")
    assert find(problems, "adult-a", "'Age' is not an age")
    assert find(problems, "adult-b", "no pixel data", files["no_pixels"].name)
    assert find(problems, "adult-b", "unreadable DICOM", files["header_cut"].name)
    assert find(problems, "adult-b", "not listed in labels.csv", "extra.dcm")
    [missing_column] = find(problems, "adult-c", "lacks required column")
    assert "'Pneumonia'" in missing_column.reason and "'Pneumonie'" in missing_column.reason
    assert find(problems, "pediatric", "unreadable PNG", files["truncated_png"].name)
    assert find(problems, "pediatric", "image is empty", files["constant"].name)
    assert find(problems, "pediatric", "unknown class folder 'COVID'")
    assert find(problems, "pediatric", "outside any class folder", "stray.png")
    assert find(problems, "adult-c", "site is empty")
    # indexing excludes what it sees cheaply (missing file, bad values, unreadable header); reading finds the rest
    assert len(federation["adult-a"]) == 10 - 3 and len(federation["adult-b"]) == 10 - 1
    assert len(federation["pediatric"]) == 10


def test_loading_a_broken_case_names_site_and_case(broken):
    federation = load_federation(broken[0] / "sites" / "chest_xray.yaml", strict=False)
    a = federation["adult-a"]
    row = a._table[a._table["_source_id"] == f"images/{broken[1]['truncated'].name}"].iloc[0]
    dataset = a.dataset(row["split"])
    position = [item["case_id"] for item in dataset.data].index(row["case_id"])
    with pytest.raises(MedfedError, match=f"site adult-a, case {row['case_id']}: could not be loaded .*truncated"):
        dataset[position]


def test_missing_labels_and_root_are_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    s = site(tmp_path / "empty")
    assert [p.reason for p in s.index_problems] == ["label table not found", "site is empty: no usable case was found"]
    s = site(tmp_path / "nowhere")
    assert "data folder (root) not found" in s.index_problems[0].reason


def test_duplicate_paths_are_reported(small, tmp_path):
    root = tmp_path / "dup"
    shutil.copytree(small / "chest_xray" / "adult-c", root)
    table = raw_table(root)
    pd.concat([table, table.iloc[[0]]]).to_csv(root / "labels.csv", index=False)
    s = site(root)
    assert len(s) == len(table) - 1
    assert len([p for p in s.index_problems if "listed 2 times" in p.reason]) == 2


def test_class_folders_with_split_folders(small, tmp_path):
    root = tmp_path / "kermany"
    for split in ("train", "test"):
        shutil.copytree(small / "chest_xray" / "pediatric", root / split)
    (root / "extra").mkdir()
    s = site(root, layout="class_folders", split_folders=True, population="pediatric")
    assert sorted(s.cases["split"].unique()) == ["test", "train"]
    assert len(s) == len(list((small / "chest_xray" / "pediatric").rglob("*.png"))) * 2
    assert [p.file for p in s.index_problems if p.is_error] == ["extra"]
    # the same patients in both split folders: every one is named, and the given split is kept
    straddling = [p for p in s.index_problems if not p.is_error]
    assert len(straddling) == s.cases["group"].nunique()
    assert all("the source's own split puts one patient" in p.reason and "in test, train" in p.reason
               for p in straddling)


def test_config_errors_name_the_field(tmp_path):
    def load(source: dict) -> None:
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"name": "x", "adapter": "chest_xray", "sources": [source]}))
        load_federation(config, strict=False)

    with pytest.raises(ConfigError, match=r"sources\.0\.colour"):
        load({"name": "a", "root": ".", "findings": ["Pneumonia"], "colour": 1})
    with pytest.raises(ConfigError, match="findings"):
        load({"name": "a", "root": "."})
    with pytest.raises(ConfigError, match="classes do not apply"):
        load({"name": "a", "root": ".", "findings": ["Pneumonia"], "classes": {"A": 1}})
    with pytest.raises(ConfigError, match="uncertain"):
        load({"name": "a", "root": ".", "findings": ["Pneumonia"], "uncertain": "maybe"})
    config = tmp_path / "d.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "adapter": "chest_xray", "sources": [
        {"name": "a", "root": ".", "layout": "class_folders"}, {"name": "a", "root": ".", "layout": "class_folders"}]}))
    with pytest.raises(ConfigError, match="used more than once"):
        load_federation(config, strict=False)


# ---------------------------------------------------------------------------- privacy
def test_no_fake_identifier_leaves_the_adapter(small, broken, caplog, capsys):
    identifiers = fake_identifiers(small) | fake_identifiers(broken[0])
    assert any("MEDFEDFAKEID" in i for i in identifiers) and len(identifiers) > 20
    caplog.set_level(logging.DEBUG)
    texts = []
    for out in (small, broken[0]):
        federation = load_federation(out / "sites" / "chest_xray.yaml", strict=False)
        problems = federation.validate()
        texts += [str(p) for p in problems] + [repr(p) for p in problems]
        texts.append(json.dumps([p.__dict__ for p in problems]))
        texts.append(federation.case_table().to_csv())
        for s in federation:
            texts += [repr(s), json.dumps(s.summary()), s._table.to_csv()]  # even the private table
            if out is small:
                item = s.dataset(["train", "val", "test"])[0]
                texts.append(repr({k: v for k, v in item.items() if k != "image"}))
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    blob = "\n".join(texts)
    leaked = sorted(i for i in identifiers if i in blob)
    assert not leaked, f"identifiers leaked: {leaked}"
