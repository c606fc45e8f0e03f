"""Pieces shared by the adapters whose sources are one site each (chest X-ray, ureteroscopy)."""

from __future__ import annotations

import functools
import itertools
import os
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel

from medfed.config import FederationConfig, resolve_path, validate_model
from medfed.errors import ConfigError, Problem, describe_path
from medfed.sites.base import Site

S = TypeVar("S", bound=BaseModel)


def one_site_per_source(
    config: FederationConfig,
    config_dir: Path,
    source: str,
    options_model: type[S],
    site_class: Callable[..., Site],
) -> tuple[list[Site], list[Problem]]:
    """Validate each ``sources`` entry with ``options_model`` (needs ``name`` and ``root``) and build one site each.

    Site names must be unique within the federation (a :class:`ConfigError` names the duplicates).
    """
    options = [
        validate_model(options_model, raw, source, prefix=f"sources.{i}.") for i, raw in enumerate(config.sources)
    ]
    names = [o.name for o in options]  # type: ignore[attr-defined]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: sources.*.name: site name(s) {', '.join(duplicates)} used more than once")
    sites = [
        site_class(o, resolve_path(o.root, config_dir), federation=config.name, split=config.split,  # type: ignore[attr-defined]
                   salt=config.id_salt, min_count=config.min_count)
        for o in options
    ]
    return sites, []


def index_table(site: Site, read_records: Callable[[list[Problem]], list[Any]],
                case_row: Callable[[Any, list[Problem]], dict[str, Any] | None],
                columns: list[str]) -> tuple[pd.DataFrame, list[Problem]]:
    """The shared shape of an image-folder adapter's ``_index``: a missing data folder is one problem; otherwise
    every record ``read_records(problems)`` finds becomes a row through ``case_row(record, problems)`` (``None``:
    the case is excluded, its problem recorded). Returns the table with ``columns`` and every problem."""
    problems: list[Problem] = []
    records: list[Any] = []
    if not site.root.is_dir():
        problems.append(site.problem("data folder (root) not found", file=str(site.root)))
    else:
        records = read_records(problems)
    rows = [row for record in records if (row := case_row(record, problems)) is not None]
    return pd.DataFrame(rows, columns=columns), problems


def resize_2d_transform(size: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Resize ``image`` (C, H, W) to ``size`` x ``size`` by area averaging, then plain tensors (no augmentation)."""
    # MONAI only where pixels are read (as medfed.sites.datasets)
    from monai.transforms import Compose, EnsureTyped, Resized

    return Compose([
        Resized(keys="image", spatial_size=(size, size), mode="area"),
        EnsureTyped(keys=("image", "label"), track_meta=False),
    ])


def posix_path(raw: str) -> str:
    """A table's path cell as a POSIX path with ``.`` and ``..`` resolved lexically (:func:`posixpath.normpath`
    after backslashes become slashes; ``""`` when blank): ``images/../images/x.png`` is ``images/x.png``, so two
    spellings of one image are one path (and one hashed case id). A path climbing above its start keeps its ``..``
    (``../x.png``): see :func:`outside_root`."""
    text = raw.strip().replace("\\", "/")
    return posixpath.normpath(text) if text else ""


def outside_root(rel: str, root: Path) -> bool:
    """Whether a :func:`posix_path` leads out of ``root``: a relative path starting with ``..``, or an absolute
    path below neither ``root`` nor (after resolving links) its resolved form."""
    if not rel:
        return False
    if not posixpath.isabs(rel):
        return rel == ".." or rel.startswith("../")
    path, base = Path(rel), root.resolve()
    return not (path.is_relative_to(root) or path.is_relative_to(base) or path.resolve().is_relative_to(base))


@functools.lru_cache(maxsize=256)
def case_insensitive_fs(root: Path) -> bool:
    """Whether names below ``root`` match regardless of case (macOS and Windows defaults): an entry of ``root``
    (or ``root`` itself) is the same file under its case-swapped name. Checked once per root."""
    try:
        candidates = [*itertools.islice(root.iterdir(), 16), root]
    except OSError:
        return False
    for path in candidates:
        swapped = path.name.swapcase()
        if swapped == path.name:
            continue
        try:
            return os.path.samefile(path, path.with_name(swapped))
        except OSError:  # the swapped name does not exist: names are case-sensitive here
            return False
    return False


def on_disk_spelling(rel: str, root: Path, listings: dict[Path, dict[str, list[str]]]) -> str:
    """A relative POSIX path below ``root`` spelled as on disk, folder by folder, on a case-insensitive file system
    (``IMAGES/X.png`` -> ``images/x.png``); from the first part without exactly one match on, kept as given.
    ``listings`` caches each folder's names (casefolded name -> names)."""
    parts, folder = rel.split("/"), root
    for i, part in enumerate(parts):
        if folder not in listings:
            names: dict[str, list[str]] = {}
            try:
                for name in os.listdir(folder):
                    names.setdefault(name.casefold(), []).append(name)
            except OSError:
                pass
            listings[folder] = names
        matches = listings[folder].get(part.casefold(), [])
        if part not in matches:
            if len(matches) != 1:
                break
            parts[i] = matches[0]
        folder = folder / parts[i]
    return "/".join(parts)


def visible_entries(folder: Path) -> list[Path]:
    """Entries of ``folder`` whose names do not start with a dot, sorted."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]


def is_hidden(path: Path, base: Path) -> bool:
    """Whether any part of ``path`` below ``base`` starts with a dot."""
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def read_label_table(
    site: Site, root: Path, csv_path: Path, path_column: str, required: list[str], problems: list[Problem]
) -> pd.DataFrame | None:
    """A site's label CSV (``csv_path``, named relative to ``root`` in messages) as strings, with ``_line`` (1-based
    file line) and ``_rel`` columns.

    ``_rel`` is the row's path as the adapters compare and hash it: :func:`posix_path` (``.`` and ``..`` resolved),
    spelled as on disk when ``root`` is on a case-insensitive file system (:func:`case_insensitive_fs`), so two
    spellings of one image are one path and the adapters' "listed N times" check sees them. Rows whose path leads
    out of ``root`` are dropped, each a problem naming file, line and value. A missing or unparsable file, or
    missing ``required`` columns (named beside the columns found), is appended to ``problems`` and gives ``None``.
    Column names are stripped of surrounding blanks.
    """
    csv_name = describe_path(csv_path, root)
    if not csv_path.is_file():
        problems.append(site.problem("label table not found", file=csv_name))
        return None
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        problems.append(site.problem(f"label table cannot be parsed: {type(err).__name__}: {err}", file=csv_name))
        return None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        problems.append(site.problem(
            f"label table lacks required column(s) {', '.join(map(repr, missing))} "
            f"(found: {', '.join(map(repr, frame.columns))})", file=csv_name))
        return None
    frame["_line"] = np.arange(len(frame)) + 2  # header is line 1
    frame["_rel"] = frame[path_column].map(posix_path)
    frame = _drop_outside_root(site, root, frame, csv_name, path_column, problems)
    if case_insensitive_fs(root):
        listings: dict[Path, dict[str, list[str]]] = {}
        frame["_rel"] = [rel if not rel or posixpath.isabs(rel) else on_disk_spelling(rel, root, listings)
                         for rel in frame["_rel"]]
    return frame


def _drop_outside_root(
    site: Site, root: Path, frame: pd.DataFrame, csv_name: str, path_column: str, problems: list[Problem]
) -> pd.DataFrame:
    """``frame`` without the rows whose path leads out of ``root``; each of this site's such rows is a problem.

    With a ``site_column``/``site_value`` source (one table shared by several sites) only this site's rows are
    reported: the other rows are dropped too, and reported by their own sites.
    """
    outside = frame["_rel"].map(lambda rel: outside_root(rel, root)).to_numpy(dtype=bool)
    if not outside.any():
        return frame
    mine = outside.copy()
    source = getattr(site, "source", None)
    column, value = getattr(source, "site_column", None), getattr(source, "site_value", None)
    if column and column in frame.columns:
        mine &= (frame[column].str.strip() == value).to_numpy(dtype=bool)
    for _, row in frame[mine].iterrows():
        problems.append(site.problem(
            f"{csv_name} line {row['_line']}: {path_column!r} value {row[path_column].strip()!r} lies outside the "
            "site's data folder (root); excluded (list images by their path below root)", file=csv_name))
    return frame[~outside]


def compile_group_pattern(value: str | None) -> str | None:
    """Validate a ``group_pattern`` option: a regular expression with at least one capture group."""
    if value is None:
        return None
    try:
        compiled = re.compile(value)
    except re.error as err:
        raise ValueError(f"not a valid regular expression ({err}): {value!r}") from None
    if compiled.groups < 1:
        raise ValueError(f"needs a capture group around the key, e.g. '(patient\\d+)/', got {value!r}")
    return value


def group_key_from_path(rel: str, pattern: str) -> str | None:
    """The group key a ``group_pattern`` finds in a POSIX path: its first non-empty capture group (``None``
    when the pattern does not match). E.g. ``(patient\\d+)/`` on ``images/patient00012/study1/view1.png``
    gives ``patient00012``."""
    match = re.search(pattern, rel)
    if match is None:
        return None
    return next((g for g in match.groups() if g), None)


def group_key_from_level(rel: str, level: int) -> str | None:
    """The name of folder number ``level`` (0-based) of a POSIX path relative to the root (``None`` when the
    path has no folder at that level): level 2 of ``Ia_COM/surface/stone_004/img_001.png`` is ``stone_004``."""
    folders = rel.split("/")[:-1]
    return folders[level] if level < len(folders) else None
