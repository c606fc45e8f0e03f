"""The ureteroscopy adapter: both layouts, case table, every indexing and per-case problem, loading, config errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

from medfed.errors import ConfigError, DataProblems, MedfedError
from medfed.sites import load_federation
from medfed.sites.identity import hash_case_id
from medfed.sites.raster_io import RasterReadError, read_raster
from medfed.sites.ureteroscopy import DEFAULT_CLASSES, DEFAULT_VIEWS
from medfed.synth.ureteroscopy import write_ureteroscopy


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stones") / "small"
    write_ureteroscopy(out, scale="small", seed=0)
    return out


@pytest.fixture()
def broken(small, tmp_path) -> Path:
    """A private copy of the small federation to damage."""
    copy = tmp_path / "copy"
    shutil.copytree(small, copy)
    return copy


def config_of(out: Path) -> Path:
    return out / "sites" / "ureteroscopy.yaml"


def reasons(problems) -> str:
    return "\n".join(str(p) for p in problems)


def edit_config(out: Path, **changes) -> Path:
    """Rewrite the config with ``changes`` merged into every source (a value of ``None`` removes the key)."""
    path = config_of(out)
    config = yaml.safe_load(path.read_text())
    for source in config["sources"]:
        for key, value in changes.items():
            if value is None:
                source.pop(key, None)
            else:
                source[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_rgb(path: Path, array: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


# ---------------------------------------------------------------------------- clean data
def test_both_layouts_index_with_public_columns_only(small):
    federation = load_federation(config_of(small))
    a, b = federation["dataset-a"], federation["dataset-b"]
    assert a.source.layout == "class_view_folders" and b.source.layout == "flat_csv"
    for site in federation:
        table = site.cases
        assert list(table.columns) == ["case_id", "site", "group", "stone_type", "label", "view", "source", "format",
                                       "split"]
        assert site.split_unit == "stone" and table["group"].nunique() < len(table)
        assert site.label_columns == ["stone_type"] and site.primary_label == "stone_type"
        assert site.label_kind == "classification" and site.modality == "ureteroscopy"
        assert table["label"].dtype == np.int64
        assert (table["label"] == table["stone_type"].map(list(DEFAULT_CLASSES).index)).all()
        assert set(table["view"]) == set(DEFAULT_VIEWS)
        assert site.num_classes == 6
    assert set(a.cases["format"]) == {"png"} and set(b.cases["format"]) == {"jpeg"}
    assert set(a.cases["source"]) == {"A-exvivo-camera"} and set(b.cases["source"]) == {"B-ureteroscope"}
    # case ids hash the path relative to root; paths stay private
    rel = "Ia_COM/surface/stone_002/img_000.png"
    assert hash_case_id(rel, "dataset-a") in set(a.cases["case_id"])
    assert "img_000" not in a.cases.to_csv() and "frame_" not in b.cases.to_csv()
    assert "stone_0" not in a.cases.to_csv() and "b-stone" not in b.cases.to_csv()


def test_source_defaults_to_site_name_and_summary_counts(broken):
    federation = load_federation(edit_config(broken, source_name=None))
    site = federation["dataset-a"]
    assert set(site.cases["source"]) == {"dataset-a"}
    summary = site.summary()
    assert summary["labels"]["stone_type"]["Ia_COM"] == 8
    assert summary["labels"]["stone_type"]["IVc_Struvite"] == "<5"
    # the total is hidden beside the suppressed struvite count, so one of the two views is hidden too
    assert summary["cases"] == ">=5" and summary["metadata"]["view"] == {"section": ">=5", "surface": 17}


def test_dataloader_batches_and_load_case_contract(small):
    site = load_federation(config_of(small))["dataset-b"]
    item = site.dataset("train", transform=lambda d: d)[0]
    assert item["image"].dtype == np.float32 and item["image"].shape == (3, 48, 64)
    assert 0 <= item["image"].min() and item["image"].max() <= 1 and item["image"].max() > item["image"].min()
    assert item["label"].dtype == np.int64 and item["label"].shape == ()
    batch = next(iter(DataLoader(site.dataset("train"), batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    assert len(batch["case_id"]) == 4


def test_custom_classes_views_and_csv_columns(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    rows = []
    for i, (cls, view) in enumerate([("COM", "SUR"), ("COD", "SEC"), ("COM", "SEC"), ("COD", "SUR")]):
        write_rgb(root / "img" / f"{i}.jpg", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), "JPEG")
        rows.append({"path": f"img/{i}.jpg", "type": cls, "v": view, "extra": "x"})
    pd.DataFrame(rows).to_csv(root / "meta.csv", index=False)
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump({"name": "t", "adapter": "ureteroscopy", "sources": [{
        "name": "s", "root": "data", "layout": "flat_csv", "classes": ["COM", "COD"], "views": ["SUR", "SEC"],
        "labels": "meta.csv", "path_column": "path", "class_column": "type", "view_column": "v", "image_size": 16}]}))
    site = load_federation(config)["s"]
    assert sorted(site.cases["label"]) == [0, 0, 1, 1]
    assert [p.reason for p in site.validate()] == [
        "split unit: image; no stone key (each image is its own group, so one stone's images may fall into "
        "different splits)"]
    batch = next(iter(DataLoader(site.dataset(["train", "val", "test"]), batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16)


# ---------------------------------------------------------------------------- class/view folder problems
def test_folder_layout_problems_all_reported_at_once(broken):
    a = broken / "ureteroscopy" / "dataset-a"
    shutil.copytree(a / "Ia_COM", a / "Ib_Unknown")  # unknown class folder
    shutil.copytree(a / "IIa_COD" / "surface", a / "IIa_COD" / "mixed")  # unknown view folder
    (a / "IIa_COD" / "section" / "notes.txt").write_text("not an image")  # non-image file
    shutil.copy(a / "Ia_COM" / "surface" / "stone_002" / "img_000.png", a / "IIa_COD" / "stray.png")  # outside a view folder
    shutil.copy(a / "Ia_COM" / "surface" / "stone_002" / "img_000.png", a / "stray_top.png")  # outside a class folder
    (a / "README.txt").write_text("top-level notes are not data")
    (a / "IVc_Struvite" / "section" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    truncated = a / "Ia_COM" / "surface" / "stone_002" / "img_001.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    constant = a / "Ia_COM" / "section" / "stone_002" / "img_002.png"
    write_rgb(constant, np.full((64, 64, 3), 120, np.uint8))
    tiny = a / "IIIa_UricAcid" / "surface" / "stone_008" / "img_000.png"
    write_rgb(tiny, np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8))

    with pytest.raises(DataProblems) as err:
        load_federation(config_of(broken))
    assert "unknown class folder 'Ib_Unknown'" in str(err.value)

    federation = load_federation(config_of(broken), strict=False)
    site = federation["dataset-a"]
    index = reasons(site.index_problems)
    assert "unknown class folder 'Ib_Unknown'" in index and "8 file(s) are excluded" in index
    assert "unknown view folder 'mixed'" in index and "file IIa_COD/mixed" in index
    assert "file IIa_COD/section/notes.txt: not an image file" in index
    assert "file IIa_COD/stray.png: outside any view folder" in index
    assert "file stray_top.png: image outside any class folder" in index
    assert "README" not in index and "DS_Store" not in index
    assert len(site.index_problems) == 5
    assert len(site) == 34  # the unknown folders and stray files never became cases

    problems = site.validate()
    text = reasons(problems)
    assert len(problems) == 5 + 3, text
    assert "Ia_COM/surface/stone_002/img_001.png: unreadable PNG image" in text
    assert "Ia_COM/section/stone_002/img_002.png: image is empty" in text
    assert "IIIa_UricAcid/surface/stone_008/img_000.png: image is 8x12 pixels, smaller than min_side 16" in text
    assert federation["dataset-b"].validate() == []  # the other site is untouched
    assert "Traceback" not in text


def test_load_of_unreadable_case_is_a_clear_error(broken):
    path = broken / "ureteroscopy" / "dataset-a" / "Ia_COM" / "surface" / "stone_002" / "img_000.png"
    path.write_bytes(path.read_bytes()[:150])
    site = load_federation(config_of(broken))["dataset-a"]
    case_id = hash_case_id("Ia_COM/surface/stone_002/img_000.png", "dataset-a")
    dataset = site.dataset(["train", "val", "test"])
    position = next(i for i, row in enumerate(dataset.data) if row["case_id"] == case_id)
    with pytest.raises(MedfedError, match=f"site dataset-a, case {case_id}: could not be loaded .*Truncated"):
        dataset[position]


# ---------------------------------------------------------------------------- flat CSV problems
def test_csv_layout_problems_all_reported_at_once(broken):
    b = broken / "ureteroscopy" / "dataset-b"
    table = pd.read_csv(b / "labels.csv", dtype=str)
    table.loc[0, "stone_type"] = "VIa_Protein"  # unknown class value
    table.loc[1, "view"] = "oblique"  # unknown view value
    table.loc[2, "file"] = "frames/missing.jpg"  # row without file; frame_00002 is now unlisted
    table.loc[3, "file"] = "frames/frame_00003.gif"  # unsupported type
    table.loc[4, "file"] = " "  # empty path
    table = pd.concat([table, table.iloc[[5]]])  # duplicate row
    table.to_csv(b / "labels.csv", index=False)
    (b / "frames" / "frame_00006.jpg").write_bytes((b / "frames" / "frame_00006.jpg").read_bytes()[:300])
    write_rgb(b / "frames" / "frame_00007.jpg", np.zeros((48, 64, 3), np.uint8), "JPEG")

    site = load_federation(config_of(broken), strict=False)["dataset-b"]
    index = reasons(site.index_problems)
    assert "'stone_type' has unknown value 'VIa_Protein'" in index
    case0 = hash_case_id("frames/frame_00000.jpg", "dataset-b")
    assert f"case {case0}, file frames/frame_00000.jpg: labels.csv line 2" in index
    assert "'view' has unknown value 'oblique'" in index
    assert "file frames/missing.jpg: image file does not exist" in index
    assert "unsupported image type '.gif'" in index
    assert "empty 'file'" in index
    assert "image listed 2 times (lines 7, 34)" in index
    for unlisted in ("frame_00002.jpg", "frame_00003.jpg", "frame_00004.jpg"):
        assert f"file frames/{unlisted}: image file is not listed in labels.csv" in index
    assert len(site.index_problems) == 9, index
    assert len(site) == 32 - 6
    text = reasons(site.validate())
    assert "frames/frame_00006.jpg: unreadable JPEG image" in text
    assert "frames/frame_00007.jpg: image is empty" in text
    assert len(site.validate()) == 11


def test_csv_missing_column_is_named(broken):
    b = broken / "ureteroscopy" / "dataset-b"
    pd.read_csv(b / "labels.csv").drop(columns=["view"]).to_csv(b / "labels.csv", index=False)
    site = load_federation(config_of(broken), strict=False)["dataset-b"]
    text = reasons(site.index_problems)
    assert "labels.csv: label table lacks required column(s) 'view' (found: 'file', 'stone_type', 'stone')" in text
    assert "site is empty" in text
    assert len(site) == 0 and site.validate() == site.index_problems


def test_csv_missing_or_unparsable(broken):
    b = broken / "ureteroscopy" / "dataset-b"
    (b / "labels.csv").unlink()
    site = load_federation(config_of(broken), strict=False)["dataset-b"]
    assert "file labels.csv: label table not found" in reasons(site.index_problems)
    (b / "labels.csv").write_bytes(b"")
    site = load_federation(config_of(broken), strict=False)["dataset-b"]
    assert "label table cannot be parsed" in reasons(site.index_problems)


def test_missing_root_is_a_problem_not_a_crash(broken):
    shutil.rmtree(broken / "ureteroscopy" / "dataset-a")
    site = load_federation(config_of(broken), strict=False)["dataset-a"]
    assert "data folder (root) not found" in reasons(site.index_problems)
    assert len(site) == 0


# ---------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layout": "pyramid"}, "sources.0.layout"),
        ({"colour": "red"}, "sources.0.colour: Extra inputs are not permitted"),
        ({"classes": ["A", "A"]}, "classes: duplicate names"),
        ({"views": []}, "sources.0.views"),
        ({"image_size": 2}, "sources.0.image_size"),
    ],
)
def test_config_errors_name_field(broken, change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_federation(edit_config(broken, **change))


def test_csv_options_rejected_for_folder_layout(broken):
    path = config_of(broken)
    config = yaml.safe_load(path.read_text())
    config["sources"][0]["class_column"] = "type"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="class_column do not apply to layout 'class_view_folders'"):
        load_federation(path)


def test_duplicate_site_names(broken):
    with pytest.raises(ConfigError, match="dataset-x used more than once"):
        load_federation(edit_config(broken, name="dataset-x"))


# ---------------------------------------------------------------------------- reader
def test_read_raster_rgb_converts_modes_and_rejects_garbage(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(grey)
    assert read_raster(grey, "RGB").shape == (8, 8, 3)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((4, 5, 4), 200, np.uint8)).save(rgba)
    assert read_raster(rgba, "RGB").shape == (4, 5, 3)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(RasterReadError, match="not a recognised image file"):
        read_raster(junk)
    with pytest.raises(RasterReadError, match="file not found"):
        read_raster(tmp_path / "absent.png")
