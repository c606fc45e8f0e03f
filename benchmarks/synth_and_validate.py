"""Synthetic-federation writing and full validation: wall time, cases/s and peak traced memory.

Reference, same files, same run: MONAI's ``LoadImage`` reading every image file once (what any MONAI
pipeline pays just to read the data). ``medfed validate`` reads every file fully *and* checks it, so the
ratio shows what the checks cost on top of reading.

    python benchmarks/synth_and_validate.py [--scale small|demo|full] [--modalities brain_mri ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai.transforms import LoadImage

from medfed.sites import load_federation
from medfed.synth import MODALITIES, write_federation

IMAGE_SUFFIXES = (".nii.gz", ".dcm", ".png", ".jpg", ".jpeg")


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak traced MiB) of ``fn()``."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def monai_read_all(root: Path) -> int:
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
    loader = LoadImage(image_only=True)
    for path in files:
        loader(str(path))
    return len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="demo", choices=("small", "demo", "full"))
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES)
    args = parser.parse_args()
    print(f"{'modality':<13} {'step':<26} {'seconds':>8} {'items':>6} {'items/s':>8} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for modality in args.modalities:
            config, t_write, m_write = measure(lambda m=modality: write_federation(m, out, args.scale, seed=0))
            fed = load_federation(config)
            n_cases = sum(len(s) for s in fed)
            print(f"{modality:<13} {'synth (write)':<26} {t_write:8.2f} {n_cases:6d} {n_cases / t_write:8.1f} {m_write:9.1f}")
            problems, t_val, m_val = measure(fed.validate)
            errors = [p for p in problems if p.is_error]  # warnings (near-duplicates of synthetic patients) are fine
            assert not errors, errors
            print(f"{modality:<13} {'medfed validate':<26} {t_val:8.2f} {n_cases:6d} {n_cases / t_val:8.1f} {m_val:9.1f}")
            n_files, t_ref, m_ref = measure(lambda m=modality: monai_read_all(out / m))
            print(f"{modality:<13} {'MONAI LoadImage (files)':<26} {t_ref:8.2f} {n_files:6d} {n_files / t_ref:8.1f} {m_ref:9.1f}")


if __name__ == "__main__":
    main()
