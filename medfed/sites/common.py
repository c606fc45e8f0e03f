"""Pieces shared by the adapters whose sources are one site each (chest X-ray, ureteroscopy)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from monai.transforms import Compose, EnsureTyped, Resized
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


def resize_2d_transform(size: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Resize ``image`` (C, H, W) to ``size`` x ``size`` by area averaging, then plain tensors (no augmentation)."""
    return Compose([
        Resized(keys="image", spatial_size=(size, size), mode="area"),
        EnsureTyped(keys=("image", "label"), track_meta=False),
    ])


def posix_path(raw: str) -> str:
    """A table's path cell as a normalised POSIX path (``""`` when blank)."""
    text = raw.strip().replace("\\", "/")
    return str(PurePosixPath(text)) if text else ""


def visible_entries(folder: Path) -> list[Path]:
    """Entries of ``folder`` whose names do not start with a dot, sorted."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]


def is_hidden(path: Path, base: Path) -> bool:
    """Whether any part of ``path`` below ``base`` starts with a dot."""
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def read_label_table(
    site: Site, root: Path, csv_path: Path, path_column: str, required: list[str], problems: list[Problem]
) -> pd.DataFrame | None:
    """A site's label CSV (``csv_path``, named relative to ``root`` in messages) as strings, with ``_line`` (1-based file line) and ``_rel`` (POSIX path) columns.

    A missing or unparsable file, or missing ``required`` columns (named beside the columns found), is
    appended to ``problems`` and gives ``None``. Column names are stripped of surrounding blanks.
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
    return frame


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
