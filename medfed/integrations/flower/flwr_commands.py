"""Talking to a running SuperLink through Flower's own ``flwr`` command: start a run of an app, follow it, list
its nodes, register SuperNode keys. Mixed into :class:`~medfed.integrations.flower.local_cluster.LocalCluster`,
which provides the connection (``connection_name``, ``cli_home``, ``process_env``) and the folders."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.integrations.flower.environment import (
    FLWR_BIN,
    _format_kv,
    _write_toml,
)
from medfed.integrations.flower.processes import (
    _ANSI_RE,
    _Managed,
    _stop_all,
)

_RUN_ID_RE = re.compile(r"Successfully started run (\d+)")


class FlowerClusterError(RuntimeError):
    """A LocalCluster process failed to start, crashed, or a run failed."""


@dataclass
class RunResult:
    """Outcome of :meth:`LocalCluster.run_app`."""

    run_id: int
    status: str  # e.g. "finished:completed", "finished:failed"
    status_details: str
    seconds: float
    log_path: Path
    output: str  # what `flwr run --stream` printed (run logs included)

    @property
    def ok(self) -> bool:
        """Whether the run finished and completed."""
        return self.status == "finished:completed"


class FlwrCommands:
    """``flwr`` subcommands against the cluster's SuperLink (the attributes named in the module docstring)."""

    def flwr(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``flwr ARGS`` against this cluster (its own FLWR_HOME)."""
        if self.workdir is None or self._closed:
            raise FlowerClusterError("cluster not running")
        proc = subprocess.run(
            [self._bins[FLWR_BIN], *args],
            check=False,
            capture_output=True,
            text=True,
            env=self.process_env(self.cli_home),
            cwd=self.workdir,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if check and proc.returncode != 0:
            raise FlowerClusterError(
                f"`flwr {' '.join(args)}` failed ({proc.returncode}):\n"
                f"{_ANSI_RE.sub('', proc.stdout)}\n{_ANSI_RE.sub('', proc.stderr)}"
            )
        return proc

    def register_node_key(self, public_key: Path, name: str, timeout: float = 30.0) -> None:
        """``flwr supernode register PUBLIC_KEY CONNECTION --name NAME``: a SuperNode holding the matching
        private key may then connect (``tls=True`` clusters run with ``--enable-supernode-auth``)."""
        self.flwr("supernode", "register", str(public_key), self.connection_name, "--name", name, timeout=timeout)

    def _flwr_json(self, *args: str, timeout: float = 30.0) -> dict[str, Any]:
        proc = self.flwr(*args, "--format", "json", timeout=timeout)
        text = _ANSI_RE.sub("", proc.stdout)
        start = text.find("{")
        try:
            return json.loads(text[start:]) if start >= 0 else {}
        except json.JSONDecodeError as err:
            raise FlowerClusterError(f"`flwr {' '.join(args)}` printed no JSON:\n{text}") from err

    def list_nodes(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """``flwr supernode ls --format json`` -> list of node dicts."""
        return list(self._flwr_json("supernode", "ls", self.connection_name, timeout=timeout).get("nodes", []))

    def run_info(self, run_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """``flwr ls --run-id RUN_ID --format json`` -> the run's dict."""
        runs = self._flwr_json("ls", self.connection_name, "--run-id", str(run_id), timeout=timeout).get("runs", [])
        return dict(runs[0]) if runs else {}

    def run_app(
        self,
        app_dir: str | os.PathLike[str],
        run_config: Mapping[str, Any] | None = None,
        timeout: float = 120.0,
        *,
        federation_config: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> RunResult:
        """``flwr run APP_DIR CONNECTION --run-config FILE --stream``, bounded.

        Waits until the run is finished (``timeout`` seconds for the whole
        thing); on timeout the run is stopped with ``flwr stop`` and
        ``TimeoutError`` is raised. With ``check`` a run that does not finish
        as ``finished:completed`` raises :class:`FlowerClusterError`.
        """
        if self.workdir is None or self.log_dir is None or self._closed:
            raise FlowerClusterError("cluster not running")
        app_dir = Path(app_dir).resolve()
        if not (app_dir / "pyproject.toml").is_file():
            raise FileNotFoundError(f"no pyproject.toml in {app_dir}")
        stamp = f"{time.time_ns()}"
        args = [self._bins[FLWR_BIN], "run", str(app_dir), self.connection_name, "--stream"]
        if run_config:
            args += ["--run-config", str(_write_toml(self.workdir / f"run-config-{stamp}.toml", run_config))]
        if federation_config:
            args += ["--federation-config", _format_kv(federation_config)]

        started = time.monotonic()
        deadline = started + float(timeout)
        out_path = self.log_dir / f"flwr-run-{stamp}.log"
        timed_out = False
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.process_env(self.cli_home),
                cwd=self.workdir,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                if proc.poll() is None:
                    _stop_all([_Managed("flwr-run", proc, out_path)], grace=3.0)
        output = _ANSI_RE.sub("", out_path.read_text(encoding="utf-8", errors="replace"))
        match = _RUN_ID_RE.search(output)
        if match is None:
            raise FlowerClusterError(f"`flwr run` did not start a run (code {proc.returncode}):\n{output}")
        run_id = int(match.group(1))

        info = self.run_info(run_id)
        # The stream may end before the status flips; poll, bounded by the deadline.
        while not timed_out and not str(info.get("status", "")).startswith("finished"):
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.5)
            info = self.run_info(run_id)
        if timed_out:
            self.flwr("stop", str(run_id), self.connection_name, timeout=30, check=False)
            raise TimeoutError(
                f"run {run_id} not finished after {timeout:.0f}s (stopped); output in {out_path}:\n"
                + "\n".join(output.splitlines()[-30:])
            )
        result = RunResult(
            run_id=run_id,
            status=str(info.get("status", "")),
            status_details=str(info.get("status-details", "")),
            seconds=time.monotonic() - started,
            log_path=out_path,
            output=output,
        )
        if check and not result.ok:
            raise FlowerClusterError(
                f"run {run_id} ended as {result.status} ({result.status_details}); output:\n{output}"
            )
        return result
