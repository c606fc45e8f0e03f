"""What ``medfed nnunet export | plan | import-predictions`` do (the CLI parses, these run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medfed.io import atomic_write_text
from medfed.errors import ConfigError, DataProblems, MedfedError, Problem, errors_only
from medfed.integrations.nnunet.export import (
    ExportedDataset,
    check_request,
    dataset_folder_name,
    export_federation,
    nnunet_to_brats,
)
from medfed.integrations.nnunet.fingerprint import DEFAULT_BINS, federated_fingerprint
from medfed.integrations.nnunet.planning import plan_federation
from medfed.sites import load_federation
from medfed.sites.nifti_io import UnreadableNifti, read_volume


def export(sites: Path, out: Path, dataset_id: int, name: str, per_site: bool, progress: bool
           ) -> list[ExportedDataset]:
    """``medfed nnunet export``: the federation in nnU-Net's raw format under ``out``."""
    return export_federation(list(load_federation(sites)), out, dataset_id, name, per_site=per_site,
                             progress=progress)


def plan(sites: Path, out: Path, dataset_id: int, name: str, planner: str = "ExperimentPlanner",
         gpu_memory_gb: float | None = None, bins: int = DEFAULT_BINS, progress: bool = True) -> Path:
    """``medfed nnunet plan``: every site's fingerprint (statistics only), merged; nnU-Net's plans from it.

    Writes ``out/<dataset>/dataset_fingerprint.json`` (merged), ``out/<dataset>/nnUNetPlans.json`` (or the
    planner's plans file) and nnU-Net's planning folders; returns the plans file.
    """
    federation = load_federation(sites)
    check_request(dataset_id, name, list(federation), per_site=False)
    problems = errors_only(federation.validate(progress=progress))
    if problems:
        raise DataProblems(problems)
    fingerprint = federated_fingerprint(list(federation), bins=bins)
    training = len(fingerprint["spacings"])
    folder = Path(out) / dataset_folder_name(dataset_id, name)
    plans = plan_federation(fingerprint, training, folder / "nnunet", dataset_id, name, planner, gpu_memory_gb)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "dataset_fingerprint.json", json.dumps(fingerprint, indent=2) + "\n")
    target = folder / f"{plans['plans_name']}.json"
    atomic_write_text(target, json.dumps(plans, indent=2) + "\n")
    return target


def import_predictions(sites: Path, predictions: Path, out: Path, split: str = "test",
                       only: list[str] | None = None) -> dict[str, Any]:
    """``medfed nnunet import-predictions``: nnU-Net's predicted label maps (``<case id>.nii.gz``, labels 0-3)
    -> each site's BraTS submission files (ET = 4, the case's own grid and file name), for ``medfed score``.

    ``only`` restricts it to those sites (a per-site nnU-Net baseline predicts one site). Every problem (a
    missing or unreadable prediction, a wrong shape, an unknown label) is reported at once; the other cases
    are still written.
    """
    federation = load_federation(sites)
    unknown = sorted(set(only or []) - set(federation.site_names))
    if unknown:
        raise ConfigError(f"{sites}: no site(s) {unknown}; sites: {federation.site_names}")
    if not predictions.is_dir():
        raise ConfigError(f"{predictions}: no such folder of nnU-Net predictions")
    written, problems = 0, []
    for site in federation:
        if only and site.name not in only:
            continue
        for case in site.reference_cases(split):
            path = predictions / f"{case.case_id}.nii.gz"
            if not path.is_file():
                problems.append(Problem(site=site.name, case=case.case_id, reason="no prediction", file=str(path)))
                continue
            try:
                values, _ = read_volume(path)
                if not np.all(np.isfinite(values)) or np.any(values != np.rint(values)):
                    raise ValueError("non-integer or non-finite voxels: a label map is expected, not probabilities")
                site.write_label_map(case.case_id, nnunet_to_brats(values.astype(np.int64)), out)
                written += 1
            except UnreadableNifti as err:
                problems.append(Problem(site=site.name, case=case.case_id, reason=f"unreadable NIfTI ({err})",
                                        file=str(path)))
            except (ValueError, MedfedError, OSError) as err:
                problems.append(Problem(site=site.name, case=case.case_id, reason=str(err), file=str(path)))
    if problems:
        raise DataProblems(problems)
    return {"written": written, "out": str(out)}
