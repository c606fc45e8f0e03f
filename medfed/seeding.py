"""Derived seeds: every random choice of a run draws from a stream named by ``(seed, *keys)``.

A stream depends only on its keys (e.g. ``(seed, "round", 3, "site", "inst-1")``), so any round of any
site is reproducible on its own and a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _digest(seed: int, *keys: str | int) -> bytes:
    return hashlib.sha256("|".join(str(k) for k in (seed, *keys)).encode()).digest()


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed for ``(seed, *keys)`` (first 8 bytes of SHA-256 of the keys joined by ``|``), e.g. for torch."""
    return int.from_bytes(_digest(seed, *keys)[:8], "little") >> 1


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A numpy generator for ``(seed, *keys)`` seeded with 128 bits of the same digest (used by ``medfed.synth``)."""
    return np.random.default_rng(int.from_bytes(_digest(seed, *keys)[:16], "little"))
