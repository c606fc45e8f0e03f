"""The ``medfed`` argument parser: commands, their options and the checks argparse can make (numbers in range,
paths of the right kind, seed lists, margins)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from medfed import __version__
from medfed.cli.commands import (
    cmd_classify_reports,
    cmd_evaluate_reports,
    cmd_flower_certs,
    cmd_nnunet,
    cmd_predict,
    cmd_pretrain,
    cmd_report,
    cmd_run,
    cmd_score,
    cmd_synth,
    cmd_validate,
)
from medfed.synth import GENERATORS, MODALITIES, SCALES


def _number(kind: type, low: float, high: float | None = None) -> Callable[[str], float]:
    """argparse type: a ``kind`` number >= ``low`` (with ``high``: strictly between them); else a usage error."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value >= low if high is None else low < value < high):
            rule = f">= {low}" if high is None else f"strictly between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} {rule}, "
                                             f"got {text!r}")
        return value
    return parse


def _path(kind: str) -> Callable[[str], Path]:
    """argparse type: ``in``: an existing file; ``out``: a file to write; ``dir``: a folder to write (made when
    missing: no existing file may stand where it or a parent folder goes)."""
    def parse(text: str) -> Path:
        path = Path(text)
        if kind != "dir" and path.is_dir():
            raise argparse.ArgumentTypeError(f"must be a file, but {path} is a directory")
        if kind == "in" and not path.is_file():
            raise argparse.ArgumentTypeError(f"file not found: {path}")
        nearest = next((p for p in (path, *path.parents) if p.exists()), None)  # must be a folder, or the file
        if nearest is not None and not nearest.is_dir() and (kind == "dir" or nearest != path):
            raise argparse.ArgumentTypeError(f"must be a directory, but {path} is a file" if nearest == path
                                             else f"{path}: {nearest} is a file, not a directory")
        return path
    return parse


def _seed_list(text: str) -> list[int]:
    """``0,1,2``: distinct integers."""
    from medfed.fl.config import check_seeds

    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return check_seeds([int(p) for p in parts])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}" if parts and all(_is_int(p) for p in parts)
                                         else f"expected distinct integer seeds like 0,1,2, got {text!r}") from None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _margin(text: str) -> tuple[str, float]:
    """``METRIC=DELTA`` with a positive number."""
    metric, _, value = text.partition("=")
    try:
        delta = float(value)
    except ValueError:
        delta = float("nan")
    if not metric or not delta > 0:
        raise argparse.ArgumentTypeError(f"expected METRIC=DELTA with DELTA > 0, got {text!r}")
    return metric.strip(), delta


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("report statistics")
    group.add_argument("--baseline", action="append", metavar="METHOD",
                       help="method every other method is compared with (repeatable; default: local_only and fedavg)")
    group.add_argument("--resamples", type=_number(int, 100), default=1000,
                       help="bootstrap resamples, >= 100 (default 1000)")
    group.add_argument("--confidence", type=_number(float, 0, 1), default=0.95, help="CI level (default 0.95)")
    group.add_argument("--ci", choices=("bca", "percentile"), default="bca", help="bootstrap CI method")
    group.add_argument("--correction", choices=("holm", "bh", "none"), default="holm",
                       help="multiple-comparison correction across sites x comparisons (default holm)")
    group.add_argument("--report-seed", type=_number(int, 0), default=0, help="seed of the bootstrap resamples")
    group.add_argument("--min-ci-cases", type=_number(int, 2), default=10,
                       help="fewest test cases for a CI or test (default 10)")
    group.add_argument("--margin", action="append", type=_margin, metavar="METRIC=DELTA",
                       help="non-inferiority / equivalence margin of a compared metric, e.g. auroc=0.02 (repeatable; "
                            "adds p_noninferiority and p_equivalence to comparisons.csv and meta_analysis.csv)")
    group.add_argument("--meta-ci", choices=("hksj", "wald"), default="hksj",
                       help="CI of the random-effects meta-analysis across sites (meta_analysis.csv): "
                            "Hartung-Knapp-Sidik-Jonkman (default; few sites) or Wald")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medfed", description="Federated learning benchmarks for medical imaging.")
    parser.add_argument("--version", action="version", version=f"medfed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write deterministic synthetic federations in the real on-disk formats")
    synth.add_argument("--out", required=True, type=_path("dir"), help="output folder (data + sites/*.yaml configs)")
    synth.add_argument("--scale", choices=SCALES, default="demo")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--only", nargs="+", choices=list(GENERATORS),
                       help=f"federations to write (default: {', '.join(MODALITIES)})")
    synth.set_defaults(func=cmd_synth)

    validate = sub.add_parser("validate", help="check every case of every site; list every problem at once")
    validate.add_argument("configs", nargs="+", type=Path, help="federation config(s), e.g. sites/brain_mri.yaml")
    validate.add_argument("--json", type=Path, help="also write the problems as JSON here")
    validate.add_argument("--allow-duplicates", action="store_true",
                          help="report identical images in train and test as warnings, not errors")
    validate.add_argument("--no-progress", action="store_true")
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="the main job: train and compare methods on federations (demo ones by default)")
    run.add_argument("configs", nargs="*", type=Path,
                     help="experiment config(s), e.g. tasks/demo_brain_mri.yaml; default: tasks/demo_*.yaml")
    run.add_argument("--data", help="data folder for the demo federations (default $MEDFED_DATA or ./data)")
    run.add_argument("--scale", choices=SCALES, default="demo", help="size of generated demo federations")
    run.add_argument("--seed", type=int, default=0, help="seed of generated demo federations")
    run.add_argument("--out", default="reports", type=_path("dir"),
                     help="output folder; each experiment writes <out>/<name>/")
    run.add_argument("--resume", action="store_true", help="continue killed runs from their last finished round")
    run.add_argument("--rounds", type=_number(int, 1), help="override training.rounds, >= 1 (e.g. 1 for a smoke test)")
    run.add_argument("--seeds", type=_seed_list, metavar="S[,S...]",
                     help="run every method under each seed, e.g. 0,1,2 (replaces the config's seeds; "
                          "one seed-<s>/ run each, plus metrics.csv with a seed column)")
    run.add_argument("--engine", choices=("inprocess", "flower", "flower-sim"), default="inprocess",
                     help="inprocess (default); flower: a Flower SuperLink and one SuperNode per site on this "
                          "machine (loopback); flower-sim: Flower's Simulation Engine (Ray; medfed[flower-sim])")
    run.add_argument("--no-progress", action="store_true")
    _add_report_options(run)
    run.set_defaults(func=cmd_run)

    pretrain = sub.add_parser("pretrain", help="self-supervised pretraining (SimCLR 2D, masked volumes 3D), central or federated")
    pretrain.add_argument("configs", nargs="+", type=Path, help="pretraining config(s), e.g. tasks/ssl_*.yaml")
    pretrain.add_argument("--data", help="data folder for the demo federations (default $MEDFED_DATA or ./data)")
    pretrain.add_argument("--scale", choices=SCALES, default="demo", help="size of generated demo federations")
    pretrain.add_argument("--out", default="reports", type=_path("dir"),
                          help="output folder; each config writes <out>/<name>/")
    pretrain.add_argument("--no-progress", action="store_true")
    pretrain.set_defaults(func=cmd_pretrain)

    report = sub.add_parser("report", help="per-site statistics and an HTML report of run directories")
    report.add_argument("run_dirs", nargs="+", type=Path,
                        help="run directories written by `medfed run` (several on one federation are merged)")
    report.add_argument("--out", type=_path("dir"), help="report folder (default: the run directory; needed when merging)")
    _add_report_options(report)
    report.set_defaults(func=cmd_report)

    predict = sub.add_parser("predict", help="write a trained segmentation run's label maps as a challenge submission")
    predict.add_argument("config", type=Path, help="experiment config the run was trained with")
    predict.add_argument("--method", required=True, help="method (label) whose final model predicts")
    predict.add_argument("--out", required=True, type=_path("dir"), help="submission folder (<ID>_seg.nii.gz files)")
    predict.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    predict.add_argument("--reports", default="reports", help="where `medfed run` wrote the run (default reports)")
    predict.add_argument("--data", help="data folder for the demo federations (default $MEDFED_DATA or ./data)")
    predict.add_argument("--no-progress", action="store_true")
    predict.set_defaults(func=cmd_predict)

    scoring = sub.add_parser("score", help="challenge scoring: evaluate submissions at each site, FeTS-style ranking, "
                                           "leaderboard.html")
    scoring.add_argument("sites", type=Path, help="federation config holding the ground truth")
    scoring.add_argument("submissions", nargs="+", help="TEAM=FOLDER (or FOLDER: team = folder name) of label maps")
    scoring.add_argument("--out", type=_path("dir"), help="scoring folder (default reports/score-<federation>)")
    scoring.add_argument("--split", choices=("test", "val", "train", "all"), default="test",
                         help="cases scored at each site (default test)")
    scoring.add_argument("--ranking", choices=("fets2", "fets1", "aggregate"), default="fets2",
                         help="fets2: rank per institution then average (default); fets1: per-case ranks with the "
                              "convergence score; aggregate: mean metrics then rank")
    scoring.add_argument("--convergence", action="append", metavar="TEAM=SCORE|RUN_DIR",
                         help="task-1 convergence score of a team, or the medfed run directory to compute it from")
    scoring.add_argument("--profiles", type=Path, help="timing profiles YAML for convergence scores "
                                                       "(e.g. sites/profiles/fets_timing.yaml)")
    scoring.add_argument("--hd95-penalty", type=_number(float, 0), default=374.0,
                         help="HD95 (mm) when a structure is empty in exactly one of truth and prediction (374)")
    scoring.add_argument("--missing-hd95", type=_number(float, 0), default=1000.0,
                         help="HD95 a missing or unscorable case counts as in the ranking (1000)")
    scoring.add_argument("--resamples", type=_number(int, 1), default=1000, help="bootstrap resamples of the ranking (1000)")
    scoring.add_argument("--alpha", type=_number(float, 0, 1), default=0.05, help="significance level of the pairwise tests")
    scoring.add_argument("--seed", type=_number(int, 0), default=0, help="seed of the bootstrap")
    scoring.add_argument("--no-progress", action="store_true")
    scoring.set_defaults(func=cmd_score)

    classify = sub.add_parser("classify-reports", help="label free-text radiology reports with a taxonomy "
                                                       "(rules, embedding or llm); writes a CheXpert-style label table")
    classify.add_argument("--taxonomy", required=True, type=_path("in"), help="taxonomy YAML (labels, definitions, values)")
    classify.add_argument("--reports", required=True, type=_path("in"), help="CSV of reports: id, text, optional language")
    classify.add_argument("--out", required=True, type=_path("out"),
                          help="label table CSV (the chest X-ray adapter's input)")
    classify.add_argument("--backend", choices=("rules", "embedding", "llm"), default="rules")
    classify.add_argument("--option", action="append", metavar="KEY=VALUE",
                          help="backend option, e.g. model_path=/models/medgemma-4b-it for llm")
    classify.add_argument("--fit", type=_path("in"), help="labelled reports CSV (id, text, one column per label) to train "
                                                   "the backend on first (embedding heads, llm LoRA)")
    classify.add_argument("--id-column", default="Path", help="id column, copied to the output (default Path)")
    classify.add_argument("--text-column", default="text")
    classify.add_argument("--language-column", default="language", help="per-report language (ISO 639-1)")
    classify.add_argument("--language", default="en", help="language of reports without one (default en)")
    classify.set_defaults(func=cmd_classify_reports)

    evaluate = sub.add_parser("evaluate-reports", help="compare report backends on a report federation (per-site, "
                                                       "per-label F1 with CIs; writes a run directory and its report)")
    evaluate.add_argument("configs", nargs="+", type=Path, help="report experiment config(s), e.g. tasks/reports_*.yaml")
    evaluate.add_argument("--out", default="reports", type=_path("dir"),
                          help="output folder; each experiment writes <out>/<name>/")
    evaluate.add_argument("--no-progress", action="store_true")
    _add_report_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate_reports)

    certs = sub.add_parser("flower-certs", help="TLS certificates and SuperNode keys for a Flower deployment "
                                                "(a CA, the SuperLink's certificate, one key pair per hospital)")
    certs.add_argument("out", type=_path("dir"), help="folder to write ca.crt, ca.key, server.pem, server.key, keys/")
    certs.add_argument("--host", action="append", required=True,
                       help="the SuperLink's host name or IP address as SuperNodes dial it (repeatable)")
    certs.add_argument("--node", action="append", default=[],
                       help="also make this node's key pair (repeatable; for trials: in production each hospital "
                            "runs `ssh-keygen -t ecdsa -b 384` itself and sends only the .pub)")
    certs.add_argument("--days", type=_number(int, 1), default=3650, help="validity of the certificates (default 3650)")
    certs.add_argument("--overwrite", action="store_true", help="replace existing files (a new CA for everyone)")
    certs.set_defaults(func=cmd_flower_certs)

    nnunet = sub.add_parser("nnunet", help="nnU-Net v2: export a segmentation federation in its raw format, "
                                          "federated fingerprint and plans, predictions back to submissions")
    nn_sub = nnunet.add_subparsers(dest="nnunet_command", required=True)
    nn_export = nn_sub.add_parser("export", help="write the sites as nnU-Net raw dataset(s) (hashed case ids)")
    nn_plan = nn_sub.add_parser("plan", help="each site's fingerprint (statistics only), merged; nnU-Net's planner "
                                             "on it: one plans file for the federation")
    for command in (nn_export, nn_plan):
        command.add_argument("sites", type=Path, help="federation config (sites/*.yaml) of BraTS/FeTS sites")
        command.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id (1-999)")
        command.add_argument("--name", required=True, help="dataset name: Dataset<ID>_<NAME>")
        command.add_argument("--no-progress", action="store_true")
    nn_export.add_argument("--out", type=_path("dir"), default=Path("nnUNet_raw"),
                           help="nnU-Net raw folder (default nnUNet_raw)")
    nn_export.add_argument("--per-site", action="store_true", help="one dataset per site (ids ID, ID+1, ...)")
    nn_plan.add_argument("--out", type=_path("dir"), default=Path("reports") / "nnunet", help="folder for the plans")
    nn_plan.add_argument("--planner", default="ExperimentPlanner",
                         help="nnU-Net planner class (ExperimentPlanner, nnUNetPlannerResEncM, ...)")
    nn_plan.add_argument("--gpu-memory", type=_number(float, 0), help="GPU memory target of the planner in GB (default: the "
                                                         "planner's own, 8 for ExperimentPlanner)")
    nn_plan.add_argument("--bins", type=_number(int, 1), default=10_000, help="intensity histogram bins per channel")
    nn_import = nn_sub.add_parser("import-predictions", help="nnU-Net predicted label maps -> BraTS submission "
                                                           "files for medfed score")
    nn_import.add_argument("sites", type=Path)
    nn_import.add_argument("predictions", type=Path, help="folder of <case id>.nii.gz from nnUNetv2_predict")
    nn_import.add_argument("--out", type=_path("dir"), required=True, help="submission folder to write")
    nn_import.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    nn_import.add_argument("--site", action="append", help="only this site's cases (repeatable; default all)")
    nnunet.set_defaults(func=cmd_nnunet)
    return parser
