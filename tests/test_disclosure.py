"""Disclosure control (medfed.stats.disclosure): the rules on hand-computable tables, and a property test of every
count and pooled value in every output file of runs on random small federations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from medfed.fl.experiment import run_experiment
from medfed.report import ReportOptions, write_report
from medfed.fl.log_disclosure import ShownSplits, disclose_round, shown_splits
from medfed.sites import load_federation
from medfed.stats.disclosure import Relation, hidden_cells, pool_members, protect, protect_summary
from medfed.synth import write_federation

SPLITS = Relation("cases", ("train", "val", "test"))


# ------------------------------------------------------------------------------------------ the rules by hand
def test_the_issue_tables_hide_the_total_beside_a_suppressed_split():
    # inst-1 at min_count 5: 13 = 8 + 3 + 2 printed as 13, 8, <5, <5 gave val + test = 5 by subtraction
    assert protect({"cases": 13, "train": 8, "val": 3, "test": 2}, [SPLITS], 5) == \
        {"cases": ">=5", "train": 8, "val": "<5", "test": "<5"}
    # inst-2 at min_count 2: 8 / 5 / <2 / 2 gave val = 1
    assert protect({"cases": 8, "train": 5, "val": 1, "test": 2}, [SPLITS], 2) == \
        {"cases": ">=2", "train": 5, "val": "<2", "test": 2}


def test_a_total_below_min_count_is_never_shown_as_at_least_min_count():
    # report.html showed ">=5" as the total of a 4-case and a 3-case site
    assert protect({"cases": 4, "train": 4, "val": 0, "test": 0}, [SPLITS], 5)["cases"] == "<5"
    assert protect({"cases": 3, "train": 2, "val": 1, "test": 0}, [SPLITS], 5) == \
        {"cases": "<5", "train": "<5", "val": "<5", "test": 0}


def test_linked_tables_hide_a_part_when_the_total_is_hidden():
    relations = [SPLITS, Relation("cases", ("label=0", "label=1"))]
    cells = {"cases": 30, "train": 20, "val": 5, "test": 5, "label=0": 27, "label=1": 3}
    # label=1 is small -> the total is hidden -> the splits would give it back, so their smallest (val, first of
    # the tied 5s) is hidden too
    assert protect(cells, relations, 5) == {"cases": ">=5", "train": 20, "val": ">=5", "test": 5,
                                            "label=0": 27, "label=1": "<5"}


def test_nothing_is_hidden_when_no_count_is_small_and_zero_is_shown():
    cells = {"cases": 20, "train": 15, "val": 5, "test": 0}
    assert hidden_cells(cells, [SPLITS], 5) == {}


def test_rules_are_idempotent_on_a_protected_summary():
    summary = {"cases": 13, "splits": {"train": 8, "val": 3, "test": 2}, "labels": {"y": {"0": 9, "1": 4}},
               "metadata": {"sex": {"F": 6, "M": 7}}}
    once = protect_summary(summary, 5)
    assert once["cases"] == ">=5" and once["labels"]["y"] == {"0": 9, "1": "<5"}
    assert once["metadata"]["sex"] == {"F": ">=5", "M": 7}  # the smaller part of a relation whose total is hidden
    assert protect_summary(once, 5) == once


def test_pool_members_leaves_out_sites_with_a_suppressed_count():
    assert pool_members({"a": 12, "b": 3, "c": 0}, {"a": 5, "b": 5, "c": 5}) == (["a", "c"], ["b"])


def test_round_log_counts_are_no_more_exact_than_sites_csv():
    shown = {"a": ShownSplits(8, "<5", 5), "b": ShownSplits(">=5", 6, 5)}
    record = {"num_examples": {"a": 8, "b": 9}, "aggregation": {"num_examples": {"a": 8, "b": 9}},
              "work": {"a": {"seconds": 1.0, "examples": 16, "val_examples": 3},
                       "b": {"seconds": 1.0, "examples": 18, "val_examples": 6}}}
    out = disclose_round(record, shown)
    assert out["num_examples"] == {"a": 8, "b": ">=5"} == out["aggregation"]["num_examples"]
    assert out["work"]["a"] == {"seconds": 1.0, "examples": 16, "val_examples": "<5"}
    assert out["work"]["b"] == {"seconds": 1.0, "examples": None, "val_examples": 6}
    assert disclose_round(out, shown) == out
    pooled = shown_splits({"a": ({"splits": {"train": 8, "val": "<5"}}, 5), "b": ({"splits": {"train": 9, "val": 6}}, 5)},
                          "pooled")["pooled"]
    assert pooled == ShownSplits(17, ">=5", 5)


# ------------------------------------------------------------------------------ property test of every output
@pytest.fixture(scope="module")
def chest_federation(tmp_path_factory) -> Path:
    return write_federation("chest_xray", tmp_path_factory.mktemp("chest"), scale="small", seed=0)


def random_federation(base: Path, folder: Path, rng: np.random.Generator) -> tuple[Path, int]:
    """The small chest federation with a random subset of each table site's rows, a random min_count and
    random split fractions and seed."""
    config = yaml.safe_load(base.read_text())
    folder.mkdir(parents=True)
    for source in config["sources"]:
        root = folder / source["name"]
        shutil.copytree(base.parent / source["root"], root)
        source["root"] = str(root)
        if source.get("layout") == "table":  # drop a random share of rows, and their image files
            table = pd.read_csv(root / source["labels"])
            keep = table.sample(frac=float(rng.uniform(0.4, 1.0)), random_state=int(rng.integers(1 << 30)))
            for path in set(table["Path"]) - set(keep["Path"]):
                (root / path).unlink()
            keep.sort_index().to_csv(root / source["labels"], index=False)
    min_count = int(rng.integers(2, 7))
    config["min_count"] = min_count
    config["split"] = {"seed": int(rng.integers(1000)), "val": round(float(rng.uniform(0.1, 0.3)), 2),
                       "test": round(float(rng.uniform(0.15, 0.35)), 2)}
    path = folder / "federation.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, min_count


def random_brain_federation(base: Path, folder: Path, rng: np.random.Generator) -> tuple[Path, int]:
    """The small brain federation (5 institutions of 2 to 5 subjects) with a random min_count and split."""
    config = yaml.safe_load(base.read_text())
    folder.mkdir(parents=True)
    for source in config["sources"]:
        source["root"] = str((base.parent / source["root"]).resolve())
    min_count = int(rng.integers(2, 5))
    config["min_count"] = min_count
    config["split"] = {"seed": int(rng.integers(1000)), "val": round(float(rng.uniform(0.05, 0.2)), 2),
                       "test": round(float(rng.uniform(0.2, 0.3)), 2)}  # a 2-subject site keeps a train case
    path = folder / "federation.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, min_count


SEGMENTATION = {"kind": "segmentation", "batch_size": 2, "patch_size": None,
                "model": {"name": "unet", "channels": [4, 8], "strides": [2], "num_res_units": 0},
                "optimizer": {"name": "adam", "lr": 0.005}}


def experiment(folder: Path, federation: Path, task: dict[str, Any] | None = None) -> Path:
    config = {"name": "sdc", "federation": str(federation), "seed": 0,
              "task": task or {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 8,
                               "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
              "training": {"rounds": 2, "local_epochs": 1, "eval_every": 1, "min_fit_clients": 1},
              "methods": ["local_only", "fedavg", "centralised"]}
    path = folder / "sdc.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def parse(value: Any) -> Any:
    """A CSV cell as a count (int) where it is one, else as it is."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_counts(name: str, value: Any, k: int, problems: list[str]) -> None:
    value = parse(value)
    if is_count(value) and 0 < value < k:
        problems.append(f"{name}: {value} is below min_count {k}")


def check_marker_true(name: str, shown: Any, true: int, k: int, problems: list[str]) -> None:
    shown = parse(shown)
    if is_count(shown):
        if shown != true:
            problems.append(f"{name}: shows {shown}, true {true}")
    elif shown == f"<{k}":
        if not 0 < true < k:
            problems.append(f"{name}: shows <{k}, true {true}")
    elif shown == f">={k}":
        if true < k:
            problems.append(f"{name}: shows >={k}, true {true}")
    else:
        problems.append(f"{name}: unexpected {shown!r}")


def derivable(cells: dict[str, Any], relation: Relation) -> bool:
    """Whether a hidden cell of the relation, or the sum of its hidden parts, follows from the shown ones."""
    unknown = [n for n in (relation.total, *relation.parts) if not is_count(parse(cells.get(n)))]
    if not unknown:
        return False
    total_shown = relation.total not in unknown
    return len(unknown) == 1 or (total_shown and all(p in cells for p in relation.parts))


def audit_run(run: Path, federation: Path, k: int) -> list[str]:
    """Every rule on every output file of a run directory; the problems found (empty when all hold)."""
    problems: list[str] = []
    sites = {s.name: s for s in load_federation(federation)}
    summaries = {s["site"]: s for s in json.loads((run / "sites.json").read_text())}
    # sites.json: primary rule, true markers, no derivable hidden cell
    for name, summary in summaries.items():
        table = sites[name]._table
        truth = {"cases": len(table), **{s: int((table["split"] == s).sum()) for s in ("train", "val", "test")}}
        cells = {"cases": summary["cases"], **summary["splits"]}
        for cell, true in truth.items():
            check_marker_true(f"sites.json {name} {cell}", cells[cell], true, k, problems)
        relations = [SPLITS]
        for kind, column_of in (("labels", lambda c: c), ("metadata", lambda c: c)):
            for column, counts in summary.get(kind, {}).items():
                values = table[column_of(column)].astype(str).value_counts()
                for value, shown in counts.items():
                    check_marker_true(f"sites.json {name} {kind} {column}={value}", shown, int(values[value]), k, problems)
                    cells[f"{kind}:{column}={value}"] = shown
                relations.append(Relation("cases", tuple(f"{kind}:{column}={v}" for v in counts)))
        for relation in relations:
            if derivable(cells, relation):
                problems.append(f"sites.json {name}: {relation} lets a hidden count be derived: {cells}")
    # sites.csv says what sites.json says
    for row in pd.read_csv(run / "sites.csv", dtype=str).to_dict("records"):
        for column in ("cases", "train", "val", "test"):
            if str(summaries[row["site"]][column] if column == "cases" else summaries[row["site"]]["splits"][column]) \
                    != row[column]:
                problems.append(f"sites.csv {row['site']} {column}: {row[column]} differs from sites.json")
    small = {(name, split) for name, s in summaries.items() for split, v in s["splits"].items() if v == f"<{k}"}
    # metrics.csv: counts, suppressed values, pooled rows
    metrics = pd.read_csv(run / "metrics.csv", dtype={"n_cases": str})
    for row in metrics.to_dict("records"):
        where = f"metrics.csv {row['model']} {row['site']} {row['split']} {row['metric']}"
        check_counts(where, row["n_cases"], k, problems)
        if row["site"] != "pooled" and (row["site"], row["split"]) in small and np.isfinite(row["value"]):
            problems.append(f"{where}: value shown for a suppressed site")
        if row["site"] == "pooled" and any(split == row["split"] for _, split in small):
            if np.isfinite(row["value"]) or is_count(parse(row["n_cases"])):
                problems.append(f"{where}: pooled value or count shown while a suppressed site is in the pool")
    # per_site.csv and comparisons.csv: counts, and pooled estimates withheld beside a suppressed test split
    for file in ("per_site.csv", "comparisons.csv"):
        table = pd.read_csv(run / file, dtype={"n_cases": str})
        for row in table.to_dict("records"):
            check_counts(f"{file} {row['site']} {row.get('method')}", row["n_cases"], k, problems)
        if any(split == "test" for _, split in small):
            column = "estimate" if file == "per_site.csv" else "difference"
            pooled = table[(table["site"] == "pooled") & table[column].notna()]
            if len(pooled):
                problems.append(f"{file}: pooled values shown while a suppressed site is in the pool")
    # summary.json: every count-like field
    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif any(word in path.rsplit(".", 1)[-1] for word in ("cases", "count", "examples", "train", "val", "test")):
            check_counts(f"summary.json {path}", value, k, problems)
    walk(json.loads((run / "summary.json").read_text()), "")
    # rounds.jsonl: counts no more exact than sites.csv; pooled round metrics never include a suppressed site
    for log in sorted((run / "runs").glob("*/rounds.jsonl")):
        for record in map(json.loads, log.read_text().splitlines()):
            where = f"{log.parent.name} round {record['round']}"
            for site, n in record.get("num_examples", {}).items():
                check_counts(f"{where} num_examples {site}", n, k, problems)
                if site in summaries and not is_count(summaries[site]["splits"]["train"]) and is_count(n):
                    problems.append(f"{where} num_examples {site}: {n} while sites.csv hides the train count")
            for site, work in record.get("work", {}).items():
                check_counts(f"{where} val_examples {site}", work.get("val_examples"), k, problems)
                if site in summaries and not is_count(summaries[site]["splits"]["val"]) \
                        and is_count(work.get("val_examples")):
                    problems.append(f"{where} val_examples {site}: exact while sites.csv hides the val count")
            evaluation = record.get("eval") or {}
            for split in ("val", "test"):
                smalls = {name for name, s in small if s == split}
                if not smalls or "pooled" not in evaluation or split not in evaluation["pooled"]:
                    continue
                left_out = set((evaluation.get("pooled_left_out") or {}).get(split, []))
                if not smalls <= left_out:
                    problems.append(f"{where}: pooled {split} value includes suppressed site(s) {smalls - left_out}")
                for site in smalls:
                    values = (evaluation.get(site) or {}).get(split, {})
                    if any(v is not None for v in values.values()):
                        problems.append(f"{where}: {site} {split} metrics shown below min_count")
    # report.html: the site table shows sites.json's cells (already checked), never a false ">=k" or a small count
    html = (run / "report.html").read_text()
    for name, summary in summaries.items():
        row = next((line for line in html.splitlines() if line.startswith(f"<tr><td>{name}</td>")), "")
        if row and f'<td class="num">{str(summary["cases"]).replace("<", "&lt;").replace(">", "&gt;")}</td>' not in row:
            problems.append(f"report.html {name}: total differs from sites.json ({summary['cases']}): {row}")
    return problems


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_output_of_a_run_on_a_random_federation_keeps_the_rules(chest_federation, tmp_path, seed):
    rng = np.random.default_rng(seed)
    federation, k = random_federation(chest_federation, tmp_path / "federation", rng)
    result = run_experiment(experiment(tmp_path, federation), tmp_path / "out", progress=False)
    write_report([result.out], options=ReportOptions(n_resamples=200))
    problems = audit_run(result.out, federation, k)
    assert not problems, "\n".join(problems[:20])


def test_every_output_of_a_segmentation_run_keeps_the_rules(tmp_path):
    base = write_federation("brain_mri", tmp_path / "brain", scale="small", seed=0)
    federation, k = random_brain_federation(base, tmp_path / "federation", np.random.default_rng(5))
    result = run_experiment(experiment(tmp_path, federation, SEGMENTATION), tmp_path / "out", progress=False)
    write_report([result.out], options=ReportOptions(n_resamples=200))
    problems = audit_run(result.out, federation, k)
    assert not problems, "\n".join(problems[:20])


def test_the_audit_finds_a_leak(chest_federation, tmp_path):
    """The property test can fail: an exact small count and a pooled value beside a suppressed site are found."""
    federation, k = random_federation(chest_federation, tmp_path / "federation", np.random.default_rng(0))
    result = run_experiment(experiment(tmp_path, federation), tmp_path / "out", progress=False)
    write_report([result.out], options=ReportOptions(n_resamples=200))
    summaries = json.loads((result.out / "sites.json").read_text())
    site = next(s for s in summaries if any(v == f"<{k}" for v in s["splits"].values()))
    site["cases"] = len(load_federation(federation).sites[[s.name for s in load_federation(federation)]
                                                            .index(site["site"])]._table)
    (result.out / "sites.json").write_text(json.dumps(summaries))
    log = result.out / "runs" / "fedavg" / "rounds.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records[0]["work"][site["site"]]["val_examples"] = 1  # an exact small count, as the log held before
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    problems = audit_run(result.out, federation, k)
    assert any("lets a hidden count be derived" in p for p in problems)
    assert any(f"val_examples {site['site']}: 1 is below min_count" in p for p in problems)
