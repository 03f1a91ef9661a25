"""Roofline mechanics: launch overlap, calibrated library kernels, prefill eager bytes."""

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from aqua_model.costs import Sizes
from aqua_model.costs.numeric import evaluate
from aqua_model.hardware import load
from aqua_model.plans import Kernel, Plan, build_plan
from aqua_model.simulator.roofline import contributions, kernel_time, plan_time

H200 = load("h200")
CALIBRATED = Path(__file__).resolve().parents[1] / "validation" / "results" / "h200" / "h200-calibrated.toml"
SHAPE = Sizes(heads_q=32, heads_kv=8, d=128, context=4096, batch=8, k=32, phase="prefill", prompt=512)
#: Any sizes: the kernels of the first test have constant FLOPs and bytes.
ANY = Sizes(heads_q=1, heads_kv=1, d=1, context=1)


def memory_kernel(name: str, nbytes: float) -> Kernel:
    return Kernel(name, sp.Integer(0), sp.Float(nbytes), "contiguous")


def test_later_launches_hide_behind_the_previous_kernel():
    bw = H200.bandwidth_bytes_per_s * H200.memory_efficiency("contiguous", 1.0)
    launch = H200.launch_overhead_s
    long_busy, short_busy = 10 * launch, 0.25 * launch
    plan = Plan(
        "test",
        "dense",
        "decode",
        "group",
        (
            memory_kernel("a", long_busy * bw),
            memory_kernel("b", short_busy * bw),
            memory_kernel("c", short_busy * bw),
        ),
    )
    total, kernels = plan_time(plan, H200, ANY)
    shares = contributions(kernels)
    # a: launch + busy; b: its launch hides behind a's 10 launches of work; c: only a quarter
    # of its launch hides behind b's short work
    assert float(shares[0]) == pytest.approx(launch + long_busy)
    assert float(shares[1]) == pytest.approx(short_busy)
    assert float(shares[2]) == pytest.approx(short_busy + (launch - short_busy))
    assert float(total) == pytest.approx(sum(float(x) for x in shares))
    assert float(total) < sum(float(k.time_s) for k in kernels)


@pytest.mark.skipif(not CALIBRATED.is_file(), reason="no calibrated H200 profile committed")
def test_calibrated_library_kernels_replace_the_generic_roofline():
    cal = load(CALIBRATED)
    topk = next(k for k in build_plan("aqua-step-topk").kernels if k.name == "topk")
    rows = int(SHAPE.batch) * SHAPE.heads_kv  # group selection: one torch.topk row per KV group
    measured = float(cal.topk_table(rows, SHAPE.d))
    t = kernel_time(topk, cal, SHAPE)
    # the measured torch.topk (with its own launch) plus the abs, copies and group-sum launches
    assert float(t.time_s) == pytest.approx(
        max(measured, float(np.maximum(t.compute_s, t.memory_s)))
        + (topk.launches - 1) * cal.launch_overhead_s
    )
    # datasheet mode has no table: the roofline of its few bytes plus a 4 us launch per launch
    ds = kernel_time(topk, H200, SHAPE)
    assert float(ds.time_s) == pytest.approx(
        float(np.maximum(ds.compute_s, ds.memory_s)) + topk.launches * H200.launch_overhead_s
    )

    softmax = next(k for k in build_plan("dense-eager", phase="prefill").kernels if k.name == "softmax")
    t = kernel_time(softmax, cal, SHAPE)
    eff = float(cal.softmax_table(int(SHAPE.context) + int(SHAPE.prompt)))
    assert float(t.memory_s) == pytest.approx(float(t.bytes) / (cal.bandwidth_bytes_per_s * eff))

    attention = build_plan("dense-fused", phase="prefill").kernels[0]
    t = kernel_time(attention, cal, SHAPE)
    assert float(t.compute_s) == pytest.approx(
        float(t.flops) / (cal.peak_flops("bf16") * cal.attention_compute_efficiency)
    )


@pytest.mark.skipif(not CALIBRATED.is_file(), reason="no calibrated H200 profile committed")
def test_calibrated_tables_return_the_measured_points():
    from aqua_model._datafiles import read_toml

    raw = read_toml(CALIBRATED)["calibration"]
    cal = load(CALIBRATED)
    for rows, length, _k, seconds in raw["topk_rows_length_k_s"]:
        assert float(cal.topk_table(rows, length)) == pytest.approx(seconds, rel=1e-9)
    # between measured points the time stays between its neighbours (log-log interpolation)
    between = float(cal.topk_table(512, 128))
    assert float(cal.topk_table(256, 128)) <= between <= float(cal.topk_table(2048, 128))
    for length, _bytes, _seconds, efficiency in raw["softmax_length_bytes_s_efficiency"]:
        assert float(cal.softmax_table(length)) == pytest.approx(efficiency, rel=1e-9)
    assert cal.attention_compute_efficiency == pytest.approx(raw["attention_compute_efficiency"])


def test_prefill_eager_bytes_equal_brute_force_tensor_counts():
    small = {"B": 2, "H_q": 4, "H_kv": 2, "g": 2, "N": 24, "T": 5, "d": 16, "k": 4, "s": 2}
    B, Hq, Hkv, N, T, d = (small[x] for x in ("B", "H_q", "H_kv", "N", "T", "d"))
    q, kv = B * Hq * T * d * 2, B * Hkv * (N + T) * d * 2
    scores = B * Hq * T * (N + T) * 2  # the full rectangle, materialised
    expected = {
        "scores": q + kv + scores,
        "mask": 2 * scores,
        "softmax": 2 * scores,
        "value": scores + kv + q,
    }
    got = {
        kern.name: evaluate(kern.bytes, small) for kern in build_plan("dense-eager", phase="prefill").kernels
    }
    assert got == expected
