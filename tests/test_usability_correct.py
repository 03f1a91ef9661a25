"""Issue 23, items 1-6 and 8-11: no wrong answers. Each test here failed before its fix: a
result that looked right and was not, an input accepted silently, or a message that named the
wrong thing."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqua_model.cli import main

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"
INSAMPLE = H200 / "heldout-898775459-insample.jsonl"
HELDOUT = H200 / "heldout-898775459.jsonl"
SHAPE = ["--heads-q", "32", "--heads-kv", "8", "--d", "128"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, *fragments: str) -> str:
    """A single 'aqua-model ...: error: ...' line holding every fragment, and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- item 1: an empty held-out file met no target ----------------------------------------------------


def test_empty_heldout_is_refused_and_writes_no_status(capsys, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    status = tmp_path / "status.toml"
    argv = ["validate", "report", str(INSAMPLE), "--no-cases", "--heldout", str(empty)]
    code, out, err = cli(capsys, *argv, "--status-out", str(status))
    assert code == 2
    one_line_error(err, "--heldout", "no result rows")
    assert "all met" not in out
    assert not status.exists()


def test_targets_line_says_all_met_only_when_every_target_was_judged():
    from aqua_model.commands.validate_cmd import targets_line

    met = {"target": "a", "met": True}
    assert targets_line([met]) == "held-out targets: all met"
    line = targets_line([met, {"target": "b", "met": None}])
    assert "all met" not in line and "1 not evaluated" in line and "b" in line
    line = targets_line([{"target": "c", "met": False}, {"target": "b", "met": None}])
    assert "1 MISSED: c" in line and "1 not evaluated" in line


def test_heldout_rows_of_one_phase_only_leave_targets_not_evaluated(capsys, tmp_path):
    """A held-out file with decode rows only: the prefill targets have no cases, so not 'all met'."""
    decode_only = tmp_path / "decode.jsonl"
    lines = [ln for ln in HELDOUT.read_text().splitlines() if '"phase": "decode"' in ln]
    assert lines
    decode_only.write_text("\n".join(lines) + "\n")
    code, out, _ = cli(
        capsys, "validate", "report", str(INSAMPLE), "--no-cases", "--heldout", str(decode_only)
    )
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("held-out targets:") and "all met" not in last and "not evaluated" in last
