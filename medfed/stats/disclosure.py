"""Disclosure control: which counts and pooled values an output may show.

Every count medfed writes about a site (``sites.csv``/``json``, ``metrics.csv``, report tables, ``rounds.jsonl``,
challenge and text outputs) goes through these rules, with ``k`` the site's ``min_count`` (after the cell
suppression of official statistics: primary plus complementary suppression, as tau-ARGUS and sdcMicro do it):

1. **Primary suppression.** A count ``c`` with ``0 < c < k`` is shown as ``"<k"``. Zero is shown ("no such
   cases" discloses no individual).
2. **Secondary (complementary) suppression.** Counts that add up (a site's total and its train/val/test counts,
   its total and the counts of each label or metadata value, its groups and groups per split, a pooled count and
   the sites' counts) form a *relation* ``total = sum(parts)``. A relation is safe when none of its cells is
   hidden, or when its total and at least one part are hidden, or when a part is never published. So: a total
   beside a hidden part is hidden (else subtraction gives the hidden parts' sum, e.g. ``13 = 8 + <5 + <5``
   gives val + test = 5), and a hidden total beside parts that are all shown makes the smallest shown non-zero
   part hidden (ties: the first in the relation's order). This repeats over all relations until all are safe
   (linked tables: a total hidden for its splits must not come back through its label counts). A cell hidden by
   this rule is shown as ``">=k"`` when it holds at least ``k`` (true, and no more than rule 1 already tells),
   else as ``"<k"``; a total below ``k`` is never shown as ``">=k"``.
3. **Pooled values.** A value pooled over sites (a metric over all sites' cases, a mean over sites) is withheld,
   or computed over the sites whose count is shown and labelled so, whenever a site with a primary-suppressed
   count is in the pool: with the other sites' values and counts it would give the small site's value away.

The functions here are pure: cells in, decisions out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medfed.stats.suppression import suppress_count


@dataclass(frozen=True)
class Relation:
    """``cells[total] == sum(cells[p] for p in parts)``, published side by side."""

    total: str
    parts: tuple[str, ...]


def is_primary(count: int, min_count: int) -> bool:
    """Rule 1: ``0 < count < min_count``."""
    return 0 < count < min_count


def secondary_marker(min_count: int) -> str:
    """How a cell hidden by rule 2 is shown: ``">=k"`` (it holds at least ``k``)."""
    return f">={min_count}"


def hidden_cells(cells: Mapping[str, int | str], relations: Sequence[Relation], min_count: int) -> dict[str, str]:
    """The cells to hide, each with its marker (``"<k"`` for rule 1, ``">=k"`` for rule 2).

    Deterministic: the result depends only on ``cells``, the order of ``relations`` and of their parts.
    Cells named in a relation but absent from ``cells`` are not published: they count as hidden. A cell given as
    text is hidden already (e.g. a marker in a summary written elsewhere) and keeps its text, so the rules can be
    re-applied to counts that are partly suppressed.
    """
    hidden = {name: count for name, count in cells.items() if isinstance(count, str)}
    hidden.update({name: f"<{min_count}" for name, count in cells.items()
                   if not isinstance(count, str) and is_primary(int(count), min_count)})

    changed = True
    while changed:
        changed = False
        for relation in relations:
            if relation.total not in cells:
                continue  # an unpublished total protects nothing and reveals nothing
            total_hidden = relation.total in hidden
            part_hidden = any(p in hidden for p in relation.parts)
            part_absent = any(p not in cells for p in relation.parts)
            if total_hidden == part_hidden or (part_hidden and part_absent):
                continue  # safe: nothing hidden, the total and a part hidden, or an unpublished part in the sum
            if part_hidden:  # a hidden part beside a shown total: the total gives the hidden parts' sum away
                pick = relation.total
            else:  # a hidden total beside shown parts: their sum gives it away (unless a part is unpublished)
                if part_absent:
                    continue
                shown = [p for p in relation.parts if int(cells[p]) > 0]
                if not shown:
                    continue  # a total of 0 is never hidden
                pick = min(shown, key=lambda p: (int(cells[p]), relation.parts.index(p)))
            hidden[pick] = f"<{min_count}" if int(cells[pick]) < min_count else secondary_marker(min_count)
            changed = True
    return hidden


def protect(cells: Mapping[str, int | str], relations: Sequence[Relation], min_count: int) -> dict[str, int | str]:
    """Every cell as it may be shown: its count, or the marker of :func:`hidden_cells`."""
    hidden = hidden_cells(cells, relations, min_count)
    return {name: hidden[name] if name in hidden else int(count) for name, count in cells.items()}


def pool_members(counts: Mapping[str, int], min_counts: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """Rule 3: (sites that may be pooled, sites left out because their count is primary-suppressed)."""
    shown = [s for s, n in counts.items() if not is_primary(int(n), int(min_counts.get(s, 1)))]
    left_out = [s for s in counts if s not in shown]
    return shown, left_out


SPLIT_NAMES = ("train", "val", "test")


def summary_relations(summary: Mapping[str, Any]) -> tuple[dict[str, int | str], list[Relation]]:
    """The counts of a site summary (``Site.summary()``, ``sites.json``) as named cells, and how they add up:
    ``cases = train + val + test``, ``groups = sum of groups per split``, ``cases = sum of the counts of each
    label's and each metadata descriptor's values``."""
    cells: dict[str, int | str] = {"cases": summary["cases"]}
    relations = [Relation("cases", SPLIT_NAMES)]
    cells.update({s: summary["splits"][s] for s in SPLIT_NAMES if s in summary.get("splits", {})})
    if "groups" in summary:
        cells["groups"] = summary["groups"]
        cells.update({f"groups_{s}": v for s, v in (summary.get("groups_per_split") or {}).items()})
        relations.append(Relation("groups", tuple(f"groups_{s}" for s in SPLIT_NAMES)))
    for kind in ("labels", "metadata"):
        for column, counts in (summary.get(kind) or {}).items():
            names = tuple(f"{kind}:{column}={value}" for value in counts)
            cells.update({f"{kind}:{column}={value}": count for value, count in counts.items()})
            relations.append(Relation("cases", names))
    return cells, relations


def protect_summary(summary: Mapping[str, Any], min_count: int) -> dict[str, Any]:
    """A site summary with rules 1 and 2 applied to its counts (idempotent: a protected summary comes back
    unchanged, and one with markers already in it is completed). When every group holds one case
    (``max_cases_per_group == 1``) groups equal cases, so group counts are shown exactly as case counts."""
    cells, relations = summary_relations(summary)
    shown = protect(cells, relations, min_count)
    out = dict(summary)
    out["cases"] = shown["cases"]
    out["splits"] = {s: shown[s] for s in summary.get("splits", {})}
    if "groups" in summary:
        one_each = summary.get("max_cases_per_group") == 1
        out["groups"] = shown["cases"] if one_each else shown["groups"]
        out["groups_per_split"] = {s: shown[s] if one_each else shown[f"groups_{s}"]
                                   for s in (summary.get("groups_per_split") or {})}
    for kind in ("labels", "metadata"):
        if kind in summary:
            out[kind] = {column: {value: shown[f"{kind}:{column}={value}"] for value in counts}
                         for column, counts in (summary.get(kind) or {}).items()}
    return out
