"""Stopping rules and round records, the same for both engines.

A round's record stops a method when fewer than ``min(min_fit_clients, sites)`` updates arrived, or when a site
failed the same way (same exception type and message, numbers masked) in :data:`REPEATED_FAILURE_ROUNDS`
consecutive rounds it was sampled in: that is a data or code problem, not a passing fault. Records are written
as JSON holds them (:func:`log_record`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfed.errors import MedfedError

#: a site that fails with the same error in this many consecutive rounds it was sampled in stops the run
REPEATED_FAILURE_ROUNDS = 2


class RunStopped(MedfedError):
    """A round ended with too few site updates, or a site failed the same way round after round; the run keeps
    its checkpoints and log up to the last completed round."""


def _same_failure(a: str, b: str) -> bool:
    """Two recorded errors are the same failure: equal once numbers are masked (tensor sizes and batch positions
    in a collate error vary from round to round)."""
    return re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b)


def _rounds_text(rounds: Sequence[int]) -> str:
    """``"rounds 1 and 2"``, ``"rounds 3, 4 and 5"``."""
    shown = [str(r) for r in rounds]
    return f"rounds {', '.join(shown[:-1])} and {shown[-1]}" if len(shown) > 1 else f"round {shown[0]}"


class FailureStreaks:
    """Per site, the consecutive rounds it was sampled in and failed with the same error (:func:`_same_failure`);
    a completed round ends a streak, a round the site was not sampled in (or a skipped round) leaves it alone.
    Rebuilt from the round log on resume, so a resumed run stops where an uninterrupted one would."""

    def __init__(self, log: Sequence[Mapping[str, Any]] = ()) -> None:
        self.streaks: dict[str, tuple[list[int], str]] = {}
        for record in log:
            self.update(record)

    def update(self, record: Mapping[str, Any]) -> None:
        """Account for one round record."""
        if record.get("skipped"):
            return
        failed = {f["site"]: f["error"] for f in record.get("failed", [])}
        for site in record.get("sampled", []):
            if site not in failed:
                self.streaks.pop(site, None)
                continue
            rounds, previous = self.streaks.get(site, ([], ""))
            same = bool(rounds) and _same_failure(previous, failed[site])
            self.streaks[site] = ([*rounds, record["round"]] if same else [record["round"]], failed[site])

    def repeated(self) -> tuple[str, list[int], str] | None:
        """``(site, rounds, error)`` of the first site failing the same way :data:`REPEATED_FAILURE_ROUNDS` times."""
        for site, (rounds, error) in self.streaks.items():
            if len(rounds) >= REPEATED_FAILURE_ROUNDS:
                return site, rounds, error
        return None


def stop_message(name: str, record: Mapping[str, Any], needed: int, streaks: FailureStreaks, log: Path) -> str | None:
    """Why method ``name`` stops after the round ``record`` (after ``streaks.update(record)``), in one line, or
    ``None``: fewer than ``needed`` updates (the first failure shown), or a site that failed the same way in
    :data:`REPEATED_FAILURE_ROUNDS` consecutive sampled rounds. Both engines stop with it (:class:`RunStopped`)."""
    rnd, completed, failed = record["round"], len(record["completed"]), record["failed"]
    kept = f"keeping rounds 1-{rnd - 1}" if rnd > 2 else "keeping round 1" if rnd == 2 else "no round kept"
    stopped = f"stopped, {kept} (log {log})"
    if completed < needed:
        detail = f"; site {failed[0]['site']} failed: {failed[0]['error']}" if failed else ""
        if len(failed) > 1:
            detail += f" (and {len(failed) - 1} more site(s))"
        return (f"{name}, round {rnd}: only {completed} of the {len(record['sampled'])} sampled site(s) returned "
                f"an update ({needed} needed); {stopped}{detail}")
    repeated = streaks.repeated()
    if repeated is not None:
        site, rounds, error = repeated
        return (f"{name}, round {rnd}: site {site} failed the same way in {_rounds_text(rounds)} ({error}); "
                f"{stopped}; run `medfed validate` on its federation")
    return None


def log_record(value: Any) -> Any:
    """A round-log record as JSON can hold it: keys as text, numpy numbers as Python ones, floats rounded to
    6 decimals, non-finite floats as ``None`` (the in-process and Flower engines write the same records)."""
    if isinstance(value, dict):
        return {str(k): log_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [log_record(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value
