"""Bad input through the `medfed` command: a clear message naming file, field or value, the documented exit code
(1 data problems, 2 config/usage errors) and never a traceback (issue 22, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

import medfed.sites.common as common
from medfed.cli import main
from medfed.config import SplitConfig

TASKS = Path(__file__).resolve().parents[1] / "tasks"
DEMO = str(TASKS / "demo_ureteroscopy.yaml")


def run_main(capsys, *argv: object) -> tuple[int, str]:
    """``medfed ARGV``: (exit code, stderr); stderr never holds a traceback."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """A data folder holding the small ureteroscopy demo federation (``--data`` of `medfed run`)."""
    data = tmp_path_factory.mktemp("data")
    assert main(["synth", "--out", str(data / "small"), "--scale", "small", "--only", "ureteroscopy"]) == 0
    return data


# ---------------------------------------------------------------------------- 1. split fractions
def test_split_fractions_summing_to_one_are_a_config_error(tmp_path, capsys):
    config = tmp_path / "sites.yaml"
    config.write_text("name: x\nadapter: chest_xray\nsplit: {val: 0.6, test: 0.5}\n"
                      "sources: [{name: h, root: ., findings: [Pneumonia]}]\n")
    code, err = run_main(capsys, "validate", config, "--no-progress")
    assert code == 2
    assert f"{config}: split:" in err and "val=0.6, test=0.5" in err and "sum below 1" in err


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.5), (0.9, 0.2), (0.0, 1.0), (-0.1, 0.2)])
def test_split_config_rejects_fractions_leaving_no_training_cases(val, test):
    with pytest.raises(ValidationError):
        SplitConfig(val=val, test=test)
    assert SplitConfig(val=0.4, test=0.5).val == 0.4


# ---------------------------------------------------------------------------- 2. integer options
@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_rounds_must_be_a_positive_integer(value, tmp_path, capsys):
    code, err = run_main(capsys, "run", DEMO, "--rounds", value, "--out", tmp_path / "r", "--no-progress")
    assert code == 2
    assert "--rounds" in err and "must be an integer >= 1" in err and repr(value) in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("argv", "option", "value"), [
    (["run", DEMO], "--resamples", "0"),
    (["run", DEMO], "--report-seed", "-3"),
    (["run", DEMO], "--min-ci-cases", "0"),
    (["run", DEMO], "--confidence", "1.5"),
    (["report", "RUN"], "--resamples", "-5"),
    (["score", "SITES", "SUB"], "--resamples", "0"),
    (["score", "SITES", "SUB"], "--seed", "-1"),
    (["score", "SITES", "SUB"], "--alpha", "0"),
    (["score", "SITES", "SUB"], "--hd95-penalty", "-1"),
    (["flower-certs", "OUT", "--host", "localhost"], "--days", "0"),
])
def test_numeric_options_out_of_range_are_usage_errors(argv, option, value, tmp_path, capsys):
    code, err = run_main(capsys, *[str(tmp_path / a) if a.isupper() else a for a in argv], option, value)
    assert code == 2
    assert option in err and repr(value) in err


# ---------------------------------------------------------------------------- 3. --out must be a directory
@pytest.mark.parametrize("argv", [
    ["run", DEMO, "--out", "FILE"],
    ["pretrain", "CONFIG", "--out", "FILE"],
    ["report", "RUN", "--out", "FILE"],
    ["synth", "--out", "FILE"],
    ["score", "CONFIG", "SUB", "--out", "FILE"],
    ["predict", "CONFIG", "--method", "fedavg", "--out", "FILE"],
    ["evaluate-reports", "CONFIG", "--out", "FILE"],
    ["flower-certs", "FILE", "--host", "localhost"],
    ["nnunet", "export", "CONFIG", "--dataset-id", "1", "--name", "x", "--out", "FILE"],
])
def test_output_folder_that_is_a_file_is_a_usage_error(argv, tmp_path, capsys):
    existing = tmp_path / "existing.txt"
    existing.write_text("not a folder\n")
    code, err = run_main(capsys, *[str(existing) if a == "FILE" else str(tmp_path / a) if a.isupper() else a
                                   for a in argv])
    assert code == 2
    assert "must be a directory" in err and str(existing) in err
    assert existing.read_text() == "not a folder\n"


def test_output_folder_below_a_file_is_a_usage_error(tmp_path, capsys):
    existing = tmp_path / "existing.txt"
    existing.write_text("x")
    code, err = run_main(capsys, "synth", "--out", existing / "sub", "--scale", "small")
    assert code == 2
    assert f"{existing} is a file, not a directory" in err and "--out" in err


def test_file_arguments_that_are_folders_or_missing_are_usage_errors(tmp_path, capsys):
    taxonomy = TASKS / "report_taxonomy_chest.yaml"
    code, err = run_main(capsys, "classify-reports", "--taxonomy", taxonomy, "--reports", tmp_path, "--out",
                         tmp_path / "o.csv")
    assert code == 2 and "--reports" in err and f"{tmp_path} is a directory" in err
    reports = tmp_path / "reports.csv"
    reports.write_text("Path,text\na,no finding\n")
    code, err = run_main(capsys, "classify-reports", "--taxonomy", taxonomy, "--reports", reports, "--fit",
                         tmp_path / "missing.csv", "--out", tmp_path / "o.csv")
    assert code == 2 and "--fit" in err and f"file not found: {tmp_path / 'missing.csv'}" in err
    code, err = run_main(capsys, "classify-reports", "--taxonomy", taxonomy, "--reports", reports, "--out", tmp_path)
    assert code == 2 and "--out" in err and "must be a file" in err


@pytest.mark.parametrize("command", ["validate", "run", "pretrain", "evaluate-reports"])
def test_config_that_is_a_folder_or_missing_is_a_config_error(command, tmp_path, capsys):
    code, err = run_main(capsys, command, tmp_path, "--no-progress")
    assert code == 2 and f"{tmp_path}: is a folder, expected a YAML config file" in err
    code, err = run_main(capsys, command, tmp_path / "missing.yaml", "--no-progress")
    assert code == 2 and f"{tmp_path / 'missing.yaml'}: config file not found" in err


def test_binary_config_is_a_config_error(tmp_path, capsys):
    config = tmp_path / "sites.yaml"
    config.write_bytes(b"\xff\xfe\x00binary")
    code, err = run_main(capsys, "validate", config)
    assert code == 2 and f"{config}: config file cannot be read" in err


# ---------------------------------------------------------------------------- 4. --json folder, --resume
def test_validate_json_into_a_missing_folder_creates_it(demo_data, tmp_path, capsys):
    target = tmp_path / "new" / "deeper" / "problems.json"
    code, _ = run_main(capsys, "validate", demo_data / "small" / "sites" / "ureteroscopy.yaml", "--no-progress",
                       "--json", target)
    assert code == 0 and target.read_text().strip() == "[]"


def test_resume_with_an_unparsable_run_config_names_it(demo_data, tmp_path, capsys):
    args = ["run", DEMO, "--data", demo_data, "--scale", "small", "--rounds", "1", "--out", tmp_path / "r",
            "--no-progress"]
    assert run_main(capsys, *args)[0] == 0
    config = tmp_path / "r" / "demo_ureteroscopy" / "config.yaml"
    config.write_text("a: [unclosed")
    code, err = run_main(capsys, *args, "--resume")
    assert code == 2 and str(config) in err and "--resume" in err


# ---------------------------------------------------------------------------- 5. paths in label tables
def chest_site(tmp_path: Path, extra_rows: list[str]) -> Path:
    """A chest X-ray site (12 PNGs + labels.csv with ``extra_rows`` appended) and its federation config."""
    root = tmp_path / "site"
    rows = []
    for i in range(12):
        rel = f"images/p{i:02d}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 255, (24, 24), dtype=np.uint8)
        Image.fromarray(pixels).save(root / rel)
        rows.append(f"{rel},{i % 2}")
    (root / "labels.csv").write_text("\n".join(["Path,Pneumonia", *rows, *extra_rows]) + "\n")
    config = tmp_path / "sites.yaml"
    config.write_text("name: t\nadapter: chest_xray\nsplit: {val: 0.2, test: 0.3}\n"
                      "sources: [{name: h, root: site, findings: [Pneumonia], image_size: 16}]\n")
    return config


def test_dot_dot_spelling_of_a_listed_image_is_a_duplicate(tmp_path, capsys):
    config = chest_site(tmp_path, ["images/../images/p03.png,1"])  # line 14 names line 5's image again
    code, err = run_main(capsys, "validate", config, "--no-progress")
    assert code == 1
    assert "image listed 2 times (lines 5, 14)" in err and "file images/p03.png" in err
    assert sum("lines 5, 14" in line for line in err.splitlines()) == 2  # each row excluded, each named


def test_path_leading_out_of_the_root_is_a_problem_not_a_case(tmp_path, capsys):
    Image.fromarray(np.zeros((24, 24), dtype=np.uint8)).save(tmp_path / "outside.png")  # exists, beside root
    config = chest_site(tmp_path, ["../outside.png,0", "images/../../outside.png,1"])
    code, err = run_main(capsys, "validate", config, "--no-progress")
    assert code == 1
    for line, value in ((14, "../outside.png"), (15, "images/../../outside.png")):
        assert f"labels.csv line {line}: 'Path' value {value!r} lies outside the site's data folder" in err


def test_case_insensitive_file_system_compares_paths_without_case(tmp_path, capsys, monkeypatch):
    config = chest_site(tmp_path, ["IMAGES/P07.PNG,1"])
    monkeypatch.setattr(common, "case_insensitive_fs", lambda root: True)
    code, err = run_main(capsys, "validate", config, "--no-progress")
    assert code == 1 and "image listed 2 times (lines 9, 14)" in err and "file images/p07.png" in err
    assert "not listed" not in err


def test_case_sensitive_file_system_keeps_case(tmp_path, capsys):
    config = chest_site(tmp_path, ["IMAGES/P07.PNG,1"])
    code, err = run_main(capsys, "validate", config, "--no-progress")
    assert code == 1 and "listed 2 times" not in err and "image file does not exist" in err
    assert "IMAGES/P07.PNG" in err


def test_case_insensitive_fs_detection_matches_the_file_system(tmp_path):
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "name.txt").write_text("x")
    expected = (tmp_path / "probe" / "NAME.TXT").exists()
    assert common.case_insensitive_fs(tmp_path / "probe") is expected


def test_posix_path_resolves_dots_and_keeps_escapes():
    assert common.posix_path(" images\\sub/../x.png ") == "images/x.png"
    assert common.posix_path("./images//x.png") == "images/x.png"
    assert common.posix_path("a/../../x.png") == "../x.png"
    assert common.posix_path("") == ""
    root = Path("/data/site")
    assert common.outside_root("../x.png", root) and common.outside_root("/elsewhere/x.png", root)
    assert not common.outside_root("images/x.png", root) and not common.outside_root("/data/site/x.png", root)
    assert common.on_disk_spelling("NOPE/x.png", root, {}) == "NOPE/x.png"  # nothing on disk: kept as given
    listings = {root: {"images": ["images"]}, root / "images": {"x.png": ["x.png"], "y.png": ["y.png", "Y.png"]}}
    assert common.on_disk_spelling("IMAGES/X.PNG", root, listings) == "images/x.png"
    assert common.on_disk_spelling("IMAGES/y.PNG", root, listings) == "images/y.PNG"  # two candidates: as given
