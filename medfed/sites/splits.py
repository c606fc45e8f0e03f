"""Seeded, stratified train/val/test splits of a site's cases, by group (patient, study, stone, subject).

The split unit is the *group*: every case of one group lands in the same split, so one patient's images
never sit on both sides of a split. Without groups each case is its own group (split unit: image).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """``ValueError`` unless both fractions lie in ``[0, 1)`` and sum below 1."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"split fractions must be in [0, 1) and sum below 1, got val={val_fraction}, test={test_fraction}"
        )


def assign_splits(
    case_ids: pd.Series,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    strata: pd.Series | None = None,
    groups: pd.Series | None = None,
) -> pd.Series:
    """Assign each case to ``train``/``val``/``test``, whole groups at a time.

    Contract: the result depends only on the set of (case id, group, stratum) triples and ``seed``,
    never on row order, and every group lies in exactly one split.

    Deterministic greedy (documented in the README, "Splits"):

    1. each group's stratum is its most frequent case stratum (ties: the smallest value);
    2. within each stratum (in sorted order), groups are sorted by id and permuted with
       ``default_rng(seed)``; the stratum's targets are ``round(n * test_fraction)`` test cases and
       ``round(n * val_fraction)`` val cases, ``n`` its number of cases;
    3. walking the permuted groups, a group of ``m`` cases goes to test while test's remaining gap is at
       least ``m / 2`` (so adding it brings test closer to its target), else to val under the same
       rule, else to train.

    With one case per group this is exactly "the first ``round(n * test)`` permuted cases go to test,
    the next ``round(n * val)`` to val" per stratum, the splitter medfed used before groups.
    """
    check_fractions(val_fraction, test_fraction)
    ids = case_ids.astype(str)
    keys = strata.astype(str) if strata is not None else pd.Series("all", index=ids.index)
    group_of = groups.astype(str) if groups is not None else ids
    frame = pd.DataFrame({"case": ids.to_numpy(), "group": group_of.to_numpy(), "stratum": keys.to_numpy()},
                         index=ids.index)
    sizes = frame.groupby("group").size()
    counts = frame.groupby(["group", "stratum"]).size().rename("n").reset_index()
    # each group's stratum: most frequent, ties to the smallest value (sort, then keep the first per group)
    counts = counts.sort_values(["group", "n", "stratum"], ascending=[True, False, True], kind="stable")
    group_stratum = counts.drop_duplicates("group").set_index("group")["stratum"]
    split_of: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    for stratum in sorted(group_stratum.unique()):
        members = np.sort(group_stratum.index[group_stratum == stratum].to_numpy().astype(str))
        order = members[rng.permutation(len(members))]
        n_cases = int(sizes.loc[members].sum())
        gaps = {"test": round(n_cases * test_fraction), "val": round(n_cases * val_fraction)}
        for group in order:
            size = int(sizes.loc[group])
            chosen = next((name for name in ("test", "val") if gaps[name] >= size / 2), "train")
            if chosen != "train":
                gaps[chosen] -= size
            split_of[group] = chosen
    return pd.Series(frame["group"].map(split_of).to_numpy(), index=ids.index, dtype=object)


def straddling_groups(groups: pd.Series, splits: pd.Series) -> dict[str, list[str]]:
    """Groups whose cases lie in more than one split (e.g. of a user-given split column): group -> splits."""
    frame = pd.DataFrame({"group": groups.astype(str).to_numpy(), "split": splits.astype(str).to_numpy()})
    per_group = frame.groupby("group")["split"].agg(lambda s: sorted(set(s)))
    return {g: v for g, v in per_group.items() if len(v) > 1}
