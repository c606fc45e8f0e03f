"""Aggregation strategies, one per module; :data:`STRATEGIES` maps config names to classes."""

from __future__ import annotations

from typing import Any

from medfed.errors import ConfigError
from medfed.fl.strategies.base import State, Strategy
from medfed.fl.strategies.centralised import Centralised
from medfed.fl.strategies.cyclic import Cyclic
from medfed.fl.strategies.fedadagrad import FedAdagrad
from medfed.fl.strategies.fedadam import FedAdam
from medfed.fl.strategies.fedagain import FedAgain
from medfed.fl.strategies.fedavg import FedAvg, StreamingWeightedMean, weighted_average
from medfed.fl.strategies.fedavgm import FedAvgM
from medfed.fl.strategies.fedbn import FedBN
from medfed.fl.strategies.fedld import FedLD
from medfed.fl.strategies.fedmedian import FedMedian
from medfed.fl.strategies.fedprox import FedProx
from medfed.fl.strategies.fedtrimmedavg import FedTrimmedAvg
from medfed.fl.strategies.fedyogi import FedYogi
from medfed.fl.strategies.krum import Krum
from medfed.fl.strategies.local_only import LocalOnly
from medfed.fl.strategies.scaffold import Scaffold

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (LocalOnly, FedAvg, FedProx, Scaffold, FedAvgM, FedAdam, FedYogi, FedAdagrad, FedBN, FedMedian,
                FedTrimmedAvg, Krum, FedLD, FedAgain, Cyclic, Centralised)
}


def build_strategy(name: str, params: dict[str, Any] | None = None, source: str = "<config>") -> Strategy:
    """The strategy ``name`` with hyper-parameters ``params``; errors name the strategy and the bad field."""
    if name not in STRATEGIES:
        raise ConfigError(f"{source}: unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    try:
        return STRATEGIES[name](**(params or {}))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: strategy {name}: {err}") from None


__all__ = [
    "STRATEGIES", "Centralised", "Cyclic", "FedAdagrad", "FedAdam", "FedAgain", "FedAvg", "FedAvgM", "FedBN", "FedLD", "FedMedian", "FedProx",
    "FedTrimmedAvg", "FedYogi", "Krum", "LocalOnly", "Scaffold", "State", "Strategy", "StreamingWeightedMean", "build_strategy",
    "weighted_average",
]
