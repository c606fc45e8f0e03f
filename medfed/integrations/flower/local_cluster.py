"""Run a real Flower deployment (SuperLink + N SuperNodes) on this machine.

``LocalCluster`` starts ``flower-superlink`` and ``flower-supernode`` as
subprocesses bound to 127.0.0.1 only, waits until every SuperNode is connected,
runs Flower Apps against it with ``flwr run`` and always tears every process
down again (process groups *and* the detached SuperExec / ServerApp / ClientApp
children they spawn). It is written against the flwr 1.42 CLI::

    with LocalCluster(node_configs=[{"site-index": i} for i in range(3)],
                      log_dir=tmp / "flower-logs") as cluster:
        result = cluster.run_app("tests/flower_echo_app",
                                 {"output-path": str(tmp / "out.json")},
                                 timeout=120)
        assert result.ok, result.output
        cluster.kill_node(1)          # simulate a hospital dropping out

What flwr 1.42 looks like (read from ``--help`` and the installed sources)
-------------------------------------------------------------------------
* The SuperLink serves the Fleet API (SuperNodes), the Control API (the ``flwr``
  CLI) and the Runtime API (its SuperExec/ServerApp) over **one HTTP port**:
  ``flower-superlink --host 127.0.0.1 --port PORT`` (default 8000). The old
  ``--fleet-api-address`` / ``--control-api-address`` / ``--serverappio-api-address``
  flags are deprecated or rejected. ``GET http://HOST:PORT/health`` answers 200
  once it is up. It launches ``flower-superexec`` in its *own* session, which in
  turn launches one ``flwr-serverapp`` process per run.
* A SuperNode connects with ``--superlink HOST:PORT`` (that same port) and serves
  its own Runtime API (for its SuperExec/ClientApp processes) on
  ``--host 127.0.0.1 --port NODE_PORT`` (default 9094; this replaces the old
  ``--clientappio-api-address``, which 1.42 rejects), so several SuperNodes on one
  machine each need their own ``--port``. ``--node-config "site-index=0 name='x'"``
  (space separated ``key=TOML value`` pairs) becomes ``context.node_config``.
  The log line ``SuperNode ID: <id>`` gives the node id.
* Connections are no longer read from the app's ``pyproject.toml``: ``flwr``
  reads ``$FLWR_HOME/config.toml`` (default ``~/.flwr``)::

      [superlink]
      default = "medfed-local"
      [superlink.medfed-local]
      address = "127.0.0.1:PORT"
      insecure = true

  A legacy ``[tool.flwr.federations]`` table in an app's pyproject.toml is
  *migrated* by ``flwr run`` into that file and commented out in the pyproject
  (i.e. ``flwr run`` edits the app directory), so apps should not carry one.
* ``flwr run APP_DIR [CONNECTION] --run-config FILE.toml|'k=v ...' [--stream]
  [--format json] [--federation-config 'num-supernodes=3']`` submits the app;
  ``flwr log RUN_ID [CONNECTION] --stream|--show``, ``flwr ls [CONNECTION]
  --run-id RUN_ID --format json`` (status ``finished:completed`` /
  ``finished:failed`` / ``finished:stopped``), ``flwr stop RUN_ID [CONNECTION]``
  and ``flwr supernode ls [CONNECTION] --format json`` (node status
  ``online`` / ``offline`` / ``unregistered``) manage it. The CLI ships
  with the ``:local:`` address, which spawns a *detached* simulation SuperLink on
  fixed port 39091 that outlives the command; this module never uses it.
* Readiness used here: SuperLink ``/health`` == 200; every SuperNode has logged
  ``SuperNode ID: <id>``; ``flwr supernode ls --format json`` lists all those ids
  as ``online``.
* A SuperNode stopped with SIGTERM unregisters at once; one killed with SIGKILL
  (a crash) stays ``online`` until its heartbeats lapse (interval ~30 s,
  patience 2), so a ServerApp must use ``grid.send_and_receive(..., timeout=...)``.
* Environment: ``FLWR_HOME`` (per process here, inside a temp dir),
  ``FLWR_TELEMETRY_ENABLED=0``, ``FLWR_DISABLE_UPDATE_CHECK=1`` (otherwise the
  binaries phone home), ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` (the
  SuperLink otherwise ``uv sync``-installs an app's dependencies). With
  ``--simulation`` also ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray's node
  address becomes 127.0.0.1, so Ray listens on and connects to loopback only.

The same deployment across hospitals, with TLS and SuperNode authentication
---------------------------------------------------------------------------
(flags exactly as in flwr 1.42; ``--insecure`` is simply left out)::

    # central server: one port for Fleet, Control and Runtime APIs, all over TLS
    flower-superlink \\
        --ssl-ca-certfile certs/ca.crt \\
        --ssl-certfile certs/server.pem \\
        --ssl-keyfile certs/server.key \\
        --enable-supernode-auth \\
        --host 0.0.0.0 --port 8000 \\
        --database /var/lib/medfed/superlink.db \\
        --disable-runtime-dependency-installation

    # each hospital makes an EC key pair (P-384; OpenSSH format) ...
    ssh-keygen -t ecdsa -b 384 -N "" -f keys/hospital-a
    # ... and the federation operator registers its public key
    flwr supernode register keys/hospital-a.pub medfed-prod --name hospital-a

    # at the hospital
    flower-supernode \\
        --superlink superlink.example.org:8000 \\
        --root-certificates certs/ca.crt \\
        --auth-supernode-private-key keys/hospital-a \\
        --node-config "site-index=0 data-dir='/data/medfed'" \\
        --host 127.0.0.1 --port 9094

    # researcher's $FLWR_HOME/config.toml (no `insecure`; TLS is the default)
    [superlink.medfed-prod]
    address = "superlink.example.org:8000"
    root-certificates = "/path/to/certs/ca.crt"

    flwr run path/to/app medfed-prod --stream

``--enable-supernode-auth`` is refused together with ``--insecure`` (TLS is
required); ``--auth-list-public-keys`` (SuperLink) is refused as no longer
supported and ``--auth-supernode-public-key`` (SuperNode) is deprecated: keys are registered
with ``flwr supernode register`` and the public key is derived from the private
one. A SuperNode's own ``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile`` only
protect its local Runtime API (SuperNode <-> its SuperExec), not the link to
the SuperLink, and ``--root-certificates`` is the CA used to verify the
SuperLink, not a client certificate (there is no mTLS; node identity comes from
the registered key).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from medfed.integrations.flower.certificates import (
    DeploymentCredentials,
    write_credentials,
)

__all__ = ["FlowerClusterError", "LocalCluster", "RunResult", "find_binary", "flower_cli_available", "free_port",
           "ray_start_problem", "short_temp_dir"]

SUPERLINK_BIN = "flower-superlink"
SUPERNODE_BIN = "flower-supernode"
FLWR_BIN = "flwr"

_LOOPBACK = "127.0.0.1"
_NODE_ID_RE = re.compile(r"SuperNode ID:\s*(\d+)")
_RUN_ID_RE = re.compile(r"Successfully started run (\d+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")

# Ray's single-machine mode (its default on macOS/Windows): the node address is 127.0.0.1, so every Ray
# server (GCS, raylet, object manager, workers) listens on, and every Ray connection goes to, loopback only.
# On Linux Ray otherwise takes the machine's outward address and listens on all interfaces.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

_BASE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PYTHONUNBUFFERED": "1",
}


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


def short_temp_dir(prefix: str = "mfr") -> str:
    """A new temp folder with a short path: Ray puts Unix sockets below it, and a socket path may hold at most
    107 bytes (``<dir>/session_<date>_<pid>/sockets/plasma_store``); a long ``$TMPDIR`` would overflow it."""
    base = "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def with_interpreter_bin_first(path: str) -> str:
    """``path`` (a ``PATH`` value) with the running interpreter's folder first and not repeated."""
    first = str(Path(sys.executable).parent)
    return os.pathsep.join([first, *[p for p in path.split(os.pathsep) if p and p != first]])


def find_binary(name: str) -> str | None:
    """Prefer the executable next to this interpreter (same environment)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def flower_cli_available() -> tuple[bool, str]:
    """Return (available, reason) for the flwr deployment binaries."""
    missing = [b for b in (SUPERLINK_BIN, SUPERNODE_BIN, FLWR_BIN) if find_binary(b) is None]
    if missing:
        return False, f"Flower CLI binaries not found: {', '.join(missing)} (pip install flwr)"
    return True, ""


_RAY_PROBE = (
    "import ray\n"
    "ray.init(num_cpus=1, include_dashboard=False, logging_level='ERROR', log_to_driver=False)\n"
    "assert ray.get(ray.remote(lambda: 1).remote()) == 1\n"
    "ray.shutdown()\n"
)


def ray_start_problem(timeout: float = 120.0) -> str | None:
    """Why Ray (Flower's Simulation Engine) cannot start here, or ``None`` when it can.

    Starts a one-CPU Ray in loopback mode (:data:`RAY_LOOPBACK_ENV`) in a child process with its own temp
    folder, runs one task and shuts it down; every process it started is gone when this returns.
    """
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'medfed[flower-sim]')"
    tmp = short_temp_dir()
    try:
        env = {**os.environ, **RAY_LOOPBACK_ENV, "RAY_TMPDIR": tmp}
        try:
            proc = subprocess.Popen([sys.executable, "-c", _RAY_PROBE], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            return f"cannot start a Python process for Ray: {err}"
        tree: list[tuple[int, int]] = []
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            tree = _tree(proc.pid)
            _signal_tree(tree, signal.SIGKILL)
            proc.kill()
            proc.communicate()
            return f"Ray did not start within {timeout:.0f} s"
        if proc.returncode != 0:
            last = output.decode(errors="replace").strip().splitlines()[-3:]
            return f"Ray failed to start (exit {proc.returncode}): {' | '.join(last)}"
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: times a SuperNode whose HTTP port was taken between free_port() and its bind is restarted on another port
PORT_RETRIES = 3


def free_port(host: str = _LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _toml_value(value: Any) -> str:
    """Render a scalar as a TOML value for ``key=value`` CLI arguments."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"unsupported config value {value!r} (bool, int, float or str)")


def _format_kv(config: Mapping[str, Any]) -> str:
    for key in config:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
            raise ValueError(f"invalid config key {key!r}")
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


def _write_toml(path: Path, config: Mapping[str, Any]) -> Path:
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in config.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- #
# Process-tree bookkeeping (Linux /proc; psutil if present elsewhere)
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# LocalCluster
# --------------------------------------------------------------------------- #


class LocalCluster:
    """A SuperLink plus N SuperNodes on 127.0.0.1, as a context manager.

    Parameters
    ----------
    node_configs:
        One mapping per SuperNode, passed as ``--node-config`` (becomes
        ``context.node_config`` in the ClientApp). Its length is the number of
        SuperNodes. Empty (default) with ``simulation=True``.
    log_dir:
        Where the process logs go (kept after exit). Default: inside the
        temporary work dir, which is deleted on exit unless ``keep_workdir``.
    startup_timeout:
        Seconds to wait for the SuperLink and for all SuperNodes to connect.
    simulation:
        Start the SuperLink with ``--simulation`` (Simulation Engine, Ray) and no
        SuperNodes; pass ``federation_config={"num-supernodes": n}`` to
        :meth:`run_app`.
    tls:
        The secured deployment of ``medfed/integrations/flower/app.py`` on loopback:
        fresh credentials (:func:`~medfed.integrations.flower.certificates.write_credentials`,
        in :attr:`credentials`), a SuperLink with TLS and ``--enable-supernode-auth``,
        each SuperNode's public key registered with ``flwr supernode register``, and
        SuperNodes that verify the server with ``--root-certificates`` and sign with
        ``--auth-supernode-private-key``.
    """

    def __init__(
        self,
        node_configs: Sequence[Mapping[str, Any]] = (),
        *,
        log_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        simulation: bool = False,
        tls: bool = False,
        connection_name: str = "medfed-local",
        extra_env: Mapping[str, str] | None = None,
        keep_workdir: bool = False,
        stop_grace: float = 8.0,
    ) -> None:
        if simulation and node_configs:
            raise ValueError("simulation=True runs without SuperNodes; drop node_configs")
        self.node_configs = [dict(c) for c in node_configs]
        self.simulation = simulation
        self.tls = tls
        self.credentials: DeploymentCredentials | None = None
        self.startup_timeout = float(startup_timeout)
        self.connection_name = connection_name
        self.extra_env = dict(extra_env or {})
        self.keep_workdir = keep_workdir
        self.stop_grace = float(stop_grace)
        self._log_dir_arg = Path(log_dir) if log_dir is not None else None

        self.workdir: Path | None = None
        self.log_dir: Path | None = None
        self.port: int | None = None
        self.superlink: _Managed | None = None
        self.supernodes: list[_Managed] = []
        self.node_ids: list[int] = []  # index i -> node id of SuperNode i
        self.killed: set[int] = set()
        self._closed = False
        self._bins: dict[str, str] = {}
        self._ray_tmp: str | None = None

    # ------------------------------------------------------------------ setup
    @property
    def address(self) -> str:
        """SuperLink address (Fleet, Control and Runtime API) as host:port."""
        if self.port is None:
            raise FlowerClusterError("cluster not started")
        return f"{_LOOPBACK}:{self.port}"

    @property
    def cli_home(self) -> Path:
        """FLWR_HOME of the ``flwr`` CLI (holds config.toml with the connection)."""
        assert self.workdir is not None, "cluster not started"
        return self.workdir / "cli-home"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def process_env(self, home: Path) -> dict[str, str]:
        """The environment of this cluster's Flower processes (no telemetry, no update check, no proxy for
        loopback, ``extra_env``), with ``FLWR_HOME`` = ``home`` (created) and this interpreter's ``bin`` folder
        first on ``PATH``: Flower starts ``flower-superexec`` and its app processes through ``PATH``, which lacks
        the environment's ``bin`` when it is not activated (``venv/bin/medfed run --engine flower``)."""
        env = dict(os.environ)
        env.update(_BASE_ENV)
        env.update(self.extra_env)
        env["PATH"] = with_interpreter_bin_first(env.get("PATH", ""))
        env["FLWR_HOME"] = str(home)
        home.mkdir(parents=True, exist_ok=True)
        return env

    def start(self) -> None:
        """Start SuperLink and SuperNodes; block until all are ready."""
        ok, reason = flower_cli_available()
        if not ok:
            raise FlowerClusterError(reason)
        for name in (SUPERLINK_BIN, SUPERNODE_BIN, FLWR_BIN):
            self._bins[name] = str(find_binary(name))
        self.workdir = Path(tempfile.mkdtemp(prefix="medfed-flwr-"))
        self.log_dir = self._log_dir_arg or self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)
        try:
            if self.tls:
                self.credentials = write_credentials(self.workdir / "credentials", [_LOOPBACK],
                                                     [f"supernode-{i}" for i in range(len(self.node_configs))])
            self._start_superlink()
            self._write_cli_config()
            for i in range(len(self.node_configs)):
                if self.credentials is not None:
                    self.register_node_key(self.credentials.public_key(f"supernode-{i}"), f"supernode-{i}")
                self._start_supernode(i)
            self._wait_nodes()
        except BaseException:
            self.close()
            raise

    def _start_superlink(self) -> None:
        assert self.workdir is not None and self.log_dir is not None
        last_error = ""
        for attempt in range(3):  # a port picked free may be taken meanwhile
            self.port = free_port()
            cmd = [
                self._bins[SUPERLINK_BIN],
                *self._superlink_security(),
                "--host", _LOOPBACK,
                "--port", str(self.port),
                "--database", str(self.workdir / "superlink-state.db"),
                "--disable-runtime-dependency-installation",
            ]  # fmt: skip
            if self.simulation:
                cmd.append("--simulation")
            env = self.process_env(self.workdir / "superlink-home")
            if self.simulation:
                if self._ray_tmp is None and "RAY_TMPDIR" not in env:
                    self._ray_tmp = short_temp_dir()
                env.setdefault("RAY_TMPDIR", str(self._ray_tmp))
                env.update(RAY_LOOPBACK_ENV)
            log = self.log_dir / (f"superlink.{attempt}.log" if attempt else "superlink.log")
            self.superlink = _Managed.spawn("superlink", cmd, env, log, self.workdir)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if not self.superlink.alive():
                    break
                if self._health_ok():
                    self.superlink.remember_tree()
                    return
                time.sleep(0.2)
            else:
                raise FlowerClusterError(
                    f"SuperLink not healthy within {self.startup_timeout:.0f}s on "
                    f"{self.address}; log tail:\n{self.superlink.log_tail()}"
                )
            last_error = self.superlink.log_tail()
            _stop_all([self.superlink], grace=2.0)
            self.superlink = None
        raise FlowerClusterError(f"SuperLink exited during startup; log tail:\n{last_error}")

    def _superlink_security(self) -> list[str]:
        if self.credentials is None:
            return ["--insecure"]
        c = self.credentials
        return ["--ssl-ca-certfile", str(c.ca_certificate), "--ssl-certfile", str(c.server_certificate),
                "--ssl-keyfile", str(c.server_key), "--enable-supernode-auth"]

    def _health_ok(self) -> bool:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        scheme = "http"
        if self.credentials is not None:
            scheme = "https"
            handlers.append(urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cafile=str(self.credentials.ca_certificate))))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(f"{scheme}://{self.address}/health", timeout=1.0) as resp:
                return 200 <= resp.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _write_cli_config(self) -> None:
        home = self.cli_home
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{self.connection_name}"\n\n'
            f"[superlink.{self.connection_name}]\n"
            f'address = "{self.address}"\n'
            + (f'root-certificates = "{self.credentials.ca_certificate}"\n' if self.credentials is not None
               else "insecure = true\n"),
            encoding="utf-8",
        )

    def _start_supernode(self, i: int) -> None:
        assert self.workdir is not None and self.log_dir is not None
        if self.credentials is None:
            security = ["--insecure"]
        else:
            security = ["--root-certificates", str(self.credentials.ca_certificate),
                        "--auth-supernode-private-key", str(self.credentials.node_keys[f"supernode-{i}"])]
        cmd = [
            self._bins[SUPERNODE_BIN],
            *security,
            "--superlink", self.address,
            "--host", _LOOPBACK,
            "--port", str(free_port()),
            "--max-wait-time", str(int(self.startup_timeout)),
        ]  # fmt: skip
        if self.node_configs[i]:
            cmd += ["--node-config", _format_kv(self.node_configs[i])]
        env = self.process_env(self.workdir / f"supernode-{i}-home")
        managed = _Managed.spawn(f"supernode-{i}", cmd, env, self.log_dir / f"supernode-{i}.log", self.workdir)
        if i < len(self.supernodes):  # a restart (see _wait_nodes)
            self.supernodes[i].close_log()
            self.supernodes[i] = managed
        else:
            self.supernodes.append(managed)

    def _wait_nodes(self) -> None:
        n = len(self.supernodes)
        if n == 0:
            return
        deadline = time.monotonic() + self.startup_timeout
        ids: list[int | None] = [None] * n
        restarts = [0] * n
        while time.monotonic() < deadline and None in ids:
            for i, m in enumerate(self.supernodes):
                if ids[i] is None:
                    match = _NODE_ID_RE.search(m.log_text())
                    if match:
                        ids[i] = int(match.group(1))
                    elif not m.alive() and "address already in use" in m.log_text() and restarts[i] < PORT_RETRIES:
                        # free_port() only says the port was free a moment ago; another process took it
                        restarts[i] += 1
                        self._start_supernode(i)
                    elif not m.alive():
                        raise FlowerClusterError(
                            f"{m.name} exited with code {m.proc.returncode}; log tail:\n"
                            f"{m.log_tail()}"
                        )
            if None in ids:
                time.sleep(0.25)
        if None in ids:
            missing = [self.supernodes[i].name for i, v in enumerate(ids) if v is None]
            raise FlowerClusterError(
                f"{missing} did not register within {self.startup_timeout:.0f}s; logs in "
                f"{self.log_dir}"
            )
        self.node_ids = [int(v) for v in ids if v is not None]
        # Confirm through the Control API (what `flwr run` will use).
        online: set[int] = set()
        while time.monotonic() < deadline:
            online = {
                int(node["node-id"])
                for node in self.list_nodes(timeout=max(1.0, deadline - time.monotonic()))
                if node.get("status") == "online"
            }
            if set(self.node_ids) <= online:
                for m in self.supernodes:
                    m.remember_tree()
                return
            time.sleep(0.5)
        raise FlowerClusterError(
            f"SuperLink lists {sorted(online)} online, expected {self.node_ids}; logs in "
            f"{self.log_dir}"
        )

    # ------------------------------------------------------------------- CLI
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

    # ------------------------------------------------------------ dropouts
    def kill_node(self, i: int, *, graceful: bool = False, timeout: float = 10.0) -> None:
        """Stop SuperNode ``i`` and everything it spawned.

        Default is SIGKILL (a crash: the SuperLink still lists the node as
        online until its heartbeats lapse); ``graceful=True`` sends SIGTERM, on
        which the SuperNode unregisters itself.
        """
        m = self.supernodes[i]
        snap = m.snapshot()
        _signal_tree(snap, signal.SIGTERM if graceful else signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and m.any_alive():
            m.proc.poll()
            time.sleep(0.1)
        if m.any_alive():
            _signal_tree(m.snapshot(), signal.SIGKILL)
        try:
            m.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        m.close_log()
        self.killed.add(i)

    # ------------------------------------------------------------- teardown
    def close(self) -> None:
        """Terminate every process (SuperNodes first), keep logs, drop temp dir."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        procs = list(self.supernodes)
        if procs:
            _stop_all(procs, grace=self.stop_grace)
        if self.superlink is not None:
            _stop_all([self.superlink], grace=self.stop_grace)
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._ray_tmp is not None:
            shutil.rmtree(self._ray_tmp, ignore_errors=True)

    def processes_alive(self) -> list[str]:
        """Names of managed processes (or their descendants) still running."""
        procs = [*self.supernodes, *([self.superlink] if self.superlink else [])]
        return [m.name for m in procs if m.any_alive()]
