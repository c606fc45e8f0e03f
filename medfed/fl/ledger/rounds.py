"""One method's rounds on disk, for both engines: its checkpoint, its round log, resume and the stopping rules.

Layout of ``runs/<method>/``::

    checkpoints/last.pt   weights, strategy state and the round log after the last finished round (atomic)
    rounds.jsonl          one JSON record per round: sampled/completed/failed sites, losses, eval, timing

Contract, whichever engine drives the rounds (in-process :class:`medfed.fl.runner.MethodRunner`, or the Flower
ServerApp :mod:`medfed.integrations.flower.server`):

1. :meth:`MethodLedger.open` starts a method: from scratch (the method's folder emptied) or, with ``resume``,
   from ``checkpoints/last.pt`` when it exists (a checkpoint of another method or site list is refused);
2. each round's record is checked by :meth:`MethodLedger.stop_if` after aggregation (a stopping round is logged
   with ``status: stopped`` and :class:`RunStopped` raised, keeping every earlier round);
3. :meth:`MethodLedger.commit` finishes a round (a skipped one too): the record, JSON-ready and under disclosure
   control, is appended to the log; the checkpoint is replaced atomically, then the line appended to
   ``rounds.jsonl``. A kill between the two leaves a checkpoint one round ahead of the log, which a resume
   rewrites from the checkpoint's own log.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfed.errors import MedfedError
from medfed.fl.checkpoint import load_checkpoint, save_checkpoint
from medfed.fl.ledger.stopping import FailureStreaks, RunStopped, log_record, stop_message
from medfed.fl.log_disclosure import disclose_round
from medfed.io import atomic_write_text

CHECKPOINT = "checkpoints/last.pt"
ROUNDS_LOG = "rounds.jsonl"


@dataclass
class MethodResult:
    """Final models of one method (flat weights by model name) and what happened on the way."""

    name: str
    models: dict[str, np.ndarray]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [dict(f, round=r["round"]) for r in self.rounds for f in r.get("failed", [])]


@dataclass
class Opened:
    """Where a method starts: the global weights and strategy state to train from, and the first round."""

    global_weights: np.ndarray
    state: dict[str, Any]
    start: int

    @property
    def resumed_from(self) -> int:
        """The last round already done (0 for a fresh start)."""
        return self.start - 1


class MethodLedger:
    """The checkpoint and round log of method ``method`` trained by ``clients`` in ``run_dir``.

    ``shown`` gives what ``sites.csv`` shows of each site's splits (:func:`medfed.fl.log_disclosure.shown_splits`);
    the log shows no more. It is called for each record, so an engine whose sites introduce themselves during the
    run (Flower) always discloses by what it knows then.
    """

    def __init__(self, run_dir: Path, method: str, clients: Sequence[str],
                 shown: Callable[[], Mapping[str, Any]]) -> None:
        self.run_dir = Path(run_dir)
        self.method = method
        self.clients = list(clients)
        self._shown = shown
        self.log: list[dict[str, Any]] = []
        self.streaks = FailureStreaks()

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def rounds_log(self) -> Path:
        return self.run_dir / ROUNDS_LOG

    def open(self, global_weights: np.ndarray, state: dict[str, Any], resume: bool) -> Opened:
        """Start fresh from ``(global_weights, state)``, or continue from the checkpoint when ``resume`` and one
        exists; (re)writes ``rounds.jsonl`` to the rounds kept."""
        start = 1
        self.log = []
        if resume and self.checkpoint.is_file():
            saved = load_checkpoint(self.checkpoint)
            if saved.get("method") != self.method or saved.get("clients") != self.clients:
                raise MedfedError(f"{self.checkpoint}: checkpoint belongs to another run (method or sites differ: "
                                  f"{saved.get('method')}, {saved.get('clients')})")
            global_weights, state, self.log = saved["global"], saved["state"], saved["log"]
            start = int(saved["round"]) + 1
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.streaks = FailureStreaks(self.log)  # a resumed run stops where an uninterrupted one would
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.rounds_log, "".join(json.dumps(r) + "\n" for r in self.log))
        return Opened(global_weights, state, start)

    def logged(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A round record as the log and the checkpoint keep it: JSON-ready, counts under disclosure control."""
        return disclose_round(log_record(dict(record)), self._shown())

    def stop_if(self, record: dict[str, Any], needed: int) -> None:
        """Account for the aggregated round ``record``; when it stops the method (:func:`stop_message`), log it
        with ``status: stopped`` and raise :class:`RunStopped`."""
        self.streaks.update(record)
        stop = stop_message(self.method, record, needed, self.streaks, self.rounds_log)
        if stop is not None:
            record["status"] = "stopped"
            self._append(record)
            raise RunStopped(stop)

    def commit(self, record: dict[str, Any], global_weights: np.ndarray, state: dict[str, Any],
               began: float) -> dict[str, Any]:
        """Finish round ``record`` (begun at ``time.perf_counter()`` value ``began``): log it, checkpoint the
        training state atomically, append it to ``rounds.jsonl``; returns the logged record."""
        record["seconds"] = round(time.perf_counter() - began, 3)
        logged = self.logged(record)
        self.log.append(logged)
        save_checkpoint(self.checkpoint, {"method": self.method, "clients": self.clients, "round": logged["round"],
                                          "global": global_weights, "state": state, "log": self.log})
        self._append(logged)
        return logged

    def result(self, models: dict[str, np.ndarray], resumed_from: int) -> MethodResult:
        return MethodResult(self.method, models, self.log, resumed_from)

    def _append(self, record: Mapping[str, Any]) -> None:
        with self.rounds_log.open("a") as handle:
            handle.write(json.dumps(self.logged(record)) + "\n")
