r"""Chest X-ray sites: radiographs (DICOM, PNG or JPEG) with a label table, or class folders.

Two layouts (source option ``layout``):

``table``
    images anywhere below ``root`` plus a CheXpert-style label CSV (Irvin et al. 2019): a path column
    (relative to ``root``), one column per finding holding ``1`` (positive), ``0`` (negative), ``-1``
    (uncertain) or blank (not mentioned), and optional metadata columns (age, sex, view, site).
``class_folders``
    ``root/<CLASS>/<image>`` as in the pediatric pneumonia set of Kermany et al. (Cell 2018):
    ``NORMAL/`` and ``PNEUMONIA/``; optionally below ``train/``, ``val/``, ``test/`` folders.

Label policies (CheXpert paper, section "Uncertainty approaches"): ``uncertain`` maps ``-1`` with
``zeros`` (U-Zeros, -> 0), ``ones`` (U-Ones, -> 1) or ``ignore`` (U-Ignore: the value stays ``-1`` in
the case table and the label vector, and the task masks it out of the loss and metrics). ``blank``
is ``negative`` (-> 0, the common practice for unmentioned findings) or ``uncertain`` (treated as
``-1``, then the ``uncertain`` policy applies).

Metadata: CSV columns first; for DICOM what the CSV lacks comes from PatientAge, PatientSex and
ViewPosition (see :mod:`medfed.sites.dicom_io`: identifying tags are never converted or kept). Ages
are binned with :func:`~medfed.sites.identity.age_group`; case ids hash the image path relative to
``root``.

Groups (the split unit, see :mod:`medfed.sites.base`), first that applies:

1. ``group_column``: a column of the label table (patient, study, ...); a blank cell is an error;
2. ``group_pattern``: a regular expression searched in the image path relative to ``root``, its first
   non-empty capture group is the key (``(patient\d+)/`` for CheXpert's ``patient00012/study1/...``);
   with ``class_folders`` the default is :data:`KERMANY_PATTERN` (``person123_bacteria_456.jpeg`` ->
   ``person123``, ``IM-0115-0001.jpeg`` -> ``IM-0115``), and a file it does not match is its own group;
3. DICOM files: PatientID, else StudyInstanceUID (read once, hashed at once, never kept).

Header checks (warnings): a DICOM Modality other than CR/DX, a BodyPartExamined that is not a chest,
and views outside ``expected_views`` (lateral images where frontal ones are expected).
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
    compile_group_pattern,
    group_key_from_path,
    index_table,
    is_hidden,
    one_site_per_source,
    read_label_table,
    resize_2d_transform,
    visible_entries,
)
from medfed.sites.dicom_io import DicomReadError, read_dicom_image, read_dicom_metadata
from medfed.sites.identity import age_group, parse_dicom_age, population
from medfed.sites.raster_io import (
    RasterReadError,
    raster_format,
    raster_unit,
    read_raster,
)
from medfed.sites.splits import SPLITS

#: suffixes read as DICOM (files without a suffix are DICOM too, as many PACS exports are)
DICOM_SUFFIXES = (".dcm", ".dicom", "")
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
UNCERTAIN = -1
#: label values a case table may hold
LABEL_VALUES = (0, 1, UNCERTAIN)
_SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "": "unknown", "U": "unknown", "UNKNOWN": "unknown",
        "O": "unknown", "OTHER": "unknown"}
_LATERAL = {"LL", "RL", "LAT", "LATERAL", "XTABLE LATERAL"}
#: Kermany et al. file names: ``person123_bacteria_456.jpeg`` (patient ``person123``) and
#: ``IM-0115-0001.jpeg`` / ``NORMAL2-IM-1427-0001.jpeg`` (patient ``IM-0115`` / ``NORMAL2-IM-1427``)
KERMANY_PATTERN = r"(?:^|/)(person\d+)_|(?:^|/)((?:NORMAL2-)?IM-\d+)-\d+"
#: DICOM Modality values of projection radiographs
RADIOGRAPH_MODALITIES = ("CR", "DX")
#: words of a BodyPartExamined value that mean a chest
CHEST_PARTS = ("CHEST", "THORAX", "LUNG")


class ChestXraySource(BaseModel):
    """One ``sources`` entry of a ``chest_xray`` federation config: one site."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="site name")
    root: str = Field(description="data folder; relative paths are relative to the config file")
    layout: Literal["table", "class_folders"] = "table"
    # --- table layout
    labels: str = Field("labels.csv", description="label CSV, relative to root")
    path_column: str = "Path"
    findings: list[str] | None = Field(None, min_length=1, description="finding columns to use (table layout)")
    uncertain: Literal["zeros", "ones", "ignore"] = "zeros"
    blank: Literal["negative", "uncertain"] = "negative"
    age_column: str | None = "Age"
    sex_column: str | None = "Sex"
    view_column: str | None = "AP/PA"
    frontal_lateral_column: str | None = "Frontal/Lateral"
    site_column: str | None = Field(None, description="with site_value: use only the rows of one institution")
    split_column: str | None = Field(None, description="column holding the source's own split (train/val/test)")
    site_value: str | None = None
    # --- class_folders layout
    classes: dict[str, Literal[0, 1]] = Field(default_factory=lambda: {"NORMAL": 0, "PNEUMONIA": 1})
    finding: str = Field("Pneumonia", description="label column of the class_folders layout")
    split_folders: bool = Field(False, description="root/{train,val,test}/<CLASS>/: keep the source's split")
    # --- both
    group_column: str | None = Field(None, description="label-table column naming the patient/study (table layout)")
    group_pattern: str | None = Field(None, description="regex with a capture group: the group key in the image path")
    group_unit: str = Field("patient", min_length=1, description="what a group is: patient, study, ...")
    expected_views: list[Literal["PA", "AP", "LAT"]] = Field(
        default_factory=lambda: ["PA", "AP"], min_length=1, description="other known views are warnings")
    population: Literal["pediatric", "adult"] | None = Field(
        None, description="population of cases whose age is unknown (e.g. 'pediatric' for Kermany et al.)"
    )
    image_size: int = Field(128, ge=8, description="default_transform resizes images to image_size x image_size")
    intensity: Literal["voi", "percentile", "bits", "minmax"] = Field(
        "voi", description="voi: the file's VOI LUT / window (else percentile); percentile: 0.5-99.5th "
        "percentiles per image; bits: the stored bit depth; minmax: per image"
    )

    @model_validator(mode="after")
    def _layout_options(self) -> ChestXraySource:
        table_only = {"labels", "path_column", "findings", "uncertain", "blank", "age_column", "sex_column",
                      "view_column", "frontal_lateral_column", "site_column", "site_value", "group_column",
                      "split_column"}
        folder_only = {"classes", "finding", "split_folders"}
        wrong = sorted(self.model_fields_set & (folder_only if self.layout == "table" else table_only))
        if wrong:
            raise ValueError(f"option(s) {', '.join(wrong)} do not apply to layout {self.layout!r}")
        if self.layout == "table" and not self.findings:
            raise ValueError("findings: list the label columns to use, e.g. [Pneumonia] (required for layout 'table')")
        if self.findings and len(set(self.findings)) != len(self.findings):
            raise ValueError(f"findings: duplicate names in {self.findings}")
        if (self.site_column is None) != (self.site_value is None):
            raise ValueError("site_column and site_value go together")
        if self.group_column is not None and self.group_pattern is not None:
            raise ValueError("group_column and group_pattern: give one of them")
        compile_group_pattern(self.group_pattern)
        return self


# ---------------------------------------------------------------------------- value parsing
def parse_finding(raw: str) -> int | None:
    """``"1"``, ``"0"``, ``"-1"`` (also ``"1.0"`` etc., as CheXpert writes them) -> int; blank -> ``None``.

    Raises ``ValueError`` for anything else.
    """
    text = raw.strip()
    if text == "":
        return None
    value = float(text)
    if value not in LABEL_VALUES:
        raise ValueError(text)
    return int(value)


def apply_policy(value: int | None, uncertain: str, blank: str) -> int:
    """The case-table label for a parsed finding value under the ``uncertain`` and ``blank`` policies."""
    if value is None:
        if blank == "negative":
            return 0
        value = UNCERTAIN
    if value == UNCERTAIN:
        return {"zeros": 0, "ones": 1, "ignore": UNCERTAIN}[uncertain]
    return value


def parse_age(raw: str) -> float | None:
    """Age in years from a number (``"45"``, ``"45.5"``) or a DICOM age string (``"045Y"``); blank -> None.

    Raises ``ValueError`` for anything else.
    """
    text = raw.strip()
    if text == "":
        return None
    try:
        years = float(text)
    except ValueError:
        years = parse_dicom_age(text)  # type: ignore[assignment]
        if years is None:
            raise ValueError(text) from None
    if not 0 <= years < 150:
        raise ValueError(text)
    return years


def normalise_sex(raw: str) -> str:
    """``M``/``F``/``unknown`` from M, Male, F, Female, O, U, blank (any case); ``ValueError`` otherwise."""
    key = raw.strip().upper()
    if key not in _SEX:
        raise ValueError(raw)
    return _SEX[key]


def normalise_view(raw: str) -> str | None:
    """``PA``/``AP``/``LAT`` from CheXpert ``AP/PA`` values or DICOM ViewPosition; blank -> None; others -> unknown."""
    key = " ".join(raw.strip().upper().split())
    if key == "":
        return None
    if key in _LATERAL or key.endswith("LATERAL"):
        return "LAT"
    for view in ("PA", "AP"):
        if key == view or key.startswith(view + " "):
            return view
    return "unknown"


def image_format(path: Path | str) -> str | None:
    """``dicom`` (.dcm, .dicom, no suffix), ``png`` or ``jpeg`` from the suffix; ``None`` otherwise."""
    suffix = Path(path).suffix.lower()
    return "dicom" if suffix in DICOM_SUFFIXES else raster_format(path)


# ---------------------------------------------------------------------------- the site
class ChestXraySite(Site):
    """One chest X-ray site; see the module docstring for layouts and policies."""

    modality = "chest_xray"
    label_kind = "classification"
    metadata_columns = ["age_group", "population", "sex", "view", "format"]

    def __init__(self, source: ChestXraySource, root: Path, **kwargs: Any) -> None:
        self.source = source
        self.root = root.resolve()
        self.label_columns = list(source.findings or []) if source.layout == "table" else [source.finding]
        self.group_unit = source.group_unit
        super().__init__(source.name, **kwargs)

    # ------------------------------------------------------------------ indexing
    def _index(self) -> tuple[pd.DataFrame, list[Problem]]:
        read = self._table_records if self.source.layout == "table" else self._folder_records
        columns = ["case_id", "group", *self.label_columns, *self.metadata_columns, "_path", "_source_id"]
        if (self.source.layout == "class_folders" and self.source.split_folders) or self.source.split_column:
            columns.append("split")
        table, problems = index_table(self, read, self._case_row, columns)
        for column in self.label_columns:
            table[column] = table[column].astype("int64")
        return table, problems

    def _table_records(self, problems: list[Problem]) -> list[dict[str, Any]]:
        """Rows of the label CSV with parsed labels and metadata; defective rows become problems."""
        src = self.source
        csv_path = resolve_path(src.labels, self.root)
        csv_name = describe_path(csv_path, self.root)
        required = [src.path_column, *self.label_columns] + ([src.site_column] if src.site_column else [])
        required += [c for c in (src.group_column, src.split_column) if c]
        frame = read_label_table(self, self.root, csv_path, src.path_column, required, problems)
        if frame is None:
            return []
        listed = {resolve_path(rel, self.root) for rel in frame["_rel"] if rel}
        self._report_unlisted(listed, csv_name, problems)
        if src.site_column:
            frame = frame[frame[src.site_column].str.strip() == src.site_value]
        counts = frame["_rel"].value_counts()
        records = []
        for row in frame.to_dict("records"):
            where = f"{csv_name} line {row['_line']}"
            rel = row["_rel"]
            if not rel:
                problems.append(self.problem(f"{where}: empty {src.path_column!r}", file=csv_name))
                continue
            case = self.hash_id(rel)
            if counts[rel] > 1:
                lines = frame.loc[frame["_rel"] == rel, "_line"].tolist()
                problems.append(self.problem(
                    f"{where}: image listed {counts[rel]} times (lines {', '.join(map(str, lines))}); "
                    "every row of it is excluded", case, rel))
                continue
            record, errors = self._parse_row(row)
            if errors:
                problems.append(self.problem(f"{where}: {'; '.join(errors)}", case, rel))
                continue
            records.append(record)
        return records

    def _parse_row(self, row: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
        """Labels and metadata of one CSV row; the errors name column and value."""
        src = self.source
        errors: list[str] = []
        labels = {}
        for finding in self.label_columns:
            try:
                labels[finding] = apply_policy(parse_finding(row[finding]), src.uncertain, src.blank)
            except ValueError:
                errors.append(f"{finding!r} has value {row[finding]!r} (allowed: 1, 0, -1 or blank)")
        age = sex = view = None
        if src.age_column and src.age_column in row:
            try:
                age = parse_age(row[src.age_column])
            except ValueError:
                errors.append(f"{src.age_column!r} is not an age in years or nnnY (value not shown: ages stay binned)")
        if src.sex_column and src.sex_column in row:
            try:
                sex = normalise_sex(row[src.sex_column])
            except ValueError:
                errors.append(f"{src.sex_column!r} has value {row[src.sex_column]!r} (expected M, F, Male, Female)")
            sex = None if sex == "unknown" else sex
        if src.view_column and src.view_column in row:
            view = normalise_view(row[src.view_column])
        if src.frontal_lateral_column and row.get(src.frontal_lateral_column, "").strip().lower() == "lateral":
            view = "LAT"
        group = None
        if src.group_column:
            group = row[src.group_column].strip()
            if not group:
                errors.append(f"group column {src.group_column!r} is empty (every image needs its {src.group_unit})")
        record = {"rel": row["_rel"], "labels": labels, "age": age, "sex": sex, "view": view, "group": group}
        if src.split_column:  # the source's own split (an official test set): kept as given, checked by the base
            record["split"] = row[src.split_column].strip()
        return record, errors

    def _report_unlisted(self, listed: set[Path], csv_name: str, problems: list[Problem]) -> None:
        """Every image file below root that no row of the label table names (all rows, every site)."""
        for path in sorted(_image_files(self.root)):
            if path not in listed:
                rel = describe_path(path, self.root)
                reason = f"image file is not listed in {csv_name}; add a row or remove it"
                problems.append(self.problem(reason, file=rel))

    def _folder_records(self, problems: list[Problem]) -> list[dict[str, Any]]:
        """One record per image of each class folder (per split folder with ``split_folders``)."""
        src = self.source
        bases: list[tuple[Path, str | None]] = [(self.root, None)]
        if src.split_folders:
            bases = [(entry, entry.name) for entry in visible_entries(self.root) if entry.is_dir() and entry.name in SPLITS]
            for entry in visible_entries(self.root):
                if (entry, entry.name) not in bases and (entry.is_dir() or entry.suffix.lower() in IMAGE_SUFFIXES):
                    problems.append(self.problem(
                        f"unknown split folder or stray file (expected folders {', '.join(SPLITS)}); excluded",
                        file=entry.name))
        records = []
        for base, split in bases:
            for entry in visible_entries(base):
                rel_dir = describe_path(entry, self.root)
                if entry.is_file():
                    if entry.suffix.lower() in IMAGE_SUFFIXES:
                        problems.append(self.problem("image outside any class folder; excluded", file=rel_dir))
                    continue
                files = [p for p in sorted(entry.rglob("*")) if p.is_file() and not is_hidden(p, entry)]
                if entry.name not in src.classes:
                    problems.append(self.problem(
                        f"unknown class folder {entry.name!r} (classes: {', '.join(src.classes)}); "
                        f"its {len(files)} file(s) are excluded", file=rel_dir))
                    continue
                for path in files:
                    rel = describe_path(path, self.root).replace("\\", "/")
                    if image_format(path) is None:
                        problems.append(self.problem(
                            f"not an image file (expected {', '.join(IMAGE_SUFFIXES)} or no suffix); excluded",
                            file=rel))
                        continue
                    record = {"rel": rel, "labels": {src.finding: int(src.classes[entry.name])},
                              "age": None, "sex": None, "view": None, "group": None}
                    if split is not None:
                        record["split"] = split
                    records.append(record)
        return records

    def _case_row(self, record: dict[str, Any], problems: list[Problem]) -> dict[str, Any] | None:
        """The case-table row of one record; the file must exist, DICOM headers fill missing metadata."""
        rel = record["rel"]
        case = self.hash_id(rel)
        path = resolve_path(rel, self.root)
        fmt = image_format(path)
        if fmt is None:
            expected = ", ".join(IMAGE_SUFFIXES)
            problems.append(self.problem(f"unsupported image type {path.suffix!r} (expected {expected} or no suffix)",
                                         case, rel))
            return None
        if not path.is_file():
            problems.append(self.problem("image file does not exist", case, rel))
            return None
        age, sex, view = record["age"], record["sex"], record["view"]
        group = record["group"]
        pattern = self.source.group_pattern or (KERMANY_PATTERN if self.source.layout == "class_folders" else None)
        if group is None and pattern is not None:
            group = group_key_from_path(rel, pattern)
            if group is None and self.source.group_pattern is not None:
                problems.append(self.problem(
                    f"image path does not match group_pattern {self.source.group_pattern!r}; excluded", case, rel))
                return None
        if fmt == "dicom":
            try:
                header = read_dicom_metadata(path)
            except DicomReadError as err:
                problems.append(self.problem(f"unreadable DICOM: {err}", case, rel))
                return None
            age = age if age is not None else parse_dicom_age(header.age)
            if sex is None:
                sex = _SEX.get(header.sex.upper(), "unknown")
            view = view if view is not None else normalise_view(header.view)
            if group is None and self.source.group_column is None and header.group_key:
                group = f"{header.group_unit}|{header.group_key}"
            problems.extend(self._header_warnings(header.modality, header.body_part, case, rel))
        if view in ("PA", "AP", "LAT") and view not in self.source.expected_views:
            problems.append(self.warning(
                f"view {view} where this site expects {', '.join(self.source.expected_views)} "
                "(set expected_views to keep it quietly, or remove the image)", case, rel))
        key, age_bin = group, age_group(age)
        pop = population(age_bin)
        if pop == "unknown" and self.source.population:
            pop = self.source.population
        row = {"case_id": case, "group": self.hash_group(key) if key else None, **record["labels"],
               "age_group": age_bin, "population": pop,
               "sex": sex or "unknown", "view": view or "unknown", "format": fmt, "_path": str(path), "_source_id": rel}
        if "split" in record:
            row["split"] = record["split"]
        return row

    def _header_warnings(self, modality: str, body_part: str, case: str, rel: str) -> list[Problem]:
        """A DICOM that may not be a chest radiograph: Modality outside CR/DX, BodyPartExamined not a chest."""
        warnings = []
        if modality and modality.upper() not in RADIOGRAPH_MODALITIES:
            warnings.append(self.warning(
                f"DICOM Modality is {modality!r}, not a radiograph ({'/'.join(RADIOGRAPH_MODALITIES)})", case, rel))
        if body_part and not any(word in body_part.upper() for word in CHEST_PARTS):
            warnings.append(self.warning(f"DICOM BodyPartExamined is {body_part!r}, not a chest", case, rel))
        return warnings

    # ------------------------------------------------------------------ reading
    def _read_pixels(self, case: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Raw pixel values (modality values for DICOM) and float32 ``(H, W)`` in ``[0, 1]``, higher = denser."""
        path = Path(case["_path"])
        if case["format"] == "dicom":
            image = read_dicom_image(path)
            return image.pixels, image.to_unit(self.source.intensity)
        pixels = read_raster(path, "L")
        return pixels, raster_unit(pixels, self.source.intensity)

    def _check_case(self, case: pd.Series) -> list[Problem]:
        case_id, rel = case["case_id"], case["_source_id"]
        try:
            pixels, _ = self._read_pixels(case)
        except DicomReadError as err:
            return [self.problem(f"unreadable DICOM: {err}", case_id, rel)]
        except RasterReadError as err:
            return [self.problem(f"unreadable {str(case['format']).upper()} image: {err}", case_id, rel)]
        problems = []
        if pixels.ndim != 2:
            problems.append(self.problem(f"expected a 2-D greyscale image, got shape {pixels.shape}", case_id, rel))
        problems.extend(finite_problems(self, np.asarray(pixels, dtype=np.float64), case_id, rel))
        if pixels.ndim == 2:
            self.record_pixels(case, pixels)
        for finding in self.label_columns:
            if case[finding] not in LABEL_VALUES:
                problems.append(self.problem(f"label {finding!r} is {case[finding]!r}, not one of 1, 0, -1", case_id))
        return problems

    def _load_case(self, case: pd.Series) -> dict[str, Any]:
        """``image``: float32 ``(1, H, W)`` in ``[0, 1]``; ``label``: float32 over the findings (-1 = uncertain)."""
        _, unit = self._read_pixels(case)  # reader errors get site and case from the base loader
        label = np.array([case[f] for f in self.label_columns], dtype=np.float32)
        return {"image": unit[None], "label": label}

    def default_transform(self, split: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """Resize to ``image_size`` squared (area interpolation), then plain float tensors."""
        return resize_2d_transform(self.source.image_size)


# ---------------------------------------------------------------------------- helpers
def _image_files(root: Path) -> list[Path]:
    """Files below ``root`` with an image suffix (hidden files and folders skipped)."""
    return [p.resolve() for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not is_hidden(p, root)]


def build_sites(config: FederationConfig, config_dir: Path, source: str) -> tuple[list[Site], list[Problem]]:
    """One :class:`ChestXraySite` per ``sources`` entry (options: :class:`ChestXraySource`)."""
    return one_site_per_source(config, config_dir, source, ChestXraySource, ChestXraySite)
