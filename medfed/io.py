"""Small file-writing helpers shared by every package that writes outputs (synth, runner, report)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def jsonable(value: Any, max_array: int = 64) -> Any:
    """``value`` with numpy scalars as Python numbers, non-finite floats as ``None``, arrays up to ``max_array``
    entries as lists (larger ones as a ``"<array shape>"`` note), keys as text: safe for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, max_array) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, max_array) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), max_array) if value.size <= max_array else f"<array {value.shape}>"
    if isinstance(value, np.floating | float):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
