"""Per-site case arrays, aligned across methods, and their bootstrap statistics.

For one site and split, every method's records are put on the same sorted case ids (a paired design: the
same test cases under every method). Each (method, metric) becomes a :mod:`medfed.stats` statistic whose
point estimate equals the value in ``metrics.csv`` (checked in tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medfed.errors import MedfedError
from medfed.metrics.segmentation import REGIONS
from medfed.stats import AurocStatistic, MacroStatistic, MeanStatistic, RateStatistic
from medfed.stats.weighted import Statistic

_RATES = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
          "precision": "precision", "f1": "f1", "recall": "sensitivity"}


@dataclass
class SiteCases:
    site: str
    n_cases: int
    #: class of each case for a stratified bootstrap (None: plain bootstrap)
    strata: np.ndarray | None
    statistics: dict[tuple[str, str], Statistic]

    def smallest_stratum(self) -> int:
        if self.strata is None:
            return self.n_cases
        return int(np.unique(self.strata, return_counts=True)[1].min()) if self.n_cases else 0


def _undefined(n: int) -> MeanStatistic:
    return MeanStatistic(np.full(n, np.nan))


def _aligned(frame: pd.DataFrame, case_ids: np.ndarray, column: str) -> np.ndarray:
    values = frame.set_index("case_id")[column].reindex(case_ids)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)


def _binary_statistics(
    scores: np.ndarray, targets: np.ndarray, predictions: np.ndarray, names: list[str]
) -> dict[str, Statistic]:
    out: dict[str, Statistic] = {}
    for name in names:
        if name == "auroc":
            out[name] = AurocStatistic(scores, targets)
        elif np.isnan(predictions).any():  # no operating point (e.g. no threshold): rates undefined
            out[name] = _undefined(targets.size)
        else:
            out[name] = RateStatistic(_RATES[name], predictions, targets)
    return out


def _classification(frames: Mapping[str, pd.DataFrame], ids: np.ndarray, labels: list[str]):
    names = ["auroc", "accuracy", "sensitivity", "specificity", "precision", "f1"]
    statistics: dict[tuple[str, str], Statistic] = {}
    targets_by_label = {}
    for method, frame in frames.items():
        per_label = {}
        for label in labels:
            rows = frame[frame["label"].astype(str) == label]
            args = [_aligned(rows, ids, c) for c in ("score", "target", "prediction")]
            targets_by_label[label] = np.nan_to_num(args[1], nan=-1).astype(int)
            per_label[label] = _binary_statistics(args[0], targets_by_label[label], args[2], names)
        if len(labels) == 1:
            statistics.update({(method, n): s for n, s in per_label[labels[0]].items()})
            continue
        for name in names:
            statistics[(method, name)] = MacroStatistic([per_label[label][name] for label in labels])
            statistics.update({(method, f"{name}/{label}"): per_label[label][name] for label in labels})
    patterns = np.stack([targets_by_label[label] for label in labels], axis=1)
    strata = patterns[:, 0] if len(labels) == 1 else np.array(["|".join(map(str, row)) for row in patterns])
    return statistics, strata


def _anomaly(frames: Mapping[str, pd.DataFrame], ids: np.ndarray):
    statistics: dict[tuple[str, str], Statistic] = {}
    targets = None
    for method, frame in frames.items():
        scores, target, predictions = (_aligned(frame, ids, c) for c in ("score", "target", "prediction"))
        targets = np.nan_to_num(target, nan=-1).astype(int)
        for name, stat in _binary_statistics(scores, targets, predictions, ["auroc", "precision", "recall", "f1"]).items():
            statistics[(method, name)] = stat
    return statistics, targets


def _segmentation(frames: Mapping[str, pd.DataFrame], ids: np.ndarray, where: str):
    statistics: dict[tuple[str, str], Statistic] = {}
    for method, frame in frames.items():
        dice = frame.pivot_table(index="case_id", columns="region", values="dice", aggfunc="first").reindex(ids)
        hd95 = frame.pivot_table(index="case_id", columns="region", values="hd95", aggfunc="first").reindex(ids)
        missing = [r for r in REGIONS if r not in dice.columns]
        if missing:
            raise MedfedError(f"{where}: method {method} has no records for region(s) {', '.join(missing)}")
        for region in REGIONS:
            statistics[(method, f"dice_{region}")] = MeanStatistic(dice[region].to_numpy(dtype=float))
            statistics[(method, f"hd95_{region}")] = MeanStatistic(hd95[region].to_numpy(dtype=float))
        # mean over regions of per-region means = mean over cases of each case's region mean (Dice is never NaN)
        statistics[(method, "dice_mean")] = MeanStatistic(dice[list(REGIONS)].to_numpy(dtype=float).mean(axis=1))
    return statistics, None


def site_cases(kind: str, site: str, frames: Mapping[str, pd.DataFrame], labels: list[str] | None = None) -> SiteCases:
    """Statistics of every method on one site's cases; ``frames`` = each method's records of that site/split."""
    where = f"site {site}"
    methods = list(frames)
    ids = np.array(sorted(frames[methods[0]]["case_id"].astype(str).unique()))
    for method in methods[1:]:
        other = set(frames[method]["case_id"].astype(str))
        if other != set(ids):
            raise MedfedError(
                f"{where}: method {method} was evaluated on other cases than {methods[0]} "
                f"({len(other ^ set(ids))} differ); paired comparisons need the same test cases"
            )
    frames = {m: f.assign(case_id=f["case_id"].astype(str)) for m, f in frames.items()}
    if kind == "classification":
        found = list(dict.fromkeys(frames[methods[0]]["label"].astype(str)))
        statistics, strata = _classification(frames, ids, labels or found)
    elif kind == "anomaly":
        statistics, strata = _anomaly(frames, ids)
    elif kind == "segmentation":
        statistics, strata = _segmentation(frames, ids, where)
    else:
        raise MedfedError(f"{where}: no report for task kind {kind!r}")
    return SiteCases(site, int(ids.size), strata, statistics)
