"""Per-case metrics as vectorised functions of arrays (aggregation over cases belongs to :mod:`medfed.stats`)."""

from medfed.metrics.classification import auroc, binary_confusion, confusion_metrics
from medfed.metrics.segmentation import brats_regions, dice, hausdorff95

__all__ = ["auroc", "binary_confusion", "brats_regions", "confusion_metrics", "dice", "hausdorff95"]
