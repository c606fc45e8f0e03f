"""Pieces shared by the adapters whose sources are one site each (chest X-ray, ureteroscopy)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from monai.transforms import Compose, EnsureTyped, Resized
from pydantic import BaseModel

from medfed.config import FederationConfig, resolve_path, validate_model
from medfed.errors import ConfigError, Problem
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
