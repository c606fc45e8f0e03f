"""Which site a medfed SuperNode serves, and its answer to the server's query: light on purpose.

A node's site comes from its node config (``site-config``, ``site-name``; see
:mod:`medfed.integrations.flower.client`), or for a simulated node from the run config. Answering the query
(site name, ``min_count``, suppressed case counts) reads the site's tables only: this module imports neither torch,
MONAI nor the tasks, so the ClientApp process Flower starts for that message (one process per message) spends
about 2 s of CPU on imports instead of the ~9 s of a training or evaluation message.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Message

from medfed.errors import ConfigError
from medfed.integrations.flower import messages as wire
from medfed.sites.base import Site
from medfed.sites.federation import Federation, load_federation
from medfed.sites.redact import error_text

SITE_CONFIG = "site-config"
SITE_NAME = "site-name"
SHARE_RECORDS = "share-case-records"
PARTITION_ID = "partition-id"      # Flower simulation: the virtual node's index
NUM_PARTITIONS = "num-partitions"  # Flower simulation: how many virtual nodes

LOCK = threading.Lock()  # the node's caches: Flower may run handlers in threads


def flag(value: Any, default: bool) -> bool:
    """A node-config switch: ``false``, ``0``, ``no``, ``off`` or blank (any case) are false; absent: ``default``."""
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


def reason(err: BaseException, site: Site | None = None) -> str:
    """The error as one short line with the site's paths and source ids hidden (the node is the site: its replies
    leave it)."""
    return error_text(err, site.private_texts() if site is not None else [])


# ----------------------------------------------------------------------------- the node's site
_SITES: dict[tuple[str, str], Site] = {}
_FEDERATIONS: dict[str, Federation] = {}
_SIM_FEDERATIONS: dict[str, str] = {}  # experiment file -> its federation file (simulated nodes)


def _federation(path: str) -> Federation:
    """The federation at ``path`` (absolute), loaded once per process; call with ``LOCK`` held."""
    if path not in _FEDERATIONS:
        _FEDERATIONS[path] = load_federation(path)
    return _FEDERATIONS[path]


def node_site(node_config: dict[str, Any]) -> Site:
    """The site this node serves, from its node config (loaded once per process)."""
    raw = node_config.get(SITE_CONFIG)
    if not raw:
        raise ConfigError(f"this SuperNode has no `{SITE_CONFIG}` in its node config; start it with "
                          f"--node-config \"{SITE_CONFIG}='/path/to/site.yaml'\"")
    path = str(Path(str(raw)).expanduser().resolve())
    wanted = str(node_config.get(SITE_NAME) or "")
    key = (path, wanted)
    with LOCK:
        if key not in _SITES:
            federation = _federation(path)
            if wanted:
                site = federation[wanted]
            elif len(federation) == 1:
                site = federation[0]
            else:
                raise ConfigError(f"{path} describes {len(federation)} sites ({', '.join(federation.site_names)}); "
                                  f"name this node's one with --node-config \"{SITE_NAME}='...'\"")
            _SITES[key] = site
        return _SITES[key]


def simulated_site(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> dict[str, str]:
    """``site-config`` and ``site-name`` of a simulated node: site ``partition-id`` of the run's ``sites`` (else
    of the federation's site order), in the federation of the run config's ``experiment``."""
    pid = int(node_config[PARTITION_ID])
    experiment = str(run_config.get("experiment") or "").strip()
    if not experiment:
        raise ConfigError(f"simulated node {pid}: the run config names no `experiment`, so this node (which has no "
                          f"`{SITE_CONFIG}`) cannot tell its site")
    path = Path(experiment).expanduser().resolve()
    with LOCK:
        fed_file = _SIM_FEDERATIONS.get(str(path))
    if fed_file is None:  # read once per process (every message asks)
        # the experiment schema imports the tasks (and MONAI): only a simulated node needs it
        from medfed.fl.config import federation_path, load_experiment

        fed_file = str(Path(federation_path(load_experiment(path), path.parent, None)).resolve())
        with LOCK:
            _SIM_FEDERATIONS[str(path)] = fed_file
    sites = [s.strip() for s in str(run_config.get("sites") or "").split(",") if s.strip()]
    if not sites:
        with LOCK:
            sites = _federation(fed_file).site_names
    if not 0 <= pid < len(sites):
        raise ConfigError(f"simulated node {PARTITION_ID}={pid} (of {node_config.get(NUM_PARTITIONS, '?')}): the run "
                          f"has {len(sites)} site(s) ({', '.join(sites)}); set num-supernodes = {len(sites)}")
    return {SITE_CONFIG: fed_file, SITE_NAME: sites[pid]}


def site_node_config(context: Context) -> dict[str, Any]:
    """The node config naming this node's site: its own, or for a simulated node without ``site-config`` (one
    with ``partition-id``) the one :func:`simulated_site` derives from the run config."""
    node_config = dict(context.node_config)
    if node_config.get(SITE_CONFIG) or PARTITION_ID not in node_config:
        return node_config
    return {**node_config, **simulated_site(node_config, context.run_config)}


def clear_sites() -> None:
    """Forget loaded sites and federations (tests; a node whose data changed)."""
    with LOCK:
        _SITES.clear()
        _FEDERATIONS.clear()
        _SIM_FEDERATIONS.clear()


def handle_query(message: Message, context: Context) -> Message:
    """Tell the server which site this node is (its name, ``min_count`` and suppressed case counts)."""
    name = str(context.node_config.get(SITE_NAME) or "")
    site = None
    try:
        site = node_site(site_node_config(context))
        name = site.name
        content = wire.site_reply_content(site.name, site.min_count, site.summary())
    except Exception as err:  # noqa: BLE001 - reported to the server, the node stays up
        content = wire.error_content(name, reason(err, site))
    return Message(content, reply_to=message)
