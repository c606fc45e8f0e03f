"""What a Flower ClientApp process spends on imports, per kind of message, beside Flower's own.

Flower (1.42) starts one ``flwr-clientapp`` process for every message a SuperNode gets, and that process imports
the App before it handles the message. This script imports, in fresh interpreters (``--repeats`` each; the
median of their user + system CPU seconds is printed):

* ``flower``: Flower's ClientApp runtime alone (the reference: what any Flower App's process pays);
* ``query``: that plus medfed's App and what a query needs (``node_site`` and a chest X-ray site adapter);
* ``train/evaluate``: that plus what training and evaluation need (``client``: torch, MONAI, the tasks).

    python benchmarks/clientapp_imports.py
    python benchmarks/clientapp_imports.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys

RUNTIME = "import flwr.supernode.runtime.run_clientapp"
CASES = {
    "flower": RUNTIME,
    "query": f"{RUNTIME}; import medfed.integrations.flower.app, medfed.integrations.flower.node_site, "
             "medfed.sites.chest_xray",
    "train/evaluate": f"{RUNTIME}; import medfed.integrations.flower.app, medfed.integrations.flower.client, "
                      "medfed.tasks.classification",
}


def child_cpu_seconds(code: str) -> float:
    """User + system CPU seconds of one fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per case (median shown)")
    args = parser.parse_args()
    print(f"{'process imports':16s} {'CPU s (median)':>14s}  runs")
    for name, code in CASES.items():
        runs = [child_cpu_seconds(code) for _ in range(args.repeats)]
        print(f"{name:16s} {statistics.median(runs):14.2f}  " + " ".join(f"{r:.2f}" for r in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
