"""Sites re-drawn from a federation's cases by a partition (``case_id -> site``): simulated federations
over pooled data, e.g. Dirichlet label skew over the chest X-ray hospitals (see :mod:`medfed.partition`).

A :class:`PartitionedSite` holds rows of its source sites' case tables and hands reading, checking and
transforms back to the site each case came from, so files are still read only by their own adapter. Each
case keeps its case id and its split; the partition file therefore names hashed ids only and can be shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from medfed.errors import ConfigError, Problem
from medfed.sites.base import Site

ORIGIN = "_origin"


class _ByOrigin:
    """Apply the transform of the site a loaded case came from (``item["_origin"]``)."""

    def __init__(self, transforms: Sequence[Callable[[dict[str, Any]], dict[str, Any]] | None]) -> None:
        self.transforms = list(transforms)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        transform = self.transforms[item.pop(ORIGIN)]
        return transform(item) if transform is not None else item


class PartitionedSite(Site):
    """One site of a re-partitioned federation: the cases ``case_ids`` of ``sources``."""

    def __init__(self, name: str, sources: Sequence[Site], case_ids: Sequence[str], *, federation: str = "") -> None:
        first = sources[0]
        self.sources = list(sources)
        self.modality = first.modality  # type: ignore[misc]
        self.label_kind = first.label_kind  # type: ignore[misc]
        self.group_unit = first.group_unit
        self.label_columns = list(first.label_columns)
        self.metadata_columns = [c for c in first.metadata_columns if all(c in s.metadata_columns for s in sources)]
        self._case_ids = set(case_ids)
        super().__init__(name, federation=federation, split=first.split_config,
                         min_count=max(s.min_count for s in sources))

    def _index(self) -> tuple[pd.DataFrame, list[Problem]]:
        parts = []
        for origin, source in enumerate(self.sources):
            rows = source._table[source._table["case_id"].isin(self._case_ids)].drop(columns="site")
            parts.append(rows.assign(**{ORIGIN: origin}))
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        return table, []

    def _origin(self, case: pd.Series) -> Site:
        return self.sources[int(case[ORIGIN])]

    def _check_case(self, case: pd.Series) -> list[Problem]:
        return self._origin(case)._check_case(case)

    def _load_case(self, case: pd.Series) -> dict[str, Any]:
        return {**self._origin(case)._load_case(case), ORIGIN: int(case[ORIGIN])}

    def default_transform(self, split: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return _ByOrigin([source.default_transform(split) for source in self.sources])


def repartition(sites: Sequence[Site], assignment: Mapping[str, str] | pd.Series, federation: str = "") -> list[Site]:
    """New sites from ``assignment`` (case id -> new site name) over every case of ``sites``.

    Every case must be assigned and every assigned id must exist: a partition drawn on other data is an
    error naming how many ids differ (and a few of them), never a silent subset.
    """
    sites = list(sites)
    if not sites:
        raise ConfigError("cannot re-partition an empty federation")
    kinds = {(s.modality, s.label_kind, tuple(s.label_columns)) for s in sites}
    if len(kinds) > 1:
        raise ConfigError(f"sites to re-partition must share modality and labels; found {sorted(kinds)}")
    assignment = pd.Series(assignment, dtype=object).astype(str)
    known = pd.Index(pd.concat([s.cases["case_id"] for s in sites], ignore_index=True))
    unknown = assignment.index.difference(known)
    missing = known.difference(assignment.index)
    if len(unknown) or len(missing):
        parts = []
        if len(unknown):
            parts.append(f"{len(unknown)} partition id(s) are not cases of this federation "
                         f"(e.g. {', '.join(map(str, unknown[:3]))})")
        if len(missing):
            parts.append(f"{len(missing)} case(s) of the federation are in no partition "
                         f"(e.g. {', '.join(map(str, missing[:3]))})")
        raise ConfigError("partition does not match the federation: " + "; ".join(parts))
    names = sorted(assignment.unique())
    return [PartitionedSite(name, sites, assignment.index[assignment == name].tolist(), federation=federation)
            for name in names]
