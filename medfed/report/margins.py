"""Non-inferiority and equivalence margins in a report: which metrics have one, and the tests per comparison.

A margin ``METRIC=DELTA`` (``medfed report --margin``, or ``report: {margins: {METRIC: DELTA}}`` in the experiment
config) adds to every comparison of that metric the one-sided non-inferiority P and the TOST equivalence P of
:mod:`medfed.stats.noninferiority`, from the comparison's difference and standard error (``se``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from medfed.errors import MedfedError
from medfed.report.metrics import MetricSpec
from medfed.stats.noninferiority import equivalence_p, noninferiority_p

MARGIN_COLUMNS = ("margin", "p_noninferiority", "p_equivalence")


def check_margins(margins: Mapping[str, float], specs: Sequence[MetricSpec]) -> dict[str, tuple[float, bool]]:
    """``{metric: (delta, higher_is_better)}``; a clear error for a metric the report does not compare or a
    margin that is not positive."""
    compared = {s.name: s for s in specs if s.compare}
    unknown = sorted(set(margins) - set(compared))
    if unknown:
        raise MedfedError(f"margin given for {', '.join(unknown)}, which this report does not compare; metrics "
                          f"compared: {', '.join(compared)}")
    bad = {m: d for m, d in margins.items() if not (np.isfinite(d) and d > 0)}
    if bad:
        raise MedfedError(f"margins must be positive numbers: {bad}")
    return {m: (float(d), compared[m].higher_is_better) for m, d in margins.items()}


def with_margin_tests(comparisons: pd.DataFrame, margins: Mapping[str, tuple[float, bool]]) -> pd.DataFrame:
    """``comparisons`` with :data:`MARGIN_COLUMNS` (NaN where the metric has no margin)."""
    out = comparisons.copy()
    values = {c: [] for c in MARGIN_COLUMNS}
    for row in out.itertuples():
        delta, higher = margins.get(row.metric, (np.nan, True))
        values["margin"].append(delta)
        values["p_noninferiority"].append(noninferiority_p(row.difference, row.se, delta, higher)
                                          if np.isfinite(delta) else np.nan)
        values["p_equivalence"].append(equivalence_p(row.difference, row.se, delta) if np.isfinite(delta) else np.nan)
    for column, column_values in values.items():
        out[column] = pd.Series(column_values, index=out.index, dtype=float)
    return out
