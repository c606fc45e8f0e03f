"""medfed.api: the library functions behind the commands, called from Python as the README shows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from medfed import api
from medfed.errors import ConfigError
from medfed.report import ReportOptions
from medfed.synth import write_federation

TAXONOMY = Path(__file__).resolve().parents[1] / "tasks" / "report_taxonomy_chest.yaml"


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> Path:
    return write_federation("chest_xray", tmp_path_factory.mktemp("chest"), scale="small", seed=0)


def test_validate_configs_returns_every_federation_and_problem(chest):
    federations, problems = api.validate_configs([chest], progress=False)
    assert [f.name for f in federations] == [yaml.safe_load(chest.read_text())["name"]]
    assert not [p for p in problems if p.is_error]
    table = api.site_table(federations)
    assert list(table["site"]) == [s.name for s in federations[0]] and "unit" in table


def test_run_experiments_trains_reports_and_calls_back_in_order(chest, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "api_exp", "federation": str(chest), "seed": 0,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 8,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": 3, "local_epochs": 1, "eval_every": 0}, "methods": ["local_only", "fedavg"]}))
    seen: list[str] = []
    runs = api.run_experiments([config], out=tmp_path / "out", rounds=1, progress=False,
                               report_options=ReportOptions(n_resamples=100),
                               on_start=lambda path, modality: seen.append(f"start {path.name} {modality}"),
                               on_outcome=lambda outcome: seen.append(f"done {outcome.result.name}"))
    assert seen == ["start exp.yaml None", "done api_exp"]
    (outcome,) = runs.outcomes
    assert outcome.report is not None and outcome.report.html.is_file()
    assert not runs.stopped and list(outcome.result.summary.columns) == ["local_only", "fedavg"]
    rounds = pd.read_json(tmp_path / "out" / "api_exp" / "runs" / "fedavg" / "rounds.jsonl", lines=True)
    assert list(rounds["round"]) == [1]  # rounds=1 replaced the config's 3
    assert not list((tmp_path / "out").rglob("*.tmp"))  # atomic writes leave no temporary file


def test_run_experiments_refuses_seeds_on_flower_before_running(chest, tmp_path):
    with pytest.raises(ConfigError, match="multi-seed runs use the in-process engine"):
        api.run_experiments([tmp_path / "missing.yaml"], engine="flower", seeds=[0, 1])
    with pytest.raises(ConfigError, match="unknown engine"):
        api.run_experiments([tmp_path / "missing.yaml"], engine="ray")


def test_classify_reports_writes_the_label_table_atomically(tmp_path):
    reports = tmp_path / "reports.csv"
    pd.DataFrame({"Path": ["a.png", "b.png", "c.png"],
                  "text": ["Mild cardiomegaly. No pleural effusion.", "Large left pleural effusion.",
                           "Normal chest."]}).to_csv(reports, index=False)
    out = tmp_path / "labels" / "labels.csv"
    done = api.classify_reports(TAXONOMY, reports, out, backend="rules")
    table = pd.read_csv(out)
    assert done.reports == 3 and done.out == out and list(table["Path"]) == ["a.png", "b.png", "c.png"]
    assert list(table["Cardiomegaly"].fillna(0)) == [1, 0, 0]
    assert list(table["Pleural effusion"].fillna(0)) == [0, 1, 0]
    assert [p.name for p in out.parent.iterdir()] == ["labels.csv"]
