"""SimCLR pretraining throughput on CPU: images per second and peak memory, medfed's NT-Xent beside MONAI's
``ContrastiveLoss`` (the reference implementation) in the same run.

    python benchmarks/ssl_pretrain.py [--network resnet|vit] [--size 64] [--batch 32] [--steps 20]

Each row trains the same network for ``--steps`` steps on random 1-channel images (two views per image, so
2 x batch forward passes per step) with one loss; peak memory is the process's resident-set high-water mark
(ru_maxrss) of a fresh process per row (spawned), above its level after building the model; one warm-up step
is not timed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import torch
from monai.losses import ContrastiveLoss

from medfed.ssl.objectives import nt_xent
from medfed.ssl.simclr import SimCLRConfig, SimCLRTask


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(network: str, size: int, batch: int, steps: int, loss_name: str) -> tuple[float, float]:
    model_spec = {"img_size": size} if network == "vit" else {}
    task = SimCLRTask(SimCLRConfig(network=network, model=model_spec, batch_size=batch))
    model = task.build_model(0)
    reference = ContrastiveLoss(temperature=task.config.temperature)
    loss_of = (lambda a, b: nt_xent(a, b, task.config.temperature)) if loss_name == "medfed" else reference
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    before = peak_mib()
    began = time.perf_counter()
    for step in range(steps + 1):
        if step == 1:  # the first step warms up allocators and kernels
            began = time.perf_counter()
        first, second = task.views(images, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model(first), model(second))
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - began
    return batch * steps / seconds, peak_mib() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=["resnet", "vit"], default="resnet")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}; {args.network}, {args.size} px, batch {args.batch}, "
          f"{args.steps} steps")
    print(f"{'loss':<22} {'images/s':>9} {'peak MiB':>9}")
    context = multiprocessing.get_context("spawn")
    for label, loss_name in (("monai ContrastiveLoss", "monai"), ("medfed nt_xent", "medfed")):
        with context.Pool(1) as pool:
            rate, peak = pool.apply(run, (args.network, args.size, args.batch, args.steps, loss_name))
        print(f"{label:<22} {rate:>9.1f} {peak:>9.0f}")


if __name__ == "__main__":
    main()
