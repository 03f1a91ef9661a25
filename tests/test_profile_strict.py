"""Issue 23 item 7: a calibrated profile TOML is strict (unknown [calibration] keys, a missing
sm_count, absurd times are refused, each naming the key and the file) and carries its identity
inside the file, so a renamed copy is the same profile."""

import json
import shutil
from pathlib import Path

import pytest

from aqua_model._datafiles import read_toml, to_toml
from aqua_model.hardware import load
from aqua_model.validate.intervals import freeze_intervals

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "validation" / "results" / "h200" / "h200-heldout-898775459.toml"


def _write(tmp_path, doc, name="p.toml"):
    path = tmp_path / name
    path.write_text(to_toml(doc, header="test"))
    return path


def test_unknown_calibration_key_names_the_key_and_the_file(tmp_path):
    doc = read_toml(BASE)
    doc["calibration"]["graph_launch_us"] = 3.0  # a typo of graph_launch_s
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError, match=rf"{path}: unknown key\(s\) in \[calibration\]: graph_launch_us"):
        load(path)


def test_missing_sm_count_is_an_error(tmp_path):
    doc = read_toml(BASE)
    del doc["calibration"]["sm_count"]
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError, match=rf"{path}: field 'calibration.sm_count' is missing"):
        load(path)


def test_absurd_launch_overheads_are_refused_with_the_range(tmp_path):
    doc = read_toml(BASE)
    doc["launch_overhead_s"] = {**doc["launch_overhead_s"], "value": 1e300, "unit": "us"}
    path = _write(tmp_path, doc)
    with pytest.raises(
        ValueError, match=r"'launch_overhead_s' is 1e\+294 s; allowed range \[1e-09, 0.001\] s"
    ):
        load(path)
    doc = read_toml(BASE)
    doc["calibration"]["launch_overhead_s"] = 1e294
    path = _write(tmp_path, doc)
    with pytest.raises(
        ValueError,
        match=r"'calibration.launch_overhead_s' must be a finite number of seconds > 0 and at most 1, got 1e\+294",
    ):
        load(path)


def test_identity_lives_in_the_file(tmp_path):
    copy = tmp_path / "some-other-name.toml"
    shutil.copy(BASE, copy)
    assert load(copy).mode == load(BASE).mode == "calibrated:h200-heldout"
    doc = read_toml(BASE)
    del doc["calibration"]["identity"]
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError, match="missing required field 'calibration.identity'"):
        load(path)


def test_a_renamed_copy_is_accepted_by_intervals_against_its_own_results(tmp_path):
    copy = tmp_path / "renamed.toml"
    shutil.copy(BASE, copy)
    rows = tmp_path / "rows.jsonl"
    src = ROOT / "validation" / "results" / "h200" / "heldout-898775459-insample.jsonl"
    rows.write_text(src.read_text())
    assert {json.loads(line)["calibrated_mode"] for line in src.read_text().splitlines()} == {
        "calibrated:h200-heldout"
    }
    entries = freeze_intervals(profile=copy, results=[rows], out=tmp_path / "out.toml")
    assert entries and load(tmp_path / "out.toml").mode == "calibrated:h200-heldout"
