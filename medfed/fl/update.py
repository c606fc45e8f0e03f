"""What a client sends back after local training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ClientUpdate:
    """New local weights (flat float32, see :mod:`medfed.fl.weights`), the number of training examples
    they were fit on (the FedAvg weight), and optional diagnostics (loss, steps, algorithm statistics)."""

    site: str
    weights: np.ndarray
    num_examples: int
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float32)
        if self.weights.ndim != 1:
            raise ValueError(f"site {self.site}: update weights must be a flat vector, got {self.weights.shape}")
        if self.num_examples < 0:
            raise ValueError(f"site {self.site}: num_examples must be >= 0, got {self.num_examples}")
