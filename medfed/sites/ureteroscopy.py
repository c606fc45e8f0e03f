"""Ureteroscopy kidney-stone sites: RGB images of stones, labelled by morphological type and view.

Background: the public ureteroscopy data sets of El Beze et al. / Lopez et al. ("dataset A": ex-vivo
stones photographed with a digital camera; "dataset B": endoscopic frames) use six morpho-constitutional
types of the Daudon classification, each seen as a SUR (surface) and a SEC (section) view. The default
class names here spell out type and main component:

=================  ===============================================
``Ia_COM``         Ia, whewellite (calcium oxalate monohydrate)
``IIa_COD``        IIa, weddellite (calcium oxalate dihydrate)
``IIIa_UricAcid``  IIIa, anhydrous uric acid
``IVc_Struvite``   IVc, struvite (magnesium ammonium phosphate)
``IVd_Brushite``   IVd, brushite (calcium hydrogen phosphate)
``Va_Cystine``     Va, cystine
=================  ===============================================

Two layouts (source option ``layout``):

``class_view_folders``
    ``root/<class>/<view>/<image>`` (images may sit in sub-folders below the view folder).
``flat_csv``
    images anywhere below ``root`` plus a CSV (``labels``) with a path column (relative to ``root``),
    a class column and a view column.

Case table: ``case_id`` (hash of the image path relative to ``root``), ``stone_type`` (class name, the
label column used for stratified splits and summaries), ``label`` (int: index of ``stone_type`` in
``classes``, what tasks train on), metadata ``view``, ``source`` (data set / camera, option
``source_name``) and ``format`` (``png``, ``jpeg``, ``bmp``, ``tiff``). Images carry no patient data.

Groups (the split unit, ``group_unit``, default ``stone``): frames of one stone (or one procedure video, or
one patient) must stay in one split. ``group_column`` names a CSV column holding the key (``flat_csv``; a
blank cell is an error); ``group_level`` takes the name of folder number N (0-based) of the image path
relative to ``root`` (``class_view_folders``: 0 class, 1 view, 2 the first folder below the view, so
``Ia_COM/surface/stone_004/img_001.png`` with ``group_level: 2`` is stone ``stone_004``, and its section
view ``Ia_COM/section/stone_004/...`` joins it). Without either, each image is its own group.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medfed.config import FederationConfig, resolve_path
from medfed.errors import Problem, describe_path
from medfed.sites.base import Site, finite_problems
from medfed.sites.common import (
    group_key_from_level,
    index_table,
    is_hidden,
    one_site_per_source,
    read_label_table,
    resize_2d_transform,
    visible_entries,
)
from medfed.sites.raster_io import RasterReadError, read_raster

#: Daudon morphological types of the El Beze / Lopez data sets (see module docstring)
DEFAULT_CLASSES: tuple[str, ...] = ("Ia_COM", "IIa_COD", "IIIa_UricAcid", "IVc_Struvite", "IVd_Brushite", "Va_Cystine")
DEFAULT_VIEWS: tuple[str, ...] = ("surface", "section")
#: file suffix (lower case) -> ``format`` value
IMAGE_FORMATS: dict[str, str] = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff",
}
_CSV_ONLY = frozenset({"labels", "path_column", "class_column", "view_column", "group_column", "split_column"})


class UreteroscopySource(BaseModel):
    """One ``sources`` entry of an ``ureteroscopy`` federation config: one site."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="site name")
    root: str = Field(description="data folder; relative paths are relative to the config file")
    layout: Literal["class_view_folders", "flat_csv"] = "class_view_folders"
    classes: list[str] = Field(default_factory=lambda: list(DEFAULT_CLASSES), min_length=1,
                               description="allowed class names; ``label`` is the index into this list")
    views: list[str] = Field(default_factory=lambda: list(DEFAULT_VIEWS), min_length=1)
    source_name: str | None = Field(None, description="value of the ``source`` column (default: the site name)")
    # --- flat_csv layout
    labels: str = Field("labels.csv", description="label CSV, relative to root")
    path_column: str = "file"
    class_column: str = "stone_type"
    view_column: str = "view"
    group_column: str | None = Field(None, description="CSV column naming the stone / video / patient (flat_csv)")
    split_column: str | None = Field(None, description="CSV column holding the source's own split (flat_csv)")
    # --- both
    group_level: int | None = Field(None, ge=0, description="folder level of the image path naming the group")
    group_unit: str = Field("stone", min_length=1, description="what a group is: stone, video, patient, ...")
    image_size: int = Field(64, ge=8, description="default_transform resizes images to image_size x image_size")
    min_side: int = Field(16, ge=1, description="images with a side shorter than this (pixels) are a problem")

    @model_validator(mode="after")
    def _check(self) -> UreteroscopySource:
        if self.layout == "class_view_folders":
            wrong = sorted(self.model_fields_set & _CSV_ONLY)
            if wrong:
                raise ValueError(f"option(s) {', '.join(wrong)} do not apply to layout 'class_view_folders'")
        for field in ("classes", "views"):
            values: list[str] = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field}: duplicate names in {values}")
            if any(not v.strip() or "/" in v or "\\" in v for v in values):
                raise ValueError(f"{field}: names must be non-empty and contain no path separator, got {values}")
        if self.group_column is not None and self.group_level is not None:
            raise ValueError("group_column and group_level: give one of them")
        return self


def image_format(path: Path | str) -> str | None:
    """``format`` value from the file suffix; ``None`` when it is not an image suffix."""
    return IMAGE_FORMATS.get(Path(path).suffix.lower())


class UreteroscopySite(Site):
    """One ureteroscopy site; see the module docstring for layouts and columns."""

    modality = "ureteroscopy"
    label_kind = "classification"
    label_columns = ["stone_type"]
    metadata_columns = ["view", "source", "format"]

    def __init__(self, source: UreteroscopySource, root: Path, **kwargs: Any) -> None:
        self.source = source
        self.root = root.resolve()
        self.classes: list[str] = list(source.classes)
        self.views: list[str] = list(source.views)
        self.group_unit = source.group_unit
        super().__init__(source.name, **kwargs)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _finding_targets(self, rows: pd.DataFrame) -> pd.DataFrame:
        """One-vs-rest targets: a column per stone class, 1 where ``stone_type`` is that class."""
        return pd.DataFrame({c: (rows["stone_type"] == c).astype(np.int64) for c in self.classes}, index=rows.index)

    # ------------------------------------------------------------------ indexing
    def _index(self) -> tuple[pd.DataFrame, list[Problem]]:
        # records: (path, class, view, group key, split)
        read = self._folder_records if self.source.layout == "class_view_folders" else self._csv_records
        columns = ["case_id", "group", "stone_type", "label", *self.metadata_columns, "_path", "_source_id"]
        columns += ["split"] if self.source.split_column else []
        table, problems = index_table(self, read, lambda record, found: self._case_row(*record, found), columns)
        table["label"] = table["label"].astype("int64")
        return table, problems

    def _folder_records(self, problems: list[Problem]) -> list[tuple[str, str, str, str | None, str | None]]:
        """``root/<class>/<view>/...`` -> records; unknown folders and stray files become problems."""
        records = []
        for class_dir in visible_entries(self.root):
            rel_class = _rel(class_dir, self.root)
            if class_dir.is_file():
                if image_format(class_dir):
                    problems.append(self.problem("image outside any class folder; excluded", file=rel_class))
                continue  # other files at the top (README, licence) are not data
            if class_dir.name not in self.classes:
                n = len(_files(class_dir))
                problems.append(self.problem(
                    f"unknown class folder {class_dir.name!r} (classes: {', '.join(self.classes)}); "
                    f"its {n} file(s) are excluded", file=rel_class))
                continue
            for view_dir in visible_entries(class_dir):
                rel_view = _rel(view_dir, self.root)
                if view_dir.is_file():
                    reason = "outside any view folder" if image_format(view_dir) else "not an image file"
                    problems.append(self.problem(
                        f"{reason} (expected {rel_class}/<view>/<image>, views: {', '.join(self.views)}); excluded",
                        file=rel_view))
                    continue
                files = _files(view_dir)
                if view_dir.name not in self.views:
                    problems.append(self.problem(
                        f"unknown view folder {view_dir.name!r} (views: {', '.join(self.views)}); "
                        f"its {len(files)} file(s) are excluded", file=rel_view))
                    continue
                for path in files:
                    rel = _rel(path, self.root)
                    if image_format(path) is None:
                        problems.append(self.problem(
                            f"not an image file (expected {', '.join(IMAGE_FORMATS)}); excluded", file=rel))
                        continue
                    records.append((rel, class_dir.name, view_dir.name, None, None))
        return records

    def _csv_records(self, problems: list[Problem]) -> list[tuple[str, str, str, str | None, str | None]]:
        """Rows of the label CSV; defective rows and images the CSV does not list become problems."""
        src = self.source
        csv_path = resolve_path(src.labels, self.root)
        csv_name = describe_path(csv_path, self.root)
        required = [src.path_column, src.class_column, src.view_column]
        required += [c for c in (src.group_column, src.split_column) if c]
        frame = read_label_table(self, self.root, csv_path, src.path_column, required, problems)
        if frame is None:
            return []
        listed = {resolve_path(rel, self.root) for rel in frame["_rel"] if rel}
        for path in _files(self.root):
            if image_format(path) and path.resolve() not in listed:
                problems.append(self.problem(
                    f"image file is not listed in {csv_name}; add a row or remove it", file=_rel(path, self.root)))
        counts = frame["_rel"].value_counts()
        records = []
        for row in frame.to_dict("records"):
            where, rel = f"{csv_name} line {row['_line']}", row["_rel"]
            if not rel:
                problems.append(self.problem(f"{where}: empty {src.path_column!r}", file=csv_name))
                continue
            case = self.hash_id(rel)
            if counts[rel] > 1:
                lines = frame.loc[frame["_rel"] == rel, "_line"].tolist()
                if row["_line"] == lines[0]:  # one problem per duplicated image
                    problems.append(self.problem(
                        f"{csv_name}: image listed {counts[rel]} times (lines {', '.join(map(str, lines))}); "
                        "every row of it is excluded", case, rel))
                continue
            cls, view = row[src.class_column].strip(), row[src.view_column].strip()
            errors = []
            if cls not in self.classes:
                errors.append(f"{src.class_column!r} has unknown value {cls!r} (classes: {', '.join(self.classes)})")
            if view not in self.views:
                errors.append(f"{src.view_column!r} has unknown value {view!r} (views: {', '.join(self.views)})")
            group = row[src.group_column].strip() if src.group_column else None
            if group == "":
                errors.append(f"group column {src.group_column!r} is empty (every image needs its {src.group_unit})")
            if errors:
                problems.append(self.problem(f"{where}: {'; '.join(errors)}; excluded", case, rel))
                continue
            records.append((rel, cls, view, group, row[src.split_column].strip() if src.split_column else None))
        return records

    def _case_row(
        self, rel: str, cls: str, view: str, group: str | None, split: str | None, problems: list[Problem]
    ) -> dict[str, Any] | None:
        """The case-table row of one image; the file must exist and have an image suffix, and with ``group_level``
        its path must have a folder at that level."""
        case = self.hash_id(rel)
        if self.source.group_level is not None:
            group = group_key_from_level(rel, self.source.group_level)
            if group is None:
                problems.append(self.problem(
                    f"image path has no folder at group_level {self.source.group_level}; excluded", case, rel))
                return None
        path = resolve_path(rel, self.root)
        fmt = image_format(path)
        if fmt is None:
            problems.append(self.problem(
                f"unsupported image type {path.suffix!r} (expected {', '.join(IMAGE_FORMATS)})", case, rel))
            return None
        if not path.is_file():
            problems.append(self.problem("image file does not exist", case, rel))
            return None
        return {"case_id": case, "group": self.hash_group(group) if group else None, "stone_type": cls,
                "label": self.classes.index(cls), "view": view, **({"split": split} if split is not None else {}),
                "source": self.source.source_name or self.name, "format": fmt, "_path": str(path), "_source_id": rel}

    # ------------------------------------------------------------------ reading
    def _check_case(self, case: pd.Series) -> list[Problem]:
        case_id, rel = case["case_id"], case["_source_id"]
        problems = []
        if case["stone_type"] not in self.classes or self.classes.index(case["stone_type"]) != case["label"]:
            problems.append(self.problem(
                f"class {case['stone_type']!r} / label {case['label']!r} not consistent with classes {self.classes}",
                case_id, rel))
        try:
            pixels = read_raster(case["_path"], "RGB")
        except RasterReadError as err:
            return [*problems, self.problem(f"unreadable {str(case['format']).upper()} image: {err}", case_id, rel)]
        height, width = pixels.shape[:2]
        if min(height, width) < self.source.min_side:
            problems.append(self.problem(
                f"image is {height}x{width} pixels, smaller than min_side {self.source.min_side}", case_id, rel))
        problems.extend(finite_problems(self, pixels, case_id, rel))
        self.record_pixels(case, pixels)
        return problems

    def _load_case(self, case: pd.Series) -> dict[str, Any]:
        """``image``: float32 ``(3, H, W)`` RGB in ``[0, 1]``; ``label``: int64 class index (0-d)."""
        pixels = read_raster(case["_path"], "RGB")  # reader errors get site and case from the base loader
        image = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
        return {"image": image, "label": np.array(case["label"], dtype=np.int64)}

    def default_transform(self, split: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """Resize to ``image_size`` squared (area interpolation), then plain tensors (same for every split)."""
        return resize_2d_transform(self.source.image_size)


# ---------------------------------------------------------------------------- helpers
def _rel(path: Path, root: Path) -> str:
    return describe_path(path, root).replace("\\", "/")


def _files(folder: Path) -> list[Path]:
    """Files below ``folder`` (any depth), hidden files and folders skipped, sorted."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not is_hidden(p, folder)]


def build_sites(config: FederationConfig, config_dir: Path, source: str) -> tuple[list[Site], list[Problem]]:
    """One :class:`UreteroscopySite` per ``sources`` entry (options: :class:`UreteroscopySource`)."""
    return one_site_per_source(config, config_dir, source, UreteroscopySource, UreteroscopySite)
