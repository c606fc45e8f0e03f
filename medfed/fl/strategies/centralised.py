"""Centralised training on the pooled data of all sites: the upper-bound reference.

NOT privacy-preserving: it assumes every site's images could be copied to one place, which is exactly
what federated learning avoids. It is in the benchmark only as the reference FLamby and others report
("pooled" training), with the same epochs as the federated runs. The runner trains a single client,
``pooled``, on the concatenation of the sites' training sets; aggregation adopts its model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.update import ClientUpdate

POOLED = "pooled"


class Centralised(Strategy):
    name: ClassVar[str] = "centralised"
    privacy_preserving: ClassVar[bool] = False
    pooled: ClassVar[bool] = True

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        new = global_weights
        count = 0
        for update in updates:
            new, count = update.weights, count + 1
        return new, state, {"clients": count}
