"""Federated training of the ``embedding`` backend's label heads with medfed's own strategies.

Each site keeps its reports and the frozen encoder; only the flat head vector travels
(:meth:`~medfed.text.embedding.EmbeddingBackend.head_weights`, a few thousand float32 values). The round loop
mirrors :class:`medfed.fl.runner.FederatedRunner` on a tiny scale: the strategy is ``prepare``-d with the head
module; each round every site gets ``strategy.client_weights(global, site, state)``, trains ``local_epochs``
passes (:meth:`~medfed.text.embedding.EmbeddingBackend.local_fit`, seed ``derive_seed(seed, "train", round,
site)``, the strategy's ``client_hooks``, ``start_loss`` when the strategy asks) and yields a
:class:`~medfed.fl.update.ClientUpdate`; ``strategy.aggregate(global, updates, state)`` consumes them in site
order. A strategy with ``pooled = True`` (``centralised``) trains one client, ``pooled``, on all sites' reports.
Strategies that need a server benchmark or a task's network outputs (``fedagain`` with server reliability,
``fedld`` with margin control) are refused with a message.

The log has one record per round: sites, per-site loss and examples, the bytes each site downloaded (its start
vector) and uploaded (its update), their total, and the strategy's diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medfed.errors import MedfedError
from medfed.fl.strategies import Strategy, build_strategy
from medfed.fl.strategies.centralised import POOLED
from medfed.fl.update import ClientUpdate
from medfed.io import jsonable
from medfed.seeding import derive_seed
from medfed.text.base import Report
from medfed.text.embedding import EmbeddingBackend

SiteData = tuple[Sequence[Report], pd.DataFrame]


def _site_updates(
    sites: Mapping[str, SiteData], local: Mapping[str, EmbeddingBackend], strategy: Strategy, global_weights: np.ndarray,
    state: dict[str, Any], rnd: int, local_epochs: int, lr: float, seed: int, record: dict[str, Any],
) -> Iterator[ClientUpdate]:
    """Train each site in turn (when the strategy asks for the next update) and yield its update."""
    size = global_weights.size
    for name, (reports, targets) in sites.items():
        backend = local[name]
        start = np.asarray(strategy.client_weights(global_weights, name, state), np.float32)
        backend.set_head_weights(start)
        info: dict[str, Any] = {}
        if strategy.wants_start_loss:
            info["start_loss"] = backend.mean_loss(reports, targets)
        hooks = strategy.client_hooks(backend.head_module, name, state)
        result = backend.local_fit(reports, targets, epochs=local_epochs, lr=lr,
                                   seed=derive_seed(seed, "train", rnd, name), hooks=hooks)
        weights = backend.head_weights()
        if weights.shape != (size,) or not np.isfinite(weights).all():
            raise MedfedError(f"site {name}: local heads are not a finite vector of {size} values")
        record["train_loss"][name] = result.mean_loss
        record["num_examples"][name] = result.num_examples
        record["bytes_down"][name] = int(start.nbytes)
        record["bytes_up"][name] = int(weights.nbytes)
        yield ClientUpdate(name, weights, result.num_examples,
                           {"loss": result.mean_loss, "steps": result.steps, "lr": lr, **info})


def federated_heads(
    sites: Mapping[str, SiteData], backend_factory: Callable[[], EmbeddingBackend],
    strategy: Strategy | str = "fedavg", rounds: int = 5, local_epochs: int = 1, seed: int = 0, *,
    lr: float | None = None, strategy_params: Mapping[str, Any] | None = None,
) -> tuple[EmbeddingBackend, list[dict[str, Any]]]:
    """Train the heads of ``backend_factory()`` over ``sites`` (name -> ``(reports, targets)``) for ``rounds``
    rounds; returns a backend holding the final global heads (``strategy.final_models(...)["global"]``) and the
    per-round log (module docstring). ``strategy`` is a strategy or a name for :func:`build_strategy` (with
    ``strategy_params``); ``lr`` defaults to the backend's."""
    if not sites:
        raise MedfedError("federated_heads needs at least one site")
    if rounds < 1 or local_epochs < 1:
        raise MedfedError(f"rounds and local_epochs must be >= 1, got {rounds} and {local_epochs}")
    if isinstance(strategy, str):
        strategy = build_strategy(strategy, dict(strategy_params or {}), source="federated_heads")
    if strategy.needs_server_benchmark():
        raise MedfedError(f"strategy {strategy.name} needs a server benchmark set; report heads have none")
    if strategy.pooled:
        reports = [r for rs, _ in sites.values() for r in rs]
        targets = pd.concat([t for _, t in sites.values()], ignore_index=True)
        sites = {POOLED: (reports, targets)}

    server = backend_factory()
    local = {name: backend_factory() for name in sites}
    size = server.head_size
    for name, backend in local.items():
        if backend.head_size != size:
            raise MedfedError(f"site {name}: head size {backend.head_size} differs from the server's {size}")
    lr = server.lr if lr is None else float(lr)
    strategy.prepare(server.head_module)
    global_weights = server.head_weights()
    state = strategy.initial_state(global_weights, list(sites))
    log: list[dict[str, Any]] = []

    for rnd in range(1, rounds + 1):
        record: dict[str, Any] = {"round": rnd, "sites": list(sites), "train_loss": {}, "num_examples": {},
                                  "bytes_down": {}, "bytes_up": {}, "head_size": size}
        global_weights, state, diagnostics = strategy.aggregate(
            global_weights, _site_updates(sites, local, strategy, global_weights, state, rnd, local_epochs, lr, seed, record),
            state)
        global_weights = np.asarray(global_weights, np.float32)
        record["bytes_total"] = sum(record["bytes_down"].values()) + sum(record["bytes_up"].values())
        record["aggregation"] = jsonable(diagnostics)
        log.append(record)

    final = strategy.final_models(global_weights, state)
    if "global" not in final:
        raise MedfedError(f"strategy {strategy.name} keeps no global model (it returns {', '.join(final)}); "
                          "federated_heads returns one backend")
    server.set_head_weights(final["global"])
    return server, log
