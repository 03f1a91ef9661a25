"""Runner: streaming rows, resume after a crash without duplicates, OOM and error recording."""

import json

import pytest

from aqua_model.hardware import load
from aqua_model.validate.cases import Case, cpu_grid, gpu_grid
from aqua_model.validate.runner import read_rows, run_cases


def _fake_measure(calls):
    def measure(case):
        calls.append(case.case_id)
        return {"measured_s": 1e-3, "measured_iqr_s": 1e-5, "measured_kernels": {}}

    return measure


@pytest.fixture(scope="module")
def cpu():
    return load("cpu")


CASES = [c for c in cpu_grid() if c.phase == "decode"][:8]


def _ids(path):
    return [json.loads(line)["case_id"] for line in path.read_text().splitlines()]


def test_resume_after_crash_has_no_duplicates(tmp_path, cpu):
    out = tmp_path / "r.jsonl"
    calls = []
    counts = run_cases(
        CASES[:4],
        out_path=out,
        datasheet=cpu,
        calibrated=cpu,
        device="cpu",
        measure=_fake_measure(calls),
        progress=False,
        env={"device": "cpu"},
    )
    assert counts["ok"] == 4
    with out.open("a") as fh:  # a crash in the middle of writing the fifth row
        fh.write('{"case_id": "' + CASES[4].case_id + '", "status": "o')
    calls.clear()
    counts = run_cases(
        CASES,
        out_path=out,
        datasheet=cpu,
        calibrated=cpu,
        device="cpu",
        measure=_fake_measure(calls),
        progress=False,
        env={"device": "cpu"},
    )
    assert counts["resumed"] == 4 and counts["ok"] == 4
    assert calls == [c.case_id for c in CASES[4:]]
    ids = _ids(out)
    assert ids == [c.case_id for c in CASES] and len(set(ids)) == len(ids)
    row = read_rows(out)[0]
    for key in (
        "case_id",
        "status",
        "phase",
        "plan",
        "context",
        "batch",
        "heads_q",
        "heads_kv",
        "d",
        "k",
        "dtype",
        "measured_s",
        "measured_iqr_s",
        "predicted_datasheet_s",
        "predicted_calibrated_s",
        "kernels",
        "env",
    ):
        assert key in row
    assert row["predicted_datasheet_s"] > 0 and row["kernels"][0]["predicted_calibrated_s"] > 0


@pytest.mark.parametrize(
    "exc", [MemoryError("no memory"), RuntimeError("CUDA out of memory. Tried to allocate")]
)
def test_oom_is_recorded_and_the_run_goes_on(tmp_path, cpu, exc):
    out = tmp_path / "r.jsonl"
    seen = []

    def measure(case):
        seen.append(case.case_id)
        if len(seen) == 2:
            raise exc
        return {"measured_s": 1e-3, "measured_iqr_s": 0.0, "measured_kernels": {}}

    counts = run_cases(
        CASES[:3],
        out_path=out,
        datasheet=cpu,
        calibrated=cpu,
        device="cpu",
        measure=measure,
        progress=False,
        env={},
    )
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["ok", "oom", "ok"] and counts["oom"] == 1
    assert rows[1]["measured_s"] is None and "memory" in rows[1]["error"]


def test_torch_cuda_oom_class_is_recorded(tmp_path, cpu):
    torch = pytest.importorskip("torch")

    def measure(case):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    run_cases(
        CASES[:1],
        out_path=tmp_path / "r.jsonl",
        datasheet=cpu,
        calibrated=cpu,
        device="cpu",
        measure=measure,
        progress=False,
        env={},
    )
    assert read_rows(tmp_path / "r.jsonl")[0]["status"] == "oom"


def test_other_errors_and_skips_are_recorded(tmp_path, cpu):
    skipped = Case(
        phase="decode",
        plan="dense-fused",
        context=64,
        batch=1,
        heads_q=4,
        heads_kv=4,
        d=32,
        k=32,
        skip_reason="too big",
    )

    def measure(case):
        raise ValueError("broken kernel")

    run_cases(
        [CASES[0], skipped],
        out_path=tmp_path / "r.jsonl",
        datasheet=cpu,
        calibrated=cpu,
        device="cpu",
        measure=measure,
        progress=False,
        env={},
    )
    rows = read_rows(tmp_path / "r.jsonl")
    assert rows[0]["status"] == "error" and "broken kernel" in rows[0]["error"]
    assert rows[1]["status"] == "skipped" and rows[1]["skip_reason"] == "too big"


def test_gpu_grid_is_large_enough_and_records_skips():
    grid = gpu_grid()
    runnable = [c for c in grid if not c.skip_reason]
    assert len(runnable) >= 150
    assert len({c.case_id for c in grid}) == len(grid)
    assert {c.plan for c in runnable} >= {
        "dense-fused",
        "dense-eager",
        "aqua-fused",
        "aqua-eager",
        "aqua-token-major",
    }
    assert {c.k for c in runnable} >= {16, 32, 64, 96, 112, 128}
    assert {c.heads_q // c.heads_kv for c in runnable} == {1, 4, 8}
    assert {c.phase for c in runnable} == {"decode", "prefill"}
    assert min(c.context for c in runnable if c.phase == "decode") == 512
    assert max(c.context for c in runnable if c.phase == "decode") == 131072
    assert {c.batch for c in runnable} >= {1, 64}
    assert any(c.skip_reason for c in grid)


def test_case_validation_names_the_argument():
    with pytest.raises(ValueError, match="plan"):
        Case(
            phase="prefill", plan="aqua-fused", context=0, batch=1, heads_q=4, heads_kv=4, d=32, k=8, prompt=8
        )
    with pytest.raises(ValueError, match="heads_q"):
        Case(phase="decode", plan="dense-fused", context=8, batch=1, heads_q=6, heads_kv=4, d=32, k=8)
