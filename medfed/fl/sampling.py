"""Client sampling per round (Flower's rule: ``max(int(fraction_fit * n), min_fit_clients)`` sites)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_size(available: int, fraction_fit: float, min_fit_clients: int) -> int:
    """How many of ``available`` sites train this round (never more than are available)."""
    return min(available, max(int(fraction_fit * available), min_fit_clients))


def sample_sites(
    sites: Sequence[str], fraction_fit: float, min_fit_clients: int, rng: np.random.Generator
) -> list[str]:
    """A uniform sample without replacement, returned in federation order (aggregation order is fixed)."""
    k = sample_size(len(sites), fraction_fit, min_fit_clients)
    if k >= len(sites):
        return list(sites)
    chosen = set(rng.choice(len(sites), size=k, replace=False).tolist())
    return [s for i, s in enumerate(sites) if i in chosen]
