"""Experiment configs (``tasks/*.yaml``): a federation, a task, a training budget and the methods to compare.

.. code-block:: yaml

    name: chest_xray_pneumonia
    federation: demo:chest_xray         # the embedded demo federation, or a path to a sites/*.yaml file
    seed: 0
    task: {kind: classification, labels: [Pneumonia], model: {name: resnet}}
    training: {rounds: 5, local_epochs: 1, eval_every: 1, fraction_fit: 1.0, min_fit_clients: 1}
    methods: [local_only, fedavg, {strategy: fedprox, proximal_mu: 0.01}, centralised]
    site_conditions:                    # optional: simulated corrupted / malicious sites
      site-3: {corruption: {type: motion_blur, severity: 3}, adversary: {kind: forger}}
    server_benchmark: {cases: 12}       # optional: training cases held by the server (FedAgain)

Budgets are matched as FLamby does: every method sees each training case ``rounds * local_epochs`` times
(centralised: ``rounds * local_epochs`` epochs over the pooled data), when ``fraction_fit`` is 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medfed.config import read_yaml, validate_model
from medfed.errors import ConfigError
from medfed.fl.adversaries import AdversaryConfig
from medfed.fl.strategies import STRATEGIES, Strategy, build_strategy
from medfed.sites.conditioned import CorruptionConfig
from medfed.tasks import TaskConfig

DEMO_PREFIX = "demo:"
#: ``server_learning_rate: match:<method>``: the step-matched baseline (:mod:`medfed.fl.step`)
MATCH_PREFIX = "match:"


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rounds: int = Field(5, ge=1)
    local_epochs: int = Field(1, ge=1)
    local_steps: int | None = Field(
        None, ge=1, description="if set: exactly this many optimiser steps per site and round, cycling the site's "
        "data (FLamby's num_updates), instead of local_epochs passes; every site then does the same local work"
    )
    eval_every: int = Field(0, ge=0, description="evaluate on val and test every N rounds; 0 = only at the end")
    fraction_fit: float = Field(1.0, gt=0, le=1, description="share of sites sampled each round (Flower's name)")
    min_fit_clients: int = Field(1, ge=1, description="sites sampled at least, and needed for a round to count")
    availability: float | dict[str, float] = Field(
        1.0, description="probability that a site is reachable in a round (one number, or per site; default 1)"
    )

    @field_validator("availability")
    @classmethod
    def _probabilities(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        values = [value] if isinstance(value, int | float) else list(value.values())
        bad = [v for v in values if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"availability must lie in [0, 1], got {bad[0]}")
        return value


class MethodConfig(BaseModel):
    """``strategy`` plus its hyper-parameters (Flower's names, e.g. ``proximal_mu``); ``name`` labels results."""

    model_config = ConfigDict(extra="allow")
    strategy: str
    name: str | None = None
    init: str | dict[str, str] | None = Field(
        None, description="pretrained encoder weights for this method's model ({path, format} or a path; relative "
        "to the experiment file), overriding task.model.init: e.g. random vs SSL initialisation side by side"
    )

    @property
    def label(self) -> str:
        return self.name or self.strategy

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def match_target(self) -> str | None:
        """The method whose mean logged ``step_ratio`` sets this method's ``server_learning_rate``
        (``server_learning_rate: match:<method>``), or None."""
        value = (self.model_extra or {}).get("server_learning_rate")
        if isinstance(value, str) and value.startswith(MATCH_PREFIX):
            return value[len(MATCH_PREFIX):]
        return None


class PartitionConfig(BaseModel):
    """Re-partition the federation's cases into new sites (:mod:`medfed.partition`) before training.

    ``method``: ``iid``, ``quantity_skew`` (``alpha``), ``dirichlet_label_skew`` (``alpha`` over the classes
    of ``label``, default the task's first label) or ``file`` (a ``case_id,site`` CSV, e.g. written by an
    earlier run). The partition used is saved as ``partition.csv`` in the run directory.
    """

    model_config = ConfigDict(extra="forbid")
    method: Literal["iid", "quantity_skew", "dirichlet_label_skew", "file"]
    n_sites: int | None = Field(None, ge=1)
    alpha: float = Field(0.5, gt=0)
    min_size: int = Field(10, ge=1)
    label: str | None = None
    seed: int | None = Field(None, description="default: the experiment's seed")
    prefix: str = Field("site", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    file: str | None = Field(None, description="method file: the CSV, relative to the experiment file")

    @model_validator(mode="after")
    def _fields_for_method(self) -> PartitionConfig:
        if self.method == "file" and not self.file:
            raise ValueError("method file needs `file` (a case_id,site CSV)")
        if self.method != "file" and self.n_sites is None:
            raise ValueError(f"method {self.method} needs `n_sites`")
        return self


class SiteConditions(BaseModel):
    """Simulated conditions of one site: corrupted images (:mod:`medfed.sites.conditioned`) and/or an
    adversary (:mod:`medfed.fl.adversaries`)."""

    model_config = ConfigDict(extra="forbid")
    corruption: CorruptionConfig | None = None
    adversary: AdversaryConfig | None = None


class ServerBenchmarkConfig(BaseModel):
    """A small benchmark set the server holds: ``cases`` training cases (of the task's training pool) drawn
    from all sites with ``(seed, "server-benchmark")`` and removed from their sites, for every method."""

    model_config = ConfigDict(extra="forbid")
    cases: int = Field(16, ge=1)
    seed: int | None = Field(None, description="default: the experiment's seed")


class ReportConfig(BaseModel):
    """``report:`` of an experiment config: what its report adds to the defaults."""

    model_config = ConfigDict(extra="forbid")
    #: non-inferiority / equivalence margins per compared metric (e.g. ``{auroc: 0.02}``); ``--margin`` adds to them
    margins: dict[str, float] = Field(default_factory=dict)

    @field_validator("margins")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"margins must be positive: {bad}")
        return value


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    federation: str
    seed: int = 0
    seeds: list[int] | None = Field(
        None, description="run every method under each of these seeds (new initialisation, sampling and, where the "
        "partitioner is seeded, partition); the run directory then holds one seed-<s>/ run per seed"
    )
    task: TaskConfig
    training: TrainingConfig = TrainingConfig()
    methods: list[MethodConfig] = Field(min_length=1)
    partition: PartitionConfig | None = None
    site_conditions: dict[str, SiteConditions] = Field(default_factory=dict)
    server_benchmark: ServerBenchmarkConfig | None = None
    report: ReportConfig = ReportConfig()

    @field_validator("methods", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"strategy": m} if isinstance(m, str) else m for m in value]
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else check_seeds(value)

    @model_validator(mode="after")
    def _unique_labels(self) -> ExperimentConfig:
        labels = [m.label for m in self.methods]
        duplicated = sorted({x for x in labels if labels.count(x) > 1})
        if duplicated:
            raise ValueError(f"method names must be unique; repeated: {duplicated} (give each a `name`)")
        for method in self.methods:
            target = method.match_target
            if target is None:
                continue
            if target not in labels or target == method.label:
                others = ", ".join(x for x in labels if x != method.label)
                raise ValueError(f"method {method.label}: server_learning_rate {MATCH_PREFIX}{target}: no other method "
                                 f"named {target!r} in this experiment (methods: {others})")
            if next(m for m in self.methods if m.label == target).match_target is not None:
                raise ValueError(f"method {method.label}: {MATCH_PREFIX}{target}, itself step-matched: match a method "
                                 "with its own server step")
        return self


def check_seeds(seeds: list[int]) -> list[int]:
    """``seeds`` as given, or a ValueError when it is empty or repeats a seed."""
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed (or leave seeds out for one run with `seed`)")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds repeats {', '.join(map(str, repeated))}: each seed runs once")
    return list(seeds)


def load_experiment(path: Path | str) -> ExperimentConfig:
    """Parse and validate an experiment config, including every method's strategy and parameters."""
    config = validate_model(ExperimentConfig, read_yaml(path), str(path))
    # pretrained-weights files are relative to the experiment file, like the federation
    if config.task.model.get("init") is not None:
        config.task.model["init"] = resolve_init(config.task.model["init"], Path(path).parent)
    if isinstance(config.task.model.get("plans"), str):  # nnU-Net plans file, also relative to the experiment
        from medfed.config import resolve_path

        config.task.model["plans"] = str(resolve_path(config.task.model["plans"], Path(path).parent))
    for method in config.methods:
        if method.init is not None:
            method.init = resolve_init(method.init, Path(path).parent)
    for i, method in enumerate(config.methods):
        params = method.params
        if method.match_target is not None:  # checked with a placeholder; the rate is measured when the run gets there
            params = {**params, "server_learning_rate": 1.0}
        build_strategy(method.strategy, params, source=f"{path}: methods.{i}")
    return config


def resolve_init(init: str | dict[str, Any], base: Path) -> dict[str, Any]:
    """``{path, format}`` with ``path`` made absolute against ``base`` (the experiment file's folder)."""
    from medfed.config import resolve_path

    spec = {"path": init} if isinstance(init, str) else dict(init)
    if "path" in spec:
        spec["path"] = str(resolve_path(str(spec["path"]), base))
    return spec


def build_strategies(config: ExperimentConfig, source: str = "<config>",
                     matched: dict[str, float] | None = None) -> dict[str, Strategy]:
    """Every method's strategy; a step-matched method (``match:<method>``) takes its rate from ``matched`` (label ->
    server learning rate), or 1.0 as a placeholder until it is measured."""
    matched = matched or {}
    strategies = {}
    for m in config.methods:
        params = m.params
        if m.match_target is not None:
            params = {**params, "server_learning_rate": matched.get(m.label, 1.0)}
        strategies[m.label] = build_strategy(m.strategy, params, source)
    return strategies


def run_order(config: ExperimentConfig) -> list[str]:
    """Method labels in the order they train: a step-matched method after the method it matches."""
    return ([m.label for m in config.methods if m.match_target is None]
            + [m.label for m in config.methods if m.match_target is not None])


def federation_path(config: ExperimentConfig, config_dir: Path, demo_configs: dict[str, Path] | None) -> Path:
    """Where the experiment's federation config is: a demo modality or a path relative to the experiment file."""
    from medfed.config import resolve_path

    if config.federation.startswith(DEMO_PREFIX):
        modality = config.federation[len(DEMO_PREFIX):]
        if demo_configs is None or modality not in demo_configs:
            known = ", ".join(sorted(demo_configs or {}))
            raise ConfigError(f"federation {config.federation!r}: no demo federation {modality!r} (have: {known})")
        return demo_configs[modality]
    return resolve_path(config.federation, config_dir)


__all__ = ["STRATEGIES", "ExperimentConfig", "MethodConfig", "TrainingConfig", "load_experiment"]
