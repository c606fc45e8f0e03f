"""Derived seeds: every random choice of a run draws from a stream named by ``(seed, *keys)``.

A stream depends only on its keys (e.g. ``(seed, "round", 3, "site", "inst-1")``), so any round of any
site is reproducible on its own and a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed for ``(seed, *keys)`` (SHA-256 of the keys joined by ``|``)."""
    digest = hashlib.sha256("|".join(str(k) for k in (seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A numpy generator for ``(seed, *keys)``."""
    return np.random.default_rng(derive_seed(seed, *keys))
