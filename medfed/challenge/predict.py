"""Turn a trained medfed segmentation run into a challenge submission: one label map per case, at each site.

``medfed predict EXPERIMENT --method M --out DIR`` loads method ``M``'s final model(s) from the run's checkpoint
(``reports/<name>/runs/<M>/checkpoints/last.pt``), predicts every case of the chosen split at every site and
has the site adapter write ``<ID>_seg.nii.gz`` on the case's own grid (FeTS task 2: models travel to the data,
predictions stay at the site; in-process, DIR is shared by the sites). A method with per-site final models
(local-only, FedBN) predicts each site with its own model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import ResizeWithPadOrCrop
from tqdm.auto import tqdm

from medfed.errors import ConfigError, MedfedError
from medfed.fl.checkpoint import load_checkpoint
from medfed.fl.config import build_strategies, federation_path, load_experiment
from medfed.fl.experiment import check_federation, runner_model
from medfed.fl.strategies.local_only import local_key
from medfed.fl.weights import set_weights
from medfed.metrics.segmentation import regions_to_label
from medfed.sites.federation import load_federation
from medfed.sites.splits import SPLITS
from medfed.tasks import build_task


def write_predictions(
    config_path: Path | str, method: str, out: Path | str, *, split: str = "test", reports: Path | str = "reports",
    demo_configs: dict[str, Path] | None = None, progress: bool = True,
) -> int:
    """Write method ``method``'s predicted label maps for ``split`` (``all``: every case) to ``out``; returns the
    number of files written. The experiment must be a segmentation run without re-partitioning."""
    config_path = Path(config_path)
    config = load_experiment(config_path)
    if config.task.kind != "segmentation":
        raise ConfigError(f"{config_path}: medfed predict writes segmentation label maps; task is {config.task.kind}")
    if config.partition is not None or config.server_benchmark is not None or config.site_conditions:
        raise ConfigError(f"{config_path}: predictions are written per original site; runs with partition, "
                          f"server_benchmark or site_conditions are not supported")
    strategies = build_strategies(config, str(config_path))
    if method not in strategies:
        raise ConfigError(f"{config_path}: no method {method!r} (methods: {', '.join(strategies)})")
    checkpoint = Path(reports) / config.name / "runs" / method / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise MedfedError(f"{checkpoint}: no trained model; run `medfed run {config_path}` first")
    saved = load_checkpoint(checkpoint)
    models = strategies[method].final_models(saved["global"], saved["state"])
    federation = load_federation(federation_path(config, config_path.parent, demo_configs))
    task = build_task(config.task)
    check_federation(task, federation)
    model = runner_model(task, config)
    splits = list(SPLITS) if split == "all" else [split]
    out = Path(out)
    written = 0
    for site in federation:
        weights = models.get(local_key(site.name), models.get("global"))
        if weights is None:
            raise MedfedError(f"{checkpoint}: method {method} has no model for site {site.name}")
        set_weights(model, weights)
        model.eval()
        shapes = dict(zip(site.cases["case_id"], site.cases["shape"], strict=True))
        dataset = site.dataset(splits, transform=task._transform(site, splits[0], train=False))
        bar = tqdm(task.batches(dataset), desc=f"predict {site.name}", unit="batch", leave=False,
                   disable=None if progress else True)
        with torch.no_grad():
            for batch in bar:
                regions = (torch.sigmoid(task.label_grid_logits(model, batch)) >= task.config.threshold).numpy()
                for case_id, case_regions in zip(batch["case_id"], regions, strict=True):
                    shape = [int(n) for n in str(shapes[case_id]).split("x")]
                    # logits are on the label's grid (an nnU-Net input resampled to the plans' spacing comes back);
                    # the eval transform centre-pads (DivisiblePad) and centre-crops/pads (spatial_size): the same
                    # centred resize back to the case's shape puts each voxel where it came from
                    restored = np.asarray(ResizeWithPadOrCrop(shape)(case_regions.astype(np.uint8))) > 0
                    site.write_label_map(case_id, regions_to_label(restored), out)
                    written += 1
    return written
