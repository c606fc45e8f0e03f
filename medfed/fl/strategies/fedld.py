"""FedLD: federated learning via loss decomposition (Zeng, Guo, Wang, Wang, Zhou & Qu, MICCAI 2024,
"Tackling data heterogeneity in federated learning via loss decomposition"; arXiv 2408.12300).

The paper splits the global loss into local loss + distribution-shift loss + aggregation loss and reduces
the last two together:

**Margin control (client).** Each site adds ``lambda * log(1 + ||P||_F^2)`` to its loss, ``P`` the class
probabilities of the batch (:class:`medfed.fl.client.MarginControl`); ``margin_lambda`` default 0.03 (the
authors' code; their README example uses 0.1). It regularises class probabilities, so it is specific to
classification: with another task set ``margin_lambda: 0`` to use only the aggregation below, which is
task-agnostic (medfed refuses the combination otherwise, before training).

**Principal-gradient aggregation (server), per parameter tensor.** With the round's K client updates of one
tensor as the rows of ``G`` (``g_i = w_i - w``):

1. ``M = (1/K) G G^T`` (K x K), eigen-decomposed as ``M = sum_j s_j e_j e_j^T`` (``s`` descending);
   principal directions ``w_j = G^T e_j`` (``||w_j||^2 = K s_j``); keep the top
   ``k = max(1, int(K * k_proportion))`` (``k_proportion`` 0.8).
2. calibrate each ``w_j``'s sign so that most clients have ``g_i . w_j >= 0`` (a tie: the sign of
   ``sum_i g_i . w_j``).
3. revise each update: ``g~_i = sum_{j<k} (s_j / sum_all s) ||g_i|| sign(g_i . w_j) w_j / ||w_j||``, its
   projection on each kept direction rescaled to length ``||g_i|| s_j / sum(s)`` (``variant="projection"``,
   the authors' code, where step 2 has no effect since a projection does not depend on the sign of ``w_j``;
   ``variant="calibrated"`` uses the calibrated ``w_j`` itself instead of the projection's sign).
4. aggregate ``u = sum_i a_i g~_i`` with ``a_i = 1/K`` (``weighting="equal"``, the authors' code) or
   ``n_i / sum n`` (``weighting="examples"``); the new tensor is ``w + u``.

Because ``g_i . w_j = K s_j e_ij``, the whole round is ``u = G^T c`` for a K-vector ``c`` computed from the
K x K eigen-decomposition alone (:func:`principal_coefficients`): never a dense K x P SVD. Tensors with one
element, and tensors in their first round (no history yet), take the plain mean ``sum_i a_i g_i``. When all
clients' updates point the same way (``G`` of rank one) every ``g~_i = g_i``: FedLD is FedAvg's average.

**Ablations.** ``margin_lambda: 0`` keeps only the aggregation; ``aggregation: mean`` keeps only the margin control
(every tensor takes the plain mean ``sum_i a_i g_i``; with ``weighting: examples`` that is FedAvg's average).

State: per-tensor exponential moving average of the aggregated update, ``h = gamma h + (1 - gamma) u``
(``gamma`` 0.99, the first round sets ``h = u``), as the authors' code keeps it; it decides which tensors
have had a round (``h != 0``). One float32 model-sized vector, checkpointed. Memory: the K client models
(the eigen-decomposition needs all of them), column blocks of ``BLOCK`` values and K x K matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from torch import nn

from medfed.fl.client import MarginControl
from medfed.fl.strategies.base import State
from medfed.fl.strategies.robust import BLOCK, AllModelsStrategy
from medfed.fl.weights import layout_of
from medfed.fl.protocols import ClientHook, TaskView

Variant = Literal["projection", "calibrated"]
Weighting = Literal["equal", "examples"]
Aggregation = Literal["principal", "mean"]


def principal_coefficients(
    gram: np.ndarray, client_weights: np.ndarray, k_proportion: float = 0.8, variant: Variant = "projection"
) -> np.ndarray:
    """``c`` (T, K) such that FedLD's aggregated update of tensor ``t`` is ``c[t] @ G_t``.

    ``gram`` (T, K, K) holds ``G_t G_t^T`` (not divided by K); ``client_weights`` (K,) sum to one. With the
    eigen-pairs ``(s_j, e_j)`` of ``G G^T / K``: ``c = sum_{j<k} sqrt(s_j / K) / sum(s) (sum_i a_i ||g_i||
    sigma_ij) e_j``, ``sigma_ij = sign(e_ij)`` (projection) or the majority sign of column j (calibrated).
    """
    gram = np.asarray(gram, dtype=np.float64)
    num_clients = gram.shape[-1]
    values, vectors = np.linalg.eigh(gram / num_clients)
    values = np.clip(values[..., ::-1], 0.0, None)  # descending; round-off below zero is zero
    vectors = vectors[..., ::-1]
    total = values.sum(axis=-1)  # (T,)
    kept = min(num_clients, max(1, int(num_clients * k_proportion)))
    values, vectors = values[..., :kept], vectors[..., :kept]  # (T, k), (T, K, k)
    # g_i . w_j = K s_j e_ij: the sign of each client's projection is the sign of its eigenvector entry
    signs = np.sign(vectors)
    if variant == "calibrated":
        # most clients with g_i . w_j >= 0 decides; a tie goes to the sign of sum_i g_i . w_j (an even K
        # would otherwise leave the sign to the eigen-solver)
        votes = (vectors >= 0).sum(axis=-2) - (vectors < 0).sum(axis=-2)  # (T, k)
        majority = np.where(votes != 0, np.sign(votes), np.where(vectors.sum(axis=-2) >= 0, 1.0, -1.0))
        signs = np.broadcast_to(majority[..., None, :], vectors.shape) * np.where(signs == 0, 0.0, 1.0)
    norms = np.sqrt(np.clip(np.diagonal(gram, axis1=-2, axis2=-1), 0.0, None))  # ||g_i||, (T, K)
    weighted_norms = client_weights[None, :] * norms
    scale = np.divide(np.sqrt(values / num_clients), total[:, None], out=np.zeros_like(values),
                      where=total[:, None] > 0)
    per_direction = scale * np.einsum("tk,tkj->tj", weighted_norms, signs)  # (T, k)
    return np.einsum("tkj,tj->tk", vectors, per_direction)


def tensor_chunks(sizes: Sequence[int], num_clients: int) -> list[tuple[int, slice]]:
    """``(tensor index, columns)`` pieces of the flat vector, each at most ``BLOCK // K`` columns."""
    step = max(1, BLOCK // max(1, num_clients))
    chunks, offset = [], 0
    for index, size in enumerate(sizes):
        for start in range(offset, offset + size, step):
            chunks.append((index, slice(start, min(offset + size, start + step))))
        offset += size
    return chunks


class FedLD(AllModelsStrategy):
    name: ClassVar[str] = "fedld"
    #: identical updates have rank one, and a rank-one round is FedAvg's
    consensus_fixed_point: ClassVar[bool] = True

    def __init__(
        self,
        margin_lambda: float = 0.03,
        k_proportion: float = 0.8,
        gamma: float = 0.99,
        weighting: Weighting = "equal",
        variant: Variant = "projection",
        aggregation: Aggregation = "principal",
    ) -> None:
        if margin_lambda < 0:
            raise ValueError(f"margin_lambda must be >= 0, got {margin_lambda}")
        if not 0 < k_proportion <= 1:
            raise ValueError(f"k_proportion must lie in (0, 1], got {k_proportion}")
        if not 0 <= gamma < 1:
            raise ValueError(f"gamma must lie in [0, 1), got {gamma}")
        if weighting not in ("equal", "examples"):
            raise ValueError(f"weighting must be 'equal' or 'examples', got {weighting!r}")
        if variant not in ("projection", "calibrated"):
            raise ValueError(f"variant must be 'projection' or 'calibrated', got {variant!r}")
        if aggregation not in ("principal", "mean"):
            raise ValueError(f"aggregation must be 'principal' or 'mean', got {aggregation!r}")
        self.aggregation: Aggregation = aggregation
        self.margin_lambda, self.k_proportion, self.gamma = float(margin_lambda), float(k_proportion), float(gamma)
        self.weighting: Weighting = weighting
        self.variant: Variant = variant
        self.sizes: tuple[int, ...] | None = None

    @property
    def weights_by_examples(self) -> bool:  # type: ignore[override]
        return self.weighting == "examples"

    # ----------------------------------------------------------------- wiring
    def prepare(self, model: nn.Module) -> None:
        self.use_layout(layout_of(model).sizes)

    def use_layout(self, sizes: Sequence[int]) -> None:
        """The flat vector's tensor sizes, in order (``prepare`` reads them from the model)."""
        self.sizes = tuple(int(s) for s in sizes)

    def check_task(self, task: TaskView) -> str | None:
        if self.margin_lambda > 0 and task.kind != "classification":
            return (f"fedld's margin control regularises class probabilities (Zeng et al. 2024, classification); "
                    f"the {task.kind} task has none: set margin_lambda: 0 to use only the principal-gradient "
                    "aggregation")
        return None

    def client_hooks(self, model: nn.Module, site: str | None = None, state: State | None = None) -> list[ClientHook]:
        return [MarginControl(self.margin_lambda)] if self.margin_lambda > 0 else []

    def initial_state(self, global_weights: np.ndarray, sites: Sequence[str]) -> State:
        return {"history": np.zeros(global_weights.shape, np.float32)}

    def _checked_sizes(self, size: int) -> tuple[int, ...]:
        if self.sizes is None:
            self.sizes = (size,)  # no layout given: the whole vector is one tensor
        if sum(self.sizes) != size:
            raise RuntimeError(f"FedLD's layout covers {sum(self.sizes)} values, the model has {size}: "
                               "call prepare(model) with this model")
        return self.sizes

    # ----------------------------------------------------------------- aggregation
    def combine(
        self, global_weights: np.ndarray, vectors: list[np.ndarray], counts: np.ndarray, sites: list[str],
        state: State,
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        sizes = self._checked_sizes(global_weights.size)
        history = state["history"]
        weights = counts / counts.sum() if self.weighting == "examples" else np.full(len(sites), 1.0 / len(sites))
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        # a tensor has had a round once its history is non-zero (the authors' test); one-element tensors
        # always take the plain mean
        seen = [bool(np.any(history[start:start + size])) for start, size in zip(starts, sizes, strict=True)]
        principal = [t for t, size in enumerate(sizes) if size > 1 and seen[t] and self.aggregation == "principal"]
        row = {t: r for r, t in enumerate(principal)}
        chunks = tensor_chunks(sizes, len(sites))

        buffer = np.empty(len(sites) * max((c.stop - c.start for _, c in chunks), default=0), np.float32)

        def stacked(columns: slice) -> np.ndarray:
            """(K, b) float32 client values of some columns, in one reused buffer."""
            out = buffer[: len(sites) * (columns.stop - columns.start)].reshape(len(sites), -1)
            return np.stack([v[columns] for v in vectors], out=out)

        gram = np.zeros((len(principal), len(sites), len(sites)))
        for tensor, columns in chunks:  # pass 1: G G^T of every tensor that takes the principal path
            if tensor in row:
                block = stacked(columns)
                block -= global_weights[columns]  # updates first: V V^T - ... would cancel catastrophically
                gram[row[tensor]] += block @ block.T
        coefficients = principal_coefficients(gram, weights, self.k_proportion, self.variant)

        new = global_weights.copy()
        new_history = history.copy()
        for tensor, columns in chunks:  # pass 2: u = c G (principal) or a G (plain mean), as c V - (sum c) w
            mix = coefficients[row[tensor]] if tensor in row else weights
            update = mix.astype(np.float32) @ stacked(columns) - np.float32(mix.sum()) * global_weights[columns]
            new[columns] += update
            new_history[columns] = (
                self.gamma * history[columns] + (1 - self.gamma) * update if seen[tensor] else update
            )
        return new, {"history": new_history}, {
            "clients": len(sites), "principal_tensors": len(principal), "tensors": len(sizes),
            "directions": min(len(sites), max(1, int(len(sites) * self.k_proportion))),
        }

    def params(self) -> dict[str, Any]:
        return {"margin_lambda": self.margin_lambda, "k_proportion": self.k_proportion, "gamma": self.gamma,
                "weighting": self.weighting, "variant": self.variant, "aggregation": self.aggregation}
