"""Patient-level splits: the grouped splitter, a group key in every adapter, partitioners that move whole groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from medfed.config import SplitConfig
from medfed.errors import ConfigError
from medfed.partition import dirichlet_label_skew, embedding_skew, iid, natural, quantity_skew
from medfed.sites import load_federation
from medfed.sites.chest_xray import KERMANY_PATTERN, ChestXraySite, ChestXraySource
from medfed.sites.common import group_key_from_level, group_key_from_path
from medfed.sites.splits import assign_splits, straddling_groups
from medfed.sites.ureteroscopy import UreteroscopySite, UreteroscopySource
from medfed.synth.brain_mri import write_brain_mri


def one_split_per_group(table: pd.DataFrame) -> None:
    spread = table.groupby("group")["split"].nunique()
    assert (spread == 1).all(), f"groups in several splits: {spread[spread > 1].index.tolist()}"


# ---------------------------------------------------------------------------- the splitter
def test_singleton_groups_reduce_to_the_per_case_splitter():
    ids = pd.Series([f"c{i:02d}" for i in range(20)])
    assert assign_splits(ids, 0.2, 0.3, seed=0).value_counts().to_dict() == {"train": 10, "test": 6, "val": 4}
    assert assign_splits(ids, 0.2, 0.3, seed=0, groups=ids).equals(assign_splits(ids, 0.2, 0.3, seed=0))


def test_greedy_rule_on_a_hand_computable_case():
    # one stratum, 10 cases in groups of sizes 4, 3, 2, 1; test target round(10 * 0.3) = 3, val round(10 * 0.2) = 2
    ids = pd.Series([f"c{i}" for i in range(10)])
    groups = pd.Series(["g4"] * 4 + ["g3"] * 3 + ["g2"] * 2 + ["g1"])
    rng = np.random.default_rng(5)
    order = np.array(["g1", "g2", "g3", "g4"])[rng.permutation(4)]
    # walk the order by hand: a group of m goes to test while test's gap >= m / 2, else val likewise, else train
    gaps, expected = {"test": 3, "val": 2}, {}
    sizes = {"g1": 1, "g2": 2, "g3": 3, "g4": 4}
    for g in order:
        target = next((s for s in ("test", "val") if gaps[s] >= sizes[g] / 2), "train")
        if target != "train":
            gaps[target] -= sizes[g]
        expected[g] = target
    result = assign_splits(ids, 0.2, 0.3, seed=5, groups=groups)
    assert result.tolist() == groups.map(expected).tolist()
    one_split_per_group(pd.DataFrame({"group": groups, "split": result}))


def test_grouped_splits_keep_patients_whole_stratified_and_order_free():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5, 60)  # 60 patients with 1-4 images
    groups = pd.Series(np.repeat([f"p{i:02d}" for i in range(60)], sizes))
    labels = pd.Series(np.repeat(rng.random(60) < 0.3, sizes).astype(int))
    ids = pd.Series([f"img{i:03d}" for i in range(len(groups))])
    split = assign_splits(ids, 0.15, 0.25, seed=1, strata=labels, groups=groups)
    one_split_per_group(pd.DataFrame({"group": groups, "split": split}))
    share = split.value_counts(normalize=True)
    assert abs(share["test"] - 0.25) < 0.06 and abs(share["val"] - 0.15) < 0.06
    for s in ("train", "val", "test"):
        assert labels[split == s].sum() > 0, f"{s} lacks positives"
    order = rng.permutation(len(ids))
    shuffled = assign_splits(ids[order].reset_index(drop=True), 0.15, 0.25, seed=1,
                             strata=labels[order].reset_index(drop=True), groups=groups[order].reset_index(drop=True))
    assert dict(zip(ids[order], shuffled, strict=True)) == dict(zip(ids, split, strict=True))


def test_straddling_groups_are_named():
    assert straddling_groups(pd.Series(["a", "a", "b"]), pd.Series(["train", "test", "val"])) == {"a": ["test", "train"]}


def test_group_key_helpers():
    assert group_key_from_path("images/patient00012/study1/view1_frontal.png", r"(patient\d+)/") == "patient00012"
    assert group_key_from_path("PNEUMONIA/person123_bacteria_456.jpeg", KERMANY_PATTERN) == "person123"
    assert group_key_from_path("NORMAL/IM-0115-0001.jpeg", KERMANY_PATTERN) == "IM-0115"
    assert group_key_from_path("NORMAL/NORMAL2-IM-1427-0001.jpeg", KERMANY_PATTERN) == "NORMAL2-IM-1427"
    assert group_key_from_path("NORMAL/scan.png", KERMANY_PATTERN) is None
    assert group_key_from_level("Ia_COM/surface/stone_004/img_001.png", 2) == "stone_004"
    assert group_key_from_level("Ia_COM/surface/img_001.png", 2) is None


# ---------------------------------------------------------------------------- adapters
def write_png(path: Path, value: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(rng.normal(value, 30, (24, 24)), 0, 255).astype(np.uint8)).save(path)


def chest_table_site(tmp_path: Path, n_patients: int = 12, per_patient: int = 3, **options) -> ChestXraySite:
    rows = []
    for p in range(n_patients):
        for k in range(per_patient):
            rel = f"images/p{p:02d}_{k}.png"
            write_png(tmp_path / rel, 60 + 10 * p + k, seed=p * 10 + k)
            rows.append({"Path": rel, "Patient": f"MRN{p:04d}", "Pneumonia": str(int(p % 3 == 0))})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    source = ChestXraySource(name="h", root=str(tmp_path), findings=["Pneumonia"], **options)
    return ChestXraySite(source, tmp_path, split=SplitConfig(seed=0, val=0.2, test=0.3))


def test_chest_group_column_keeps_patients_whole_and_hashes_the_key(tmp_path):
    site = chest_table_site(tmp_path, group_column="Patient")
    table = site.cases
    assert table["group"].nunique() == 12 and site.split_unit == "patient"
    one_split_per_group(table)
    assert "MRN" not in table.to_csv()
    summary = site.summary()
    assert summary["max_cases_per_group"] == 3 and summary["split_unit"] == "patient"


def test_chest_without_a_key_says_split_unit_image(tmp_path):
    site = chest_table_site(tmp_path, n_patients=4)
    assert site.split_unit == "image" and site.cases["group"].equals(site.cases["case_id"])
    notes = [p for p in site.validate() if "split unit: image" in p.reason]
    assert len(notes) == 1 and not notes[0].is_error


def test_chest_group_column_errors_name_site_column_and_rows(tmp_path):
    site = chest_table_site(tmp_path, n_patients=3, group_column="Patient")
    table = pd.read_csv(tmp_path / "labels.csv", dtype=str)
    table.loc[[1, 4], "Patient"] = ""
    table.to_csv(tmp_path / "labels.csv", index=False)
    site = ChestXraySite(site.source, tmp_path)
    reasons = [str(p) for p in site.index_problems]
    assert len(site) == 7
    for line in (3, 6):  # rows 1 and 4 are file lines 3 and 6
        assert any(f"line {line}" in r and "'Patient' is empty" in r and "site h" in r for r in reasons), reasons
    missing = ChestXraySite(ChestXraySource(name="h", root=str(tmp_path), findings=["Pneumonia"],
                                            group_column="MRN"), tmp_path)
    assert len(missing) == 0
    assert any("lacks required column(s) 'MRN'" in str(p) for p in missing.index_problems)
    with pytest.raises(ValueError, match="group_column and group_pattern"):
        ChestXraySource(name="h", root=".", findings=["P"], group_column="a", group_pattern="(x)")
    with pytest.raises(ValueError, match="capture group"):
        ChestXraySource(name="h", root=".", findings=["P"], group_pattern="patient")


def test_kermany_file_names_give_the_patient(tmp_path):
    for p in range(8):
        for k in range(1, 3):
            name = f"PNEUMONIA/person{p}_bacteria_{k}.png" if p % 2 else f"NORMAL/IM-{p:04d}-{k:04d}.png"
            write_png(tmp_path / name, 90 + p, seed=p * 3 + k)
    site = ChestXraySite(ChestXraySource(name="k", root=str(tmp_path), layout="class_folders"), tmp_path,
                         split=SplitConfig(val=0.25, test=0.25))
    assert site.cases["group"].nunique() == 8 and site.split_unit == "patient"
    one_split_per_group(site.cases)


def test_ureteroscopy_group_level_and_group_column(tmp_path):
    root = tmp_path / "a"
    for stone in range(10):
        cls = ("Ia_COM", "IIa_COD")[stone % 2]
        for view in ("surface", "section"):
            for k in range(2):
                write_png(root / cls / view / f"stone_{stone:03d}" / f"img_{k}.png", 50 + stone, stone * 7 + k)
    site = UreteroscopySite(UreteroscopySource(name="a", root=str(root), group_level=2), root,
                            split=SplitConfig(val=0.2, test=0.3))
    assert site.cases["group"].nunique() == 10 and site.split_unit == "stone"
    assert site.summary()["max_cases_per_group"] == 4
    one_split_per_group(site.cases)
    flat = tmp_path / "b"
    rows = []
    for i in range(24):
        rel = f"frames/f{i:03d}.png"
        write_png(flat / rel, 40 + i, i)
        rows.append({"file": rel, "stone_type": "Ia_COM", "view": "surface", "stone": f"s{i // 4}" if i != 5 else ""})
    pd.DataFrame(rows).to_csv(flat / "labels.csv", index=False)
    csv_site = UreteroscopySite(UreteroscopySource(name="b", root=str(flat), layout="flat_csv", group_column="stone"),
                                flat)
    assert len(csv_site) == 23 and csv_site.cases["group"].nunique() == 6
    assert any("line 7" in p.reason and "'stone' is empty" in p.reason for p in csv_site.index_problems)
    one_split_per_group(csv_site.cases)


def test_brats_group_pattern_joins_timepoints_and_keeps_them_at_one_site(tmp_path):
    out = tmp_path / "small"
    write_brain_mri(out, scale="small", seed=0)
    config = out / "sites" / "brain_mri.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["sources"][0].pop("partition_csv")
    raw["sources"][0]["group_pattern"] = r"^(BraTS2021_0000)[1-4]$"
    config.write_text(yaml.safe_dump(raw))
    site = load_federation(config)[0]
    assert site.split_unit == "subject" and site.cases["group"].nunique() == len(site) - 3
    one_split_per_group(site.cases)
    # with the institution partition, subjects 1-4 of one patient sit in several partitions: excluded, reported
    raw["sources"][0]["partition_csv"] = "partitioning_1.csv"
    config.write_text(yaml.safe_dump(raw))
    federation = load_federation(config, strict=False)
    groups = [s.cases.assign(site=s.name) for s in federation]
    pooled = pd.concat(groups)
    assert (pooled.groupby("group")["site"].nunique() == 1).all()
    assert any("span two sites" in p.reason for p in federation.problems)


# ---------------------------------------------------------------------------- partitioners
@pytest.fixture()
def grouped_cases() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 5, 80)
    groups = np.repeat([f"g{i:02d}" for i in range(80)], sizes)
    labels = np.repeat(rng.integers(0, 3, 80), sizes)
    return pd.DataFrame({"case_id": [f"c{i:03d}" for i in range(len(groups))], "group": groups, "label": labels})


def test_every_partitioner_moves_whole_groups(grouped_cases):
    ids, groups = grouped_cases["case_id"].tolist(), grouped_cases["group"].tolist()
    embeddings = np.random.default_rng(0).normal(size=(len(ids), 6))
    drawn = {
        "iid": iid(ids, 4, seed=0, groups=groups),
        "quantity_skew": quantity_skew(ids, 4, alpha=1.0, min_size=3, seed=0, groups=groups),
        "dirichlet": dirichlet_label_skew(ids, grouped_cases["label"], 4, alpha=0.3, min_size=3, seed=0,
                                          groups=groups),
        "embedding": embedding_skew(ids, embeddings, 4, n_clusters=3, alpha=0.5, min_size=3, seed=0, groups=groups),
    }
    for name, assignment in drawn.items():
        assert assignment.index.tolist() == ids, name
        per_group = pd.DataFrame({"group": groups, "site": assignment.to_numpy()}).groupby("group")["site"].nunique()
        assert (per_group == 1).all(), name
        assert assignment.nunique() == 4, name
    # without groups the same call mixes one patient's cases over sites (what the groups prevent)
    ungrouped = iid(ids, 4, seed=0)
    mixed = pd.DataFrame({"group": groups, "site": ungrouped.to_numpy()}).groupby("group")["site"].nunique()
    assert (mixed > 1).any()


def test_natural_partition_refuses_a_patient_at_two_institutions(grouped_cases):
    cases = grouped_cases.assign(institution=np.where(np.arange(len(grouped_cases)) % 2, "A", "B"))
    with pytest.raises(ValueError, match="span two sites"):
        natural(cases, "institution", group_column="group")
    clean = grouped_cases.assign(institution=grouped_cases["group"].str[-1])
    assert natural(clean, "institution", group_column="group").nunique() == 10


def test_experiment_partition_keeps_groups_whole(tmp_path):
    from medfed.fl.config import load_experiment
    from medfed.fl.experiment import draw_partition

    site_dir = tmp_path / "site"
    chest_table_site(site_dir, n_patients=30, per_patient=3, group_column="Patient")
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump({"name": "f", "adapter": "chest_xray", "sources": [
        {"name": "h", "root": "site", "findings": ["Pneumonia"], "group_column": "Patient"}]}))
    federation = load_federation(config)
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump({
        "name": "e", "federation": str(config), "task": {"kind": "classification", "labels": ["Pneumonia"]},
        "partition": {"method": "dirichlet_label_skew", "n_sites": 3, "alpha": 0.5, "min_size": 2},
        "methods": ["fedavg"]}))
    assignment = draw_partition(load_experiment(experiment), federation, tmp_path)
    cases = federation.case_table().set_index("case_id")
    per_group = cases.assign(site=assignment).groupby("group")["site"].nunique()
    assert (per_group == 1).all()


def test_bad_group_pattern_is_a_config_error(tmp_path):
    out = tmp_path / "small"
    write_brain_mri(out, scale="small", seed=0)
    config = out / "sites" / "brain_mri.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["sources"][0]["group_pattern"] = "(unclosed"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="group_pattern"):
        load_federation(config)


def test_a_given_split_column_is_kept_and_straddling_patients_are_named(tmp_path):
    rows = []
    for p in range(6):
        for k in range(2):
            rel = f"images/p{p}_{k}.png"
            write_png(tmp_path / rel, 70 + 9 * p + k, seed=40 + p * 2 + k)
            split = "test" if p < 2 else "train"
            if p == 5 and k == 1:
                split = "test"  # patient 5 straddles the official split
            rows.append({"Path": rel, "Patient": f"MRN{p}", "Pneumonia": str(p % 2), "Set": split})
    rows[2]["Set"] = "holdout"
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    site = ChestXraySite(ChestXraySource(name="h", root=str(tmp_path), findings=["Pneumonia"], group_column="Patient",
                                         split_column="Set"), tmp_path)
    assert len(site) == 11 and site.cases["split"].value_counts().to_dict() == {"train": 7, "test": 4}
    reasons = [p for p in site.index_problems]
    assert any(p.is_error and "split 'holdout' is not one of train, val, test" in p.reason for p in reasons)
    straddling = [p for p in reasons if not p.is_error]
    assert len(straddling) == 1 and "in test, train" in straddling[0].reason and "kept as given" in straddling[0].reason


def test_ureteroscopy_split_column(tmp_path):
    rows = []
    for i in range(8):
        rel = f"frames/f{i}.png"
        write_png(tmp_path / rel, 30 + 20 * i, i)
        rows.append({"file": rel, "stone_type": "Ia_COM", "view": "surface", "stone": f"s{i // 2}",
                     "fold": "test" if i < 2 else "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    site = UreteroscopySite(UreteroscopySource(name="u", root=str(tmp_path), layout="flat_csv", group_column="stone",
                                               split_column="fold"), tmp_path)
    assert site.cases["split"].value_counts().to_dict() == {"train": 6, "test": 2}
    assert site.index_problems == []
