"""Engines: one small experiment in-process, on a Flower deployment over loopback and on Flower's simulation.

The experiment: the three table sites (adult-a, adult-b, adult-c) of the synthetic chest X-ray federation
(``medfed.synth.write_federation("chest_xray", ..., scale=...)``), Pneumonia classification with the default
ResNet, FedAvg for ``--rounds`` rounds (evaluation at the end). The same config runs through

* ``inprocess``: :func:`medfed.fl.experiment.run_experiment`;
* ``flower``: :func:`medfed.integrations.flower.engine.run_experiment_on_flower` with ``engine="flower"``
  (a SuperLink and one SuperNode per site, all on 127.0.0.1);
* ``flower-sim``: the same with ``engine="flower-sim"`` (Flower's Simulation Engine on Ray, in loopback
  mode); left out with ``--no-sim`` or where Ray is not installed.

Each engine runs in its own fresh child process (``python engines.py --child ENGINE ...``); its wall time is
that of the ``run_experiment*`` call in the child (imports and data generation excluded; Flower's cluster
start-up and tear-down included). Peak memory: in-process, the child's ``ru_maxrss``; Flower, the peak over
time of the summed RSS of every process the child started (SuperLink, SuperExec, ServerApp, SuperNodes,
ClientApps, Ray's), sampled every 0.2 s with psutil; a process seen once is followed even after it is
re-parented. The driver process itself (it only starts the cluster and reads results) is shown apart. Summed
RSS counts pages shared between processes (libraries) once per process, as the machine's users see it.

    python benchmarks/engines.py [--rounds 3] [--scale demo] [--no-sim] [--data DIR]

Prints a table of wall time and peak memory per engine and the ratios against in-process (the goal:
in-process at least 3x faster than Flower simulation and at most half its memory), and whether each Flower
engine's ``metrics.csv`` equals the in-process one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # this checkout's medfed, in the children too (PYTHONPATH)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SITES = ("adult-a", "adult-b", "adult-c")
ENGINES = ("inprocess", "flower", "flower-sim")
SAMPLE_SECONDS = 0.2


def write_experiment(data: Path, scale: str, rounds: int) -> Path:
    """The 3-site federation (generated once under ``data``) and the experiment config; returns the config."""
    import yaml

    from medfed.synth import write_federation

    full = data / "sites" / "chest_xray.yaml"
    if not full.is_file():
        full = write_federation("chest_xray", data, scale=scale, seed=0)
    config = yaml.safe_load(full.read_text())
    sources = {s["name"]: s for s in config["sources"]}
    three = full.parent / "chest_xray_three.yaml"
    three.write_text(yaml.safe_dump({**config, "name": f"{config['name']}-three",
                                     "sources": [sources[s] for s in SITES]}, sort_keys=False))
    experiment = data / f"engines_r{rounds}.yaml"
    experiment.write_text(yaml.safe_dump({
        "name": "engines", "federation": str(three), "seed": 0,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 16, "model": {"name": "resnet"}},
        "training": {"rounds": rounds, "local_epochs": 1, "eval_every": 0, "min_fit_clients": 2},
        "methods": ["fedavg"]}, sort_keys=False))
    return experiment


# ----------------------------------------------------------------------------- child
def child(engine: str, experiment: Path, out: Path, report: Path) -> None:
    """Run one engine on ``experiment`` into ``out``; write wall time and this process's max RSS to ``report``."""
    from medfed.fl.experiment import run_experiment
    from medfed.integrations.flower.engine import run_experiment_on_flower

    started = time.perf_counter()
    if engine == "inprocess":
        result = run_experiment(experiment, out, progress=False)
    else:
        result = run_experiment_on_flower(experiment, out, engine, progress=False, timeout=1800)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    report.write_text(json.dumps({
        "seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "out": str(result.out), "stopped": result.stopped, "failures": len(result.failures)}))


# ----------------------------------------------------------------------------- parent
class TreeSampler:
    """Peak of the summed RSS of a process's descendants (and of the process itself, kept apart)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.known: dict[tuple[int, float], psutil.Process] = {}
        self.peak_tree = 0.0
        self.peak_root = 0.0
        self.most_processes = 0

    def sample(self) -> None:
        psutil = self.psutil
        roots = [self.root, *self.known.values()]
        for proc in roots:
            try:
                for child in proc.children(recursive=True):
                    self.known.setdefault((child.pid, child.create_time()), child)
            except psutil.Error:
                continue
        total, alive = 0, 0
        for key, proc in list(self.known.items()):
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.NoSuchProcess(proc.pid)
                total += proc.memory_info().rss
                alive += 1
            except psutil.Error:
                del self.known[key]
        self.peak_tree = max(self.peak_tree, total / 2**20)
        self.most_processes = max(self.most_processes, alive)
        try:
            self.peak_root = max(self.peak_root, self.root.memory_info().rss / 2**20)
        except psutil.Error:
            pass


def measure(engine: str, experiment: Path, out: Path) -> dict:
    report = out.parent / f"{engine}.json"
    report.unlink(missing_ok=True)
    path = [str(REPO), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(path)}
    log = out.parent / f"{engine}.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen([sys.executable, __file__, "--child", engine, "--experiment", str(experiment),
                                 "--out", str(out), "--report", str(report)], stdout=handle, stderr=subprocess.STDOUT,
                                env=env)
        sampler = TreeSampler(proc.pid)
        while proc.poll() is None:
            sampler.sample()
            time.sleep(SAMPLE_SECONDS)
    if proc.returncode != 0 or not report.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{engine}: the child failed ({proc.returncode}); {log}:\n{tail}")
    result = json.loads(report.read_text())
    result.update(tree_mb=sampler.peak_tree, driver_mb=sampler.peak_root, processes=sampler.most_processes)
    result["peak_mb"] = result["maxrss_mb"] if engine == "inprocess" else sampler.peak_tree
    return result


def same_metrics(a: Path, b: Path) -> str:
    import pandas as pd

    try:
        pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv"))
    except AssertionError:
        return "differs"
    return "identical"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", default="demo", help="synthetic federation size (medfed synth --scale)")
    parser.add_argument("--no-sim", action="store_true", help="leave out Flower's simulation (Ray)")
    parser.add_argument("--data", help="folder for the synthetic federation (default: a temporary one)")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--experiment", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.experiment), Path(args.out), Path(args.report))
        return

    with_sim = not args.no_sim and importlib.util.find_spec("ray") is not None
    if not args.no_sim and not with_sim:
        print("flower-sim left out: Ray is not installed (pip install 'medfed[flower-sim]')")
    engines = ["inprocess", "flower", *(["flower-sim"] if with_sim else [])]
    with tempfile.TemporaryDirectory(prefix="medfed-engines-") as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        experiment = write_experiment(data, args.scale, args.rounds)
        results = {}
        for engine in engines:
            out = Path(tmp) / "runs" / engine
            out.parent.mkdir(parents=True, exist_ok=True)
            print(f"running {engine} ...", flush=True)
            results[engine] = measure(engine, experiment, out)
            results[engine]["dir"] = Path(results[engine]["out"])
        base = results["inprocess"]
        import torch

        print(f"\nFedAvg, {args.rounds} round(s), 3 sites ({', '.join(SITES)}) of the synthetic chest X-ray "
              f"federation (scale {args.scale}); {os.cpu_count()} CPU cores, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads\n")
        print("| engine | wall time (s) | peak memory (MiB) | time / in-process | memory / in-process "
              "| processes | metrics.csv |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for engine, r in results.items():
            same = "reference" if engine == "inprocess" else same_metrics(r["dir"], base["dir"])
            processes = 1 if engine == "inprocess" else r["processes"]
            print(f"| {engine} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['seconds'] / base['seconds']:.2f}x "
                  f"| {r['peak_mb'] / base['peak_mb']:.2f}x | {processes} | {same} |")
        flower = [e for e in results if e != "inprocess"]
        print("\nin-process: ru_maxrss of its process; Flower: peak of the summed RSS of the processes the driver "
              "started (driver excluded: " + ", ".join(f"{e} {results[e]['driver_mb']:.0f} MiB" for e in flower) + ")")
        if "flower-sim" in results:
            sim = results["flower-sim"]
            faster, share = sim["seconds"] / base["seconds"], base["peak_mb"] / sim["peak_mb"]
            print(f"goal vs flower-sim: in-process at least 3x faster: {faster:.2f}x faster "
                  f"({'met' if faster >= 3 else 'NOT met'}); at most half the memory: {share:.2f} of it "
                  f"({'met' if share <= 0.5 else 'NOT met'})")
        for engine, r in results.items():
            if r["stopped"] or r["failures"]:
                print(f"note: {engine}: stopped {r['stopped']}, {r['failures']} site failure(s)")


if __name__ == "__main__":
    main()
