"""The README's command table cannot drift from the command line: every command and flag it lists exists in
medfed's argparse parser, and every command of the parser is listed."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from medfed.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_rows() -> list[str]:
    text = README.read_text()
    block = text[text.index("Commands:\n"):text.index("Exit codes:")]
    return [line for line in block.splitlines() if line.startswith("| `medfed")]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    flags = {o for a in parser._actions for o in a.option_strings}
    for action in parser._actions:  # nested commands (medfed nnunet export ...)
        if isinstance(action, argparse._SubParsersAction):
            flags |= {f for sub in action.choices.values() for f in _flags(sub)}
    return flags


def test_every_command_and_flag_in_the_readme_table_exists():
    commands = _subparsers(build_parser())
    listed = set()
    rows = _table_rows()
    assert rows, "README.md: no command table found"
    for row in rows:
        cell = row.split("` |")[0]
        for usage in re.findall(r"`?medfed ([a-z-]+)([^`]*)", cell):
            name, rest = usage
            assert name in commands, f"README lists `medfed {name}`, which is not a command"
            listed.add(name)
            unknown = set(re.findall(r"--[a-z][a-z0-9-]*", rest)) - _flags(commands[name])
            assert not unknown, f"README: `medfed {name}` has no flag(s) {sorted(unknown)}"
    assert set(commands) - listed == set(), f"commands missing from the README table: {sorted(set(commands) - listed)}"


def test_the_check_catches_a_made_up_flag():
    commands = _subparsers(build_parser())
    assert "--no-such-flag" not in _flags(commands["run"])
    assert "--seeds" in _flags(commands["run"]) and "--method" in _flags(commands["predict"])
