"""Evaluate report backends on a report federation and write a run directory that ``medfed report`` reads.

Each backend labels every site's val and test reports *at the site*; per report and label the predicted value
becomes a binary record like an image classifier's: ``target`` 1 when the gold value is positive in the
taxonomy, 0 otherwise, -1 (masked) when the gold value is uncertain; ``prediction`` 1 when the predicted value
is positive; ``score`` the confidence of "positive" (``c`` if predicted positive, else ``1 - c``). So the
report machinery gives per site and per label F1, precision, recall (sensitivity) with bootstrap CIs, the
macro and the support-weighted F1, and paired comparisons between backends on the same reports.

Run directory (``<out>/<name>/``): ``config.yaml`` (task kind classification, labels = the taxonomy's),
``sites.json``, ``predictions/<backend>.csv``, ``metrics.csv``, ``summary.csv``, and the report files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfed.config import read_yaml, resolve_path, validate_model
from medfed.errors import ConfigError
from medfed.fl.evaluation import metric_table
from medfed.fl.summary import summary_table
from medfed.io import atomic_write_text
from medfed.tasks.classification import ClassificationConfig, ClassificationTask
from medfed.text.base import CONFIDENCE_SUFFIX, ReportBackend
from medfed.text.taxonomy import Taxonomy

EVAL_SPLITS = ("val", "test")


class BackendSpec(BaseModel):
    """One backend of a report experiment. ``train``: ``none`` (zero-shot), ``local`` (each site fits on its own
    train split and labels its own reports), ``central`` (one fit on every site's train split, pooled: a
    reference, not privacy-preserving) or ``federated`` (heads or LoRA adapters averaged by ``strategy``)."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["rules", "embedding", "llm"]
    label: str | None = None
    train: Literal["none", "local", "central", "federated"] = "none"
    strategy: str = "fedavg"
    rounds: int = Field(10, ge=1)
    local_epochs: int = Field(5, ge=1)
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the backend")

    @property
    def name(self) -> str:
        return self.label or (self.backend if self.train == "none" else f"{self.backend}-{self.train}")


class ReportExperiment(BaseModel):
    """``name``, the report ``federation`` config, ``seed`` and the ``backends`` to compare."""

    model_config = ConfigDict(extra="forbid")
    name: str
    federation: str
    seed: int = 0
    backends: list[BackendSpec]

    @field_validator("backends", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        return [{"backend": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("backends")
    @classmethod
    def _unique(cls, value: list[BackendSpec]) -> list[BackendSpec]:
        names = [b.name for b in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"backend label(s) {', '.join(repeated)} used twice; set `label:`")
        if not value:
            raise ValueError("at least one backend")
        return value


def load_report_experiment(path: Path | str) -> ReportExperiment:
    return validate_model(ReportExperiment, read_yaml(path), str(path))


def binary_records(
    taxonomy: Taxonomy, predictions: pd.DataFrame, targets: pd.DataFrame, site: str, split: str
) -> pd.DataFrame:
    """Records ``case_id, label, score, target, prediction, site, split, threshold, model`` (module docstring)."""
    merged = targets.merge(predictions, on="report_id", suffixes=("__gold", ""), validate="one_to_one")
    frames = []
    for label in taxonomy.names:
        gold = merged[f"{label}__gold"].astype(str)
        value = merged[label].astype(str)
        confidence = merged[label + CONFIDENCE_SUFFIX].to_numpy(dtype=np.float64)
        positive = value.map(taxonomy.is_positive).to_numpy(dtype=bool)
        target = np.where(gold.isin(taxonomy.uncertain), -1, gold.map(taxonomy.is_positive).astype(int))
        frames.append(pd.DataFrame({
            "case_id": merged["report_id"], "label": label, "score": np.where(positive, confidence, 1 - confidence),
            "target": target.astype(float), "prediction": positive.astype(int), "site": site, "split": split,
            "threshold": 0.5, "model": "global", "status": merged["status"],
        }))
    return pd.concat(frames, ignore_index=True)


@dataclass
class ReportRun:
    out: Path
    metrics: pd.DataFrame
    summary: pd.DataFrame
    seconds: dict[str, float]


Labeller = Callable[[str, str], pd.DataFrame]  # (site, split) -> records


def write_report_run(
    out: Path, experiment: ReportExperiment, taxonomy: Taxonomy, federation_file: Path,
    site_summaries: Sequence[Mapping[str, Any]], records: Mapping[str, pd.DataFrame], min_counts: Mapping[str, int],
    seconds: Mapping[str, float],
) -> ReportRun:
    """Write the run directory of a report experiment (module docstring) and return its tables."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions").mkdir(exist_ok=True)
    config = {"name": experiment.name, "task": {"kind": "classification", "labels": taxonomy.names},
              "methods": [b.name for b in experiment.backends], "federation_file": str(federation_file),
              "taxonomy": taxonomy.name, "seed": experiment.seed, "report_compare": ["f1", "f1_weighted"],
              "backends": [b.model_dump(mode="json") for b in experiment.backends]}
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(out / "sites.json", json.dumps(list(site_summaries), indent=1))
    task = ClassificationTask(ClassificationConfig(labels=taxonomy.names))
    frames = []
    for name, frame in records.items():
        atomic_write_text(out / "predictions" / f"{name}.csv", frame.to_csv(index=False))
        frames.append(metric_table(task, frame, name, min_counts, max(min_counts.values())))
    metrics = pd.concat(frames, ignore_index=True)
    atomic_write_text(out / "metrics.csv", metrics.to_csv(index=False))
    summary = summary_table(metrics, "f1")
    atomic_write_text(out / "summary.csv", summary.rename_axis("site").reset_index().to_csv(index=False))
    atomic_write_text(out / "timing.json", json.dumps(dict(seconds), indent=1))
    return ReportRun(out, metrics, summary, dict(seconds))


def label_sites(
    backend: ReportBackend | None, sites: Sequence[Any], taxonomy: Taxonomy,
    backend_for_site: Callable[[str], ReportBackend] | None = None,
) -> tuple[pd.DataFrame, float]:
    """Every site's val and test reports labelled by ``backend`` (or ``backend_for_site(site)``) inside the site;
    returns the records and the seconds spent predicting."""
    frames, seconds = [], 0.0
    for site in sites:
        model = backend_for_site(site.name) if backend_for_site is not None else backend
        assert model is not None
        for split in EVAL_SPLITS:
            reports = site.reports(split)
            if not reports:
                continue
            began = time.perf_counter()
            predictions = model.predict(reports)
            seconds += time.perf_counter() - began
            frames.append(binary_records(taxonomy, predictions, site.targets(split), site.name, split))
    if not frames:
        raise ConfigError("no site has val or test reports to label")
    return pd.concat(frames, ignore_index=True), seconds


def federation_file(experiment: ReportExperiment, config_path: Path) -> Path:
    return resolve_path(experiment.federation, config_path.parent)


def site_summary(site: Any) -> dict[str, Any]:
    """A report site's suppressed summary in the shape of an image site's (``sites.json`` of a run)."""
    summary = site.summary()
    return {"site": site.name, "modality": "reports", "cases": summary["reports"], "splits": summary["splits"],
            "labels": summary["labels"], "metadata": {"language": {site.language: summary["reports"]}},
            "min_count": site.min_count}


def train_backend(spec: BackendSpec, taxonomy: Taxonomy, sites: Sequence[Any], seed: int) -> tuple[
        ReportBackend | Callable[[str], ReportBackend], dict[str, Any]]:
    """The trained backend (or, for ``train: local``, a site -> backend map) and what training logged."""
    from medfed.text.backends import build_backend

    options = dict(spec.options)
    if spec.train == "none":
        return build_backend(spec.backend, taxonomy, **options), {}
    if spec.backend == "rules":
        raise ConfigError(f"backend {spec.name}: the rules backend has nothing to train (train: none)")
    data = {site.name: (site.reports("train"), site.targets("train")) for site in sites}
    if spec.train == "local":
        models = {name: build_backend(spec.backend, taxonomy, **options).fit(reports, targets)
                  for name, (reports, targets) in data.items()}
        return models.__getitem__, {}
    if spec.train == "central":
        reports = [r for rs, _ in data.values() for r in rs]
        targets = pd.concat([t for _, t in data.values()], ignore_index=True)
        return build_backend(spec.backend, taxonomy, **options).fit(reports, targets), {}
    from medfed.fl.config import build_strategy

    strategy = build_strategy(spec.strategy, {}, f"backend {spec.name}")
    if spec.backend == "embedding":
        from medfed.text.federated import federated_heads

        backend, log = federated_heads(data, lambda: build_backend("embedding", taxonomy, **options), strategy,
                                       rounds=spec.rounds, local_epochs=spec.local_epochs, seed=seed)
        return backend, {"rounds": log}
    from medfed.text.llm_federated import federated_lora

    backend = build_backend("llm", taxonomy, **options)
    log = federated_lora(data, backend, strategy, rounds=spec.rounds, local_steps=spec.local_epochs, seed=seed)
    return backend, {"rounds": log}


def run_report_experiment(config_path: Path | str, out_root: Path | str = "reports", progress: bool = True) -> ReportRun:
    """Train (where asked) and evaluate every backend of a report experiment; write its run directory."""
    from tqdm.auto import tqdm

    from medfed.text.report_sites import load_report_federation

    config_path = Path(config_path)
    experiment = load_report_experiment(config_path)
    fed_file = federation_file(experiment, config_path)
    federation = load_report_federation(fed_file, strict=True)
    taxonomy = federation.taxonomy
    sites = list(federation.sites)
    records, seconds, logs = {}, {}, {}
    for spec in tqdm(experiment.backends, desc="backends", disable=None if progress else True, leave=False):
        began = time.perf_counter()
        trained, logs[spec.name] = train_backend(spec, taxonomy, sites, experiment.seed)
        train_seconds = time.perf_counter() - began
        if callable(trained) and not isinstance(trained, ReportBackend):
            records[spec.name], predict_seconds = label_sites(None, sites, taxonomy, trained)  # type: ignore[arg-type]
        else:
            records[spec.name], predict_seconds = label_sites(trained, sites, taxonomy)
        seconds[spec.name] = {"train": round(train_seconds, 2), "predict": round(predict_seconds, 2)}
    out = Path(out_root) / experiment.name
    run = write_report_run(out, experiment, taxonomy, fed_file, [site_summary(s) for s in sites], records,
                           {s.name: s.min_count for s in sites}, seconds)
    for name, log in logs.items():
        if log:
            atomic_write_text(out / "runs" / name / "rounds.jsonl",
                              "".join(json.dumps(r) + "\n" for r in log.get("rounds", [])))
    return run
