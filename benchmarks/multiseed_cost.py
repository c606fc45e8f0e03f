"""Multi-seed cost: one ``medfed run --seeds 0,1,2`` against the same seeds run one at a time.

Each single run is `--seeds <s>` (the work of a plain run with `seed: <s>`). Each variant runs in its own process and
times only the ``run_experiment`` call (imports excluded), so the
comparison is the work itself: N single runs each load the federation and fill their decoded-image caches; the
multi-seed run loads once and shares them across seeds.

    python benchmarks/multiseed_cost.py [--config tasks/demo_chest_xray.yaml] [--seeds 0,1,2] [--rounds 2]

Prints each single run's wall time, the multi-seed run's, and the ratio multi / sum of singles (target <= 1.1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[5]))
from medfed.demo import default_data_dir, ensure_demo
from medfed.fl.experiment import run_experiment, uses_demo
config, out, rounds, seeds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
modality = uses_demo(config)
demo = ensure_demo(default_data_dir(), modalities=(modality,)) if modality else {}
started = time.perf_counter()
run_experiment(config, out, demo_configs=demo, progress=False, overrides={"rounds": rounds}, seeds=seeds)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def timed(config: Path, out: Path, rounds: int, seeds: list[int], threads: int) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(config), str(out), str(rounds), json.dumps(seeds),
                           str(threads)], check=True, capture_output=True, text=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("tasks/demo_chest_xray.yaml"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        singles = [timed(args.config, Path(tmp) / f"single-{s}", args.rounds, [s], args.threads) for s in seeds]
        multi = timed(args.config, Path(tmp) / "multi", args.rounds, seeds, args.threads)
    for seed, seconds in zip(seeds, singles, strict=True):
        print(f"single run, seed {seed}: {seconds:.1f} s")
    print(f"multi-seed run, seeds {args.seeds}: {multi:.1f} s")
    print(f"ratio multi / sum of singles: {multi / sum(singles):.3f} (target <= 1.1; {args.config}, "
          f"{args.rounds} rounds, {args.threads} torch threads)")


if __name__ == "__main__":
    main()
