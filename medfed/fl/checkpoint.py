"""Atomic checkpoints: write to a temporary file beside the target, then rename (a kill never leaves half a file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from medfed.errors import MedfedError


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` (numpy arrays, dicts, plain values) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a damaged file is a clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise MedfedError(f"{path}: checkpoint could not be read ({type(err).__name__}: {err})") from None
