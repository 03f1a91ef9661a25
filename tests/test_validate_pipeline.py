"""CPU mode of the validation suite: calibrate --quick, run the tiny grid, report (as CI runs it)."""

import json
import time

import pytest

pytest.importorskip("torch")

from aqua_model.commands.validate_cmd import main  # noqa: E402
from aqua_model.hardware import load  # noqa: E402
from aqua_model.kernels.eager import STAGE_BUILDERS  # noqa: E402
from aqua_model.plans import build_plan  # noqa: E402


def test_cpu_pipeline_end_to_end(tmp_path, capsys):
    t0 = time.monotonic()
    profile = tmp_path / "cpu-calibrated.toml"
    assert main(["calibrate", "--out", str(profile), "--device", "cpu", "--quick"]) == 0
    prof = load(profile)
    assert prof.mode == "calibrated:cpu-calibrated" and prof.calibration["torch"]
    assert set(prof.size_tables) == {"contiguous", "strided", "gather"}
    assert prof.launch_overhead_s > 0

    results = tmp_path / "validation.jsonl"
    assert (
        main(
            [
                "run",
                "--profile",
                str(profile),
                "--out",
                str(results),
                "--device",
                "cpu",
                "--cpu-small",
                "--no-progress",
                "--rep-ms",
                "2",
                "--warmup-ms",
                "1",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    statuses = {r["status"] for r in rows}
    assert statuses <= {"ok", "unsupported", "skipped"}, [r["error"] for r in rows if r["status"] == "error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["plan"] for r in ok} >= {"dense-fused", "dense-eager", "aqua-eager", "aqua-fused"}
    for r in ok:
        assert r["measured_s"] > 0 and r["measured_iqr_s"] >= 0
        assert r["predicted_datasheet_s"] > 0 and r["predicted_calibrated_s"] > 0
        assert r["calibrated_mode"] == "calibrated:cpu-calibrated" and r["datasheet_mode"] == "datasheet"
        assert r["check_rel_error"] < 0.05
        # a stage-built plan (eager torch) is timed kernel by kernel; a single call (SDPA, the
        # fused Triton path) only as a whole, unless it is one kernel
        plan = build_plan(r["plan"], phase=r["phase"])
        staged = plan.implementation.function in STAGE_BUILDERS or len(plan.kernels) == 1
        assert [k["name"] for k in r["kernels"]] == [k.name for k in plan.kernels]
        assert all((k["measured_s"] > 0) if staged else (k["measured_s"] is None) for k in r["kernels"]), r[
            "plan"
        ]
    n_before = len(rows)
    assert (
        main(["run", "--profile", str(profile), "--out", str(results), "--device", "cpu", "--no-progress"])
        == 0
    )
    assert len(results.read_text().splitlines()) == n_before  # everything done: nothing re-run

    md = tmp_path / "summary.md"
    capsys.readouterr()
    assert main(["report", str(results), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "targets (all measured cases, calibrated mode)" in out and "Spearman" in out
    text = md.read_text()
    assert "## Error of predicted speedup over dense-fused" in text and "## Every case" in text
    assert time.monotonic() - t0 < 120


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["run", "--profile", "h200", "--out", str(tmp_path / "r.jsonl"), "--device", "cpu"]) == 2
    assert "calibrated profile" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2


H200 = __import__("pathlib").Path(__file__).resolve().parents[1] / "validation" / "results" / "h200"


@pytest.mark.skipif(not (H200 / "h200-calibrated.toml").is_file(), reason="no committed calibrated profile")
def test_run_filters_the_grid_by_plan_and_phase(tmp_path, capsys):
    results = tmp_path / "subset.jsonl"
    assert (
        main(
            [
                "run",
                "--profile",
                str(H200 / "h200-calibrated.toml"),
                "--out",
                str(results),
                "--device",
                "cpu",
                "--cpu-small",
                "--no-progress",
                "--rep-ms",
                "1",
                "--warmup-ms",
                "1",
                "--plans",
                "dense-fused",
                "--phase",
                "prefill",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert rows and {(r["plan"], r["phase"]) for r in rows} == {("dense-fused", "prefill")}
    assert (
        main(
            [
                "run",
                "--profile",
                str(H200 / "h200-calibrated.toml"),
                "--out",
                str(results),
                "--device",
                "cpu",
                "--plans",
                "flash",
            ]
        )
        == 2
    )
    assert "not plans of the grid" in capsys.readouterr().err


@pytest.mark.skipif(
    not (H200 / "validation_current_model.jsonl").is_file(), reason="no committed H200 results"
)
def test_report_merges_runs_and_repredicts(tmp_path, capsys):
    out = tmp_path / "current.jsonl"
    assert (
        main(
            [
                "report",
                str(H200 / "validation.jsonl"),
                str(H200 / "validation_token_major.jsonl"),
                str(H200 / "validation_prefill_eager.jsonl"),
                "--no-cases",
                "--repredict",
                str(H200 / "h200-calibrated.toml"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_text() == (H200 / "validation_current_model.jsonl").read_text()
    assert "decode/aqua-step-topk-token-major" in capsys.readouterr().out
