"""Small-count suppression for anything a report or log shows about a site."""

from __future__ import annotations


def suppress_count(count: int, min_count: int = 5) -> int | str:
    """``count`` if it is 0 or at least ``min_count``, else the string ``"<min_count"``.

    Zero is shown: "no such cases" discloses nothing about an individual.
    """
    if count == 0 or count >= min_count:
        return int(count)
    return f"<{min_count}"
