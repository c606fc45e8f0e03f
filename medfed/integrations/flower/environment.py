"""What the local Flower cluster needs from this machine: Flower's binaries (found beside the running interpreter
first), the child processes' environment, free loopback ports, Ray's loopback check, TOML config files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medfed.integrations.flower.processes import (  # noqa: F401 - re-exported
    _Managed,
    _signal_tree,
    _stop_all,
    _tree,
)
from medfed.io import atomic_write_text

SUPERLINK_BIN = "flower-superlink"


SUPERNODE_BIN = "flower-supernode"


FLWR_BIN = "flwr"


_LOOPBACK = "127.0.0.1"


# A loopback port nothing serves (the "discard" port): HTTP sent through it as a proxy is refused on this
# machine instead of leaving it.
DEAD_LOOPBACK_PROXY = "http://127.0.0.1:9"


# Ray kept on this machine:
# - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray's single-machine mode (its default on macOS/Windows); the node
#   address is 127.0.0.1, so every Ray server (GCS, raylet, object manager, workers) listens on, and every Ray
#   connection goes to, loopback only. On Linux Ray otherwise takes the machine's outward address and listens
#   on all interfaces.
# - RAY_USAGE_STATS_ENABLED=0: no usage report to usage-stats.ray.io.
# - HTTP(S)_PROXY: the dashboard's usage module asks the cloud metadata services (169.254.169.254,
#   metadata.google.internal) which cloud it runs on, at every start and whatever the setting above
#   (ray 2.55, ``usage_stats_head.UsageStatsHead.run``); through the dead proxy those requests are refused on
#   loopback (Ray then records the cloud as "unknown"). Loopback itself is exempt (``NO_PROXY``), so Ray's own
#   and Flower's gRPC and HTTP on 127.0.0.1 go direct.
RAY_LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HTTP_PROXY": DEAD_LOOPBACK_PROXY,
    "HTTPS_PROXY": DEAD_LOOPBACK_PROXY,
    "http_proxy": DEAD_LOOPBACK_PROXY,
    "https_proxy": DEAD_LOOPBACK_PROXY,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


_BASE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PYTHONUNBUFFERED": "1",
}


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
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
