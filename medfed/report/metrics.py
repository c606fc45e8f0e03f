"""What each task's report shows: metric names (as in ``metrics.csv``), plain labels, units, direction,
and which paired test compares two methods on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from medfed.metrics.segmentation import REGIONS

REGION_NAMES = {"ET": "enhancing tumour (ET)", "TC": "tumour core (TC)", "WT": "whole tumour (WT)"}


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    unit: str = ""
    higher_is_better: bool = True
    #: paired test beside the paired bootstrap: "delong" (AUROC), "wilcoxon" (per-case values) or "" (none)
    test: str = ""
    #: compared between methods (comparisons.csv, forest plots)
    compare: bool = False


_CLASSIFICATION = (
    MetricSpec("auroc", "AUROC", test="delong", compare=True),
    MetricSpec("accuracy", "Accuracy"),
    MetricSpec("sensitivity", "Sensitivity"),
    MetricSpec("specificity", "Specificity"),
    MetricSpec("precision", "Precision (PPV)"),
    MetricSpec("f1", "F1 score"),
)
_ANOMALY = (
    MetricSpec("auroc", "AUROC (anomaly vs normal)", test="delong", compare=True),
    MetricSpec("precision", "Precision"),
    MetricSpec("recall", "Recall (sensitivity)"),
    MetricSpec("f1", "F1 score"),
)
_SEGMENTATION = (
    MetricSpec("dice_mean", "Dice, mean of regions", test="wilcoxon", compare=True),
    *(MetricSpec(f"dice_{r}", f"Dice, {REGION_NAMES[r]}", test="wilcoxon", compare=True) for r in REGIONS),
    *(MetricSpec(f"hd95_{r}", f"HD95, {REGION_NAMES[r]}", "mm", False, "wilcoxon", True) for r in REGIONS),
)

SPECS: dict[str, tuple[MetricSpec, ...]] = {
    "classification": _CLASSIFICATION, "anomaly": _ANOMALY, "segmentation": _SEGMENTATION,
}
#: the headline metric per task kind (the task's ``primary_metric``; a test keeps them equal)
PRIMARY = {"classification": "auroc", "anomaly": "auroc", "segmentation": "dice_mean"}


def specs_for(kind: str, labels: list[str] | None = None, compare: Sequence[str] = ()) -> list[MetricSpec]:
    """The task's metrics; multi-label classification adds ``<metric>/<label>`` per label. ``compare`` names more
    metrics (e.g. ``f1``, which also selects every ``f1/<label>``) to compare between methods."""
    if kind not in SPECS:
        raise ValueError(f"no report metrics for task kind {kind!r}; known: {', '.join(SPECS)}")
    specs = list(SPECS[kind])
    if kind == "classification" and labels and len(labels) > 1:
        macro = [  # DeLong compares single AUROCs, not their mean: the macro mean gets the paired bootstrap alone
            MetricSpec(s.name, f"{s.label}, macro mean", s.unit, s.higher_is_better, "" if s.test == "delong" else s.test,
                       s.compare)
            for s in specs
        ]
        per_label = [
            MetricSpec(f"{s.name}/{label}", f"{s.label}, {label}", s.unit, s.higher_is_better, s.test, s.compare)
            for label in labels for s in specs
        ]
        weighted = [MetricSpec("f1_weighted", "F1 score, weighted by positives")]
        specs = macro + weighted + per_label
    if compare:
        specs = [replace(s, compare=True) if s.name in compare or s.name.split("/")[0] in compare else s
                 for s in specs]
    return specs
