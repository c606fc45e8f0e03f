"""Client availability and sampling per round.

Each round, site ``k`` is reachable with probability ``p_k`` (``availability``; a hospital's node that is
down, busy or behind a maintenance window), then Flower's rule samples ``max(int(fraction_fit * n),
min_fit_clients)`` of the ``n`` available sites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def available_sites(
    sites: Sequence[str], availability: float | Mapping[str, float], rng: np.random.Generator
) -> list[str]:
    """Sites reachable this round, in federation order: site ``k`` with probability ``availability[k]``
    (a float applies to every site; a site missing from a mapping is always available). One uniform draw
    per site, in federation order, so a site's draw does not depend on the others' probabilities."""
    draws = rng.random(len(sites))
    probability = [availability if isinstance(availability, int | float) else availability.get(s, 1.0) for s in sites]
    return [s for s, u, p in zip(sites, draws, probability, strict=True) if u < p]


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
