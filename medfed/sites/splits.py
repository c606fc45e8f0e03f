"""Seeded, stratified train/val/test splits of a site's cases, by group (patient, study, stone, subject).

The split unit is the *group*: every case of one group lands in the same split, so one patient's images
never sit on both sides of a split. Without groups each case is its own group (split unit: image).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medfed.config import check_fractions

SPLITS = ("train", "val", "test")


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
    if case_ids.empty:
        return pd.Series([], index=case_ids.index, dtype=object)
    ids = case_ids.astype(str).to_numpy()
    group_of = groups.astype(str).to_numpy() if groups is not None else ids
    stratum_of = strata.astype(str).to_numpy() if strata is not None else np.full(len(ids), "all")
    # integer codes in sorted-string order (np.unique sorts like Python's str ordering)
    group_names, group_code = np.unique(group_of.astype(str), return_inverse=True)
    stratum_names, stratum_code = np.unique(stratum_of.astype(str), return_inverse=True)
    group_code, stratum_code = group_code.ravel(), stratum_code.ravel()
    sizes = np.bincount(group_code, minlength=len(group_names))
    # each group's stratum: most frequent, ties to the smallest value
    pairs, pair_counts = np.unique(np.stack([group_code, stratum_code]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -pair_counts, pairs[0]))  # by group, then count descending, then stratum
    first = order[np.concatenate(([True], pairs[0][order][1:] != pairs[0][order][:-1]))]
    group_stratum = np.empty(len(group_names), dtype=np.int64)
    group_stratum[pairs[0][first]] = pairs[1][first]
    split_of = np.full(len(group_names), "train", dtype=object)
    rng = np.random.default_rng(seed)
    for stratum in range(len(stratum_names)):
        members = np.flatnonzero(group_stratum == stratum)  # codes ascending = group ids sorted
        if not len(members):
            continue
        permuted = members[rng.permutation(len(members))]
        member_sizes = sizes[permuted].tolist()
        n_cases = int(sum(member_sizes))
        gaps = {"test": round(n_cases * test_fraction), "val": round(n_cases * val_fraction)}
        for group, size in zip(permuted.tolist(), member_sizes):
            chosen = next((name for name in ("test", "val") if gaps[name] >= size / 2), "train")
            if chosen != "train":
                gaps[chosen] -= size
            split_of[group] = chosen
    return pd.Series(split_of[group_code], index=case_ids.index, dtype=object)


def straddling_groups(groups: pd.Series, splits: pd.Series) -> dict[str, list[str]]:
    """Groups whose cases lie in more than one split (e.g. of a user-given split column): group -> splits."""
    frame = pd.DataFrame({"group": groups.astype(str).to_numpy(), "split": splits.astype(str).to_numpy()})
    per_group = frame.groupby("group")["split"].agg(lambda s: sorted(set(s)))
    return {g: v for g, v in per_group.items() if len(v) > 1}
