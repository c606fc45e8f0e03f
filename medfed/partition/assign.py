"""Partitioners: assign the cases of a pooled data set (or of one large institution) to federated sites.

Each returns a :class:`pandas.Series` mapping case id -> site name, in the order of the input ids, drawn
from a seeded generator (same inputs + seed = same partition). Heterogeneity knobs:
- ``natural``: an existing column (institution, scanner, hospital);
- ``iid``: uniformly shuffled, near-equal sizes;
- ``quantity_skew``: site sizes from ``Dirichlet(alpha)`` (small alpha: a few large sites);
- ``dirichlet_label_skew``: for each class, its cases are spread over sites with proportions drawn from
  ``Dirichlet(alpha 1_N)`` (Yurochkin et al. 2019, Hsu et al. 2019; the NIID-Bench recipe of Li et al.
  2022), redrawn until every site has ``min_size`` cases.

Groups: with ``groups`` (one key per case: the patient, study, stone or subject of the public ``group``
column), the partitioners move whole groups, so one patient never spans two sites. They draw over the
sorted distinct groups instead of the cases; a group's label is its most frequent case label (ties: the
smallest), and ``min_size`` then counts groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MAX_DRAWS = 1000


def site_names(n_sites: int, prefix: str = "site") -> list[str]:
    """``site-1 … site-N`` (zero-padded when N > 9 so that names sort in order)."""
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites}")
    width = len(str(n_sites))
    return [f"{prefix}-{i + 1:0{width}d}" for i in range(n_sites)]


def _series(case_ids: Sequence[str], site_of: np.ndarray, names: list[str]) -> pd.Series:
    return pd.Series([names[i] for i in site_of], index=pd.Index(list(case_ids), name="case_id"), name="site")


def _check(case_ids: Sequence[str], n_sites: int, min_size: int) -> None:
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique")
    if n_sites * min_size > len(case_ids):
        raise ValueError(f"{len(case_ids)} cases cannot give {n_sites} sites of at least {min_size} cases")


def _by_group(
    case_ids: Sequence[str], groups: Sequence[str], labels: Sequence | None = None
) -> tuple[list[str], np.ndarray | None, np.ndarray]:
    """``(units, unit_labels, unit_of_case)``: the sorted distinct groups, each group's most frequent label
    (ties: the smallest) and, per case, the position of its group in ``units``."""
    if len(groups) != len(case_ids):
        raise ValueError(f"{len(groups)} group keys for {len(case_ids)} cases")
    keys = pd.Series(list(groups), dtype=str)
    units = sorted(keys.unique())
    unit_of_case = pd.Index(units).get_indexer(keys)
    if labels is None:
        return units, None, unit_of_case
    frame = pd.DataFrame({"group": keys, "label": list(labels)})
    counts = frame.groupby(["group", "label"]).size().rename("n").reset_index()
    counts = counts.sort_values(["group", "n", "label"], ascending=[True, False, True], kind="stable")
    majority = counts.drop_duplicates("group").set_index("group")["label"]
    return units, majority.loc[units].to_numpy(), unit_of_case


def _expand(case_ids: Sequence[str], drawn: pd.Series, unit_of_case: np.ndarray) -> pd.Series:
    """Per-group sites back to per-case sites, in the order of ``case_ids``."""
    return pd.Series(drawn.to_numpy()[unit_of_case], index=pd.Index(list(case_ids), name="case_id"), name="site")


def natural(cases: pd.DataFrame, column: str, id_column: str = "case_id", group_column: str | None = None) -> pd.Series:
    """Site = the value of ``column`` (e.g. institution); a missing value is an error naming the cases, and so is a
    group (``group_column``) whose cases name different sites."""
    for name in (id_column, column, *([group_column] if group_column else [])):
        if name not in cases:
            raise ValueError(f"column {name!r} not found; columns are {', '.join(map(str, cases.columns))}")
    missing = cases.loc[cases[column].isna(), id_column].astype(str).tolist()
    if missing:
        raise ValueError(f"{len(missing)} case(s) have no {column!r}: {', '.join(missing[:5])}")
    if group_column:
        spread = cases.groupby(group_column)[column].nunique()
        split_groups = spread.index[spread > 1].astype(str).tolist()
        if split_groups:
            raise ValueError(f"{len(split_groups)} group(s) have cases in more than one {column!r} (a patient may "
                             f"not span two sites): {', '.join(split_groups[:5])}")
    return pd.Series(cases[column].astype(str).to_numpy(), index=pd.Index(cases[id_column].astype(str), name="case_id"),
                     name="site")


def iid(case_ids: Sequence[str], n_sites: int, seed: int = 0, groups: Sequence[str] | None = None) -> pd.Series:
    """Shuffle, then cut into ``n_sites`` parts whose sizes differ by at most one (in groups, with ``groups``)."""
    if groups is not None:
        _check(case_ids, 1, 1)
        units, _, unit_of_case = _by_group(case_ids, groups)
        return _expand(case_ids, iid(units, n_sites, seed), unit_of_case)
    _check(case_ids, n_sites, 1)
    order = np.random.default_rng(seed).permutation(len(case_ids))
    site_of = np.empty(len(case_ids), dtype=int)
    for site, part in enumerate(np.array_split(order, n_sites)):
        site_of[part] = site
    return _series(case_ids, site_of, site_names(n_sites))


def quantity_skew(
    case_ids: Sequence[str], n_sites: int, alpha: float = 1.0, min_size: int = 1, seed: int = 0,
    groups: Sequence[str] | None = None,
) -> pd.Series:
    """Site sizes proportional to ``q ~ Dirichlet(alpha 1_N)`` (redrawn until each has ``min_size``); sizes count
    groups with ``groups``."""
    if groups is not None:
        _check(case_ids, 1, 1)
        units, _, unit_of_case = _by_group(case_ids, groups)
        return _expand(case_ids, quantity_skew(units, n_sites, alpha, min_size, seed), unit_of_case)
    _check(case_ids, n_sites, min_size)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    n = len(case_ids)
    for _ in range(MAX_DRAWS):
        sizes = np.floor(rng.dirichlet(np.full(n_sites, alpha)) * n).astype(int)
        sizes[np.argmax(sizes)] += n - sizes.sum()  # rounding remainder to the largest site
        if sizes.min() >= min_size:
            break
    else:
        raise ValueError(f"no quantity-skew draw gave every site {min_size} cases in {MAX_DRAWS} draws "
                         f"(alpha={alpha}, {n_sites} sites, {n} cases): raise alpha or lower min_size")
    order = rng.permutation(n)
    site_of = np.empty(n, dtype=int)
    for site, part in enumerate(np.split(order, np.cumsum(sizes)[:-1])):
        site_of[part] = site
    return _series(case_ids, site_of, site_names(n_sites))


def dirichlet_label_skew(
    case_ids: Sequence[str], labels: Sequence, n_sites: int, alpha: float = 0.5, min_size: int = 10, seed: int = 0,
    groups: Sequence[str] | None = None,
) -> pd.Series:
    """Per class ``k``: proportions ``p_k ~ Dirichlet(alpha 1_N)``; the class's shuffled cases are cut at
    ``cumsum(p_k) n_k``. The whole draw is repeated until every site has at least ``min_size`` cases.
    Small ``alpha`` (0.1): sites see few classes; large ``alpha`` (100): close to IID. With ``groups`` the
    draw is over groups labelled by their majority label (see the module docstring)."""
    if groups is not None:
        _check(case_ids, 1, 1)
        if len(labels) != len(case_ids):
            raise ValueError(f"{len(labels)} labels for {len(case_ids)} cases")
        units, unit_labels, unit_of_case = _by_group(case_ids, groups, labels)
        drawn = dirichlet_label_skew(units, unit_labels, n_sites, alpha, min_size, seed)
        return _expand(case_ids, drawn, unit_of_case)
    _check(case_ids, n_sites, min_size)
    labels = np.asarray(labels)
    if labels.shape != (len(case_ids),):
        raise ValueError(f"{labels.shape[0] if labels.ndim else 0} labels for {len(case_ids)} cases")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == value) for value in pd.unique(labels)]
    for _ in range(MAX_DRAWS):
        site_of = np.empty(len(case_ids), dtype=int)
        for members in classes:
            shuffled = rng.permutation(members)
            cuts = (np.cumsum(rng.dirichlet(np.full(n_sites, alpha))) * len(members)).astype(int)[:-1]
            for site, part in enumerate(np.split(shuffled, cuts)):
                site_of[part] = site
        if np.bincount(site_of, minlength=n_sites).min() >= min_size:
            return _series(case_ids, site_of, site_names(n_sites))
    raise ValueError(f"no Dirichlet draw gave every site {min_size} cases in {MAX_DRAWS} draws (alpha={alpha}, "
                     f"{n_sites} sites, {len(case_ids)} cases): raise alpha or lower min_size")
