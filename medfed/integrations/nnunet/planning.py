"""One set of nnU-Net plans for a whole federation, derived on the server from the merged fingerprint.

nnU-Net's own planner (``ExperimentPlanner`` or any planner class name nnU-Net knows, e.g. the residual
encoder presets ``nnUNetPlannerResEncM``) reads ``dataset.json`` from ``$nnUNet_raw/<dataset>`` and the
fingerprint from ``$nnUNet_preprocessed/<dataset>``; here those folders hold only the BraTS-region
``dataset.json`` (:func:`medfed.integrations.nnunet.export.dataset_json`, with nnU-Net's NIfTI reader named
so no image is opened) and the merged fingerprint. nnU-Net reads its folders from environment variables
when it is imported, so the planner runs in a child Python process with those set. The result is nnU-Net's
``nnUNetPlans.json``: target spacing, patch size, normalisation per channel and network topology, shared
by every site.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from medfed.io import atomic_write_text
from medfed.errors import MedfedError
from medfed.integrations.nnunet.export import dataset_folder_name, dataset_json

_PLAN = """
import json, sys
from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments
dataset_id, planner = int(sys.argv[1]), sys.argv[2]
gpu = float(sys.argv[3]) if sys.argv[3] != "default" else None
identifier = plan_experiments([dataset_id], planner, gpu_memory_target_in_gb=gpu)
print("MEDFED_PLANS_IDENTIFIER=" + json.dumps(identifier))
"""


def write_planning_inputs(fingerprint: dict[str, Any], training_cases: int, out: Path, dataset_id: int,
                          name: str) -> tuple[Path, Path]:
    """``out/nnUNet_raw/<dataset>/dataset.json`` and ``out/nnUNet_preprocessed/<dataset>/dataset_fingerprint.json``;
    returns the two roots."""
    folder = dataset_folder_name(dataset_id, name)
    raw, preprocessed = out / "nnUNet_raw", out / "nnUNet_preprocessed"
    (raw / folder).mkdir(parents=True, exist_ok=True)
    (preprocessed / folder).mkdir(parents=True, exist_ok=True)
    description = {**dataset_json(training_cases, name), "overwrite_image_reader_writer": "SimpleITKIO",
                   # nnU-Net lists the training files from this mapping; the planner opens none of them
                   "dataset": {f"case{i:05d}": {"images": [f"imagesTr/case{i:05d}_{c:04d}.nii.gz" for c in range(4)],
                                                "label": f"labelsTr/case{i:05d}.nii.gz"}
                               for i in range(training_cases)}}
    atomic_write_text(raw / folder / "dataset.json", json.dumps(description, indent=2) + "\n")
    atomic_write_text(preprocessed / folder / "dataset_fingerprint.json", json.dumps(fingerprint, indent=2) + "\n")
    return raw, preprocessed


def nnunet_env(raw: Path, preprocessed: Path, results: Path | None = None) -> dict[str, str]:
    """The environment nnU-Net reads its folders from."""
    return {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(preprocessed),
            "nnUNet_results": str(results or preprocessed.parent / "nnUNet_results")}


def plan_federation(fingerprint: dict[str, Any], training_cases: int, out: Path | str, dataset_id: int, name: str,
                    planner: str = "ExperimentPlanner", gpu_memory_gb: float | None = None, timeout: float = 600.0
                    ) -> dict[str, Any]:
    """Run nnU-Net's planner on the merged fingerprint; returns (and leaves under ``out``) its plans.

    The dataset's planning folders under ``out`` are emptied first (nnU-Net merges new plans into an existing
    plans file, and one planner's file could be mistaken for another's); ``gpu_memory_gb`` ``None``
    keeps the planner's own target (8 GB for ``ExperimentPlanner``, 24 / 40 GB for the ResEnc L / XL presets).
    """
    out = Path(out)
    for root in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.rmtree(out / root / dataset_folder_name(dataset_id, name), ignore_errors=True)
    raw, preprocessed = write_planning_inputs(fingerprint, training_cases, out, dataset_id, name)
    command = [sys.executable, "-c", _PLAN, str(dataset_id), planner,
               "default" if gpu_memory_gb is None else str(gpu_memory_gb)]
    try:
        proc = subprocess.run(command, env=nnunet_env(raw, preprocessed), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MedfedError(f"nnU-Net's planner ({planner}) did not finish within {timeout:.0f} s") from None
    output = proc.stdout + proc.stderr
    atomic_write_text(out / "planner.log", output)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("MEDFED_PLANS_IDENTIFIER=")]
    plans = (preprocessed / dataset_folder_name(dataset_id, name) /
             f"{json.loads(marker[-1].split('=', 1)[1])}.json") if marker else None
    if proc.returncode != 0 or plans is None or not plans.is_file():
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise MedfedError(f"nnU-Net's planner ({planner}) failed (exit {proc.returncode}); "
                          f"{out / 'planner.log'}:\n{tail}")
    return json.loads(plans.read_text())
