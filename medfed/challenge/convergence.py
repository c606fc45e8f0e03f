"""FeTS task-1 convergence score: the normalised area under the best-validation-Dice-over-time curve.

FeTS 2021/2022 task 1 (Pati et al. 2021, arXiv:2105.05874) ran every aggregation method under one simulated
time budget, with per-institution compute and network speeds, so a method that needs many slow rounds
scores lower than one that reaches the same Dice sooner. Here:

* round time ``τ_k = max_{s ∈ S_k} (download_s + validation_s + training_s + upload_s)`` over the sites
  ``S_k`` that completed round ``k`` (the slowest site holds the round), with ``download_s = 8 B / 10⁶ d_s``,
  ``upload_s = 8 B / 10⁶ u_s`` for a model of ``B`` bytes (float32) and link speeds ``d_s, u_s`` in Mbit/s,
  ``validation_s = n^val_s / v_s`` and ``training_s = e_s / r_s`` (examples validated / trained in the round over
  the site's speeds in examples per second; ``timing: measured`` uses the measured training seconds divided by
  the site's ``compute_factor`` instead);
* ``t_k = Σ_{j≤k} τ_j``; only rounds with ``t_k ≤ T_max`` count (``T_max`` = one simulated week, 604,800 s);
* ``best_k = max_{j≤k} Dice_j`` (validation Dice, mean over ET/TC/WT, of the federation's validation cases);
* ``score = (Σ_{k≤R} best_k τ_k + (T_max - t_R) best_R) / T_max`` for the last counted round ``R``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medfed.errors import MedfedError
from medfed.fl.checkpoint import load_checkpoint

WEEK_SECONDS = 604_800.0


class SiteProfile(BaseModel):
    """Simulated speeds of one site (FeTS-style): examples per second and link speeds in Mbit/s."""

    model_config = ConfigDict(extra="forbid")
    training_speed: float = Field(2.0, gt=0, description="training examples per second (modelled timing)")
    validation_speed: float = Field(8.0, gt=0, description="validation examples per second")
    download_mbps: float = Field(100.0, gt=0, description="server -> site link, Mbit/s")
    upload_mbps: float = Field(20.0, gt=0, description="site -> server link, Mbit/s")
    compute_factor: float = Field(1.0, gt=0, description="measured timing: measured seconds are divided by this")


class TimingProfiles(BaseModel):
    """``default`` profile, per-site overrides, the timing mode and the budget ``t_max`` (seconds)."""

    model_config = ConfigDict(extra="forbid")
    timing: Literal["modelled", "measured"] = "modelled"
    t_max: float = Field(WEEK_SECONDS, gt=0)
    default: SiteProfile = Field(default_factory=SiteProfile)
    sites: dict[str, SiteProfile] = Field(default_factory=dict)

    def profile(self, site: str) -> SiteProfile:
        return self.sites.get(site, self.default)


@dataclass(frozen=True)
class SiteWork:
    """What one site did in one round: measured training seconds, examples trained and validated."""

    seconds: float
    examples: int
    val_examples: int


def site_round_seconds(work: SiteWork, profile: SiteProfile, model_bytes: int, timing: str = "modelled") -> float:
    """``download + validation + training + upload`` seconds of one site in one round (module docstring)."""
    megabits = 8.0 * model_bytes / 1e6
    measured = timing == "measured" or work.examples < 0  # examples -1: suppressed in the log (_site_work)
    training = work.seconds / profile.compute_factor if measured else work.examples / profile.training_speed
    return (megabits / profile.download_mbps + work.val_examples / profile.validation_speed + training
            + megabits / profile.upload_mbps)


def round_seconds(
    works: Sequence[Mapping[str, SiteWork]], profiles: TimingProfiles, model_bytes: int
) -> np.ndarray:
    """``τ_k``: the slowest participating site's time in each round (0 for a round no site completed)."""
    return np.array([
        max((site_round_seconds(w, profiles.profile(site), model_bytes, profiles.timing) for site, w in work.items()),
            default=0.0)
        for work in works
    ])


def convergence_score(dice: Sequence[float], round_times: Sequence[float], t_max: float = WEEK_SECONDS) -> float:
    """Normalised area under ``best_k`` over simulated time (formula in the module docstring).

    ``dice[k]`` is the validation Dice after round ``k+1`` (NaN where the round was not evaluated: the best
    so far carries over; before any evaluation the best is 0).
    """
    dice = np.asarray(dice, dtype=np.float64)
    times = np.asarray(round_times, dtype=np.float64)
    if dice.shape != times.shape:
        raise ValueError(f"{dice.size} Dice values for {times.size} round times")
    if (times < 0).any() or t_max <= 0:
        raise ValueError("round times must be non-negative and t_max positive")
    best = np.maximum.accumulate(np.nan_to_num(dice, nan=0.0)) if dice.size else dice
    counted = np.cumsum(times) <= t_max
    best, times = best[counted], times[counted]
    if best.size == 0:
        return 0.0
    return float((np.dot(best, times) + (t_max - times.sum()) * best[-1]) / t_max)


@dataclass
class RunConvergence:
    """A run's convergence score and the curve behind it."""

    method: str
    score: float
    round_times: list[float]
    dice: list[float]
    rounds_counted: int
    t_max: float
    notes: list[str] = field(default_factory=list)


def validation_dice(record: Mapping[str, Any], metric: str = "dice_mean") -> float:
    """The federation's validation Dice after one round: the pooled value the runner logs (NaN if none)."""
    value = ((record.get("eval") or {}).get("pooled") or {}).get("val", {}).get(metric)
    return float(value) if value is not None else float("nan")


def run_convergence(run_dir: Path, profiles: TimingProfiles | None = None, model_bytes: int | None = None,
                    metric: str = "dice_mean") -> RunConvergence:
    """Convergence score of one method's run directory (``rounds.jsonl`` and, for the model size,
    ``checkpoints/last.pt``). Rounds from before per-site work was logged count as zero time."""
    profiles = profiles or TimingProfiles()
    log_path = Path(run_dir) / "rounds.jsonl"
    if not log_path.is_file():
        raise MedfedError(f"{log_path}: no rounds log; is {run_dir} a medfed run directory (reports/<name>/runs/<method>)?")
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    notes = []
    if model_bytes is None:
        model_bytes = checkpoint_model_bytes(Path(run_dir))
    works = []
    for record in records:
        work = record.get("work") or {}
        if record.get("completed") and not work:
            notes.append(f"round {record['round']}: no per-site work logged (older run); counted as 0 s")
        works.append({site: _site_work(w, site, record["round"], notes) for site, w in work.items()})
    times = round_seconds(works, profiles, model_bytes)
    dice = [validation_dice(r, metric) for r in records]
    if all(np.isnan(dice)):
        notes.append("no pooled validation Dice in the log (set training.eval_every: 1); score is 0")
    counted = int((np.cumsum(times) <= profiles.t_max).sum())
    return RunConvergence(Path(run_dir).name, convergence_score(dice, times, profiles.t_max), times.tolist(), dice,
                          counted, profiles.t_max, notes)


def _logged_count(value: Any) -> tuple[int, bool]:
    """A count as the round log shows it (:mod:`medfed.fl.log_disclosure`): a number, ``"<k"`` (entered as its
    upper bound ``k - 1``) or ``">=k"`` (entered as its lower bound ``k``); the flag says it was suppressed."""
    if isinstance(value, str):
        bound = int(value.lstrip("<>="))
        return (bound - 1 if value.startswith("<") else bound), True
    return int(value or 0), False


def _site_work(entry: Mapping[str, Any], site: str, rnd: int, notes: list[str]) -> SiteWork:
    """One site's logged work; suppressed counts enter by their bounds, and a suppressed training count (logged
    as ``None``) by the site's measured seconds (timing ``measured``), each with a note."""
    val, val_hidden = _logged_count(entry.get("val_examples", 0))
    if val_hidden:
        notes.append(f"round {rnd}, {site}: validation count suppressed in the log; entered as {val} (its bound)")
    examples = entry.get("examples")
    if examples is None:
        notes.append(f"round {rnd}, {site}: training count suppressed in the log; measured seconds used instead")
        return SiteWork(float(entry["seconds"]), -1, val)
    return SiteWork(float(entry["seconds"]), _logged_count(examples)[0], val)


def checkpoint_model_bytes(run_dir: Path) -> int:
    """Bytes of the global model sent each way, as float32: 4 x its number of entries."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        raise MedfedError(f"{path}: no checkpoint to size the model from; pass model_bytes")
    return 4 * int(np.asarray(load_checkpoint(path)["global"]).size)
