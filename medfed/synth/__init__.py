"""Deterministic synthetic federations, written in the real on-disk formats and read back by the real adapters.

``write_federations(out, scale, seed)`` writes all three modalities; each generator is also usable alone:

- :func:`medfed.synth.brain_mri.write_brain_mri`: BraTS/FeTS NIfTI + partition CSVs
- :func:`medfed.synth.chest_xray.write_chest_xray`: DICOM / PNG + label tables, class folders
- :func:`medfed.synth.ureteroscopy.write_ureteroscopy`: RGB stone images, class/view folders and flat CSV
- :func:`medfed.synth.chest_xray_ssl.write_chest_xray_ssl`: the initialisation-study chest federation (on demand)
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from medfed.synth.common import SCALES, check_scale

#: modality -> (module, generator function)
GENERATORS: dict[str, tuple[str, str]] = {
    "brain_mri": ("medfed.synth.brain_mri", "write_brain_mri"),
    "chest_xray": ("medfed.synth.chest_xray", "write_chest_xray"),
    "ureteroscopy": ("medfed.synth.ureteroscopy", "write_ureteroscopy"),
    # a study federation, not a demo of the main job: written on demand (``demo:chest_xray_ssl``)
    "chest_xray_ssl": ("medfed.synth.chest_xray_ssl", "write_chest_xray_ssl"),
}
#: the demo modalities ``medfed synth`` and the main job write by default
MODALITIES: tuple[str, ...] = ("brain_mri", "chest_xray", "ureteroscopy")


def write_federation(modality: str, out: Path | str, scale: str = "demo", seed: int = 0) -> Path:
    """Write one modality's synthetic federation under ``out``; return its config path (``out/sites/<modality>.yaml``)."""
    if modality not in GENERATORS:
        raise ValueError(f"unknown modality {modality!r}; choose from {', '.join(GENERATORS)}")
    module_name, function = GENERATORS[modality]
    generator = getattr(importlib.import_module(module_name), function)
    return generator(Path(out), scale=check_scale(scale), seed=seed)


def write_federations(
    out: Path | str, scale: str = "demo", seed: int = 0, modalities: Sequence[str] = MODALITIES
) -> dict[str, Path]:
    """Write the synthetic federations of ``modalities``; return modality -> config path."""
    return {m: write_federation(m, out, scale, seed) for m in modalities}


__all__ = ["GENERATORS", "MODALITIES", "SCALES", "write_federation", "write_federations"]
