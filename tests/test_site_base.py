"""The Site contract on an in-memory toy adapter: public table, splits, duplicates, empty sites, suppression."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from medfed.config import SplitConfig, expand_vars, load_federation_config
from medfed.errors import ConfigError, MedfedError
from medfed.sites.base import Site, finite_problems
from medfed.sites.identity import age_group, hash_case_id, parse_dicom_age, population
from medfed.sites.splits import assign_splits
from medfed.stats import suppress_count


class ToySite(Site):
    modality = "toy"
    label_kind = "classification"
    label_columns = ["finding"]
    metadata_columns = ["age_group"]

    def __init__(self, name: str, rows: list[dict[str, Any]], **kwargs: Any) -> None:
        self._rows = rows
        super().__init__(name, **kwargs)

    def _index(self):
        table = pd.DataFrame(
            [
                {
                    "case_id": self.hash_id(r["source"]),
                    "finding": r["finding"],
                    "age_group": age_group(r["age"]),
                    "_path": f"/secret/{r['source']}.png",
                    "_source_id": r["source"],
                }
                for r in self._rows
            ]
        )
        return table, []

    def _check_case(self, case: pd.Series):
        pixels = np.full((4, 4), 3.0) if case["finding"] == 1 else np.arange(16.0).reshape(4, 4)
        return finite_problems(self, pixels, case["case_id"], case["_path"])

    def _load_case(self, case: pd.Series):
        return {"image": np.zeros((1, 4, 4), np.float32), "label": np.float32(case["finding"])}


def rows(n: int, positives: int = 0) -> list[dict[str, Any]]:
    return [{"source": f"P{i:03d}", "finding": int(i < positives), "age": 30 + i} for i in range(n)]


def test_public_table_hides_private_columns_and_hashes_ids():
    site = ToySite("a", rows(10, 5))
    assert not [c for c in site.cases.columns if c.startswith("_")]
    assert "P000" not in site.cases.to_csv()
    assert site.cases["case_id"].iloc[0] == hash_case_id("P000", "a")
    assert list(site.cases.columns[:4]) == ["case_id", "site", "group", "finding"]


def test_salt_changes_ids():
    assert ToySite("a", rows(3), salt="s1").cases["case_id"].tolist() != ToySite("a", rows(3), salt="s2").cases[
        "case_id"
    ].tolist()


def test_splits_are_stratified_seeded_and_order_independent():
    data = rows(40, 12)
    site = ToySite("a", data, split=SplitConfig(seed=3, val=0.25, test=0.25))
    table = site.cases
    for split in ("train", "val", "test"):
        part = table[table["split"] == split]
        assert part["finding"].sum() > 0, f"{split} lacks positives"
    shuffled = ToySite("a", list(reversed(data)), split=SplitConfig(seed=3, val=0.25, test=0.25)).cases
    merged = table.merge(shuffled, on="case_id")
    assert (merged["split_x"] == merged["split_y"]).all()
    other_seed = ToySite("a", data, split=SplitConfig(seed=4, val=0.25, test=0.25)).cases
    assert (other_seed.set_index("case_id")["split"] != table.set_index("case_id")["split"]).any()


def test_assign_splits_counts_and_bad_fractions():
    ids = pd.Series([f"c{i}" for i in range(20)])
    splits = assign_splits(ids, 0.2, 0.3, seed=0)
    assert splits.value_counts().to_dict() == {"train": 10, "test": 6, "val": 4}
    with pytest.raises(ValueError, match="sum below 1"):
        assign_splits(ids, 0.6, 0.5, seed=0)


def test_duplicate_ids_are_reported_and_excluded():
    data = rows(6) + [{"source": "P001", "finding": 0, "age": 50}]
    site = ToySite("a", data)
    assert len(site) == 5
    [problem] = site.index_problems
    assert "duplicate case id" in problem.reason and problem.case == hash_case_id("P001", "a")


def test_empty_site_is_a_problem():
    site = ToySite("empty", [])
    assert len(site) == 0
    assert any("site is empty" in p.reason for p in site.validate())


def test_validate_reports_every_case():
    site = ToySite("a", rows(8, 3))
    problems = site.validate()
    errors = [p for p in problems if p.is_error]
    assert len(errors) == 3 and all("empty" in p.reason for p in errors)
    assert [p.reason for p in problems if not p.is_error] == [
        "split unit: image; no patient key (each image is its own group, so one patient's images may fall into "
        "different splits)"]
    assert all(p.file and p.file.startswith("/secret/") for p in errors)


def test_stratify_on_unknown_column_is_a_config_error():
    with pytest.raises(ConfigError, match="stratify names column 'nope'"):
        ToySite("a", rows(4), split=SplitConfig(stratify="nope"))


def test_dataset_loads_arrays_with_case_ids():
    site = ToySite("a", rows(10, 4))
    ds = site.dataset("test")
    assert len(ds) == len(site.split("test"))
    item = ds[0]
    assert item["image"].shape == (1, 4, 4) and item["case_id"] in set(site.cases["case_id"])
    with pytest.raises(MedfedError, match="unknown split"):
        site.split("holdout")


def test_summary_suppresses_small_counts():
    site = ToySite("a", rows(12, 3), min_count=5)
    summary = site.summary()
    assert summary["labels"]["finding"] == {"0": 9, "1": "<5"}
    # secondary suppression: the total beside a suppressed label count is hidden, and then one split count too
    # (else the splits would add up to it)
    assert summary["cases"] == ">=5"
    assert sum(isinstance(v, str) for v in summary["splits"].values()) >= 1
    assert suppress_count(0) == 0 and suppress_count(4) == "<5" and suppress_count(5) == 5


def test_identity_helpers():
    assert age_group(1) == "0-1" and age_group(17.9) == "12-17" and age_group(18) == "18-39"
    assert age_group(None) == "unknown" and age_group(float("nan")) == "unknown"
    assert population("2-11") == "pediatric" and population("65+") == "adult"
    assert parse_dicom_age("045Y") == 45 and parse_dicom_age("006M") == 0.5 and parse_dicom_age("45") is None


def test_config_env_expansion_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFED_TEST_ROOT", "/data/x")
    assert expand_vars("${MEDFED_TEST_ROOT}/a ${UNSET_MEDFED_VAR:-dflt}") == "/data/x/a dflt"
    with pytest.raises(ConfigError, match="UNSET_MEDFED_VAR is not set"):
        expand_vars("${UNSET_MEDFED_VAR}")
    bad = tmp_path / "fed.yaml"
    bad.write_text("name: x\nadapter: brats\nsources: []\nsplit: {val: 2, colour: red}\n")
    with pytest.raises(ConfigError) as err:
        load_federation_config(bad)
    message = str(err.value)
    assert str(bad) in message and "sources" in message and "split.val" in message and "split.colour" in message
    with pytest.raises(ConfigError, match="not found"):
        load_federation_config(tmp_path / "missing.yaml")


class BrokenSite(ToySite):
    def _load_case(self, case: pd.Series):
        raise OSError("disk says no")


def test_load_errors_name_site_and_case_not_a_monai_wrapper():
    site = BrokenSite("b", rows(6))
    dataset = site.dataset("train")
    with pytest.raises(MedfedError, match=r"site b, case [0-9a-f]{16}: could not be loaded \(OSError: disk says no\)"):
        dataset[0]
