"""Shared pieces of the synthetic-federation generators: scales, seeded RNG streams, config writing."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
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


#: version of what the generators write; bump it when a generator changes what it writes (2: patients and
#: stones with group keys; 3: demo federations sized for statistics), so that `medfed run` regenerates demo data
#: written by an older medfed
SYNTH_FORMAT = 3
_FORMAT_MARK = "medfed synth format "


def write_federation_config(out: Path, modality: str, config: dict[str, Any]) -> Path:
    """Write ``out/sites/<modality>.yaml`` (paths in ``config`` relative to that folder); return its path. The header
    names :data:`SYNTH_FORMAT`."""
    sites_dir = out / "sites"
    sites_dir.mkdir(parents=True, exist_ok=True)
    path = sites_dir / f"{modality}.yaml"
    header = (f"# Synthetic {modality} federation written by `medfed synth`; paths are relative to this file.\n"
              f"# {_FORMAT_MARK}{SYNTH_FORMAT}\n")
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def write_site_federation(out: Path, modality: str, name: str, seed: int, specs: Sequence[Any],
                          write_site: Callable[[Path, Any], None], source: Callable[[Any], dict[str, Any]]) -> Path:
    """The shape every per-site generator shares: ``write_site(folder, spec)`` for each site spec inside a staged
    ``out/<modality>/`` (swapped in when complete, :func:`staged_directory`), then ``out/sites/<modality>.yaml``
    named ``name`` with one ``source(spec)`` per site and seeded splits (val 0.15, test 0.25)."""
    out = Path(out)
    with staged_directory(out, modality) as staging:
        for spec in specs:
            write_site(staging / spec.name, spec)
    config = {"name": name, "adapter": modality, "split": {"seed": seed, "val": 0.15, "test": 0.25},
              "sources": [source(spec) for spec in specs]}
    return write_federation_config(out, modality, config)


def synth_format(config: Path) -> int:
    """The :data:`SYNTH_FORMAT` a synthetic federation config was written with (1: before the mark existed)."""
    for line in config.read_text().splitlines()[:3]:
        if _FORMAT_MARK in line:
            return int(line.split(_FORMAT_MARK)[1].split()[0])
    return 1


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
