"""A site under simulated conditions: its images corrupted and/or its training labels poisoned.

:class:`ConditionedSite` wraps one site of a federation, keeps its cases, ids and splits, and hands
reading and checking back to it (files are still read only by their own adapter). Two conditions:

``corruption``
    a fraction of the cases of some splits (default: training only) is corrupted by one of the endoscopy
    corruptions of :mod:`medfed.corruptions` after the site's own transform; which cases, and their
    pixels, are fixed by ``(seed, corruption, case id)``, so every epoch and every run sees the same images.
    With ``fraction: 1`` this is the FedAgain papers' "client with persistent corrupted data" (data poisoning).
``label_flip``
    label poisoning of the training split: binary findings become ``1 - y`` (uncertain ``-1`` kept);
    class names move to the next class in sorted order (a derangement), so every training label is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from monai.transforms import Compose
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfed.errors import ConfigError, Problem
from medfed.sites.base import SPLITS, Site
from medfed.corruptions import Corrupt, check_name


class CorruptionConfig(BaseModel):
    """``{type, severity, fraction, splits}``: corrupt ``fraction`` of the cases of ``splits``."""

    model_config = ConfigDict(extra="forbid")
    type: str
    severity: int = Field(3, ge=1, le=5)
    fraction: float = Field(1.0, ge=0, le=1)
    splits: list[str] = Field(default_factory=lambda: ["train"], min_length=1)

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        return check_name(value)

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if s not in SPLITS]
        if bad:
            raise ValueError(f"unknown split(s) {bad}; choose from {', '.join(SPLITS)}")
        return value


class _CorruptImage:
    """The site's transform, then the corruption (the ``corrupted`` marker is not passed on)."""

    def __init__(self, base: Callable[[dict[str, Any]], dict[str, Any]] | None, corrupt: Corrupt) -> None:
        self.base, self.corrupt = base, corrupt

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item = self.corrupt(self.base(item) if self.base is not None else item)
        item.pop("corrupted", None)
        return item


def flip_labels(table: pd.DataFrame, columns: Sequence[str], rows: np.ndarray) -> pd.DataFrame:
    """``table`` with the label ``columns`` of ``rows`` (boolean mask) flipped: ``1 - y`` for 0/1 findings
    (other values kept), the next class in sorted order for class names."""
    table = table.copy()
    for column in columns:
        values = table[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and set(numeric.unique()) <= {-1, 0, 1}:
            flipped = numeric.where(~numeric.isin([0, 1]), 1 - numeric)
        else:
            classes = sorted(values.dropna().astype(str).unique())
            if len(classes) < 2:
                raise ConfigError(f"label_flip: column {column!r} has fewer than two classes ({classes}); nothing to flip to")
            following = dict(zip(classes, classes[1:] + classes[:1]))
            flipped = values.astype(str).map(following).where(values.notna(), values)
        table[column] = values.where(~rows, flipped.astype(values.dtype, errors="ignore"))
    return table


class ConditionedSite(Site):
    """``source`` with a corruption and/or label poisoning (see the module docstring)."""

    def __init__(
        self, source: Site, *, corruption: CorruptionConfig | None = None, label_flip: bool = False, seed: int = 0
    ) -> None:
        if source.label_kind == "segmentation" and label_flip:
            raise ConfigError(f"site {source.name}: label_flip needs class labels; a segmentation site has masks")
        self.source = source
        self.corruption = corruption
        self.label_flip = label_flip
        self.seed = int(seed)
        self.modality = source.modality  # type: ignore[misc]
        self.label_kind = source.label_kind  # type: ignore[misc]
        self.label_columns = list(source.label_columns)
        self.metadata_columns = list(source.metadata_columns)
        self.group_unit = source.group_unit
        super().__init__(source.name, federation=source.federation, split=source.split_config,
                         min_count=source.min_count)

    def _index(self) -> tuple[pd.DataFrame, list[Problem]]:
        table = self.source._table.drop(columns="site")
        if self.label_flip:
            table = flip_labels(table, self.label_columns, (table["split"] == "train").to_numpy())
            classes = getattr(self.source, "classes", None)
            if classes is not None and "label" in table and self.label_columns:  # keep a class index in step
                table["label"] = table[self.label_columns[0]].map({c: i for i, c in enumerate(classes)})
        return table, []

    @property
    def primary_label(self) -> str | None:
        return self.source.primary_label

    def _check_case(self, case: pd.Series) -> list[Problem]:
        return self.source._check_case(case)

    def _load_case(self, case: pd.Series) -> dict[str, Any]:
        return self.source._load_case(case)

    def default_transform(self, split: str) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        base = self.source.default_transform(split)
        spec = self.corruption
        if spec is None or split not in spec.splits or spec.fraction == 0:
            return base
        return Compose([_CorruptImage(base, Corrupt(spec.type, spec.severity, spec.fraction, self.seed))])
