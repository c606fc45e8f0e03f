"""Partitions as shareable CSV files: ``case_id,site`` (medfed) or FeTS's ``Partition_ID,Subject_ID``,
which the BraTS/FeTS site adapter reads as its ``partition_csv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medfed.errors import MedfedError
from medfed.io import atomic_write_text


def write_partition(path: Path | str, assignment: pd.Series, fets: bool = False) -> Path:
    """Write ``case id -> site`` to ``path`` atomically; ``fets=True`` writes ``Partition_ID,Subject_ID``
    with partitions numbered 1..N in site-name order."""
    path = Path(path)
    frame = assignment.rename("site").rename_axis("case_id").reset_index()
    if fets:
        numbers = {site: i + 1 for i, site in enumerate(sorted(frame["site"].unique()))}
        frame = pd.DataFrame({"Partition_ID": frame["site"].map(numbers), "Subject_ID": frame["case_id"]})
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def read_partition(path: Path | str) -> pd.Series:
    """Read a ``case_id,site`` CSV back (errors name the file and what is wrong)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise MedfedError(f"{path}: cannot read partition ({err})") from err
    missing = {"case_id", "site"} - set(frame.columns)
    if missing:
        raise MedfedError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected case_id,site)")
    duplicated = frame.loc[frame["case_id"].duplicated(), "case_id"].tolist()
    if duplicated:
        raise MedfedError(f"{path}: case(s) assigned twice: {', '.join(duplicated[:5])}")
    return frame.set_index("case_id")["site"]
