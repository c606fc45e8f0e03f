"""Statistics over per-case records, no torch: bootstrap CIs (percentile, BCa), paired bootstrap,
Wilcoxon, DeLong, multiple-comparison correction, across-site summaries and small-count suppression."""

from medfed.stats.aggregate import across_sites
from medfed.stats.bootstrap import (
    CI_METHODS,
    Interval,
    PairedDifference,
    bootstrap_ci,
    bootstrap_distributions,
    bootstrap_p_value,
    confidence_interval,
    paired_difference,
)
from medfed.stats.delong import DeLongResult, delong_test
from medfed.stats.multiple import CORRECTIONS, adjust_p_values, benjamini_hochberg, holm
from medfed.stats.paired import WilcoxonResult, paired_wilcoxon, rank_biserial
from medfed.stats.suppression import suppress_count
from medfed.stats.weighted import (
    AurocStatistic,
    MacroStatistic,
    MeanStatistic,
    RateStatistic,
    SupportWeightedStatistic,
    point_estimate,
)

__all__ = [
    "CI_METHODS", "CORRECTIONS", "AurocStatistic", "DeLongResult", "Interval", "MacroStatistic",
    "MeanStatistic", "PairedDifference", "RateStatistic", "SupportWeightedStatistic", "WilcoxonResult", "across_sites",
    "adjust_p_values", "benjamini_hochberg", "bootstrap_ci", "bootstrap_distributions", "bootstrap_p_value",
    "confidence_interval", "delong_test", "holm", "paired_difference", "paired_wilcoxon", "point_estimate",
    "rank_biserial", "suppress_count",
]
