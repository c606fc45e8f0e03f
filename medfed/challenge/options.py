"""What scoring is asked to do (:class:`ScoringOptions`) and what it returns (:class:`ScoringResult`).

Shared by :mod:`medfed.challenge.scoring`, which scores, and :mod:`medfed.challenge.leaderboard`, which draws
the page; neither imports the other's module for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medfed.challenge.case_metrics import EmptyRules
from medfed.challenge.ranking import Ranking


@dataclass
class ScoringOptions:
    """How to score and rank. ``missing_hd95`` is the HD95 a missing case counts as in the ranking."""

    split: str = "test"
    ranking: Literal["fets2", "fets1", "aggregate"] = "fets2"
    rules: EmptyRules = field(default_factory=EmptyRules)
    missing_dice: float = 0.0
    missing_hd95: float = 1000.0
    n_resamples: int = 1000
    seed: int = 0
    alpha: float = 0.05
    convergence: dict[str, float] | None = None

    def missing(self, metrics: Sequence[str]) -> dict[str, float]:
        """What a missing case counts as: Dice ``missing_dice``, HD95 ``missing_hd95``, Brier 1 (its maximum)."""
        fixed = {"Dice": self.missing_dice, "HD95": self.missing_hd95, "Brier": 1.0}
        return {name: fixed[name.split("_", 1)[0]] for name in metrics}


@dataclass
class ScoringResult:
    out: Path
    records: pd.DataFrame
    ranking: Ranking
    stability: pd.DataFrame
    significance: pd.DataFrame
    problems: pd.DataFrame
    summary: dict[str, Any]
