"""The embedded demo federations: where they live and how they are made when missing."""

from __future__ import annotations

import os
from pathlib import Path

from medfed.synth import MODALITIES, write_federation
from medfed.synth.common import SYNTH_FORMAT, synth_format

DATA_ENV = "MEDFED_DATA"


def default_data_dir() -> Path:
    """``$MEDFED_DATA`` if set, else ``./data`` (relative to the working directory)."""
    return Path(os.environ.get(DATA_ENV) or "data")


def demo_config_path(data_dir: Path, modality: str, scale: str = "demo") -> Path:
    """Where the demo federation of ``modality`` at ``scale`` keeps its config."""
    return data_dir / scale / "sites" / f"{modality}.yaml"


def ensure_demo(
    data_dir: Path | None = None, scale: str = "demo", seed: int = 0, modalities: tuple[str, ...] = MODALITIES
) -> dict[str, Path]:
    """Config paths of the demo federations, generating any that is missing or was written by an older generator
    (:data:`medfed.synth.common.SYNTH_FORMAT`; deterministic in ``seed``)."""
    data_dir = data_dir or default_data_dir()
    configs = {}
    for modality in modalities:
        path = demo_config_path(data_dir, modality, scale)
        if path.is_file() and synth_format(path) != SYNTH_FORMAT:
            print(f"{path}: demo data from an older medfed (format {synth_format(path)}, now {SYNTH_FORMAT}); "
                  "writing it again")
        if not path.is_file() or synth_format(path) != SYNTH_FORMAT:
            path = write_federation(modality, data_dir / scale, scale=scale, seed=seed)
        configs[modality] = path
    return configs


#: seed of the demo "unlabeled pools": same generator as the demo federations, other patients (another seed)
POOL_SEED = 1000
POOL_PREFIX = "demo-pool:"


def ensure_demo_pool(data_dir: Path | None, modality: str, scale: str = "demo") -> Path:
    """Config path of a demo pool: the modality's synthetic data written with :data:`POOL_SEED` under
    ``<data>/<scale>/pool/``, so central SSL can pretrain on images that are not the federation's (the
    "general-purpose representation" route); generated when missing or written by an older generator."""
    root = (data_dir or default_data_dir()) / scale / "pool"
    path = root / "sites" / f"{modality}.yaml"
    if not path.is_file() or synth_format(path) != SYNTH_FORMAT:
        path = write_federation(modality, root, scale=scale, seed=POOL_SEED)
    return path
