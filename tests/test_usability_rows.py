"""The validation row schema (aqua_model/validate/rows.py) and `validate report` on bad files:
every rejected line reported with its number and reason, exit 2 unless --lenient, a torn last
line noted but never an error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from aqua_model.cli import main
from aqua_model.validate import runner
from aqua_model.validate.rows import SCHEMA_VERSIONS, STATUSES, BadRowsError, check_row, read_results

H200 = Path(__file__).resolve().parents[1] / "validation" / "results" / "h200"
GOOD_LINES = (H200 / "validation.jsonl").read_text().splitlines()[:4]
GOOD = json.loads(GOOD_LINES[0])


def test_schema_constants_are_the_runners():
    assert runner.STATUSES is STATUSES
    assert runner.ROW_SCHEMA_VERSION == max(SCHEMA_VERSIONS)


@pytest.mark.parametrize("path", sorted(H200.glob("validation*.jsonl")), ids=lambda p: p.name)
def test_every_committed_row_passes(path):
    result = read_results(path)
    assert result.rows and not result.rejected and result.torn_line is None


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"schema_version": 99}, "schema_version must be one of 1, 2, got 99"),
        ({"schema_version": True}, "schema_version must be one of"),
        ({"case_id": ""}, "case_id must be a non-empty string"),
        ({"context": "abc"}, 'context must be an integer, got "abc"'),
        ({"context": 4096.0}, "context must be an integer, got 4096.0"),
        ({"context": 0}, "context must be >= 1 for decode"),
        ({"batch": 0}, "batch must be >= 1"),
        ({"heads_kv": 3}, "heads_q (32) must be a multiple of heads_kv (3)"),
        ({"k": 129}, "k must be in 1..d (128), got 129"),
        ({"phase": "train"}, "phase must be one of decode, prefill"),
        ({"status": "fine"}, "status must be one of"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"selection": "all"}, "selection must be one of"),
        ({"prompt": 128}, "prompt must be null for decode"),
        ({"measured_s": None}, "status 'ok' needs measured_s"),
        ({"measured_s": 0}, "status 'ok' needs measured_s"),
        ({"measured_s": -1e-5}, "status 'ok' needs measured_s"),
        ({"measured_s": math.nan}, "status 'ok' needs measured_s"),
        ({"measured_s": "fast"}, "status 'ok' needs measured_s"),
        ({"predicted_calibrated_s": -1.0}, "predicted_calibrated_s must be null or a finite number >= 0"),
        ({"kernels": [1, 2]}, "kernels must be a list of objects"),
    ],
)
def test_each_rule_rejects_with_its_reason(change, reason):
    assert check_row(GOOD) is None
    assert reason in check_row({**GOOD, **change})


@pytest.mark.parametrize("field", ["case_id", "schema_version", "measured_s", "context", "status"])
def test_missing_required_field(field):
    row = {k: v for k, v in GOOD.items() if k != field}
    assert field in check_row(row)


def test_prefill_needs_a_prompt_and_allows_no_cached_keys():
    prefill = {**GOOD, "phase": "prefill", "prompt": 512, "context": 0}
    assert check_row(prefill) is None
    assert "prompt must be an integer >= 1 for prefill" in check_row({**prefill, "prompt": None})


def test_skipped_rows_need_no_measurement():
    assert check_row({**GOOD, "status": "skipped", "measured_s": None}) is None
    assert "measured_s must be null" in check_row({**GOOD, "status": "oom", "measured_s": -1})


@pytest.mark.parametrize(
    "value,kind", [(None, "null"), (42, "a number"), ([1], "an array"), ("x", "a string")]
)
def test_a_json_value_that_is_not_an_object(value, kind):
    assert (
        check_row(value)
        == f"not a JSON object (got {kind}: {json.dumps(value) if not isinstance(value, list) else 'list'})"
    )


def _write(tmp_path: Path, lines: list[str], *, newline: bool = True) -> Path:
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(lines) + ("\n" if newline else ""))
    return path


def test_reader_reports_each_bad_line_by_number(tmp_path):
    bad = json.dumps({**GOOD, "schema_version": 99})
    path = _write(tmp_path, [GOOD_LINES[0], "null", "garbage", "", GOOD_LINES[1], bad, GOOD_LINES[2]])
    with pytest.raises(BadRowsError) as err:
        read_results(path)
    rejected = err.value.result.rejected
    assert [(r.line, r.reason.split(" (")[0]) for r in rejected] == [
        (2, "not a JSON object"),
        (3, "not valid JSON"),
        (6, "schema_version must be one of 1, 2, got 99"),
    ]
    lenient = read_results(path, lenient=True)
    assert len(lenient.rows) == 3 and len(lenient.rejected) == 3


def test_torn_last_line_is_noted_not_an_error(tmp_path):
    path = _write(tmp_path, [*GOOD_LINES[:2], GOOD_LINES[2][:40]], newline=False)
    result = read_results(path)
    assert len(result.rows) == 2 and result.torn_line == 3 and not result.rejected
    # the same cut line followed by a newline is garbage, not a torn write
    with pytest.raises(BadRowsError):
        read_results(_write(tmp_path, [*GOOD_LINES[:2], GOOD_LINES[2][:40]]))
    # a valid last line without its newline is a row
    assert len(read_results(_write(tmp_path, GOOD_LINES[:3], newline=False)).rows) == 3


def test_runner_read_rows_is_strict(tmp_path):
    path = _write(tmp_path, [GOOD_LINES[0], "42"])
    with pytest.raises(ValueError, match="line 2: not a JSON object"):
        runner.read_rows(path)
    assert len(runner.read_rows(path, lenient=True)) == 1
    with pytest.raises(ValueError, match="is a folder"):
        runner.read_rows(tmp_path)


def test_rows_without_case_id_no_longer_count_as_one(tmp_path, capsys):
    rows = [json.dumps({k: v for k, v in json.loads(line).items() if k != "case_id"}) for line in GOOD_LINES]
    path = _write(tmp_path, rows)
    assert main(["validate", "report", str(path), "--no-cases"]) == 2
    err = capsys.readouterr().err
    assert err.count("missing field 'case_id'") == 4


def test_report_exits_nonzero_and_lists_lines(tmp_path, capsys):
    path = _write(
        tmp_path, [GOOD_LINES[0], "null", "[1, 2]", GOOD_LINES[1], json.dumps({**GOOD, "context": "abc"})]
    )
    assert main(["validate", "report", str(path), "--no-cases"]) == 2
    captured = capsys.readouterr()
    assert not captured.out
    lines = captured.err.strip().splitlines()
    assert lines[:3] == [
        f"aqua-model validate: {path}:2: not a JSON object (got null: null)",
        f"aqua-model validate: {path}:3: not a JSON object (got an array: list)",
        f'aqua-model validate: {path}:5: context must be an integer, got "abc"',
    ]
    assert (
        lines[-1]
        == f"aqua-model validate: error: 3 bad line(s) in {path} (listed above); fix them or pass --lenient to skip them"
    )


def test_lenient_skips_and_counts(tmp_path, capsys):
    path = _write(tmp_path, [GOOD_LINES[0], "null", GOOD_LINES[1]])
    md = tmp_path / "summary.md"
    assert main(["validate", "report", str(path), "--no-cases", "--lenient", "--markdown", str(md)]) == 0
    captured = capsys.readouterr()
    assert f"rejected lines skipped (--lenient): 1 ({path}:2)" in captured.out
    assert "(skipped: --lenient)" in captured.err
    assert "rejected lines skipped (--lenient): 1" in md.read_text()


def test_report_notes_a_torn_last_line(tmp_path, capsys):
    path = _write(tmp_path, [*GOOD_LINES[:2], '{"schema_version": 1, "case'], newline=False)
    assert main(["validate", "report", str(path), "--no-cases"]) == 0
    assert f"{path}:3: torn last line ignored" in capsys.readouterr().err


def test_a_bad_context_no_longer_moves_the_median(tmp_path, capsys):
    # before: a row with context "abc" was scored, moving the reported medians
    path = _write(tmp_path, GOOD_LINES)
    assert main(["validate", "report", str(path), "--no-cases"]) == 0
    clean = capsys.readouterr().out
    bad = json.dumps({**json.loads(GOOD_LINES[0]), "case_id": "x", "context": "abc", "measured_s": 1.0})
    path = _write(tmp_path, [*GOOD_LINES, bad])
    assert main(["validate", "report", str(path), "--no-cases", "--lenient"]) == 0
    assert capsys.readouterr().out.startswith(clean.rstrip("\n"))
