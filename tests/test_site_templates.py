"""The real-data config templates in sites/ parse and name a known adapter, and load a data copy laid out like them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medfed.config import load_federation_config
from medfed.sites import ADAPTERS, load_federation
from medfed.synth import write_federation

TEMPLATES = sorted((Path(__file__).parents[1] / "sites").glob("*.yaml"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_parses(template, monkeypatch):
    for var in ("FETS_DATA", "CXR_DATA", "STONES_DATA"):
        monkeypatch.setenv(var, "/data")
    config = load_federation_config(template)
    assert config.adapter in ADAPTERS


def test_kidney_stone_template_reads_data_laid_out_as_documented(tmp_path, monkeypatch):
    write_federation("ureteroscopy", tmp_path / "synth", scale="small")
    root = tmp_path / "stones"
    shutil.copytree(tmp_path / "synth" / "ureteroscopy" / "dataset-a", root / "dataset_a")
    shutil.copytree(tmp_path / "synth" / "ureteroscopy" / "dataset-b", root / "dataset_b")
    monkeypatch.setenv("STONES_DATA", str(root))
    federation = load_federation(Path(__file__).parents[1] / "sites" / "kidney_stones.yaml")
    assert federation.site_names == ["dataset-a", "dataset-b"] and all(len(s) > 0 for s in federation)
