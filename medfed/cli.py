"""The ``medfed`` command: ``synth``, ``validate``, ``run``.

Bad input ends in a message naming the file, case and reason and a non-zero exit code, never a
traceback: exit 1 for data problems, 2 for config/usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medfed import __version__
from medfed.errors import ConfigError, DataProblems, MedfedError, Problem
from medfed.synth import MODALITIES, SCALES, write_federations

EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def _print_problems(problems: list[Problem], header: str) -> None:
    print(f"\n{header}: {len(problems)} problem(s)", file=sys.stderr)
    by_site: dict[str, list[Problem]] = {}
    for problem in problems:
        by_site.setdefault(problem.site, []).append(problem)
    for site, site_problems in by_site.items():
        print(f"  site {site}:", file=sys.stderr)
        for p in site_problems:
            where = ", ".join(x for x in (f"case {p.case}" if p.case else "", f"file {p.file}" if p.file else "") if x)
            print(f"    - {where + ': ' if where else ''}{p.reason}", file=sys.stderr)


def site_table(federations: Sequence) -> pd.DataFrame:
    """One row per site: counts per split and per primary-label value, suppressed below each site's min_count."""
    rows = []
    for fed in federations:
        for site in fed:
            summary = site.summary()
            row = {"federation": fed.name, "site": site.name, "modality": site.modality, "cases": summary["cases"]}
            row.update(summary["splits"])
            label = site.primary_label
            if label:
                counts = summary["labels"].get(label, {})
                row["labels"] = f"{label}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
            pops = summary["metadata"].get("population")
            if pops:
                row["population"] = ", ".join(f"{k}={v}" for k, v in pops.items())
            rows.append(row)
    return pd.DataFrame(rows).fillna("")


def validate_configs(configs: Sequence[Path], progress: bool = True) -> tuple[list, list[Problem]]:
    """Load every federation leniently and validate every case; return (federations, all problems)."""
    from medfed.sites import load_federation

    federations, problems = [], []
    for config in configs:
        federation = load_federation(config, strict=False)
        federations.append(federation)
        problems.extend(federation.validate(progress=progress))
    return federations, problems


def cmd_synth(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    modalities = args.only or list(MODALITIES)
    configs = write_federations(args.out, scale=args.scale, seed=args.seed, modalities=modalities)
    for modality, path in configs.items():
        print(f"{modality:>13}: {path}")
    print(f"wrote {len(configs)} synthetic federation(s) at scale {args.scale!r} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    federations, problems = validate_configs(args.configs, progress=not args.no_progress)
    print(site_table(federations).to_string(index=False))
    if args.json:
        payload = [p.__dict__ for p in problems]
        Path(args.json).write_text(json.dumps(payload, indent=2))
    if problems:
        _print_problems(problems, "validation failed")
        return EXIT_PROBLEMS
    n_sites = sum(len(f) for f in federations)
    print(f"\nOK: {len(federations)} federation(s), {n_sites} site(s), no problems")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from medfed.demo import default_data_dir, ensure_demo
    from medfed.synth.common import atomic_write_text

    if args.configs:
        configs = list(args.configs)
    else:
        data_dir = Path(args.data) if args.data else default_data_dir()
        print(f"demo federations under {data_dir / args.scale} (generated when missing)")
        configs = list(ensure_demo(data_dir, scale=args.scale, seed=args.seed).values())
    federations, problems = validate_configs(configs, progress=not args.no_progress)
    table = site_table(federations)
    print(table.to_string(index=False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sites.csv", table.to_csv(index=False))
    summaries = {f.name: [s.summary() for s in f] for f in federations}
    atomic_write_text(out / "federations.json", json.dumps(summaries, indent=2))
    if problems:
        _print_problems(problems, "the federations have data problems; fix them before training")
        return EXIT_PROBLEMS
    print(f"\nall {len(table)} sites validated; site summaries written to {out}/sites.csv and federations.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medfed", description="Federated learning benchmarks for medical imaging.")
    parser.add_argument("--version", action="version", version=f"medfed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write deterministic synthetic federations in the real on-disk formats")
    synth.add_argument("--out", required=True, type=Path, help="output folder (data + sites/*.yaml configs)")
    synth.add_argument("--scale", choices=SCALES, default="demo")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--only", nargs="+", choices=MODALITIES, help="modalities to write (default: all)")
    synth.set_defaults(func=cmd_synth)

    validate = sub.add_parser("validate", help="check every case of every site; list every problem at once")
    validate.add_argument("configs", nargs="+", type=Path, help="federation config(s), e.g. sites/brain_mri.yaml")
    validate.add_argument("--json", type=Path, help="also write the problems as JSON here")
    validate.add_argument("--no-progress", action="store_true")
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="the main job: prepare and validate federations (demo ones by default)")
    run.add_argument("configs", nargs="*", type=Path, help="federation config(s); default: the demo federations")
    run.add_argument("--data", help="data folder for the demo federations (default $MEDFED_DATA or ./data)")
    run.add_argument("--scale", choices=SCALES, default="demo")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="reports/demo", help="output folder (default reports/demo)")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataProblems as err:
        _print_problems(err.problems, "data problems")
        return EXIT_PROBLEMS
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except MedfedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
