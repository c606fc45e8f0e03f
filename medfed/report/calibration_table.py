"""``calibration.csv``: calibration and the operating point of every method at every shown site.

Classification: the sigmoid probability of each finding is the predicted risk. Anomaly: the reconstruction error
is not a probability, so a Platt scaling fitted on the site's validation cases of that method
(:func:`medfed.stats.calibration.platt_scaling`) maps it to one first. On the report's split (test), per site,
method and finding: Brier score, ECE (10 equal-mass bins), calibration slope and intercept, and the operating
point the site chose on its validation cases (``threshold``; empty: the task's fixed 0.5 rule) with the
sensitivity and specificity it gives on test. Sites below ``min_count`` are not shown (see the report's
suppression rules).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medfed.stats.calibration import apply_platt, calibration, platt_scaling, reliability_curve

CALIBRATION_COLUMNS = ("site", "method", "label", "n", "n_positive", "brier", "ece", "slope", "intercept", "threshold",
                       "sensitivity", "specificity", "probability", "note")


def _risk(kind: str, test: pd.DataFrame, val: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    """Predicted risks of the test rows, and how they were obtained (or why there are none)."""
    scores = test["score"].to_numpy(dtype=float)
    if kind == "classification":
        return scores, "sigmoid output"
    known = val[np.isfinite(val["target"].to_numpy(dtype=float))]
    platt = platt_scaling(known["score"].to_numpy(dtype=float), known["target"].to_numpy(dtype=float))
    if platt is None:
        return None, "no Platt scaling: the validation cases hold one class"
    return apply_platt(scores, platt), "Platt scaling fitted on validation"


def _operating_point(test: pd.DataFrame) -> tuple[float, float, float]:
    """(threshold, sensitivity, specificity) of the logged predictions on test."""
    threshold = float(test["threshold"].iloc[0]) if "threshold" in test and test["threshold"].notna().any() else np.nan
    predicted = test["prediction"].to_numpy(dtype=float)
    target = test["target"].to_numpy(dtype=float)
    positive, negative = target == 1, target == 0
    if not np.isfinite(predicted).all():
        return threshold, np.nan, np.nan
    sensitivity = float((predicted[positive] == 1).mean()) if positive.any() else np.nan
    specificity = float((predicted[negative] == 0).mean()) if negative.any() else np.nan
    return threshold, sensitivity, specificity


def calibration_rows(kind: str, records: dict[str, pd.DataFrame], sites: Sequence[str], split: str = "test",
                     ) -> tuple[pd.DataFrame, dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]]:
    """``calibration.csv`` rows, and the reliability curve of each (site, method, label) for the report."""
    rows, curves = [], {}
    if kind not in ("classification", "anomaly"):
        return pd.DataFrame(columns=list(CALIBRATION_COLUMNS)), curves
    for method, frame in records.items():
        for site in sites:
            at_site = frame[frame["site"].astype(str) == site]
            labels = at_site["label"].astype(str) if "label" in at_site else pd.Series("anomaly", index=at_site.index)
            for label in dict.fromkeys(labels):
                part = at_site[labels == label]
                part = part[np.isin(part["target"].to_numpy(dtype=float), (0.0, 1.0))]  # uncertain (-1) is masked
                test, val = part[part["split"] == split], part[part["split"] == "val"]
                if test.empty:
                    continue
                risk, how = _risk(kind, test, val)
                threshold, sensitivity, specificity = _operating_point(test)
                row = {"site": site, "method": method, "label": label, "threshold": threshold,
                       "sensitivity": sensitivity, "specificity": specificity, "probability": how, "note": ""}
                if risk is None:
                    rows.append({**row, "n": len(test), "n_positive": int((test["target"] == 1).sum()),
                                 "note": how})
                    continue
                target = test["target"].to_numpy(dtype=float)
                rows.append({**row, **calibration(target, risk).as_dict()})
                if 0 < target.sum() < target.size:
                    curves[(site, method, label)] = reliability_curve(target, risk)
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS)), curves
