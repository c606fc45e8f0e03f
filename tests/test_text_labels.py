"""`medfed classify-reports`: reports in, a CheXpert-style label table out that a chest X-ray site trains from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from medfed.cli import main
from medfed.sites.federation import load_federation
from medfed.synth import write_federation
from medfed.tasks.classification import ClassificationConfig, ClassificationTask

TAXONOMY = {"name": "pneumonia", "labels": [
    {"name": "Pneumonia", "definition": "Infection of the lung parenchyma with airspace consolidation.",
     "synonyms": {"en": ["pneumonia", "consolidation"], "es": ["neumonia", "consolidacion"]}}]}
TEXTS = {1: ("Right lower lobe consolidation consistent with pneumonia.", "Consolidación basal derecha."),
         0: ("No focal consolidation. No pneumonia.", "Sin consolidación ni neumonía."),
         -1: ("Possible early pneumonia.", "No se descarta neumonía.")}


@pytest.fixture()
def site_with_reports(tmp_path):
    config = write_federation("chest_xray", tmp_path / "fed", scale="small", seed=0)
    federation = yaml.safe_load(config.read_text())
    source = next(s for s in federation["sources"] if s.get("layout") == "table")
    root = (config.parent / source["root"]).resolve()
    truth = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    rows = []
    for i, (path, value) in enumerate(zip(truth["Path"], truth["Pneumonia"], strict=True)):
        value = int(float(value or 0))
        language = "es" if i % 3 == 0 else "en"
        rows.append({"Path": path, "text": TEXTS[value][language == "es"], "language": language})
    pd.DataFrame(rows).to_csv(tmp_path / "reports.csv", index=False)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(TAXONOMY))
    return config, federation, source, root, truth


def test_a_chest_site_trains_from_labels_made_by_classify_reports(site_with_reports, tmp_path, capsys):
    _, federation, source, root, truth = site_with_reports
    out = root / "labels_from_reports.csv"
    assert main(["classify-reports", "--taxonomy", str(tmp_path / "taxonomy.yaml"), "--reports",
                 str(tmp_path / "reports.csv"), "--out", str(out)]) == 0
    assert "report(s) labelled by rules" in capsys.readouterr().out
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["Path", "Pneumonia", "Pneumonia_confidence", "status", "backend"]
    expected = pd.to_numeric(truth["Pneumonia"].replace("", "0")).astype(int).astype(str)
    assert (table["Pneumonia"] == expected).all()  # templated reports: the rules recover every label
    for policy, uncertain_value in (("ignore", -1), ("ones", 1)):
        source_copy = {**source, "name": f"from-reports-{policy}", "labels": out.name, "uncertain": policy}
        source_copy.pop("group_column", None)  # the report labels carry no patient column: DICOM PatientID groups them
        fed = {**federation, "sources": [{**source_copy, "root": str(root)}]}
        path = tmp_path / f"fed_{policy}.yaml"
        path.write_text(yaml.safe_dump(fed))
        site = load_federation(path).sites[0]
        labels = site.cases["Pneumonia"].to_numpy()
        original = pd.to_numeric(expected).to_numpy()
        assert np.array_equal(labels, np.where(original == -1, uncertain_value, original))
    task = ClassificationTask(ClassificationConfig(labels=["Pneumonia"], batch_size=8))
    model = task.build_model(0)
    result = task.local_train(model, task.train_dataset(site), epochs=1, seed=0)
    assert result.steps > 0 and np.isfinite(result.mean_loss)


def test_bad_report_files_are_clear_errors(tmp_path, capsys):
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(TAXONOMY))
    pd.DataFrame({"Path": ["a.png", "a.png", "b.png"], "text": ["No pneumonia.", "x", "  "]}).to_csv(
        tmp_path / "r.csv", index=False)
    args = ["classify-reports", "--taxonomy", str(tmp_path / "taxonomy.yaml"), "--out", str(tmp_path / "o.csv")]
    assert main([*args, "--reports", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert "line 2: Path repeated" in err and "line 3: Path repeated" in err and "line 4: empty report text" in err
    assert "No pneumonia" not in err  # report text is never printed
    assert main([*args, "--reports", str(tmp_path / "r.csv"), "--text-column", "report"]) == 2
    assert "missing column(s) report" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
