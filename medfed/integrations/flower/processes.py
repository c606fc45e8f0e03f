"""Process supervision for the local Flower cluster: start a process with its log, find its whole process tree
(children that outlive their parent included, by PID and start time), stop it with SIGTERM then SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in Flower's logs


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, start time) for all processes, via /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        try:
            table[int(entry)] = (int(fields[1]), int(fields[19]))
        except (IndexError, ValueError):
            continue
    return table


def _tree(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of ``root`` and all its descendants."""
    if os.path.isdir("/proc"):
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        out, stack = [], [root]
        while stack:
            pid = stack.pop()
            if pid in table:
                out.append((pid, table[pid][1]))
                stack.extend(children.get(pid, []))
        return out
    try:  # pragma: no cover - non-Linux
        import psutil
    except ImportError:  # pragma: no cover
        return [(root, 0)]
    try:  # pragma: no cover
        proc = psutil.Process(root)
        procs = [proc, *proc.children(recursive=True)]
        return [(p.pid, int(p.create_time() * 1000)) for p in procs]
    except (OSError, psutil.Error):  # pragma: no cover
        return [(root, 0)]


def _same_process(pid: int, start: int) -> bool:
    """Whether ``pid`` is still the process that had start time ``start``."""
    if os.path.isdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            return False
        fields = stat[stat.rfind(")") + 2 :].split()
        return fields[0] != "Z" and int(fields[19]) == start
    try:  # pragma: no cover
        os.kill(pid, 0)
        return True
    except OSError:  # pragma: no cover
        return False


def _signal_tree(snapshot: Sequence[tuple[int, int]], sig: int) -> None:
    pgids: set[int] = set()
    for pid, start in snapshot:
        if not _same_process(pid, start):
            continue
        try:
            pgids.add(os.getpgid(pid))
            os.kill(pid, sig)
        except OSError:
            pass
    for pgid in pgids:
        if pgid in (0, 1, os.getpgrp()):
            continue
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass


class _Managed:
    """One started process, its log file and its (cached) process tree."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_path: Path, log_handle: Any = None):
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._log = log_handle
        self.known: dict[int, int] = {}
        self.remember_tree()

    @classmethod
    def spawn(cls, name: str, cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> _Managed:
        """Start ``cmd`` in its own session (process group), output to ``log_path``."""
        log = open(log_path, "ab")  # noqa: SIM115 - closed in close_log()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own process group, killable as a whole
            )
        except BaseException:
            log.close()
            raise
        return cls(name, proc, log_path, log)

    def remember_tree(self) -> None:
        """Record current descendants (they re-parent to init once we die)."""
        if self.proc.poll() is None:
            for pid, start in _tree(self.proc.pid):
                self.known[pid] = start

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return _ANSI_RE.sub("", self.log_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def snapshot(self) -> list[tuple[int, int]]:
        self.remember_tree()
        return list(self.known.items())

    def any_alive(self) -> bool:
        return self.alive() or any(_same_process(p, s) for p, s in self.known.items())

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _stop_all(procs: Sequence[_Managed], grace: float) -> None:
    """SIGTERM every tree, wait up to ``grace`` s, SIGKILL what is left, reap."""
    for m in procs:
        _signal_tree(m.snapshot(), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(m.any_alive() for m in procs):
        for m in procs:
            m.proc.poll()
        time.sleep(0.1)
    for m in procs:
        if m.any_alive():
            _signal_tree(m.snapshot(), signal.SIGKILL)
    for m in procs:
        try:
            m.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL ignored?
            pass
        m.close_log()
