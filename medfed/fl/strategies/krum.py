"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017, "Machine learning with adversaries: Byzantine
tolerant gradient descent"), with Flower's parameter names.

Each client's score is the sum of squared Euclidean distances to its ``K - f - 2`` nearest other clients
(at least 1), ``f = num_malicious_clients``. Krum adopts the model with the lowest score; Multi-Krum
(``num_clients_to_keep = m > 0``) averages the ``m`` lowest-scoring models weighted by ``num_examples``,
as Flower does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from medfed.fl.strategies.base import State
from medfed.fl.strategies.fedavg import StreamingWeightedMean
from medfed.fl.strategies.robust import AllModelsStrategy, column_blocks


def krum_scores(vectors: Sequence[np.ndarray], num_malicious: int) -> np.ndarray:
    """Krum score per client vector (lower = more central)."""
    vectors = list(vectors)
    gram = np.zeros((len(vectors), len(vectors)))
    for _, block in column_blocks(vectors):  # float64 Gram matrix, one column block at a time
        gram += block @ block.T
    squared = np.diag(gram).copy()
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * gram, 0.0)
    np.fill_diagonal(distances, np.inf)  # a client is not its own neighbour
    closest = max(1, min(len(vectors) - num_malicious - 2, len(vectors) - 1))
    return np.sort(distances, axis=1)[:, :closest].sum(axis=1)


class Krum(AllModelsStrategy):
    name: ClassVar[str] = "krum"

    def __init__(self, num_malicious_clients: int = 0, num_clients_to_keep: int = 0) -> None:
        if num_malicious_clients < 0 or num_clients_to_keep < 0:
            raise ValueError("num_malicious_clients and num_clients_to_keep must be >= 0")
        self.num_malicious_clients = int(num_malicious_clients)
        self.num_clients_to_keep = int(num_clients_to_keep)

    @property
    def weights_by_examples(self) -> bool:  # type: ignore[override]
        """Krum adopts one model; Multi-Krum averages its selection by ``num_examples``."""
        return self.num_clients_to_keep > 0

    def combine(
        self, global_weights: np.ndarray, vectors: list[np.ndarray], counts: np.ndarray, sites: list[str],
        state: State,
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        if len(sites) == 1:
            return vectors[0].copy(), state, {"clients": 1, "selected": sites}
        scores = krum_scores(vectors, self.num_malicious_clients)
        order = np.argsort(scores, kind="stable")
        if self.num_clients_to_keep > 0:
            keep = np.sort(order[: self.num_clients_to_keep])
            mean = StreamingWeightedMean()
            for i in keep:
                mean.add(vectors[i], counts[i])
            new = mean.result()
        else:
            keep = order[:1]
            new = vectors[keep[0]].copy()
        return new, state, {"clients": len(sites), "selected": [sites[i] for i in keep],
                            "scores": {s: float(v) for s, v in zip(sites, scores, strict=True)}}

    def params(self) -> dict[str, Any]:
        return {"num_malicious_clients": self.num_malicious_clients, "num_clients_to_keep": self.num_clients_to_keep}
