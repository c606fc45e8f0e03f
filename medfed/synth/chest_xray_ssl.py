"""A chest X-ray federation built for the question "does a self-supervised start help?" (``demo:chest_xray_ssl``).

The demo chest federation is sized for the main job; this one is sized for an initialisation study
(Sureshbabu et al. style: random vs central vs federated self-supervised initialisation):

- four adult sites with their own acquisition (two DICOM, two PNG; exposure, noise, blur and photometry differ,
  as in :data:`medfed.synth.chest_xray.SITES`), one of them a small clinic;
- a test fraction of 0.45 so that every site has at least 50 test cases at the demo scale, and the small clinic
  at most 50 labelled training images;
- a subtler pneumonia: every opacity at :data:`OPACITY_SCALE` of the demo's strength, fixed before any run so that
  a randomly initialised network trained on a few dozen images does not saturate it (never tuned on results);
- clean labels (no uncertain reads), prevalence 0.3 everywhere, so the sites differ in acquisition and size only.

Images, tables and DICOM headers are written by the same code as the demo federation, under
``out/chest_xray_ssl/`` with the config at ``out/sites/chest_xray_ssl.yaml``. Every site's training images serve as
its unlabeled images for federated SSL (labels are never read there); central SSL uses the demo pool.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medfed.synth.chest_xray import IMAGE_SIZES, SITES, site_source, write_site
from medfed.synth.common import check_scale, staged_directory, write_federation_config

NAME = "chest_xray_ssl"
#: multiplies every opacity's strength (1: the demo federation's finding)
OPACITY_SCALE = 0.75
#: split fractions of every site (by patient)
SPLIT = {"val": 0.15, "test": 0.45}
_COMMON = {"prevalence": 0.3, "uncertain_rate": 0.0, "resolving": 0.0, "opacity_scale": OPACITY_SCALE}
SSL_SITES = (
    replace(SITES[0], name="hospital-a", cases={"small": 12, "demo": 280, "full": 2800}, **_COMMON),
    replace(SITES[1], name="hospital-b", cases={"small": 10, "demo": 200, "full": 2000}, **_COMMON),
    replace(SITES[2], name="hospital-c", cases={"small": 10, "demo": 150, "full": 1500}, **_COMMON),
    replace(SITES[2], name="clinic-d", storage="png", cases={"small": 10, "demo": 120, "full": 1200}, gain=0.8,
            gamma=1.2, offset=0.05, noise=0.02, blur=1.0, ap_fraction=0.7, **_COMMON),
)


def write_chest_xray_ssl(out: Path, scale: str = "demo", seed: int = 0) -> Path:
    """Write the federation under ``out/chest_xray_ssl/``; return ``out/sites/chest_xray_ssl.yaml``."""
    check_scale(scale)
    out = Path(out)
    with staged_directory(out, NAME) as staging:
        for spec in SSL_SITES:
            write_site(staging / spec.name, spec, scale, seed)
    config = {
        "name": f"chest-xray-ssl-{scale}",
        "adapter": "chest_xray",
        "split": {"seed": seed, **SPLIT},
        "sources": [site_source(spec, IMAGE_SIZES[scale], "zeros", folder=NAME) for spec in SSL_SITES],
    }
    return write_federation_config(out, NAME, config)


__all__ = ["OPACITY_SCALE", "SSL_SITES", "write_chest_xray_ssl"]
