"""An experiment's run directory, for both engines: its layout, the frozen config, the resume check, its outputs.

Layout of ``<out>/<experiment name>/``::

    config.yaml            resolved experiment config (what ran; a resume must find the same)
    sites.csv, sites.json  per-site case counts and summaries (suppressed below min_count)
    partition.csv          case -> site, when the experiment re-partitions its federation
    runs/<method>/         checkpoints/last.pt and rounds.jsonl (:mod:`medfed.fl.ledger.rounds`);
                           matched_step.json of a step-matched method; metrics.csv of a method trained alone
    predictions/<method>.csv   per-case records of every final model on every site's val and test split
    metrics.csv            method, model, site (or pooled), split, metric, value, n_cases, suppressed
    summary.csv            the printed summary: primary metric on test, sites x methods

Every file is written atomically (a temporary file, then a rename), so a kill never leaves half a file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd
import yaml

from medfed.errors import ConfigError
from medfed.fl.ledger.rounds import MethodLedger
from medfed.fl.names import REPORT_FILES, SEEDS_FILE, seed_dir_name
from medfed.fl.summary import summary_table
from medfed.io import atomic_write_text
from medfed.partition import write_partition

if TYPE_CHECKING:  # annotations only: the ledger needs no task or strategy code
    from medfed.fl.config import ExperimentConfig, SiteConditions

CONFIG_FILE = "config.yaml"
MATCHED_STEP_FILE = "matched_step.json"
METHOD_METRICS = "metrics.csv"


class SummarisedSite(Protocol):
    """What ``sites.csv`` needs of a site: its name, suppressed summary and minimum shown count."""

    name: str
    min_count: int

    def summary(self) -> dict[str, Any]: ...


def resolved_config(config: ExperimentConfig, federation_file: Path | str) -> dict[str, Any]:
    """The experiment config as it ran (validated, defaults filled in) with the federation file it read."""
    data = config.model_dump(mode="json")
    data["federation_file"] = str(federation_file)
    return data


def check_resume_config(config_file: Path, resolved: dict[str, Any]) -> None:
    """A resumed run must find the same resolved config in its run directory; an unreadable or changed
    ``config.yaml`` is a :class:`ConfigError` naming the file."""
    try:
        previous = yaml.safe_load(config_file.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{config_file}: the run directory's config cannot be read ({type(err).__name__}); "
                          "run without --resume to start again, or use another --out") from None
    if previous != resolved:
        raise ConfigError(
            f"{config_file}: the experiment config changed since this run started; resume needs the same "
            "config (run without --resume to start again, or use another --out)"
        )


def describe_conditions(spec: SiteConditions) -> str:
    """``"corruption motion_blur severity 3 on 100% of train; adversary forger (claimed_examples 60)"``."""
    parts = []
    if spec.corruption is not None:
        c = spec.corruption
        parts.append(f"corruption {c.type} severity {c.severity} on {c.fraction:.0%} of {'/'.join(c.splits)}")
    if spec.adversary is not None:
        options = spec.adversary.model_dump(exclude_unset=True, exclude={"kind"})
        detail = ", ".join(f"{k} {v}" for k, v in options.items())
        parts.append(f"adversary {spec.adversary.kind}" + (f" ({detail})" if detail else ""))
    return "; ".join(parts) or "none"


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` as CSV (no index), atomically."""
    atomic_write_text(path, frame.to_csv(index=False))


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=1))


class RunDirectory:
    """The run directory ``out`` of one experiment (one seed)."""

    def __init__(self, out: Path | str) -> None:
        self.out = Path(out)

    # ----------------------------------------------------------------- start
    def prepare(self, resolved: dict[str, Any], resume: bool, *, keep_methods: bool = False) -> bool:
        """Freeze ``resolved`` in ``config.yaml``, or check it against the frozen one when ``resume`` finds one;
        returns whether a previous run is resumed. A fresh start clears the former run's outputs, unless
        ``keep_methods`` (a Flower run trains one method and keeps the others' results)."""
        config_file = self.out / CONFIG_FILE
        if resume and config_file.is_file():
            check_resume_config(config_file, resolved)
            return True
        if not keep_methods:
            for stale in ("runs", "predictions", *(p.name for p in self.out.glob("seed-*") if p.is_dir())):
                shutil.rmtree(self.out / stale, ignore_errors=True)  # a multi-seed run's seed-<s>/ folders too
            for name in ("metrics.csv", "summary.csv", "sites.csv", "sites.json", SEEDS_FILE, *REPORT_FILES):
                (self.out / name).unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_file, yaml.safe_dump(resolved, sort_keys=False))
        return False

    def method_dir(self, method: str) -> Path:
        return self.out / "runs" / method

    def ledger(self, method: str, clients: Sequence[str], shown: Any) -> MethodLedger:
        """The checkpoint and round log of ``method`` (:class:`MethodLedger`)."""
        return MethodLedger(self.method_dir(method), method, clients, shown)

    # ----------------------------------------------------------------- outputs
    def write_sites(self, sites: Iterable[SummarisedSite], conditions: Mapping[str, SiteConditions]) -> None:
        """``sites.csv`` (counts per split) and ``sites.json`` (whole summaries, with simulated conditions); all
        counts already suppressed by the sites."""
        rows, summaries = [], []
        for site in sites:
            summary = site.summary()
            rows.append({"site": site.name, "cases": summary["cases"], **summary["splits"],
                         "split_unit": summary["split_unit"], "groups": summary["groups"],
                         **{f"groups_{split}": n for split, n in summary["groups_per_split"].items()}})
            extra = {"conditions": describe_conditions(conditions[site.name])} if site.name in conditions else {}
            summaries.append({**summary, "min_count": site.min_count, **extra})
        write_csv(self.out / "sites.csv", pd.DataFrame(rows))
        write_json(self.out / "sites.json", summaries)

    def write_partition(self, partition: pd.Series) -> None:
        write_partition(self.out / "partition.csv", partition)

    def write_matched_step(self, method: str, record: Mapping[str, Any]) -> None:
        """What step-matched ``method`` ran with, beside its round log."""
        write_json(self.method_dir(method) / MATCHED_STEP_FILE, dict(record))

    def write_predictions(self, method: str, records: pd.DataFrame | None) -> None:
        """``predictions/<method>.csv``; ``None`` removes a former one (the sites kept their case records)."""
        path = self.out / "predictions" / f"{method}.csv"
        if records is None:
            path.unlink(missing_ok=True)
        else:
            write_csv(path, records)

    def write_seed_runs(self, seeds: Sequence[int]) -> None:
        """``seeds.json`` of a multi-seed run: its seeds and each one's run directory ``seed-<s>/``."""
        write_json(self.out / SEEDS_FILE, {"seeds": list(seeds), "runs": {str(s): seed_dir_name(s) for s in seeds}})

    def write_results(self, metrics: pd.DataFrame, primary_metric: str,
                      summarise: Callable[[pd.DataFrame, str], pd.DataFrame] = summary_table) -> pd.DataFrame:
        """``metrics.csv`` and ``summary.csv`` (``summarise(metrics, primary_metric)``: by default the primary
        metric on test, sites x methods; mean ± SD over seeds for a multi-seed run); returns the summary."""
        write_csv(self.out / "metrics.csv", metrics)
        summary = summarise(metrics, primary_metric) if len(metrics) else pd.DataFrame()
        write_csv(self.out / "summary.csv", summary.rename_axis("site").reset_index())
        return summary

    def merge_method_results(self, method: str, metrics: pd.DataFrame, methods: Sequence[str],
                             primary_metric: str) -> pd.DataFrame:
        """Keep ``method``'s rows in ``runs/<method>/metrics.csv``, then write ``metrics.csv`` and ``summary.csv``
        from every method trained so far, in the experiment's order ``methods`` (a Flower run trains one method)."""
        write_csv(self.method_dir(method) / METHOD_METRICS, metrics)
        combined = [pd.read_csv(f, dtype=str, keep_default_na=False) for m in methods
                    if (f := self.method_dir(m) / METHOD_METRICS).is_file()]
        write_csv(self.out / "metrics.csv", pd.concat(combined, ignore_index=True))
        typed = pd.read_csv(self.out / "metrics.csv")
        summary = summary_table(typed, primary_metric) if len(typed) else pd.DataFrame()
        write_csv(self.out / "summary.csv", summary.rename_axis("site").reset_index())
        return summary
