"""Disclosure control of the round log (``rounds.jsonl``, and the log a checkpoint keeps).

A round record carries counts per site: ``num_examples`` (the training cases a site reported), the same in
``aggregation.num_examples``, and ``work.examples`` / ``work.val_examples`` (training cases seen, validation
cases). The training count equals the site's train split and the validation count its val split, which
``sites.csv`` shows under the rules of :mod:`medfed.stats.disclosure`; the log must not show more. So, per site,
with ``shown`` its published split counts (``Site.summary()["splits"]``):

* a count whose split is shown as a number is kept, unless it is itself below ``min_count`` (then ``"<k"``);
* a count whose split is hidden is written as that split's marker (``"<k"`` or ``">=k"``), and
  ``work.examples`` (a multiple of the train count) as ``None``.

Pooled per-round metrics are handled where they are computed (:func:`medfed.fl.evaluation.pooled_round_metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medfed.stats import suppress_count


@dataclass(frozen=True)
class ShownSplits:
    """What ``sites.csv`` shows of one site: its train and val counts (numbers or markers) and ``min_count``."""

    train: int | str
    val: int | str
    min_count: int

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], min_count: int) -> ShownSplits:
        splits = summary.get("splits") or {}
        return cls(splits.get("train", f"<{min_count}"), splits.get("val", f"<{min_count}"), int(min_count))


def _count(value: Any, split_shown: int | str, min_count: int) -> Any:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    if isinstance(split_shown, str):
        return split_shown
    return suppress_count(int(value), min_count)


def disclose_round(record: dict[str, Any], shown: Mapping[str, ShownSplits]) -> dict[str, Any]:
    """A copy of a round record with every per-site count under the rules of the module docstring. Sites not
    in ``shown`` keep primary suppression at ``min_count`` 5 (the config default)."""
    out = dict(record)

    def rule(site: str) -> ShownSplits:
        return shown.get(site) or ShownSplits(0, 0, 5)

    if isinstance(out.get("num_examples"), dict):
        out["num_examples"] = {site: _count(n, rule(site).train, rule(site).min_count)
                               for site, n in out["num_examples"].items()}
    aggregation = out.get("aggregation")
    if isinstance(aggregation, dict) and isinstance(aggregation.get("num_examples"), dict):
        out["aggregation"] = {**aggregation, "num_examples": {
            site: _count(n, rule(site).train, rule(site).min_count) for site, n in aggregation["num_examples"].items()}}
    if isinstance(out.get("work"), dict):
        work = {}
        for site, entry in out["work"].items():
            site_rule = rule(site)
            entry = dict(entry)
            if "examples" in entry:
                entry["examples"] = None if isinstance(site_rule.train, str) else entry["examples"]
            if "val_examples" in entry:
                entry["val_examples"] = _count(entry["val_examples"], site_rule.val, site_rule.min_count)
            work[site] = entry
        out["work"] = work
    return out


def shown_splits(sites: Mapping[str, tuple[Mapping[str, Any], int]], pooled_name: str) -> dict[str, ShownSplits]:
    """:class:`ShownSplits` of every site (``name -> (summary, min_count)``), plus the pooled client of a
    centralised run: the sum of the sites' counts when all are shown, else ``">=k"`` (rule 2: a total beside a
    hidden part is hidden too)."""
    out = {name: ShownSplits.from_summary(summary, min_count) for name, (summary, min_count) in sites.items()}
    k = max((s.min_count for s in out.values()), default=5)

    def pooled(values: list[int | str]) -> int | str:
        return sum(int(v) for v in values) if all(isinstance(v, int) for v in values) else f">={k}"

    out[pooled_name] = ShownSplits(pooled([s.train for s in out.values()]), pooled([s.val for s in out.values()]), k)
    return out
