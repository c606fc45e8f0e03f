"""FedAgain: federated adaptive gain via dual-signal trust (Reyes-Amezcua et al., "Robust Federated
Anomaly Detection Using Dual-Signal Autoencoders", arXiv 2510.06230, 2025; "FedAgain: A Trust-Based and
Robust Federated Learning Strategy for an Automated Kidney Stone Identification in Ureteroscopy", arXiv
2603.19512, 2026).

The server down-weights untrustworthy sites from two signals, without seeing their data. For the K
clients of a round with float weights ``theta_i`` and the global model ``theta``:

1. reliability error ``e_i`` (benchmark reliability):
   ``server`` (default, as the 2026 paper defines it): the task loss of client ``i``'s model on a small
   curated benchmark set held by the server (for the autoencoder, its mean squared reconstruction error);
   ``client`` (the authors' code; for federations where the server holds no data): the client-reported
   ``start_loss``, the loss of the received global model on the client's own training data.
2. model divergence ``d_i = 1 - cos(theta, theta_i)``, over the floating-point entries of the whole model
   (parameters and batch-norm statistics).
3. trust ``tau_i = 1 / ((e_i + eps) (d_i + eps))``, ``eps = 1e-6`` (both signals low = trusted).
4. gain ``gamma_i = tau_i / sum_j tau_j``; ``theta_new = sum_i gamma_i theta_i`` on floating-point
   entries; integer buffers (batch counters) are kept from the global model.

Equation numbers of the papers could not be checked (their text was not reachable from this workplace):
the formulas above are those of the authors' public code (GitHub Ivanrs297/federated-kidney-stone-corruption-
detection), which matches the papers' abstracts. Choices the code leaves open, made explicit here:
``sample_weighting`` (default off, as in the code: trust alone sets the gain; on: ``tau_i * n_i``), and a
client whose error or divergence is not finite gets trust 0 (recorded). No state is kept across rounds.

Aggregation streams: one running float64 sum of ``tau_i theta_i``, never K models in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from medfed.fl.strategies.base import State, Strategy
from medfed.fl.strategies.fedavg import StreamingWeightedMean
from medfed.fl.update import ClientUpdate
from medfed.fl.weights import layout_of, model_divergence, set_weights
from medfed.fl.protocols import TaskView

EPSILON = 1e-6


def trust_scores(errors: np.ndarray, divergences: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """``tau_i = 1 / ((e_i + eps) (d_i + eps))``; 0 where a signal is not finite or the product is not positive."""
    errors, divergences = np.asarray(errors, np.float64), np.asarray(divergences, np.float64)
    product = (errors + epsilon) * (divergences + epsilon)
    ok = np.isfinite(product) & (product > 0)
    return np.where(ok, 1.0 / np.where(ok, product, 1.0), 0.0)


def gains(trust: np.ndarray) -> np.ndarray:
    """``gamma_i = tau_i / sum_j tau_j`` (all zero when no client is trusted)."""
    trust = np.asarray(trust, np.float64)
    total = trust.sum()
    return trust / total if total > 0 else np.zeros_like(trust)


class FedAgain(Strategy):
    name: ClassVar[str] = "fedagain"
    weights_by_examples: ClassVar[bool] = False

    def __init__(
        self,
        reliability: Literal["server", "client"] = "server",
        epsilon: float = EPSILON,
        sample_weighting: bool = False,
    ) -> None:
        if reliability not in ("server", "client"):
            raise ValueError(f"reliability must be 'server' or 'client', got {reliability!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.reliability = reliability
        self.epsilon = float(epsilon)
        self.sample_weighting = bool(sample_weighting)
        self._task: TaskView | None = None
        self._model: nn.Module | None = None
        self._benchmark: Dataset | None = None
        self._float_mask: np.ndarray | None = None

    @property
    def wants_start_loss(self) -> bool:  # type: ignore[override]
        return self.reliability == "client"

    def needs_server_benchmark(self) -> bool:
        return self.reliability == "server"

    def prepare(self, model: nn.Module) -> None:
        self._float_mask = layout_of(model).is_float()

    def attach_server_data(self, task: TaskView, model: nn.Module, benchmark: Dataset | None) -> None:
        self._task, self._model, self._benchmark = task, model, benchmark

    # ----------------------------------------------------------------- signals
    def reliability_error(self, update: ClientUpdate) -> float:
        """``e_i``: the client model's loss on the server benchmark, or the client-reported ``start_loss``."""
        if self.reliability == "client":
            if "start_loss" not in update.diagnostics:
                raise ValueError(f"site {update.site} reported no start_loss (reliability 'client' needs it)")
            return float(update.diagnostics["start_loss"])
        if self._task is None or self._model is None or self._benchmark is None:
            raise ValueError("fedagain with reliability 'server' needs the server's benchmark set "
                             "(experiment `server_benchmark`), or use reliability 'client'")
        set_weights(self._model, update.weights)
        return self._task.mean_loss(self._model, self._benchmark)

    def aggregate(
        self, global_weights: np.ndarray, updates: Iterable[ClientUpdate], state: State
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        mask = self._float_mask if self._float_mask is not None else np.ones(global_weights.shape, bool)
        every = bool(mask.all())
        reference = (global_weights if every else global_weights[mask]).astype(np.float64)  # once per round
        reference_norm = float(np.linalg.norm(reference))
        mean = StreamingWeightedMean()
        sites, errors, divergences, trusts = [], [], [], []
        for update in updates:
            error = self.reliability_error(update)
            divergence = model_divergence(reference, reference_norm, update.weights if every else update.weights[mask])
            trust = float(trust_scores(np.array([error]), np.array([divergence]), self.epsilon)[0])
            weight = trust * update.num_examples if self.sample_weighting else trust
            if weight > 0:
                mean.add(update.weights, weight)
            sites.append(update.site)
            errors.append(error)
            divergences.append(divergence)
            trusts.append(weight)
        if not sites:
            return global_weights, state, {"clients": 0}
        gain = gains(np.array(trusts))
        diagnostics: dict[str, Any] = {
            "clients": len(sites),
            "reliability_error": dict(zip(sites, errors)),
            "divergence": dict(zip(sites, divergences)),
            "trust": dict(zip(sites, trusts)),
            "gain": dict(zip(sites, gain.tolist())),
        }
        if mean.clients == 0:
            diagnostics["kept_global"] = "no client was trusted (every trust score was 0)"
            return global_weights, state, diagnostics
        new = np.where(mask, mean.result(), global_weights).astype(np.float32)
        return new, state, diagnostics

    def params(self) -> dict[str, Any]:
        return {"reliability": self.reliability, "epsilon": self.epsilon, "sample_weighting": self.sample_weighting}
