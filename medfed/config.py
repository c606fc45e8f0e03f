"""Federation config files: YAML with ``${VAR}`` / ``${VAR:-default}`` expansion, typed and validated.

A federation config names an adapter and lists *sources* (data locations on disk). An adapter may
turn one source into several sites (a BraTS/FeTS partition CSV does). Relative paths are resolved
against the config file's folder, so a config and its data can be moved together.

Example::

    name: brain-mri-demo
    adapter: brats
    split: {seed: 0, val: 0.15, test: 0.25}
    sources:
      - root: ${MEDFED_DATA:-..}/brain_mri
        partition_csv: partitioning_1.csv
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medfed.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

M = TypeVar("M", bound=BaseModel)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """``ValueError`` unless both fractions lie in ``[0, 1)`` and sum below 1."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"split fractions must be in [0, 1) and sum below 1, got val={val_fraction}, test={test_fraction}"
        )


class SplitConfig(BaseModel):
    """How each site's cases are split: seeded and stratified (see :func:`medfed.sites.splits.assign_splits`)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    val: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.25, ge=0, lt=1)
    stratify: str | None = Field(
        "auto", description="label column to stratify on; 'auto' = the site's primary label; null = none"
    )

    @model_validator(mode="after")
    def _fractions_leave_training_cases(self) -> SplitConfig:
        """``val + test`` below 1 (:func:`check_fractions`)."""
        check_fractions(self.val, self.test)  # its ValueError becomes a field error naming `split`
        return self


class FederationConfig(BaseModel):
    """The top level of a ``sites/*.yaml`` file."""

    model_config = ConfigDict(extra="forbid")
    name: str
    adapter: str
    sources: list[dict[str, Any]] = Field(min_length=1)
    split: SplitConfig = Field(default_factory=SplitConfig)
    min_count: int = Field(5, ge=1, description="counts below this are shown as '<min_count' in summaries")
    id_salt: str = Field("", description="secret mixed into hashed case ids; keep it private to the site")


def expand_vars(text: str, source: str = "<string>") -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset ``${VAR}`` without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise ConfigError(f"{source}: environment variable {name} is not set and has no default (${{{name}:-...}})")

    return _VAR.sub(substitute, text)


def read_yaml(path: Path | str) -> dict[str, Any]:
    """Read a YAML mapping with variables expanded; errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: config file cannot be read ({type(err).__name__}: {err})") from None
    try:
        data = yaml.safe_load(expand_vars(text, str(path)))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def validate_model(model: type[M], data: dict[str, Any], source: str, prefix: str = "") -> M:
    """Validate ``data`` into ``model``; every invalid field is listed as ``source: field: message``."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "(top level)"
            lines.append(f"{source}: {prefix}{field}: {e['msg']}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def load_federation_config(path: Path | str) -> FederationConfig:
    """Parse and validate a federation config file."""
    return validate_model(FederationConfig, read_yaml(path), str(path))


def resolve_path(value: str | Path, base: Path) -> Path:
    """``value`` as an absolute path; relative values are taken relative to ``base`` (the config's folder)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()
