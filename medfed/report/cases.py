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
from medfed.stats import (
    AurocStatistic,
    MacroStatistic,
    MeanStatistic,
    RateStatistic,
    SupportWeightedStatistic,
)
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
        """Cases in the smallest class (masked cases, stratum -1, are not a class)."""
        if self.strata is None:
            return self.n_cases
        values, counts = np.unique(self.strata[self.strata >= 0], return_counts=True)
        return int(counts.min()) if values.size else 0


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


def _same_targets(targets: np.ndarray, reference: dict[str, np.ndarray], key: str, method: str, where: str) -> None:
    """Every method must carry the same ground truth for the same cases (else the runs do not belong together)."""
    first = reference.setdefault(key, targets)
    if not np.array_equal(first, targets):
        raise MedfedError(f"{where}: method {method} has other targets{f' for {key}' if key else ''} than the first "
                          f"method on the same cases ({int((first != targets).sum())} differ)")


def _classification(frames: Mapping[str, pd.DataFrame], ids: np.ndarray, labels: list[str], where: str):
    names = ["auroc", "accuracy", "sensitivity", "specificity", "precision", "f1"]
    statistics: dict[tuple[str, str], Statistic] = {}
    targets_by_label: dict[str, np.ndarray] = {}
    for method, frame in frames.items():
        per_label = {}
        for label in labels:
            rows = frame[frame["label"].astype(str) == label]
            scores, target, predictions = (_aligned(rows, ids, c) for c in ("score", "target", "prediction"))
            target = np.nan_to_num(target, nan=-1).astype(int)
            _same_targets(target, targets_by_label, label, method, where)
            per_label[label] = _binary_statistics(scores, target, predictions, names)
        if len(labels) == 1:
            statistics.update({(method, n): s for n, s in per_label[labels[0]].items()})
            continue
        for name in names:
            statistics[(method, name)] = MacroStatistic([per_label[label][name] for label in labels])
            statistics.update({(method, f"{name}/{label}"): per_label[label][name] for label in labels})
        statistics[(method, "f1_weighted")] = SupportWeightedStatistic(
            [per_label[label]["f1"] for label in labels], [targets_by_label[label] == 1 for label in labels])
    # one finding: stratify by its class (masked cases, -1, form their own stratum); several findings: plain
    # bootstrap, since stratifying by label patterns leaves single-case strata (a resample lacking a class gives
    # an undefined value and is dropped)
    strata = targets_by_label[labels[0]] if len(labels) == 1 else None
    return statistics, strata


def _anomaly(frames: Mapping[str, pd.DataFrame], ids: np.ndarray, where: str):
    statistics: dict[tuple[str, str], Statistic] = {}
    reference: dict[str, np.ndarray] = {}
    for method, frame in frames.items():
        scores, target, predictions = (_aligned(frame, ids, c) for c in ("score", "target", "prediction"))
        targets = np.nan_to_num(target, nan=-1).astype(int)
        _same_targets(targets, reference, "", method, where)
        for name, stat in _binary_statistics(scores, targets, predictions, ["auroc", "precision", "recall", "f1"]).items():
            statistics[(method, name)] = stat
    return statistics, reference[""]


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
        statistics, strata = _classification(frames, ids, labels or found, where)
    elif kind == "anomaly":
        statistics, strata = _anomaly(frames, ids, where)
    elif kind == "segmentation":
        statistics, strata = _segmentation(frames, ids, where)
    else:
        raise MedfedError(f"{where}: no report for task kind {kind!r}")
    return SiteCases(site, int(ids.size), strata, statistics)
