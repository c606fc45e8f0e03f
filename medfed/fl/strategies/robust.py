"""Shared pieces of the robust aggregators (median, trimmed mean, Krum): they need every client model of
the round at once, so the updates are stacked into one ``(K, P)`` array (their maths requires all K)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from medfed.fl.update import ClientUpdate


def stack_updates(updates: Iterable[ClientUpdate]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(weights (K, P) float32, num_examples (K,), sites)``; K = 0 gives an empty ``(0, 0)`` array."""
    collected = list(updates)
    if not collected:
        return np.zeros((0, 0), np.float32), np.zeros(0), []
    weights = np.stack([np.asarray(u.weights, dtype=np.float32) for u in collected])
    return weights, np.array([u.num_examples for u in collected], dtype=np.float64), [u.site for u in collected]
