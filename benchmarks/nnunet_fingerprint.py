"""nnU-Net dataset fingerprint: medfed's federated one (statistics per site, merged) vs nnU-Net's own extractor.

The same synthetic brain MRI federation (``--scale``, seed 0) is fingerprinted twice, each in a fresh child
process:

* ``medfed``: :func:`medfed.integrations.nnunet.fingerprint.federated_fingerprint` over the sites (both rounds;
  every site's work runs in this one process, one after the other);
* ``nnunet``: nnU-Net's ``DatasetFingerprintExtractor`` (its defaults: 1e8 foreground samples in all,
  ``--processes`` worker processes) on the pooled export written by ``medfed nnunet export``.

Wall time is the fingerprint call alone (export and imports excluded). Peak memory is the peak over time of
the summed RSS of the child and its worker processes, sampled every 0.1 s with psutil. The last lines compare
the two fingerprints: per-case parts, and per channel the largest intensity-statistic difference in units of
the channel's standard deviation.

    python benchmarks/nnunet_fingerprint.py [--scale demo] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SECONDS = 0.1


def child(kind: str, sites: Path, raw: Path, out: Path, processes: int) -> None:
    """Fingerprint once; write the fingerprint and the call's wall time to ``out``."""
    if kind == "medfed":
        from medfed.integrations.nnunet.fingerprint import federated_fingerprint
        from medfed.sites import load_federation

        federation = list(load_federation(sites))
        began = time.perf_counter()
        fingerprint = federated_fingerprint(federation)
    else:
        from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
            DatasetFingerprintExtractor,
        )

        extractor = DatasetFingerprintExtractor(501, num_processes=processes)
        extractor.show_progress_bar = False
        began = time.perf_counter()
        fingerprint = extractor.run(overwrite_existing=True)
    seconds = time.perf_counter() - began
    out.write_text(json.dumps({"seconds": seconds, "fingerprint": json.loads(json.dumps(fingerprint, default=float))}))


def measure(kind: str, sites: Path, raw: Path, work: Path, processes: int) -> dict:
    """Run one child; follow its process tree's summed RSS."""
    out = work / f"{kind}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(work / "preprocessed"),
           "nnUNet_results": str(work / "results")}
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, "--sites", str(sites), "--raw", str(raw),
                             "--out", str(out), "--processes", str(processes)], env=env)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            peak[0] = max(peak[0], total)
            time.sleep(SAMPLE_SECONDS)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    stop.set()
    thread.join()
    if code != 0:
        raise SystemExit(f"{kind} child failed with exit code {code}")
    result = json.loads(out.read_text())
    return {**result, "peak_mb": peak[0] / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--processes", type=int, default=2, help="nnU-Net's worker processes")
    parser.add_argument("--child", choices=("medfed", "nnunet"), help=argparse.SUPPRESS)
    parser.add_argument("--sites", help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.sites), Path(args.raw), Path(args.out), args.processes)
        return

    sys.path.insert(0, str(REPO))
    from medfed.integrations.nnunet.export import export_federation
    from medfed.sites import load_federation
    from medfed.synth import write_federation

    with tempfile.TemporaryDirectory(prefix="medfed-nnunet-fp-") as tmp:
        work = Path(tmp)
        sites = write_federation("brain_mri", work / "data", scale=args.scale, seed=0)
        federation = load_federation(sites)
        export_federation(list(federation), work / "raw", 501, "Bench", progress=False)
        cases = sum(len(s.split(["train", "val"])) for s in federation)
        results = {kind: measure(kind, sites, work / "raw", work, args.processes) for kind in ("medfed", "nnunet")}

    print(f"\nnnU-Net fingerprint of the synthetic brain MRI federation (scale {args.scale}: {len(federation)} sites, "
          f"{cases} training cases); {os.cpu_count()} CPU cores\n")
    print("| fingerprint | wall time (s) | peak memory (MiB) |")
    print("| --- | ---: | ---: |")
    labels = {"medfed": "medfed federated (statistics per site, merged)",
              "nnunet": f"nnU-Net DatasetFingerprintExtractor (pooled export, {args.processes} workers)"}
    for kind, r in results.items():
        print(f"| {labels[kind]} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |")
    a, b = results["medfed"]["fingerprint"], results["nnunet"]["fingerprint"]
    same = {key: sorted(map(tuple, a[key])) == sorted(map(tuple, b[key])) for key in ("spacings", "shapes_after_crop")}
    print(f"\nper-case parts equal: spacings {same['spacings']}, shapes_after_crop {same['shapes_after_crop']}, "
          f"median_relative_size_after_cropping {a['median_relative_size_after_cropping']:.6f} vs "
          f"{b['median_relative_size_after_cropping']:.6f}")
    keys = ("mean", "std", "median", "percentile_00_5", "percentile_99_5", "min", "max")
    for c, props in a["foreground_intensity_properties_per_channel"].items():
        other = b["foreground_intensity_properties_per_channel"][c]
        worst = max(keys, key=lambda k: abs(props[k] - other[k]))
        print(f"channel {c}: largest difference {abs(props[worst] - other[worst]) / props['std']:.2e} of the std "
              f"({worst}: {props[worst]:.3f} vs {other[worst]:.3f})")
    speed = results["nnunet"]["seconds"] / results["medfed"]["seconds"]
    print(f"\nmedfed is {speed:.1f}x faster with {results['medfed']['peak_mb'] / results['nnunet']['peak_mb']:.2f} of "
          "the memory")


if __name__ == "__main__":
    main()
