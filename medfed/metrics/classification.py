"""Binary classification metrics over a set of cases.

``scores`` are any real-valued scores (higher = more likely positive), ``targets`` are 0/1. Cases whose
target is negative (e.g. -1, CheXpert "uncertain" kept under U-Ignore) are masked out.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _valid(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in shape")
    keep = targets >= 0
    return scores[keep], targets[keep].astype(bool)


def auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count one half).

    ``AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with ``R_pos`` the sum of the positives'
    mid-ranks among all scores (Hanley & McNeil 1982). NaN when a class is absent.
    """
    scores, positive = _valid(scores, targets)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_confusion(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict[str, int]:
    """Counts ``tp, fp, tn, fn`` for predictions ``scores >= threshold``."""
    scores, positive = _valid(scores, targets)
    predicted = scores >= threshold
    return {
        "tp": int((predicted & positive).sum()),
        "fp": int((predicted & ~positive).sum()),
        "tn": int((~predicted & ~positive).sum()),
        "fn": int((~predicted & positive).sum()),
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def confusion_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity (recall) TP/(TP+FN), specificity TN/(TN+FP), precision TP/(TP+FP), F1 = 2PR/(P+R).

    A ratio with a zero denominator is NaN (undefined), never silently 0.
    """
    c = binary_confusion(scores, targets, threshold)
    precision = _ratio(c["tp"], c["tp"] + c["fp"])
    recall = _ratio(c["tp"], c["tp"] + c["fn"])
    return {
        "accuracy": _ratio(c["tp"] + c["tn"], sum(c.values())),
        "sensitivity": recall,
        "specificity": _ratio(c["tn"], c["tn"] + c["fp"]),
        "precision": precision,
        "f1": _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]),
    }
