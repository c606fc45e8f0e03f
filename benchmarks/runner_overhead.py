"""Runner overhead: FedAvg through medfed's runner vs the same local steps in a bare PyTorch loop.

Both variants do exactly the same work (same task, same sites, same seeds, same local epochs, a
sample-weighted average each round); the runner adds sampling, fault handling, atomic checkpoints and the
round log. Each variant runs in its own process so its peak memory (max RSS) is its own.

    python benchmarks/runner_overhead.py [--modality chest_xray] [--scale demo] [--rounds 5] [--repeat 3]

Prints the wall time of each (best of ``--repeat``), the ratio runner / bare (target <= 1.05) and the peak
resident memory of each process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = {
    "chest_xray": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 16},
    "ureteroscopy": {"kind": "anomaly", "normal_classes": ["Ia_COM"], "batch_size": 16},
    "brain_mri": {"kind": "segmentation", "batch_size": 2},
}


def setup(modality: str, scale: str, data: Path):
    from pydantic import TypeAdapter

    from medfed.demo import ensure_demo
    from medfed.fl.config import TrainingConfig
    from medfed.sites.federation import load_federation
    from medfed.tasks import TaskConfig, build_task

    federation = load_federation(ensure_demo(data, scale=scale, modalities=(modality,))[modality])
    task = build_task(TypeAdapter(TaskConfig).validate_python(TASKS[modality]))
    for site in federation:
        task.check_site(site)
    return federation, task, TrainingConfig


def run_bare(modality: str, scale: str, data: Path, rounds: int) -> float:
    """The same local steps and averaging, with nothing around them."""
    import numpy as np

    from medfed.fl.weights import get_weights, set_weights
    from medfed.seeding import derive_seed

    federation, task, _ = setup(modality, scale, data)
    sites = list(federation)
    datasets = {s.name: task.train_dataset(s) for s in sites}
    model = task.build_model(derive_seed(0, "init"))
    start = time.perf_counter()
    weights = get_weights(model)
    for rnd in range(1, rounds + 1):
        total, count = np.zeros(weights.shape, np.float64), 0
        for site in sites:
            set_weights(model, weights)
            result = task.local_train(model, datasets[site.name], epochs=1, seed=derive_seed(0, "train", rnd, site.name))
            total += result.num_examples * get_weights(model)
            count += result.num_examples
        weights = (total / count).astype(np.float32)
    return time.perf_counter() - start


def run_medfed(modality: str, scale: str, data: Path, rounds: int) -> float:
    """FedAvg through :class:`medfed.fl.runner.MethodRunner` (checkpoints and logs on, evaluation off)."""
    from medfed.fl.runner import MethodRunner
    from medfed.fl.strategies import FedAvg

    federation, task, training_config = setup(modality, scale, data)
    training = training_config(rounds=rounds, local_epochs=1, eval_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        runner = MethodRunner("fedavg", task, list(federation), FedAvg(), training, 0, Path(tmp), progress=False)
        start = time.perf_counter()
        runner.run()
        return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    function = run_bare if args.child == "bare" else run_medfed
    seconds = function(args.modality, args.scale, Path(args.data), args.rounds)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib}))


def measure(variant: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", variant, "--modality", args.modality, "--scale", args.scale,
               "--rounds", str(args.rounds), "--data", args.data]
    runs = [json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(args.repeat)]
    return {"seconds": min(r["seconds"] for r in runs), "peak_mib": max(r["peak_mib"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modality", choices=sorted(TASKS), default="chest_xray")
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", default="data")
    parser.add_argument("--child", choices=("bare", "medfed"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    setup(args.modality, args.scale, Path(args.data))  # generate the demo data outside the timings
    bare = measure("bare", args)
    runner = measure("medfed", args)
    print(f"FedAvg, {args.modality} ({args.scale}), {args.rounds} rounds x 1 local epoch, best of {args.repeat}:")
    print(f"  {'':24}{'wall s':>10}{'peak RSS MiB':>15}")
    print(f"  {'bare PyTorch loop':24}{bare['seconds']:>10.2f}{bare['peak_mib']:>15.0f}")
    print(f"  {'medfed MethodRunner':24}{runner['seconds']:>10.2f}{runner['peak_mib']:>15.0f}")
    print(f"  overhead ratio runner / bare: {runner['seconds'] / bare['seconds']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
