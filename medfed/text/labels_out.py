"""``medfed classify-reports``: free-text reports in, a CheXpert-style label table out, for image sites.

Input: a CSV with an id column (by default ``Path``: the image the report belongs to, relative to the image
site's root), a text column and optionally a language column. Output: the same id column, one column per
taxonomy label holding ``1`` (a positive value, e.g. present), ``0`` (absent), ``-1`` (uncertain) or blank
(not mentioned), ``<label>_confidence``, ``status`` and ``backend``: the label table the chest X-ray adapter
reads (``layout: table``). How uncertain and blank values are trained on is the image site's policy
(``uncertain: zeros | ones | ignore``, ``blank: negative | uncertain``, CheXpert's U-Zeros / U-Ones /
U-Ignore). The report text never leaves the site: only the table is written, next to the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medfed.errors import ConfigError, DataProblems, Problem
from medfed.text.base import CONFIDENCE_SUFFIX, Report
from medfed.text.taxonomy import Taxonomy


def read_reports_csv(
    path: Path, id_column: str = "Path", text_column: str = "text", language_column: str | None = "language",
    language: str = "en",
) -> list[Report]:
    """Reports of a CSV; a missing column is a :class:`ConfigError`; empty texts and repeated ids are
    :class:`DataProblems` listing every row (by line number and id), never dropped silently."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ConfigError(f"{path}: reports file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: unreadable CSV ({type(err).__name__}: {err})") from None
    missing = [c for c in (id_column, text_column) if c not in table.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; columns found: "
                          f"{', '.join(table.columns) or '(none)'} (set --id-column / --text-column)")
    problems = []
    repeated = table[id_column].duplicated(keep=False)
    for line, (report_id, text, twice) in enumerate(zip(table[id_column], table[text_column], repeated,
                                                         strict=True), start=2):
        if not report_id.strip():
            problems.append(Problem(site=path.name, reason=f"line {line}: empty {id_column}"))
        elif twice:
            problems.append(Problem(site=path.name, case=report_id, reason=f"line {line}: {id_column} repeated"))
        if not text.strip():
            problems.append(Problem(site=path.name, case=report_id or None, reason=f"line {line}: empty report text"))
    if problems:
        raise DataProblems(problems, context=str(path))
    languages = (table[language_column].str.strip().replace("", language) if language_column in table.columns
                 else pd.Series(language, index=table.index))
    return [Report(i, t, lang) for i, t, lang in zip(table[id_column], table[text_column], languages, strict=True)]


def chexpert_value(taxonomy: Taxonomy, label: str, value: str) -> float:
    """1 positive, -1 uncertain, 0 absent, NaN (blank) not mentioned."""
    if taxonomy.is_positive(value):
        return 1.0
    if value in taxonomy.uncertain:
        return -1.0
    if value == "not_mentioned":
        return np.nan
    return 0.0


def label_table(taxonomy: Taxonomy, predictions: pd.DataFrame, id_column: str, backend: str) -> pd.DataFrame:
    """The CheXpert-style table of the module docstring from a backend's ``predict`` frame."""
    table = pd.DataFrame({id_column: predictions["report_id"]})
    for label in taxonomy.names:
        values = [chexpert_value(taxonomy, label, v) for v in predictions[label]]
        table[label] = pd.array([None if np.isnan(v) else int(v) for v in values], dtype="Int64")  # blank: NaN
        table[f"{label}_confidence"] = predictions[label + CONFIDENCE_SUFFIX].round(4)
    table["status"] = predictions["status"]
    table["backend"] = backend
    return table
