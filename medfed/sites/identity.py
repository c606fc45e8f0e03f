"""De-identification helpers used by every site adapter.

Case ids leaving an adapter are keyed hashes of the source's own id, and exact ages are binned:
no name, patient id, birth date, accession number or institution name ever enters a case table.
"""

from __future__ import annotations

import hashlib
import math

#: Age-group bins (upper bounds exclusive); paediatric is everything below 18 years.
AGE_BINS: tuple[tuple[float, str], ...] = (
    (2, "0-1"),
    (12, "2-11"),
    (18, "12-17"),
    (40, "18-39"),
    (65, "40-64"),
    (math.inf, "65+"),
)


def hash_case_id(source_id: str, site: str, salt: str = "") -> str:
    """``sha256(salt | site | source_id)`` truncated to 16 hex digits.

    Deterministic, so splits and results are reproducible; a site keeps ``salt`` private when its
    source ids are guessable (e.g. sequential accession numbers).
    """
    digest = hashlib.sha256(f"{salt}|{site}|{source_id}".encode()).hexdigest()
    return digest[:16]


def age_group(age_years: float | None) -> str:
    """Bin an age in years into :data:`AGE_BINS`; ``"unknown"`` for missing or negative ages."""
    if age_years is None or (isinstance(age_years, float) and math.isnan(age_years)) or age_years < 0:
        return "unknown"
    for upper, label in AGE_BINS:
        if age_years < upper:
            return label
    return "unknown"  # pragma: no cover - inf bound always matches


def population(age_group_label: str) -> str:
    """``"pediatric"`` below 18 years, ``"adult"`` from 18, ``"unknown"`` otherwise."""
    if age_group_label in ("0-1", "2-11", "12-17"):
        return "pediatric"
    if age_group_label == "unknown":
        return "unknown"
    return "adult"


def parse_dicom_age(value: str | None) -> float | None:
    """DICOM Age String (``nnnD|W|M|Y``, e.g. ``"045Y"``) to years; ``None`` when absent or malformed."""
    if not value:
        return None
    value = str(value).strip().upper()
    units = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}
    if len(value) < 2 or value[-1] not in units or not value[:-1].isdigit():
        return None
    return int(value[:-1]) / units[value[-1]]
