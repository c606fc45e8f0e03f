"""Embedding-based skew: non-IID sites without labels, for any task (segmentation included).

After "Redefining non-IID Data in Federated Learning for Computer Vision Tasks" (the seed paper): embed
every case with a *fixed* encoder, cluster the embeddings (k-means), then spread each cluster over the sites
with Dirichlet proportions, exactly as label skew spreads classes. Sites then differ in what their images
look like (scanner, anatomy, appearance), which label skew cannot express for segmentation.

The encoder is any ``torch.nn.Module`` mapping a batch of images to features (pooled to one vector per
case): load a pretrained checkpoint of your own, or use :func:`fixed_random_encoder`, a seeded randomly
initialised MONAI network (random convolutional features still separate appearance; no download needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from torch import nn

from medfed.partition.assign import dirichlet_label_skew


def fixed_random_encoder(spatial_dims: int = 2, in_channels: int = 1, seed: int = 0) -> nn.Module:
    """A seeded, randomly initialised MONAI ResNet-10 trunk with global average pooling (eval mode)."""
    from monai.networks.nets import ResNet

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        net = ResNet("basic", [1, 1, 1, 1], [16, 32, 64, 128], spatial_dims=spatial_dims, n_input_channels=in_channels,
                     num_classes=1, feed_forward=False)
    finally:
        torch.random.set_rng_state(generator_state)
    return net.eval()


@torch.no_grad()
def encode(images: Iterable[torch.Tensor], encoder: nn.Module) -> np.ndarray:
    """Features ``(n, d)`` of image batches ``(b, C, *spatial)``, flattened after the encoder."""
    encoder.eval()
    parts = [encoder(batch.float()).flatten(start_dim=1).cpu().numpy() for batch in images]
    if not parts:
        raise ValueError("no images to encode")
    return np.concatenate(parts).astype(np.float64)


def cluster(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means cluster of each (standardised) embedding, seeded (scikit-learn, 10 initialisations)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < n_clusters:
        raise ValueError(f"need (n, d) embeddings with n >= n_clusters={n_clusters}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    scale = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)


def embedding_skew(
    case_ids: Sequence[str], embeddings: np.ndarray, n_sites: int, n_clusters: int = 10, alpha: float = 0.5,
    min_size: int = 10, seed: int = 0, groups: Sequence[str] | None = None,
) -> pd.Series:
    """Cluster the embeddings, then Dirichlet-spread each cluster over ``n_sites`` (see module docstring); with
    ``groups`` whole groups move, each with its most frequent cluster."""
    if len(embeddings) != len(case_ids):
        raise ValueError(f"{len(embeddings)} embeddings for {len(case_ids)} cases")
    return dirichlet_label_skew(case_ids, cluster(embeddings, n_clusters, seed), n_sites, alpha, min_size, seed,
                                groups=groups)
