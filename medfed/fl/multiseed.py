"""Multi-seed runs: every method of an experiment under each of several seeds, on one loaded federation.

Run directory ``<out>/<experiment name>/``::

    config.yaml       the resolved experiment config, with its ``seeds`` (a resume must find the same)
    seeds.json        {"seeds": [...], "runs": {"0": "seed-0", ...}}
    seed-<s>/         a complete single-seed run directory (``config.yaml`` with ``seed: s``, runs/, predictions/,
                      metrics.csv, ...), exactly what ``medfed run`` writes for a config with ``seed: s``
    metrics.csv       every seed's metrics.csv with a leading ``seed`` column
    summary.csv       the primary test metric per site and method: mean and SD over seeds (``0.812 ± 0.013``)

A seed changes the model initialisation, the site sampling and local training order, and, when the config's
partitioner has no fixed ``partition.seed``, the partition itself. The federation (files, decoded-image caches) is
loaded once and shared by every seed, so N seeds cost about N single runs of training, not N loads.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medfed.fl.config import ExperimentConfig
from medfed.fl.experiment import ExperimentResult, run_loaded
from medfed.fl.ledger import RunDirectory, resolved_config
from medfed.fl.names import seed_dir_name
from medfed.fl.summary import seed_summary_table
from medfed.sites.federation import Federation


def run_seeds(
    config: ExperimentConfig,
    config_path: Path,
    fed_file: Path,
    federation: Federation,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> ExperimentResult:
    """Run ``config`` once per seed of ``config.seeds`` into ``out/seed-<s>/`` and write the combined
    ``metrics.csv`` (``seed`` column) and ``summary.csv`` (mean ± SD over seeds) in ``out``."""
    assert config.seeds is not None
    run_dir = RunDirectory(out)
    run_dir.prepare(resolved_config(config, fed_file), resume)  # the same layout checks as a single-seed run
    run_dir.write_seed_runs(config.seeds)
    frames, stopped, failures, primary = [], {}, [], ""
    for seed in config.seeds:
        single = config.model_copy(update={"seed": seed, "seeds": None})
        if progress:
            print(f"[{config.name}] seed {seed} ({config.seeds.index(seed) + 1} of {len(config.seeds)})")
        result = run_loaded(single, config_path, fed_file, federation, out / seed_dir_name(seed), resume=resume,
                            progress=progress)
        primary = result.primary_metric
        if len(result.metrics):
            frames.append(result.metrics.assign(seed=seed)[["seed", *result.metrics.columns]])
        stopped.update({f"{label} (seed {seed})": reason for label, reason in result.stopped.items()})
        failures += [dict(f, seed=seed) for f in result.failures]
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary = run_dir.write_results(metrics, primary, summarise=seed_summary_table)
    return ExperimentResult(config.name, out, metrics, summary, primary, stopped, failures)


__all__ = ["run_seeds"]
