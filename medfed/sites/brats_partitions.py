"""FeTS partition CSVs (``Partition_ID,Subject_ID``): which subject folders form which site of a BraTS source.

Every defect of a CSV against the subject folders is a :class:`~medfed.errors.Problem`, never a traceback;
see :func:`read_partitions`. Used by :mod:`medfed.sites.brats`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from medfed.errors import Problem, describe_path

PARTITION_COLUMNS: tuple[str, str] = ("Partition_ID", "Subject_ID")


def partition_order(pid: str) -> tuple[int, int | str]:
    """Numeric partition ids in numeric order, then the others alphabetically."""
    return (0, int(pid)) if pid.isdigit() else (1, pid)


def read_partitions(
    csv_path: Path, folders: Sequence[str], root: Path, source_name: str, site_of: Callable[[str], str]
) -> tuple[dict[str, list[str]], list[Problem]]:
    """Partition id -> subjects (that have a folder), plus every defect of the CSV against the folders.

    Reported: unreadable CSV, missing columns (naming those found), rows with a blank cell,
    subjects listed more than once, subjects in two partitions (excluded from all), subjects
    without a folder (excluded) and folders in no partition (excluded). A partition left with no
    subject still becomes a site, which then reports itself as empty.
    """
    shown = describe_path(csv_path, root)
    problems: list[Problem] = []

    def problem(reason: str, case: str | None = None, site: str = source_name) -> None:
        problems.append(Problem(site=site, reason=reason, case=case, file=shown))

    if not csv_path.is_file():
        problem("partition CSV not found; no site can be formed from this source")
        return {}, problems
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        problem(f"unreadable partition CSV: {type(err).__name__}: {err}")
        return {}, problems
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in PARTITION_COLUMNS if c not in table.columns]
    if missing:
        problem(f"partition CSV lacks column(s) {', '.join(missing)}; columns found: "
                f"{', '.join(map(str, table.columns)) or '(none)'}")
        return {}, problems
    listed: dict[str, list[str]] = {}  # subject -> partitions, one entry per row
    for line, (pid, subject) in enumerate(zip(table[PARTITION_COLUMNS[0]], table[PARTITION_COLUMNS[1]]), start=2):
        pid, subject = pid.strip(), subject.strip()
        if not pid or not subject:
            problem(f"line {line}: empty Partition_ID or Subject_ID; row ignored", subject or None)
            continue
        listed.setdefault(subject, []).append(pid)
    partitions: dict[str, list[str]] = {pid: [] for pid in sorted({p for ps in listed.values() for p in ps},
                                                                   key=partition_order)}
    present = set(folders)
    for subject, pids in listed.items():
        distinct = sorted(set(pids), key=partition_order)
        if len(distinct) > 1:
            problem(f"subject is listed in partitions {', '.join(distinct)}; excluded from all", subject)
            continue
        pid = distinct[0]
        if len(pids) > 1:
            problem(f"subject is listed {len(pids)} times in partition {pid}; counted once", subject, site_of(pid))
        if subject not in present:
            problem("subject is listed in the partition CSV but has no folder under root; excluded", subject,
                    site_of(pid))
            continue
        partitions[pid].append(subject)
    for folder in folders:
        if folder not in listed:
            problems.append(Problem(site=source_name, case=folder, file=folder, reason=(
                f"subject folder is in no partition of {shown}; excluded")))
    return {pid: sorted(subjects) for pid, subjects in partitions.items()}, problems


def find_partition_csv(value: str, root: Path, config_dir: Path) -> Path:
    """The partition CSV: an absolute path as is; a relative one below ``root`` if it exists there, else
    relative to the config folder (the path below ``root`` when neither exists, for the message)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    for base in (root, config_dir):
        if (base / path).is_file():
            return (base / path).resolve()
    return (root / path).resolve()


def whole_groups(
    partitions: dict[str, list[str]], problems: list[Problem], group_of: Callable[[str], str],
    site_of: Callable[[str], str],
) -> dict[str, list[str]]:
    """Subjects of one group (``group_of``: timepoints of one patient) in different partitions would put one
    patient at two sites; each such subject is an error (appended to ``problems``) and is excluded from every
    partition."""
    where: dict[str, set[str]] = {}
    for pid, members in partitions.items():
        for subject in members:
            where.setdefault(group_of(subject), set()).add(pid)
    spread = {group for group, pids in where.items() if len(pids) > 1}
    kept: dict[str, list[str]] = {}
    for pid, members in partitions.items():
        kept[pid] = []
        for subject in members:
            group = group_of(subject)
            if group in spread:
                others = ", ".join(sorted(where[group] - {pid}))
                problems.append(Problem(site=site_of(pid), case=subject, reason=(
                    f"subject's group (group_pattern) also has subjects in partition(s) {others}: one patient may not "
                    "span two sites; excluded from all")))
            else:
                kept[pid].append(subject)
    return kept
