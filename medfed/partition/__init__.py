"""Split pooled data into federated sites: natural, IID, quantity skew, Dirichlet label skew and
embedding-based skew, written as shareable CSV files (see :mod:`medfed.partition.assign`)."""

from medfed.partition.assign import (
    dirichlet_label_skew,
    iid,
    natural,
    quantity_skew,
    site_names,
)
from medfed.partition.files import read_partition, write_partition

__all__ = [
    "dirichlet_label_skew", "embedding_skew", "iid", "natural", "quantity_skew", "read_partition", "site_names",
    "write_partition",
]


def __getattr__(name: str):
    """``embedding_skew`` (and its helpers) import torch and scikit-learn only when used."""
    if name in ("embedding_skew", "encode", "cluster", "fixed_random_encoder"):
        from medfed.partition import embedding

        return getattr(embedding, name)
    raise AttributeError(name)
