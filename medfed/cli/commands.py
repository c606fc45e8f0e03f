"""The ``medfed`` commands: each turns its parsed arguments into a call of :mod:`medfed.api` and prints what
came back. No decision is taken here that a Python user of :mod:`medfed.api` would miss."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medfed import api
from medfed.errors import ConfigError, Problem, errors_only
from medfed.io import atomic_write_text
from medfed.synth import MODALITIES, write_federations

EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def _print_problems(problems: list[Problem], header: str) -> None:
    errors = sum(p.is_error for p in problems)
    print(f"\n{header}: {errors} problem(s), {len(problems) - errors} warning(s)", file=sys.stderr)
    by_site: dict[str, list[Problem]] = {}
    for problem in problems:
        by_site.setdefault(problem.site, []).append(problem)
    for site, site_problems in by_site.items():
        print(f"  site {site}:", file=sys.stderr)
        for p in site_problems:
            where = ", ".join(x for x in (f"case {p.case}" if p.case else "", f"file {p.file}" if p.file else "") if x)
            tag = "" if p.is_error else "warning: "
            print(f"    - {tag}{where + ': ' if where else ''}{p.reason}", file=sys.stderr)


def cmd_synth(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    modalities = args.only or list(MODALITIES)
    configs = write_federations(args.out, scale=args.scale, seed=args.seed, modalities=modalities)
    for modality, path in configs.items():
        print(f"{modality:>13}: {path}")
    print(f"wrote {len(configs)} synthetic federation(s) at scale {args.scale!r} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    federations, problems = api.validate_configs(args.configs, progress=not args.no_progress,
                                                 allow_duplicates=args.allow_duplicates)
    print(api.site_table(federations).to_string(index=False))
    if args.json:
        payload = [p.__dict__ for p in problems]
        atomic_write_text(Path(args.json), json.dumps(payload, indent=2))  # creates the folder
    errors = errors_only(problems)
    if problems:
        _print_problems(problems, "validation failed" if errors else "validation passed with warnings")
    if errors:
        return EXIT_PROBLEMS
    n_sites = sum(len(f) for f in federations)
    print(f"\nOK: {len(federations)} federation(s), {n_sites} site(s), no problems"
          + (f", {len(problems)} warning(s)" if problems else ""))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data) if args.data else None

    def starting(config: Path, modality: str | None) -> None:
        if modality is not None:
            from medfed.demo import default_data_dir

            print(f"{config}: demo federation {modality!r} under {(data_dir or default_data_dir()) / args.scale} "
                  "(generated when missing)")

    options = _report_options(args)
    runs = api.run_experiments(
        args.configs, out=args.out, data=data_dir, scale=args.scale, demo_seed=args.seed, resume=args.resume,
        rounds=args.rounds, seeds=args.seeds, engine=args.engine, progress=not args.no_progress,
        report_options=options, on_start=starting, on_outcome=lambda outcome: _print_outcome(outcome, options))
    for sweep in runs.sweeps:
        from medfed.fl.sweep import markdown_table

        print(f"\n== sweep over {sweep.parameter}: pooled test values [95% CI] ==")
        print(markdown_table(sweep.table, sweep.parameter, metrics=sweep.metrics))
        print(f"   sweep table: {sweep.root / 'sweep.csv'}, {sweep.root / 'sweep.md'}")
    print(f"\ndone in {runs.seconds:.0f} s")
    return EXIT_PROBLEMS if runs.stopped else 0


def _print_outcome(outcome: api.RunOutcome, options) -> None:
    """One experiment's table, failures and stops as ``medfed run`` prints them, then its report line."""
    result = outcome.result
    seeds = f", mean ± SD over seeds {', '.join(map(str, sorted(result.metrics['seed'].unique())))}" \
        if "seed" in result.metrics else ""
    print(f"\n== {result.name}: {result.primary_metric} on each site's test split "
          f"(own model for local_only; n<k: too few cases to show{seeds}) ==")
    print(result.summary.to_string())
    if "centralised" in result.summary.columns:
        print("   centralised pools every site's images: an upper-bound reference, not privacy-preserving")
    for failure in result.failures:
        print(f"   round {failure['round']}: site {failure['site']} dropped from {failure['method']} "
              f"({failure['error']})")
    for method, message in result.stopped.items():
        print(f"   {method} STOPPED: {message}", file=sys.stderr)
    layout = "seed-<s>/predictions/, seed-<s>/runs/<method>/rounds.jsonl" if "seed" in result.metrics else \
        "predictions/, runs/<method>/rounds.jsonl"
    print(f"   results: {result.out}/metrics.csv, {layout}")
    if outcome.report is not None:
        _print_report(outcome.report, options)


def cmd_pretrain(args: argparse.Namespace) -> int:
    def done(encoder: api.Pretrained) -> None:
        losses, config = encoder.summary["loss_by_round"], encoder.config
        print(f"{encoder.name}: {config.task.kind} ({config.where}) loss {losses[0]:.4f} -> {losses[-1]:.4f} over "
              f"{len(losses)} rounds in {encoder.summary['seconds']:.0f} s; encoder checkpoint: {encoder.checkpoint}")

    api.pretrain_encoders(args.configs, out=args.out, data=args.data, scale=args.scale,
                          progress=not args.no_progress, on_pretrained=done)
    return 0


def _report_options(args: argparse.Namespace):
    from medfed.report import ReportOptions

    return ReportOptions(
        baselines=tuple(args.baseline or ()), n_resamples=args.resamples, confidence=args.confidence,
        ci_method=args.ci, correction=args.correction, seed=args.report_seed, min_ci_cases=args.min_ci_cases,
        meta_ci=args.meta_ci, margins=tuple(args.margin or ()),
    )


def _print_report(result, options) -> None:
    """What a written report holds, in one line."""
    comparisons = result.analysis.comparisons if result.across_seeds is None else result.across_seeds
    if len(comparisons):
        comparisons = comparisons[comparisons["site"] != "pooled"]  # per-site comparisons (the corrected family)
    tested = int(comparisons["p_value"].notna().sum()) if len(comparisons) else 0
    significant = int((comparisons["p_adjusted"] < 0.05).sum()) if len(comparisons) else 0
    if result.seeds is not None:
        print(f"   report: {result.html} (across seeds {', '.join(map(str, result.seeds))}: {tested} seed-averaged "
              f"comparisons tested, {significant} significant after {options.correction} correction; numbers in "
              "across_seeds.csv, meta_analysis.csv, comparisons.csv and per_site.csv with a seed column; each "
              "seed's own report in seed-<s>/report.html)")
        return
    print(f"   report: {result.html} ({tested} paired comparisons tested, {significant} significant after "
          f"{options.correction} correction; numbers in per_site.csv, comparisons.csv, meta_analysis.csv, "
          "calibration.csv, summary.json, summary.md)")


def cmd_report(args: argparse.Namespace) -> int:
    options = _report_options(args)
    _print_report(api.write_run_report(args.run_dirs, args.out, options), options)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from medfed.challenge.case_metrics import EmptyRules
    from medfed.challenge.scoring import ScoringOptions

    convergence = None
    if args.convergence:
        convergence = api.convergence_scores(args.convergence, args.profiles)
        for note in convergence.notes:
            print(f"   {note}")
    options = ScoringOptions(
        split=args.split, ranking=args.ranking, rules=EmptyRules(one_empty_hd95=args.hd95_penalty),
        missing_hd95=args.missing_hd95, n_resamples=args.resamples, seed=args.seed, alpha=args.alpha,
        convergence=convergence.scores if convergence is not None else None)
    result = api.score_submissions(args.sites, args.submissions, args.out, options, progress=not args.no_progress)
    out = result.out
    print(f"\n== {options.ranking} ranking of {len(result.summary['teams'])} submission(s) on "
          f"{result.summary['cases']} case(s) ==")
    stability = result.stability.set_index("team")
    for _, row in result.ranking.final.iterrows():
        s = stability.loc[row["team"]]
        print(f"  {int(row['rank']):>2}  {row['team']:<20} score {row['score']:.3f}   bootstrap rank "
              f"{s['median_rank']:g} [{s['rank_low']:g}, {s['rank_high']:g}], P(rank 1) {s['p_first']:.2f}")
    if len(result.problems):
        print(f"  {len(result.problems)} prediction problem(s), each scored worst: {out / 'problems.csv'}")
    print(f"   leaderboard: {out / 'leaderboard.html'} (tables: per_case.csv, per_institution.csv, ranking.csv, "
          f"rank_stability.csv, significance.csv)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    written = api.predict_labels(args.config, args.method, args.out, split=args.split, reports=args.reports,
                                 data=args.data, progress=not args.no_progress)
    print(f"{written} label map(s) of {args.method} written to {args.out}")
    return 0


def _backend_options(pairs: Sequence[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` pairs (numbers and booleans parsed as YAML) -> backend keyword options."""
    import yaml

    options: dict[str, object] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {pair!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


def cmd_classify_reports(args: argparse.Namespace) -> int:
    done = api.classify_reports(
        args.taxonomy, args.reports, args.out, backend=args.backend, options=_backend_options(args.option),
        fit=args.fit, id_column=args.id_column, text_column=args.text_column,
        language_column=args.language_column, language=args.language)
    unparsable = f"; {done.unparsable} unparsable" if done.unparsable else ""
    print(f"{done.reports} report(s) labelled by {args.backend} in {done.seconds:.1f} s "
          f"({done.reports / max(done.seconds, 1e-9):.0f}/s){unparsable}: {done.out}")
    for label in done.labels:
        counts = done.table[label].value_counts(dropna=False)
        shown = ", ".join(f"{'blank' if pd.isna(k) else int(k)}: {v}" for k, v in counts.items())
        print(f"   {label}: {shown}")
    return 0


def cmd_evaluate_reports(args: argparse.Namespace) -> int:
    from medfed.text.evaluate import run_report_experiment

    for config in args.configs:
        run = run_report_experiment(config, args.out, progress=not args.no_progress)
        print(f"\n== {run.out.name}: F1 (macro over labels) on each site's test reports ==")
        print(run.summary.to_string())
        print("   seconds per backend (train / predict): "
              + "; ".join(f"{k} {v['train']:.0f} / {v['predict']:.0f}" for k, v in run.seconds.items()))
        options = _report_options(args)
        _print_report(api.write_run_report([run.out], None, options), options)
    return 0


def cmd_flower_certs(args: argparse.Namespace) -> int:
    try:
        from medfed.integrations.flower.certificates import write_credentials
    except ImportError as err:  # cryptography comes with flwr
        raise ConfigError(f"flower-certs needs medfed[flower] (pip install 'medfed[flower]'): {err}") from err
    files = write_credentials(args.out, args.host, args.node, days=args.days, overwrite=args.overwrite)
    print(f"SuperLink (keep ca.key offline): --ssl-ca-certfile {files.ca_certificate} "
          f"--ssl-certfile {files.server_certificate} --ssl-keyfile {files.server_key} --enable-supernode-auth")
    print(f"every hospital and the flwr connection (root-certificates): {files.ca_certificate}")
    for node in args.node:
        print(f"{node}: flwr supernode register {files.public_key(node)} <connection> --name {node}; its SuperNode: "
              f"--auth-supernode-private-key {files.node_keys[node]}")
    return 0


def cmd_nnunet(args: argparse.Namespace) -> int:
    try:
        from medfed.integrations.nnunet import commands
    except ImportError as err:
        raise ConfigError(f"medfed nnunet needs nnU-Net: pip install -c constraints.txt 'medfed[nnunet]' ({err})") from err
    if args.nnunet_command == "export":
        for d in commands.export(args.sites, args.out, args.dataset_id, args.name, args.per_site,
                                 progress=not args.no_progress):
            print(f"{d.folder}: {d.training} training case(s), {d.test} test case(s) from {', '.join(d.sites)}")
        print("next: nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres --verify_dataset_integrity "
              f"(with nnUNet_raw={args.out})")
    elif args.nnunet_command == "plan":
        plans = commands.plan(args.sites, args.out, args.dataset_id, args.name, args.planner, args.gpu_memory,
                              args.bins, progress=not args.no_progress)
        print(f"federated nnU-Net plans: {plans} (use as task.model: {{name: nnunet, plans: {plans}}})")
    else:
        done = commands.import_predictions(args.sites, args.predictions, args.out, args.split, args.site)
        print(f"{done['written']} label map(s) written to {done['out']} (score them with medfed score)")
    return 0
