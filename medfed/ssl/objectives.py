"""SSL objectives as pure functions of embeddings.

``nt_xent`` is SimCLR's normalised-temperature cross entropy (Chen et al., ICML 2020, eq. 1): for 2N
embeddings of N images under two views, with ``s(u, v) = u.v / (|u| |v|)``,

    l(i, j) = -log( exp(s(z_i, z_j)/tau) / sum_{k != i} exp(s(z_i, z_k)/tau) ),

averaged over all 2N anchors, each paired with the other view of its image. Chosen for medfed's 2D
pretraining because it has no teacher network or centring state: federated SSL then aggregates exactly the
encoder weights with any strategy, and resume is exact. Its known cost, needing many negatives per batch, is
why medfed pretrains with the largest batch that fits.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Mean NT-Xent loss of paired embeddings ``z1[i] <-> z2[i]`` (shapes ``(N, d)``, N >= 2)."""
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 2:
        raise ValueError(f"nt_xent needs two (N, d) batches with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)
