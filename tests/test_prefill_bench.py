"""The prefill benchmark's report (validation/bench_prefill.py --report): the kernel's own efficiency
taken from its calibration row, and the plan's prediction errors, on synthetic measurements whose
errors are known by construction (no GPU needed)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from aqua_model.hardware import load
from aqua_model.plans import build_plan, prefill_fused as pf

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "validation" / "results" / "h200" / "h200-calibrated.toml"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_prefill", ROOT / "validation" / "bench_prefill.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(method, *, T, batch, k, d=128, hq=32, hkv=8, median_s, **extra):
    return {
        "method": method,
        "T": T,
        "batch": batch,
        "heads_q": hq,
        "heads_kv": hkv,
        "d": d,
        "k": k,
        "median_s": median_s,
        "tflops": 1.0,
        **extra,
    }


def test_report_recovers_the_kernel_efficiency_and_the_known_errors(tmp_path) -> None:
    bench = _bench()
    profile = load(str(PROFILE))
    true = dataclasses.replace(
        profile, attention_compute_efficiency=0.5
    )  # the "kernel" runs at half the peak
    plan = pf.build(block_m=128, block_n=64)
    cal_shape = bench.CALIBRATION_SHAPE
    cal = _row(
        "aqua-tile", T=cal_shape["T"], batch=cal_shape["batch"], k=128, block_m=128, block_n=64, median_s=0.0
    )
    cal["median_s"] = bench._plan_time(plan, true, cal, 128)
    calibration = {"shape": cal_shape, "rows": [cal]}
    rows, errors = [], {}
    for T, k, err in [(4096, 32, 0.0), (4096, 128, 0.10), (16384, 96, -0.05)]:
        sdpa = _row("sdpa", T=T, batch=1, k=128, median_s=1e-3, backend="cudnn")
        meas = bench._plan_time(plan, true, sdpa, k) * (1 + err)
        rows += [
            sdpa,
            _row(
                "aqua-tile",
                T=T,
                batch=1,
                k=k,
                block_m=128,
                block_n=64,
                median_s=meas,
                speedup_vs_sdpa=1e-3 / meas,
                ceiling=256 / (128 + k),
            ),
        ]
        errors[(T, k)] = 100 * (1 / (1 + err) - 1)
    out = tmp_path / "h200"
    out.mkdir()
    (out / bench.ROWS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / bench.CALIBRATION_FILE).write_text(json.dumps(calibration))
    kp = bench.kernel_profile(calibration, profile, block_m=128)
    assert kp.attention_compute_efficiency == pytest.approx(0.5, rel=1e-9)
    table = bench.predictions(rows, calibration, profile)
    assert len(table) == 3
    for r in table:
        assert r["aqua_error_pct"] == pytest.approx(errors[(r["T"], r["k"])], abs=0.01)
        sdpa_pred = bench._plan_time(
            build_plan("dense-fused", phase="prefill"), profile, r | {"heads_q": 32, "heads_kv": 8}, 128
        )
        assert r["predicted_speedup"] == pytest.approx(sdpa_pred / (r["predicted_aqua_ms"] / 1e3), rel=1e-3)
    assert bench.report(out, profile_path=PROFILE, results=tmp_path / "results") == 0
    md = (tmp_path / "results" / "prefill_kernels.md").read_text()
    assert "median |error|" in md and "aqua-tile-fused" in md


def test_flops_and_ceiling_come_from_the_cost_model() -> None:
    bench = _bench()
    # visible pairs T(T+1)/2 = 8 * 9 / 2 = 36 per head, 2k + 2d FLOPs each: 36 * (64 + 256) per head
    assert bench.flops(B=2, hq=3, T=8, d=128, k=32) == 2 * 3 * 36 * (2 * 32 + 2 * 128)
    assert bench.ceiling(d=128, k=96, T=4096) == pytest.approx(256 / 224)
    assert bench.ceiling(d=128, k=128, T=4096) == 1.0
