"""Label taxonomies: which labels a report classifier assigns, what each means, which values it may take.

A taxonomy is a YAML file; nothing else in medfed knows a label list, so switching taxonomy is switching a
file (MOSAIC, "any label taxonomy")::

    name: chest_xray_findings
    values: [present, absent, uncertain, not_mentioned]   # allowed values, shared by every label
    positive: [present]                                   # values counted as positive in F1 and label tables
    labels:
      - name: Cardiomegaly
        definition: Enlarged cardiac silhouette (cardiothoracic ratio above 0.5 on a PA view).
        synonyms: {en: [cardiomegaly, enlarged heart], es: [cardiomegalia]}
        values: [present, absent]                          # optional: this label's own values

:func:`load_taxonomy` reports every problem of a file at once (duplicate names, empty definitions, unknown
values, ...), naming the label.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from medfed.config import read_yaml, validate_model
from medfed.errors import ConfigError

DEFAULT_VALUES: tuple[str, ...] = ("present", "absent", "uncertain", "not_mentioned")


class Label(BaseModel):
    """One label: ``name``, a one-line clinical ``definition``, optional ``values`` and per-language ``synonyms``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    definition: str
    values: list[str] | None = None
    synonyms: dict[str, list[str]] = Field(default_factory=dict)


class Taxonomy(BaseModel):
    """A label taxonomy (see the module docstring); ``labels`` keep the file's order."""

    model_config = ConfigDict(extra="forbid")
    name: str
    values: list[str] = Field(default_factory=lambda: list(DEFAULT_VALUES))
    positive: list[str] = Field(default_factory=lambda: ["present"])
    uncertain: list[str] = Field(default_factory=lambda: ["uncertain"], description="values meaning 'uncertain'")
    labels: list[Label]

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    def label(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(name)

    def allowed(self, name: str) -> list[str]:
        """The values label ``name`` may take."""
        return list(self.label(name).values or self.values)

    def is_positive(self, value: str) -> bool:
        return value in self.positive

    def languages(self) -> list[str]:
        """Languages with synonyms anywhere in the taxonomy, sorted."""
        return sorted({lang for label in self.labels for lang in label.synonyms})


def taxonomy_problems(taxonomy: Taxonomy) -> list[str]:
    """Every defect: no labels, blank or duplicate names, empty definitions, empty or repeated value lists,
    positive/uncertain values that are not allowed values, blank synonyms."""
    problems = []
    if not taxonomy.labels:
        problems.append("labels: the taxonomy has no label")
    if not taxonomy.values or len(set(taxonomy.values)) != len(taxonomy.values):
        problems.append(f"values: must be a non-empty list without repeats, got {taxonomy.values}")
    for field in ("positive", "uncertain"):
        unknown = [v for v in getattr(taxonomy, field) if v not in taxonomy.values]
        if unknown:
            problems.append(f"{field}: {', '.join(unknown)} not among values ({', '.join(taxonomy.values)})")
    seen: dict[str, int] = {}
    for i, label in enumerate(taxonomy.labels):
        where = f"labels[{i}] ({label.name!r})"
        key = label.name.strip().casefold()
        if not key:
            problems.append(f"labels[{i}]: empty name")
        elif key in seen:
            problems.append(f"{where}: duplicate label name (also labels[{seen[key]}])")
        else:
            seen[key] = i
        if not label.definition.strip():
            problems.append(f"{where}: empty definition (a one-line clinical definition is required)")
        if label.values is not None and (not label.values or len(set(label.values)) != len(label.values)):
            problems.append(f"{where}: values must be a non-empty list without repeats, got {label.values}")
        for lang, words in label.synonyms.items():
            if any(not w.strip() for w in words):
                problems.append(f"{where}: synonyms.{lang} holds an empty synonym")
    return problems


def load_taxonomy(path: Path | str) -> Taxonomy:
    """Read and check a taxonomy file; :class:`ConfigError` lists every problem with the file's name."""
    taxonomy = validate_model(Taxonomy, read_yaml(path), str(path))
    problems = taxonomy_problems(taxonomy)
    if problems:
        raise ConfigError(f"{path}: taxonomy has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return taxonomy
