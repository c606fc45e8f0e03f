"""Do two source trees write the same numbers? The demo runs' output files, byte for byte, for both engines.

A refactor of how runs are driven or written must change no number. This script runs, for each source tree:

* in-process: ``medfed run`` on the three demo experiments (``tasks/demo_*.yaml``, their own seeds);
* Flower: ``medfed run --engine flower`` (a local SuperLink and one SuperNode per site) on the demo chest X-ray
  experiment less its centralised method (which pools data, so Flower refuses it), ``--rounds`` rounds;

with the same demo data, seed and torch thread count, then compares every ``metrics.csv``, ``summary.csv`` and
``predictions/*.csv`` byte for byte and prints one line per file (sha256 prefix of each side).

    python benchmarks/output_identity.py --before HEAD~3            # a git worktree of HEAD~3 against this tree
    python benchmarks/output_identity.py --before HEAD~3 --engines inprocess --threads 1
    python benchmarks/output_identity.py --before cd06fab --after HEAD --side after --work W   # reuse W's before runs

Exit status 0 when every file is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEMOS = ["demo_brain_mri", "demo_chest_xray", "demo_ureteroscopy"]
COMPARED = ("metrics.csv", "summary.csv", "predictions/*.csv")


def _medfed(tree: Path, args: list[str], threads: int, cwd: Path) -> float:
    """Run ``medfed ARGS`` from source tree ``tree`` (its package first on sys.path); returns seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = f"import sys, torch; torch.set_num_threads({threads}); from medfed.cli import main; sys.exit(main())"
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def flower_config(tree: Path, folder: Path) -> Path:
    """The demo chest X-ray experiment without its centralised reference, for the Flower engine."""
    config = yaml.safe_load((tree / "tasks" / "demo_chest_xray.yaml").read_text())
    config["methods"] = [m for m in config["methods"] if m != "centralised"]
    config["name"] = "flower_demo_chest_xray"
    path = folder / "flower_demo_chest_xray.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_tree(tree: Path, out: Path, data: Path, engines: list[str], threads: int, rounds: int) -> dict[str, float]:
    """Every run of one tree into ``out``; seconds per run."""
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    if "inprocess" in engines:
        configs = [str(tree / "tasks" / f"{name}.yaml") for name in DEMOS]
        seconds["inprocess"] = _medfed(tree, ["run", *configs, "--data", str(data), "--out", str(out),
                                              "--no-progress"], threads, tree)
    if "flower" in engines:
        config = flower_config(tree, out)
        seconds["flower"] = _medfed(tree, ["run", str(config), "--data", str(data), "--out", str(out), "--engine",
                                           "flower", "--rounds", str(rounds), "--no-progress"], threads, tree)
    return seconds


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "missing"


def compare(before: Path, after: Path) -> bool:
    """Print each compared file's digest on both sides; True when all are byte-identical."""
    files = sorted({p.relative_to(root) for root in (before, after) for pattern in COMPARED
                    for p in root.glob(f"*/{pattern}")})
    same = True
    for rel in files:
        a, b = _digest(before / rel), _digest(after / rel)
        same &= a == b and a != "missing"
        print(f"{'same' if a == b else 'DIFFERENT':9s} {a}  {b}  {rel}")
    return same and bool(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision to compare this tree against")
    parser.add_argument("--after", default=None,
                        help="git revision on the after side (default: this working tree as it is)")
    parser.add_argument("--engines", default="inprocess,flower", help="comma-separated: inprocess, flower")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (and OMP/MKL) for every run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the Flower run")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--side", choices=("both", "before", "after"), default="both",
                        help="run only one side (into --work), e.g. the old tree before a refactor starts")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="medfed-identity-"))
    data = work / "data"
    before_tree = work / "before-tree"
    if not before_tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before_tree), args.before],
                       check=True, stdout=subprocess.DEVNULL)
    print(f"before: {args.before} ({before_tree}); after: {args.after or 'working tree'}; engines {engines}; "
          f"{args.threads} thread(s)")
    after_tree = REPO
    if args.after is not None:  # a fixed revision: edits to the working tree during the runs cannot leak in
        after_tree = work / "after-tree"
        if not after_tree.exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(after_tree), args.after],
                           check=True, stdout=subprocess.DEVNULL)
    trees = {"before": before_tree, "after": after_tree}
    times = {side: run_tree(tree, work / side, data, engines, args.threads, args.rounds)
             for side, tree in trees.items() if args.side in ("both", side)}
    for side, seconds in times.items():
        print(f"{side}: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    if not all((work / side).is_dir() for side in trees):
        print(f"runs in {work}; run again with --side after --work {work} to compare")
        return 0
    same = compare(work / "before", work / "after")
    print("identical" if same else "NOT identical")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
