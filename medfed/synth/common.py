"""Shared pieces of the synthetic-federation generators: scales, seeded RNG streams, config writing."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml

from medfed.io import atomic_write_text

Scale = Literal["small", "demo", "full"]
SCALES: tuple[str, ...] = ("small", "demo", "full")


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    return scale


def write_federation_config(out: Path, modality: str, config: dict[str, Any]) -> Path:
    """Write ``out/sites/<modality>.yaml`` (paths in ``config`` relative to that folder); return its path."""
    sites_dir = out / "sites"
    sites_dir.mkdir(parents=True, exist_ok=True)
    path = sites_dir / f"{modality}.yaml"
    header = f"# Synthetic {modality} federation written by `medfed synth`; paths are relative to this file.\n"
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def staged_directory(out: Path, name: str) -> Iterator[Path]:
    """Yield a fresh folder beside ``out/name``; on success it replaces ``out/name``, on error it is removed.

    A generator killed half-way never leaves a half-written federation where a complete one was.
    """
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}."))
    staging.chmod(0o755)  # mkdtemp makes it private to the user
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
