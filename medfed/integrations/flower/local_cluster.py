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
  ``--simulation`` also ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's node
  address becomes 127.0.0.1, so Ray listens on and connects to loopback only),
  ``RAY_USAGE_STATS_ENABLED=0`` and a dead loopback HTTP proxy (Ray's dashboard
  otherwise asks the cloud metadata services at 169.254.169.254 where it runs).

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
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from medfed.integrations.flower.certificates import (
    DeploymentCredentials,
    write_credentials,
)
from medfed.integrations.flower.environment import (
    _BASE_ENV,
    _LOOPBACK,
    FLWR_BIN,
    PORT_RETRIES,
    RAY_LOOPBACK_ENV,
    SUPERLINK_BIN,
    SUPERNODE_BIN,
    _format_kv,
    find_binary,
    flower_cli_available,
    free_port,
    ray_start_problem,
    short_temp_dir,
    with_interpreter_bin_first,
)
from medfed.integrations.flower.flwr_commands import (
    FlowerClusterError,
    FlwrCommands,
    RunResult,
)
from medfed.integrations.flower.processes import (
    _Managed,
    _signal_tree,
    _stop_all,
)
from medfed.io import atomic_write_text

__all__ = ["FlowerClusterError", "LocalCluster", "RunResult", "find_binary", "flower_cli_available", "free_port",
           "ray_start_problem", "short_temp_dir"]


_NODE_ID_RE = re.compile(r"SuperNode ID:\s*(\d+)")


class LocalCluster(FlwrCommands):
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

    def superlink_env(self, home: Path) -> dict[str, str]:
        """:meth:`process_env`; with ``simulation`` also Ray kept on this machine (:data:`RAY_LOOPBACK_ENV`)
        and a short ``RAY_TMPDIR`` of this cluster's own (removed by :meth:`close`) unless one is set."""
        env = self.process_env(home)
        if self.simulation:
            if self._ray_tmp is None and "RAY_TMPDIR" not in env:
                self._ray_tmp = short_temp_dir()
            env.setdefault("RAY_TMPDIR", str(self._ray_tmp))
            env.update(RAY_LOOPBACK_ENV)
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
            env = self.superlink_env(self.workdir / "superlink-home")
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
        atomic_write_text(
            home / "config.toml",
            "[superlink]\n"
            f'default = "{self.connection_name}"\n\n'
            f"[superlink.{self.connection_name}]\n"
            f'address = "{self.address}"\n'
            + (f'root-certificates = "{self.credentials.ca_certificate}"\n' if self.credentials is not None
               else "insecure = true\n"),
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
