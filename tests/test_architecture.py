"""The package's layers (docs/design.md#layers), enforced: import-linter's contracts in pyproject.toml must hold,
and every top-level module of medfed must sit in a layer (a new package cannot slip past the contract)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

importlinter_cli = pytest.importorskip("importlinter.cli")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"


def _contracts() -> list[dict]:
    return tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code = importlinter_cli.lint_imports(config_filename=str(CONFIG), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, report
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in report


def test_every_top_level_module_has_a_layer():
    layers = next(c for c in _contracts() if c["id"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    modules = {f"medfed.{p.stem if p.is_file() else p.name}" for p in (ROOT / "medfed").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert modules - placed == set(), "add these to a layer in pyproject.toml and docs/design.md"
    assert placed - modules == set(), "layers name modules that no longer exist"
