"""Names shared by the runner's outputs and their readers (torch-free, so a report can import them)."""

from __future__ import annotations

import json
from pathlib import Path

#: the ``site`` of metrics computed on the records of all sites together
POOLED = "pooled"

#: the model each site deploys under local-only training: its own local model, evaluated on its own cases
OWN_MODEL = "own"


def deployed_model(method_models: list[str]) -> str:
    """``own`` for local-only results (they have one model per site), else ``global``."""
    return OWN_MODEL if OWN_MODEL in method_models else "global"


#: the files a report writes into a run directory (``medfed.report.writer``); a fresh run removes stale ones
REPORT_FILES = ("report.html", "per_site.csv", "comparisons.csv", "meta_analysis.csv", "calibration.csv", "summary.json",
                "summary.md", "across_seeds.csv")

#: a multi-seed run directory's index of its seeds (``medfed.fl.multiseed``)
SEEDS_FILE = "seeds.json"


def seed_dir_name(seed: int) -> str:
    """The run directory of one seed inside a multi-seed run directory."""
    return f"seed-{seed}"


def read_seeds(run_dir: Path) -> dict[int, Path] | None:
    """``seed -> seed run directory`` of a multi-seed run directory, or ``None`` for a single-seed one."""
    file = Path(run_dir) / SEEDS_FILE
    if not file.is_file():
        return None
    data = json.loads(file.read_text())
    return {int(seed): Path(run_dir) / name for seed, name in data["runs"].items()}
