"""Federated LoRA fine-tuning of the ``llm`` backend: only the LoRA adapter tensors travel.

Each round, for each site in the federation's order: the strategy's start weights for the site
(:meth:`~medfed.fl.strategies.base.Strategy.client_weights`, a flat float32 vector of adapter tensors only)
are loaded into the model's adapters (``peft.set_peft_model_state_dict``), the site trains them for
``local_steps`` optimiser steps on its own labelled reports (:meth:`LLMBackend.train_lora`, seeded by
``(seed, "train", round, site)``), and the adapters it sends back are flattened from
``peft.get_peft_model_state_dict``. The base model never leaves a site and is never changed. The updates
stream into ``strategy.aggregate`` exactly as in :mod:`medfed.fl.runner` (a site is trained only when the
strategy pulls its update).

Strategies that need the full model or a server dataset (``prepare``/``attach_server_data`` overrides:
FedBN, SCAFFOLD, FedLD, FedAgain; the pooled centralised reference) are refused; client hooks that act on
trainable parameters (FedProx's proximal term) work, since the trainable parameters are the adapters.

Each round's log record: ``round``, ``sites``, ``train_loss`` and ``num_examples`` per site, ``floats_down`` /
``floats_up`` per site (adapter entries sent to / received from it), ``floats_total`` and ``bytes_total``
(float32, 4 bytes an entry, both directions), ``floats_per_model``, ``adapter_tensors`` (the names that
travel) and the strategy's ``aggregation`` diagnostics. At the end the global adapters
(``final_models["global"]``, else the last global vector) are loaded into ``backend``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from medfed.errors import MedfedError
from medfed.fl.strategies.base import Strategy
from medfed.fl.update import ClientUpdate
from medfed.io import jsonable
from medfed.seeding import derive_seed
from medfed.fl.protocols import ClientHook
from medfed.tasks.base import LocalHook
from medfed.text.base import Report
from medfed.text.llm import LLMBackend

FLOAT_BYTES = 4  # updates travel as float32 (ClientUpdate)
Layout = list[tuple[str, tuple[int, ...]]]


def flatten_adapters(state: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, Layout]:
    """One float32 vector of the adapter tensors (in ``state``'s order) and their names and shapes."""
    layout = [(name, tuple(tensor.shape)) for name, tensor in state.items()]
    if not layout:
        return np.zeros(0, np.float32), layout
    vector = np.concatenate([t.detach().float().cpu().reshape(-1).numpy() for t in state.values()])
    return vector.astype(np.float32), layout


def unflatten_adapters(vector: np.ndarray, layout: Layout) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flatten_adapters` (float32 tensors; loading casts to the adapters' dtype)."""
    sizes = [int(np.prod(shape)) for _, shape in layout]
    if vector.size != sum(sizes):
        raise ValueError(f"adapter vector has {vector.size} entries, the layout {sum(sizes)}")
    state, offset = {}, 0
    for (name, shape), size in zip(layout, sizes, strict=True):
        state[name] = torch.from_numpy(np.array(vector[offset:offset + size], np.float32).reshape(shape))
        offset += size
    return state


def _check_strategy(strategy: Strategy) -> None:
    kind = type(strategy)
    if strategy.pooled:
        raise MedfedError(f"federated LoRA: strategy {strategy.name} pools the sites' reports; not federated")
    if kind.prepare is not Strategy.prepare or kind.attach_server_data is not Strategy.attach_server_data \
            or strategy.needs_server_benchmark() or strategy.wants_start_loss:
        raise MedfedError(f"federated LoRA: strategy {strategy.name} needs the full model or server data; "
                          "only adapter tensors travel here")


def _check_hooks(hooks: Sequence[LocalHook], strategy: Strategy) -> None:
    for hook in hooks:
        if type(hook).output_penalty is not ClientHook.output_penalty:
            raise MedfedError(f"federated LoRA: strategy {strategy.name}'s client hook {type(hook).__name__} "
                              "needs a task's network outputs; not supported")


def _site_updates(
    sites: Mapping[str, tuple[Sequence[Report], pd.DataFrame]], backend: LLMBackend, strategy: Strategy,
    global_weights: np.ndarray, state: dict[str, Any], layout: Layout, rnd: int, local_steps: int, seed: int,
    record: dict[str, Any],
) -> Iterator[ClientUpdate]:
    """Train each site in turn when the strategy pulls its update; record what travelled."""
    tensor_names = [name for name, _ in layout]
    for site, (reports, targets) in sites.items():
        start = np.asarray(strategy.client_weights(global_weights, site, state), np.float32)
        backend.load_adapter_state_dict(unflatten_adapters(start, layout))
        hooks = strategy.client_hooks(backend.model, site, state)
        _check_hooks(hooks, strategy)
        result = backend.train_lora(reports, targets, steps=local_steps, seed=derive_seed(seed, "train", rnd, site),
                                    hooks=hooks)
        weights, sent = flatten_adapters(backend.adapter_state_dict())
        if [name for name, _ in sent] != tensor_names:
            raise MedfedError(f"federated LoRA: site {site} returned other adapter tensors")
        record["floats_down"][site] = int(start.size)
        record["floats_up"][site] = int(weights.size)
        record["train_loss"][site] = result["loss"]
        record["num_examples"][site] = result["num_examples"]
        yield ClientUpdate(site, weights, result["num_examples"], {"loss": result["loss"], "steps": result["steps"]})


def federated_lora(
    sites: Mapping[str, tuple[Sequence[Report], pd.DataFrame]], backend: LLMBackend, strategy: Strategy,
    rounds: int, local_steps: int, seed: int = 0,
) -> list[dict[str, Any]]:
    """Train ``backend``'s LoRA adapters over ``sites`` (name -> labelled reports and targets) with
    ``strategy`` for ``rounds`` rounds of ``local_steps`` steps per site; returns the per-round log (module
    docstring). Only adapter tensors travel."""
    if rounds < 1 or local_steps < 1:
        raise MedfedError(f"federated LoRA: rounds and local_steps must be >= 1, got {rounds}, {local_steps}")
    if not sites:
        raise MedfedError("federated LoRA: no site")
    _check_strategy(strategy)
    names = list(sites)
    backend.ensure_lora()
    global_weights, layout = flatten_adapters(backend.adapter_state_dict())
    tensor_names = [name for name, _ in layout]
    state = strategy.initial_state(global_weights, names)
    log: list[dict[str, Any]] = []
    for rnd in range(1, rounds + 1):
        began = time.perf_counter()
        record: dict[str, Any] = {"round": rnd, "sites": list(names), "train_loss": {}, "num_examples": {},
                                  "floats_down": {}, "floats_up": {}}
        global_weights, state, diagnostics = strategy.aggregate(
            global_weights, _site_updates(sites, backend, strategy, global_weights, state, layout, rnd, local_steps,
                                          seed, record), state)
        floats = sum(record["floats_down"].values()) + sum(record["floats_up"].values())
        record.update({"floats_per_model": int(global_weights.size), "floats_total": int(floats),
                       "bytes_total": int(floats * FLOAT_BYTES), "adapter_tensors": list(tensor_names),
                       "aggregation": jsonable(diagnostics), "seconds": round(time.perf_counter() - began, 3)})
        log.append(record)
    final = strategy.final_models(global_weights, state).get("global", global_weights)
    backend.load_adapter_state_dict(unflatten_adapters(np.asarray(final, np.float32), layout))
    return log
