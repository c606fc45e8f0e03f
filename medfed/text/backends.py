"""The backend registry: ``rules`` (no extra dependency), ``embedding`` (the offline multilingual encoder
package), ``llm`` (``medfed[llm]``: transformers, peft). Heavy imports happen only when a backend is built."""

from __future__ import annotations

from typing import Any

from medfed.errors import ConfigError
from medfed.text.base import ReportBackend
from medfed.text.taxonomy import Taxonomy

BACKENDS = ("rules", "embedding", "llm")


def build_backend(name: str, taxonomy: Taxonomy, **options: Any) -> ReportBackend:
    """A backend by name with its keyword options (e.g. ``model_path`` for ``llm``)."""
    if name == "rules":
        from medfed.text.rules import RulesBackend

        return RulesBackend(taxonomy, **options)
    if name == "embedding":
        from medfed.text.embedding import EmbeddingBackend

        return EmbeddingBackend(taxonomy, **options)
    if name == "llm":
        from medfed.text.llm import LLMBackend

        return LLMBackend(taxonomy, **options)
    raise ConfigError(f"unknown report backend {name!r}; choose from {', '.join(BACKENDS)}")
