"""Report corpora as sites (medfed.text.corpora): readers, problems, splits, label mapping, hashed ids, configs."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medfed.config import SplitConfig
from medfed.errors import ConfigError, MedfedError
from medfed.sites.identity import hash_case_id
from medfed.synth.report_corpora import (
    PADCHEST_COLUMNS,
    SYNTHETIC_FINDINGS,
    write_synthetic_iu,
    write_synthetic_padchest,
)
from medfed.text import corpora, report_sites
from medfed.text.corpora import (
    IU_FILE,
    PADCHEST_FILE,
    find_txv_data,
    read_iu_reports,
    read_padchest_reports,
)
from medfed.text.report_sites import ReportSite, load_report_federation, map_raw_labels
from medfed.text.taxonomy import load_taxonomy

ROOT = Path(__file__).parents[1]
TAXONOMY = ROOT / "tasks" / "report_taxonomy_chest.yaml"
CONFIG = ROOT / "sites" / "reports" / "iu_padchest.yaml"


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy(TAXONOMY)


@pytest.fixture(scope="module")
def mapping():
    return yaml.safe_load(CONFIG.read_text())["mapping"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("txv")
    write_synthetic_iu(folder / IU_FILE, 60, seed=1)
    write_synthetic_padchest(folder / PADCHEST_FILE, 80, seed=2)
    return folder


def _present(raw_labels, mapping, taxonomy):
    return {k for k, v in map_raw_labels(raw_labels, mapping, taxonomy).items() if v == "present"}


# ------------------------------------------------------------------------------------------------- readers
def test_synthetic_iu_round_trips(synth, taxonomy, mapping):
    problems = []
    frame = read_iu_reports(synth / IU_FILE, problems)
    assert problems == [] and frame.attrs["skipped"] == {"empty": 0, "not_indexed": 0}
    assert list(frame.columns) == ["source_id", "text", "language", "raw_labels"]
    assert len(frame) == 60 and set(frame["source_id"]) == {f"CXR{k}" for k in range(1, 61)}
    assert (frame["language"] == "en").all()
    assert frame["text"].str.startswith("Findings: ").all() and frame["text"].str.contains("\nImpression: ").all()
    for text, raw in zip(frame["text"], frame["raw_labels"], strict=True):
        assert raw == [r.lower() for r in raw] and all("/" not in r for r in raw)  # heads of the MeSH terms
        present = _present(raw, mapping["iu"], taxonomy)
        assert (raw == ["normal"]) == (not present)
        for finding in SYNTHETIC_FINDINGS:  # the text agrees with the labels, negations included
            assert (finding.en[0] in text) == (finding.label in present)
            if finding.en[1] in text:
                assert finding.label not in present
    assert frame["raw_labels"].map(len).sum() > 0 and (frame["raw_labels"].map(tuple) == ("normal",)).any()


def test_synthetic_padchest_round_trips(synth, taxonomy, mapping, tmp_path):
    header = gzip.decompress((synth / PADCHEST_FILE).read_bytes()).decode().splitlines()[0].split(",")
    assert header == ["", *PADCHEST_COLUMNS]  # the real file's header, unnamed index column first
    frame = read_padchest_reports(synth / PADCHEST_FILE)
    assert frame.attrs["problems"] == [] and len(frame) == 80 and frame["source_id"].is_unique
    rows = pd.read_csv(synth / PADCHEST_FILE)
    assert len(rows) > 80  # some reports span two image rows; the reader keeps one report each
    assert (frame["language"] == "es").all()
    for text, raw in zip(frame["text"], frame["raw_labels"], strict=True):
        assert raw == [r.strip().lower() for r in raw] and "" not in raw
        present = _present(raw, mapping["padchest"], taxonomy)
        for finding in SYNTHETIC_FINDINGS:
            assert (finding.es[0] in text) == (finding.label in present)
    assert frame["text"].str.contains("Sin derrame pleural.").any()
    plain = write_synthetic_padchest(tmp_path / "padchest.csv", 80, seed=2)
    pd.testing.assert_frame_equal(read_padchest_reports(plain), frame)


def test_synthetic_writers_are_deterministic(tmp_path):
    for writer, name in ((write_synthetic_iu, "a.tgz"), (write_synthetic_padchest, "a.csv.gz")):
        a = writer(tmp_path / "1" / name, 25, seed=3).read_bytes()
        b = writer(tmp_path / "2" / name, 25, seed=3).read_bytes()
        c = writer(tmp_path / "3" / name, 25, seed=4).read_bytes()
        assert a == b and a != c


def test_corrupt_xml_entry_is_a_problem_naming_file_and_entry(synth, tmp_path):
    broken = tmp_path / "broken.tgz"
    secret = "SECRETTEXT large left pleural effusion"
    with tarfile.open(synth / IU_FILE) as src, tarfile.open(broken, "w:gz") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, data in (("ecgen-radiology/9001.xml", f"<eCitation><uId id='CXR9001'/><Abstract>{secret}"),
                           ("ecgen-radiology/9002.xml", "<eCitation><MeSH><major>normal</major></MeSH></eCitation>")):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            dst.addfile(info, io.BytesIO(data.encode()))
    problems = []
    frame = read_iu_reports(broken, problems, site="iu-en")
    assert len(frame) == 60 and frame.attrs["problems"] == problems
    files = {p.file: p.reason for p in problems}
    assert set(files) == {"broken.tgz::ecgen-radiology/9001.xml", "broken.tgz::ecgen-radiology/9002.xml"}
    assert "unparsable XML" in files["broken.tgz::ecgen-radiology/9001.xml"]
    assert all(p.site == "iu-en" for p in problems)
    assert not any("SECRETTEXT" in str(p) or "pleural" in str(p) for p in problems)


def test_missing_csv_column_and_bad_label_list_are_problems(synth, tmp_path):
    rows = pd.read_csv(synth / PADCHEST_FILE, dtype=str)
    rows.drop(columns=["Labels"]).to_csv(tmp_path / "nolabels.csv", index=False)
    problems = []
    frame = read_padchest_reports(tmp_path / "nolabels.csv", problems)
    assert frame.empty and list(frame.columns) == ["source_id", "text", "language", "raw_labels"]
    assert len(problems) == 1 and problems[0].file == "nolabels.csv" and "Labels" in problems[0].reason

    rows.loc[0, "Report"] = "SECRETTEXT derrame pleural"
    rows.loc[0, "Labels"] = "['pleural effusion'"  # unreadable list literal
    rows.loc[1, "Report"] = " . . . "  # blank report: skipped, not a problem
    rows.to_csv(tmp_path / "bad.csv", index=False)
    problems = []
    frame = read_padchest_reports(tmp_path / "bad.csv", problems)
    assert [p.file for p in problems] == ["bad.csv::row 1"] and "Labels" in problems[0].reason
    assert "SECRETTEXT" not in str(problems[0]) and frame.attrs["skipped"]["empty"] >= 1
    assert not frame["text"].str.contains("SECRETTEXT").any() and len(frame) >= 78

    (tmp_path / "garbage.csv.gz").write_bytes(b"not gzip at all")
    problems = []
    assert read_padchest_reports(tmp_path / "garbage.csv.gz", problems).empty
    assert problems and problems[0].file == "garbage.csv.gz"


# ------------------------------------------------------------------------------------------- label mapping
def test_mapping_is_exact_and_present_or_absent(taxonomy, mapping):
    values = map_raw_labels(["subcutaneous emphysema", " Pleural Effusion ", "normal"], mapping["padchest"], taxonomy)
    assert values["Pleural effusion"] == "present" and values["Emphysema"] == "absent"
    assert set(values) == set(taxonomy.names) and set(values.values()) <= {"present", "absent"}
    assert set(map_raw_labels(["normal"], mapping["iu"], taxonomy).values()) == {"absent"}
    assert map_raw_labels(["fractures, bone", "hernia, hiatal"], mapping["iu"], taxonomy)["Fracture"] == "present"


def test_taxonomy_and_shipped_config_agree(taxonomy, mapping):
    assert len(taxonomy.names) >= 8 and taxonomy.values == ["present", "absent"] and taxonomy.uncertain == []
    assert taxonomy.languages() == ["en", "es"]
    for label in taxonomy.labels:
        assert label.definition.strip() and label.synonyms["en"] and label.synonyms["es"]
    for corpus in ("iu", "padchest"):
        assert corpus_problems(mapping[corpus], taxonomy) == []
    spanish = {s for label in taxonomy.labels for s in label.synonyms["es"]}
    assert {"derrame pleural", "cardiomegalia", "neumotórax", "atelectasia", "nódulo"} <= spanish


def corpus_problems(mapping, taxonomy):
    return report_sites.mapping_problems(mapping, taxonomy)


# --------------------------------------------------------------------------------------------------- sites
def _site(frame, taxonomy, mapping, name="iu-en", **kwargs):
    kwargs.setdefault("split", SplitConfig(seed=0, val=0.2, test=0.3, stratify=None))
    return ReportSite(name, frame, taxonomy, mapping, **kwargs)


def test_targets_follow_the_mapping_and_ids_are_hashed(synth, taxonomy, mapping):
    frame = read_iu_reports(synth / IU_FILE)
    site = _site(frame, taxonomy, mapping["iu"], salt="pepper", min_count=5)
    assert len(site) == 60 and site.name == "iu-en" and site.language == "en"
    expected = {hash_case_id(s, "iu-en", "pepper"): map_raw_labels(r, mapping["iu"], taxonomy)
                for s, r in zip(frame["source_id"], frame["raw_labels"], strict=True)}
    targets = site.targets("all")
    assert list(targets.columns) == ["report_id", *taxonomy.names]
    for row in targets.to_dict("records"):
        assert {k: row[k] for k in taxonomy.names} == expected[row["report_id"]]
    reports = site.reports()
    assert [r.report_id for r in reports] == list(targets["report_id"])
    by_id = dict(zip(frame["source_id"].map(lambda s: hash_case_id(s, "iu-en", "pepper")), frame["text"], strict=True))
    assert all(r.text == by_id[r.report_id] and r.language == "en" for r in reports)
    public = json.dumps(site.summary()) + targets.to_csv() + " ".join(r.report_id for r in reports)
    assert not any(f"CXR{k}" in public for k in range(1, 61))  # no source id leaves the site
    summary = json.dumps(site.summary())
    assert not any(text[:30] in summary for text in frame["text"])  # nor any text in the summary
    for split in ("train", "val", "test"):
        part = site.targets(split)
        assert [r.report_id for r in site.reports(split)] == list(part["report_id"])
    with pytest.raises(ValueError, match="split must be one of"):
        site.reports("holdout")


def test_summary_suppresses_small_counts(synth, taxonomy, mapping):
    site = _site(read_iu_reports(synth / IU_FILE), taxonomy, mapping["iu"], min_count=15)
    summary = site.summary()
    # 60 reports = 30 + 12 + 18: the total beside the suppressed val count is hidden (secondary suppression)
    # (and split totals beside hidden label counts of their split, e.g. test)
    assert summary["reports"] == ">=15" and summary["splits"]["val"] == "<15"
    assert summary["splits"]["train"] in (30, ">=15") and summary["splits"]["test"] in (18, ">=15")
    counts = [v for label in summary["labels"].values() for v in label.values()]
    counts += [v for split in summary["labels_by_split"].values() for label in split.values() for v in label.values()]
    assert all(v == 0 or v in ("<15", ">=15") or (isinstance(v, int) and v >= 15) for v in counts)
    assert "<15" in counts and set(summary["labels_by_split"]["test"]) == set(taxonomy.names)
    # no label count of a split can be derived: beside a hidden one, the split's row never shows all the others
    for split, labels in summary["labels_by_split"].items():
        for label, values in labels.items():
            if any(isinstance(v, str) for v in values.values()):
                assert isinstance(summary["splits"][split], str) or sum(isinstance(v, str) for v in values.values()) >= 1


def test_splits_are_deterministic_order_free_and_not_stratified(synth, taxonomy, mapping):
    frame = read_padchest_reports(synth / PADCHEST_FILE)
    a = _site(frame, taxonomy, mapping["padchest"], name="padchest-es")
    shuffled = frame.sample(frac=1.0, random_state=7).reset_index(drop=True)
    b = _site(shuffled, taxonomy, mapping["padchest"], name="padchest-es")
    split_a = a._table.set_index("report_id")["split"]
    split_b = b._table.set_index("report_id")["split"]
    pd.testing.assert_series_equal(split_a.sort_index(), split_b.sort_index())
    assert split_a.value_counts().to_dict() == {"train": 40, "test": 24, "val": 16}
    # labels do not move reports between splits: a mapping that makes everything absent splits the same way
    empty = {label: ["no-such-term"] for label in taxonomy.names}
    c = _site(frame, taxonomy, empty, name="padchest-es")
    pd.testing.assert_series_equal(split_a.sort_index(), c._table.set_index("report_id")["split"].sort_index())
    other_seed = _site(frame, taxonomy, mapping["padchest"], name="padchest-es",
                       split=SplitConfig(seed=1, val=0.2, test=0.3, stratify=None))
    assert not other_seed._table.set_index("report_id")["split"].sort_index().equals(split_a.sort_index())


def test_max_reports_is_a_seeded_order_free_subsample(synth, taxonomy, mapping):
    frame = read_padchest_reports(synth / PADCHEST_FILE)
    a = _site(frame, taxonomy, mapping["padchest"], max_reports=30)
    b = _site(frame.iloc[::-1].reset_index(drop=True), taxonomy, mapping["padchest"], max_reports=30)
    assert len(a) == 30 and set(a.targets()["report_id"]) == set(b.targets()["report_id"])
    c = _site(frame, taxonomy, mapping["padchest"], max_reports=30, split=SplitConfig(seed=5, stratify=None))
    assert set(c.targets()["report_id"]) != set(a.targets()["report_id"])


# ---------------------------------------------------------------------------------------------- federation
def test_shipped_federation_config_loads_from_txv_folder(synth, monkeypatch):
    monkeypatch.setenv("MEDFED_TXV_DATA", str(synth))
    federation = load_report_federation(CONFIG)
    assert federation.name == "reports-iu-padchest" and federation.site_names == ["iu-en", "padchest-es"]
    assert federation.problems == [] and [len(s) for s in federation] == [60, 80]
    assert [s.language for s in federation] == ["en", "es"]
    assert federation.site("padchest-es").reports()[0].language == "es"


def test_federation_config_errors_list_every_problem(tmp_path, synth):
    data = yaml.safe_load(CONFIG.read_text())
    data["taxonomy"] = str(TAXONOMY)
    data["sources"] = [{"corpus": "iu", "name": "a", "path": str(synth)}, {"corpus": "iu", "name": "a"}]
    data["mapping"]["iu"]["Pneumonitis"] = ["pneumonitis"]
    del data["mapping"]["iu"]["Cardiomegaly"]
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_report_federation(tmp_path / "fed.yaml")
    message = str(err.value)
    assert "used more than once" in message and "Pneumonitis" in message and "mapping.iu.Cardiomegaly" in message
    data["sources"] = [{"corpus": "mimic", "name": "x"}]
    data["extra_field"] = 1
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="extra_field") as err:
        load_report_federation(tmp_path / "fed.yaml")
    assert "sources.0.corpus" in str(err.value)


def test_federation_with_explicit_relative_paths(tmp_path, synth):
    data = yaml.safe_load(CONFIG.read_text())
    shutil.copy(synth / IU_FILE, tmp_path / "iu.tgz")
    data["taxonomy"] = str(TAXONOMY)
    data["sources"] = [{"corpus": "iu", "name": "iu-en", "path": "iu.tgz", "max_reports": 20}]
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(data))
    federation = load_report_federation(tmp_path / "fed.yaml")
    assert len(federation.site("iu-en")) == 20


# ----------------------------------------------------------------------------------------- locating files
def test_find_txv_data_explains_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFED_TXV_DATA", raising=False)
    monkeypatch.setattr(corpora, "_txv_data_dirs", lambda: iter([tmp_path / "nowhere"]))
    with pytest.raises(MedfedError, match=r"pip install --no-deps torchxrayvision") as err:
        find_txv_data(IU_FILE)
    assert "MEDFED_TXV_DATA" in str(err.value) and IU_FILE in str(err.value)
    monkeypatch.setenv("MEDFED_TXV_DATA", str(tmp_path))
    with pytest.raises(MedfedError, match="MEDFED_TXV_DATA="):
        find_txv_data(IU_FILE)
    with pytest.raises(MedfedError, match="not found there"):
        find_txv_data(IU_FILE, tmp_path / "missing")


def test_find_txv_data_uses_path_env_and_installed_package(tmp_path, monkeypatch, synth):
    assert find_txv_data(IU_FILE, synth) == synth / IU_FILE
    assert find_txv_data(IU_FILE, synth / IU_FILE) == synth / IU_FILE
    monkeypatch.setenv("MEDFED_TXV_DATA", str(synth))
    assert find_txv_data(PADCHEST_FILE) == synth / PADCHEST_FILE
    monkeypatch.delenv("MEDFED_TXV_DATA")
    package = tmp_path / "site" / "torchxrayvision"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('torchxrayvision must not be imported')\n")
    shutil.copy(synth / IU_FILE, package / "data" / IU_FILE)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert find_txv_data(IU_FILE) == package / "data" / IU_FILE  # found, never executed


# --------------------------------------------------------------------------------------------- real files
def _real(name):
    try:
        return find_txv_data(name)
    except MedfedError:
        pytest.skip("torchxrayvision data files not installed (pip install --no-deps torchxrayvision)")


def test_real_torchxrayvision_corpora_counts(taxonomy, mapping):
    iu = read_iu_reports(_real(IU_FILE))
    assert iu.attrs["problems"] == [] and len(iu) > 3500 and iu["source_id"].is_unique
    padchest = read_padchest_reports(_real(PADCHEST_FILE))
    assert padchest.attrs["problems"] == [] and len(padchest) > 100_000 and padchest["source_id"].is_unique
    for corpus, frame in (("iu", iu), ("padchest", padchest)):
        present = pd.DataFrame([map_raw_labels(r, mapping[corpus], taxonomy) for r in frame["raw_labels"]])
        assert ((present == "present").sum() > 0).all()  # every taxonomy label occurs in both corpora
