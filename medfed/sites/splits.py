"""Seeded, stratified train/val/test splits of a site's cases."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def assign_splits(
    case_ids: pd.Series,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    strata: pd.Series | None = None,
) -> pd.Series:
    """Assign each case to ``train``/``val``/``test``.

    Contract: the result depends only on the set of (case id, stratum) pairs and ``seed``, not on
    row order. Within each stratum cases are sorted by id, permuted with ``default_rng(seed)``,
    and the first ``round(n * test_fraction)`` go to test and the next ``round(n * val_fraction)`` to
    val, so every class appears in every split where its count allows (stratification).
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"split fractions must be in [0, 1) and sum below 1, got val={val_fraction}, test={test_fraction}"
        )
    ids = case_ids.astype(str)
    keys = strata.astype(str) if strata is not None else pd.Series("all", index=ids.index)
    result = pd.Series("train", index=ids.index, dtype=object)
    rng = np.random.default_rng(seed)
    for stratum in sorted(keys.unique()):
        members = ids[keys == stratum].sort_values(kind="stable")
        order = members.index.to_numpy()[rng.permutation(len(members))]
        n_test = round(len(order) * test_fraction)
        n_val = round(len(order) * val_fraction)
        result.loc[order[:n_test]] = "test"
        result.loc[order[n_test : n_test + n_val]] = "val"
    return result
