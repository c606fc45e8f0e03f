"""Per-case BraTS scoring: medfed.challenge.score_case vs MONAI's DiceMetric + HausdorffDistanceMetric, same case.

A deterministic synthetic 240 x 240 x 155 case (the BraTS grid): a ground-truth tumour of irregular ellipsoids
(oedema 2 around a core of enhancing tumour 4 with necrosis 1, whole tumour ~70 voxels across) and a
prediction that is a shifted, dilated, partly eroded copy with a small false-positive blob elsewhere. Times
``score_case`` (label maps in; Dice, HD95, sensitivity and specificity of ET, TC, WT out) against MONAI's
``DiceMetric`` + ``HausdorffDistanceMetric(percentile=95)`` on the ET/TC/WT one-hot masks (B=1, C=3, built
beforehand and not timed) with the spacing passed, at 1 x 1 x 1 mm and 1 x 1 x 1.5 mm. Prints median wall
times over --repeat runs and the largest |difference| of Dice and HD95; exits 1 if either reaches 1e-3.
MONAI runs on one torch thread by default (medfed's scoring is single-threaded; on a busy 2-core machine two
torch threads made MONAI three times slower, not faster).

    python benchmarks/score_speed.py [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from scipy import ndimage

from medfed.challenge.case_metrics import REGIONS, score_case

SHAPE = (240, 240, 155)
TOLERANCE = 1e-3


def synthetic_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, truth) uint8 BraTS label maps of shape ``SHAPE``."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, s) for s in SHAPE)]
    noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 4)
    noise /= noise.std()  # smooth field that makes the ellipsoid surfaces irregular

    def ellipsoid(centre: tuple[float, ...], radii: tuple[float, ...], roughness: float) -> np.ndarray:
        r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
        return r2 + roughness * noise < 1

    truth = np.zeros(SHAPE, np.uint8)
    truth[ellipsoid((130, 110, 80), (36, 30, 26), 0.25)] = 2  # oedema: whole tumour ~70 voxels across
    truth[ellipsoid((134, 107, 82), (20, 18, 15), 0.30)] = 4  # enhancing tumour
    truth[ellipsoid((135, 108, 82), (12, 11, 9), 0.30)] = 1  # necrotic core inside it
    prediction = np.roll(truth, (2, -1, 1), axis=(0, 1, 2))  # misregistered by a few voxels
    grown = ndimage.binary_dilation(prediction > 0)  # oedema over-segmented by one voxel
    prediction[grown & (prediction == 0)] = 2
    enhancing = prediction == 4  # enhancing rim's outer layer called necrosis
    prediction[enhancing & ~ndimage.binary_erosion(enhancing)] = 1
    prediction[ellipsoid((80, 150, 60), (5, 4, 4), 0.0)] = 2  # a false-positive blob
    return prediction, truth


def one_hot(label: np.ndarray) -> torch.Tensor:
    """ET, TC, WT masks as MONAI takes them: (B=1, C=3, *spatial) float."""
    return torch.from_numpy(np.stack([label == 4, np.isin(label, (1, 4)), np.isin(label, (1, 2, 4))]))[None].float()


def median_time(repeat: int, work: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def monai_scores(pred: torch.Tensor, truth: torch.Tensor, spacing: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    dice = DiceMetric(include_background=True, reduction="none")
    hd95 = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    return dice(pred, truth)[0].numpy(), hd95(pred, truth, spacing=list(spacing))[0].numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for MONAI (medfed is single-threaded; 1 compares like with like)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module="monai")
    prediction, truth = synthetic_case()
    sizes = ", ".join(f"{r} {int(np.count_nonzero(m))}" for r, m in zip(REGIONS, one_hot(truth)[0], strict=True))
    print(f"{'x'.join(map(str, SHAPE))} case, truth voxels: {sizes}; median of {args.repeat}, "
          f"torch threads for MONAI: {torch.get_num_threads()}")
    pred_1h, truth_1h = one_hot(prediction), one_hot(truth)
    print(f"{'spacing (mm)':<16}{'medfed 12 scores':>18}{'MONAI Dice+HD95':>18}{'speed-up':>10}"
          f"{'max |dDice|':>13}{'max |dHD95| mm':>16}")
    worst = 0.0
    for spacing in ((1.0, 1.0, 1.0), (1.0, 1.0, 1.5)):
        ours_t, ours = median_time(args.repeat, lambda s=spacing: score_case(prediction, truth, s))
        ref_t, (dice, hd95) = median_time(args.repeat, lambda s=spacing: monai_scores(pred_1h, truth_1h, s))
        d_dice = max(abs(ours[f"Dice_{r}"] - float(dice[i])) for i, r in enumerate(REGIONS))
        d_hd95 = max(abs(ours[f"HD95_{r}"] - float(hd95[i])) for i, r in enumerate(REGIONS))
        worst = max(worst, d_dice, d_hd95)
        label = " x ".join(f"{s:g}" for s in spacing)
        print(f"{label:<16}{ours_t * 1e3:>15.1f} ms{ref_t * 1e3:>15.1f} ms{ref_t / ours_t:>9.1f}x"
              f"{d_dice:>13.2e}{d_hd95:>16.2e}")
        ours_hd = ", ".join(f"{ours['HD95_' + r]:.4f}" for r in REGIONS)
        print(f"{'':<16}HD95 ET/TC/WT mm: medfed {ours_hd}; MONAI {', '.join(f'{v:.4f}' for v in hd95)}")
    print("(medfed: label maps in, also sensitivity and specificity; MONAI: one-hot masks built beforehand)")
    if worst >= TOLERANCE:
        print(f"FAIL: medfed and MONAI differ by {worst:.3g} (tolerance {TOLERANCE})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
