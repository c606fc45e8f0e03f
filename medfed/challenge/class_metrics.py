"""Per-case scores of probabilistic classification submissions, and the site-level AUROC.

A classification submission gives each case a probability ``p`` per finding (one-vs-rest per class for
multi-class sites). Per case and finding with a known target ``y`` (``y = -1``, uncertain, gives NaN):

* Brier score ``(p - y)²`` (Brier 1950), a proper scoring rule that decomposes over cases, so the FeTS
  rank-per-case procedures apply to it unchanged (lower is better);
* log loss ``-(y log p' + (1 - y) log(1 - p'))`` with ``p'`` clipped to ``[ε, 1 - ε]``, ``ε`` = :data:`EPSILON`.

A case without a usable prediction gets the worst probability ``p = 1 - y`` (Brier 1, log loss ``-log ε``).
AUROC needs every case of a site at once, so each site computes it itself (Mann-Whitney, ties one half).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfed.metrics.classification import auroc

EPSILON = 1e-7
PER_CASE = ("Brier", "LogLoss")


def worst_probabilities(targets: np.ndarray) -> np.ndarray:
    """``1 - y`` for known targets (the most wrong answer), 0.5 where the target is unknown."""
    targets = np.asarray(targets, dtype=np.float64)
    return np.where(targets >= 0, 1.0 - targets, 0.5)


def case_scores(probabilities: np.ndarray, targets: np.ndarray, findings: Sequence[str]) -> list[dict[str, float]]:
    """Per case (rows of ``(n, F)`` arrays): ``Brier_<finding>`` and ``LogLoss_<finding>``, NaN where ``y < 0``."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 2 or p.shape[1] != len(findings):
        raise ValueError(f"probabilities {p.shape} and targets {y.shape} must both be (cases, {len(findings)})")
    known = y >= 0
    clipped = np.clip(p, EPSILON, 1 - EPSILON)
    brier = np.where(known, (p - y) ** 2, np.nan)
    log_loss = np.where(known, -(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)), np.nan)
    return [{**{f"Brier_{f}": float(brier[i, j]) for j, f in enumerate(findings)},
             **{f"LogLoss_{f}": float(log_loss[i, j]) for j, f in enumerate(findings)}} for i in range(p.shape[0])]


def site_auroc(probabilities: np.ndarray, targets: np.ndarray, findings: Sequence[str]) -> dict[str, float]:
    """``AUROC_<finding>`` over the site's cases (uncertain targets masked; NaN when a class is absent)."""
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    return {f"AUROC_{f}": auroc(p[:, j], y[:, j]) for j, f in enumerate(findings)}
