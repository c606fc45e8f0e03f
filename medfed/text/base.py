"""What every report backend shares: the report record and the backend interface.

A backend assigns each label of a :class:`~medfed.text.taxonomy.Taxonomy` one of its allowed values, with a
confidence in [0, 1]. ``predict`` returns one row per report: ``report_id``, ``status`` (``ok``, or
``unparsable`` when an LLM's answer could not be read, its values then ``not_mentioned``-like fallbacks and
confidence 0), and for each label ``<label>`` (the value) and ``<label>__confidence``. Backends run inside the
site that holds the reports; only predicted values and metrics leave it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from medfed.text.taxonomy import Taxonomy

CONFIDENCE_SUFFIX = "__confidence"
STATUSES = ("ok", "unparsable")


@dataclass(frozen=True)
class Report:
    """One free-text report: hashed ``report_id``, ``text`` and its ISO 639-1 ``language`` (``en``, ``es``, ...)."""

    report_id: str
    text: str
    language: str = "en"


def fallback_value(taxonomy: Taxonomy, label: str) -> str:
    """The value a label gets when nothing could be read: ``not_mentioned`` if allowed, else the last allowed
    value (by convention the 'nothing found' one, e.g. ``absent``)."""
    allowed = taxonomy.allowed(label)
    return "not_mentioned" if "not_mentioned" in allowed else allowed[-1]


def prediction_frame(
    taxonomy: Taxonomy, report_ids: Sequence[str], values: Sequence[Mapping[str, str]],
    confidences: Sequence[Mapping[str, float]], statuses: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The standard ``predict`` table; raises ``ValueError`` for a value the taxonomy does not allow."""
    rows: list[dict[str, Any]] = []
    statuses = statuses or ["ok"] * len(report_ids)
    for report_id, value, confidence, status in zip(report_ids, values, confidences, statuses, strict=True):
        row: dict[str, Any] = {"report_id": report_id, "status": status}
        for name in taxonomy.names:
            v = value.get(name, fallback_value(taxonomy, name))
            if v not in taxonomy.allowed(name):
                raise ValueError(f"label {name!r}: value {v!r} is not one of {taxonomy.allowed(name)}")
            row[name] = v
            row[name + CONFIDENCE_SUFFIX] = float(confidence.get(name, 0.0))
        rows.append(row)
    columns = ["report_id", "status", *(c for n in taxonomy.names for c in (n, n + CONFIDENCE_SUFFIX))]
    return pd.DataFrame(rows, columns=columns)


class ReportBackend(ABC):
    """A report classifier. ``fit`` is optional (zero-shot backends ignore it); ``predict`` is required."""

    name: ClassVar[str]

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy

    def fit(self, reports: Sequence[Report], targets: pd.DataFrame) -> ReportBackend:
        """Learn from labelled reports (``targets``: ``report_id`` + one value column per label)."""
        return self

    @abstractmethod
    def predict(self, reports: Sequence[Report]) -> pd.DataFrame:
        """One row per report, in order (module docstring)."""
