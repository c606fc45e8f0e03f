"""The ServerApp's run config (``[tool.flwr.app.config]``, overridable with ``flwr run --run-config``), parsed and checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.errors import ConfigError

#: run config keys of the ServerApp and their defaults (``[tool.flwr.app.config]`` of the app's pyproject.toml)
RUN_CONFIG: dict[str, Any] = {
    "experiment": "",          # experiment config (tasks/*.yaml) on the SuperLink machine; its federation is not read
    "method": "",              # method label of the experiment to train ("" = its only method)
    "out": "reports",          # run directories go to <out>/<experiment name>/
    "rounds": 0,               # 0 = the experiment's training.rounds
    "resume": False,           # continue from runs/<method>/checkpoints/last.pt
    "round-timeout": 600.0,    # seconds a round waits for train (and evaluate) replies
    "query-timeout": 60.0,     # seconds to wait for nodes to say which site they are
    "connect-timeout": 300.0,  # seconds to wait, before round 1, for the sites to connect
    "sites": "",               # the run's sites in federation order, comma-separated ("" = those that connect)
    "min-nodes": 0,            # with sites "": wait for this many sites (0 = training.min_fit_clients)
    "final-eval": True,        # evaluate the final models on every site and write metrics/summary/predictions
    "per-tensor": True,        # weights travel one array per state_dict tensor (False: one flat array)
}


_POLL_SECONDS = 1.0


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


@dataclass(frozen=True)
class ServerSettings:
    """The ServerApp's run config, parsed (:data:`RUN_CONFIG`)."""

    experiment: Path
    method: str = ""
    out: Path = Path("reports")
    rounds: int = 0
    resume: bool = False
    round_timeout: float = 600.0
    query_timeout: float = 60.0
    connect_timeout: float = 300.0
    sites: tuple[str, ...] = ()
    min_nodes: int = 0
    final_eval: bool = True
    per_tensor: bool = True

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ServerSettings:
        values = {**RUN_CONFIG, **dict(run_config)}
        if not str(values["experiment"]).strip():
            raise ConfigError("the run config has no `experiment` (the experiment config path on the SuperLink "
                              "machine): set it in [tool.flwr.app.config] or with flwr run --run-config")
        timeouts = {k: float(values[k]) for k in ("round-timeout", "query-timeout", "connect-timeout")}
        bad = [k for k, v in timeouts.items() if not v > 0]
        if bad:
            raise ConfigError(f"run config: {', '.join(bad)} must be > 0 seconds (a missing site must never hang a run)")
        sites = tuple(s.strip() for s in str(values["sites"]).split(",") if s.strip())
        return cls(
            experiment=Path(str(values["experiment"])).expanduser(), method=str(values["method"]).strip(),
            out=Path(str(values["out"])).expanduser(), rounds=int(values["rounds"]), resume=_flag(values["resume"]),
            round_timeout=timeouts["round-timeout"], query_timeout=timeouts["query-timeout"],
            connect_timeout=timeouts["connect-timeout"], sites=sites, min_nodes=int(values["min-nodes"]),
            final_eval=_flag(values["final-eval"]), per_tensor=_flag(values["per-tensor"]),
        )
