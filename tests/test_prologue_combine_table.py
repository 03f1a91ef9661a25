"""Issue 12, round 3: the measured prologue/combine table (calibration.prologue_combine_s): its
validation, its interpolation, and that the aqua-fused plan's time uses it in calibrated mode."""

import math
from pathlib import Path

import numpy as np
import pytest

from aqua_model._datafiles import read_toml, to_toml
from aqua_model.costs import Sizes
from aqua_model.hardware import load
from aqua_model.hardware.calibrated_terms import SmallKernelTable
from aqua_model.plans import build_plan
from aqua_model.simulator.roofline import kernel_time, plan_time

ROOT = Path(__file__).resolve().parents[1]


def _points(scale: float = 1.0) -> list[list]:
    """A full grid: seconds = scale x (2 + g) x (d / 64) x units^0.5 microseconds (a made-up law
    that is log-linear in units, so the log interpolation reproduces it there exactly)."""
    out = []
    for kernel in ("prologue", "combine"):
        for sel in ("per-head", "group"):
            for g in (1.0, 4.0, 8.0):
                for d in (64.0, 128.0):
                    for u in (1.0, 16.0, 256.0):
                        out.append([kernel, sel, g, d, u, scale * (2 + g) * (d / 64) * math.sqrt(u) * 1e-6])
    return out


def _table(points=None) -> SmallKernelTable:
    return SmallKernelTable.from_dict(
        {"points": _points() if points is None else points, "source": "measured: test"}, "t"
    )


def test_interpolation_hits_the_points_and_is_clamped_beyond():
    t = _table()
    # on a grid point: (2 + 4) x (128 / 64) x sqrt(16) = 48 us
    assert float(t("prologue", "group", g=4, d=128, units=16)) == pytest.approx(48e-6)
    # between units 16 and 256, log-linear in units: sqrt(64) = 8 -> (2 + 1) x 1 x 8 = 24 us
    assert float(t("combine", "per-head", g=1, d=64, units=64)) == pytest.approx(24e-6)
    # beyond the grid: held at the ends (units 1 and 256)
    assert float(t("prologue", "group", g=1, d=64, units=0.25)) == pytest.approx(3e-6)
    assert float(t("prologue", "group", g=1, d=64, units=4096)) == pytest.approx(48e-6)
    # g = 6 lies between 4 and 8: log seconds linear in g: geometric mean of 6 and 10 at d=64, u=1
    assert float(t("prologue", "group", g=6, d=64, units=1)) == pytest.approx(math.sqrt(6e-6 * 10e-6))
    # d = 96: geometric mean of d=64 and d=128 (x1 and x2)
    assert float(t("combine", "group", g=1, d=96, units=1)) == pytest.approx(3e-6 * math.sqrt(2))
    # arrays of units broadcast
    got = t("combine", "group", g=1, d=64, units=np.array([1.0, 16.0, 256.0]))
    assert got == pytest.approx(np.array([3e-6, 12e-6, 48e-6]))


def test_a_selection_not_measured_falls_back_and_bad_kernel_is_refused():
    pts = [p for p in _points() if p[1] == "group"]
    t = _table(pts)
    assert float(t("prologue", "per-head", g=4, d=128, units=16)) == float(
        t("prologue", "group", g=4, d=128, units=16)
    )
    with pytest.raises(ValueError, match="kernel must be one of"):
        t("split", "group", g=1, d=64, units=1)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda pts: [p for p in pts if not (p[2] == 8.0 and p[3] == 128.0 and p[0] == "combine")],
            "every \\(g, d\\) pair",
        ),
        (lambda pts: [["prolog", *p[1:]] for p in pts], "kernel is 'prolog'"),
        (lambda pts: [[p[0], "topk", *p[2:]] for p in pts], "selection is 'topk'"),
        (lambda pts: [[*p[:5], -1.0] for p in pts], "finite number > 0"),
        (lambda pts: [p[:5] for p in pts], r"\[kernel, selection, g, d, units, seconds\]"),
    ],
)
def test_table_validation_names_the_problem(mutate, match):
    with pytest.raises(ValueError, match=match):
        _table(mutate(_points()))
    with pytest.raises(ValueError, match="must start with 'measured:'"):
        SmallKernelTable.from_dict({"points": _points(), "source": "guess"}, "t")


def _profile(tmp_path: Path, *, table: bool) -> Path:
    doc = read_toml(ROOT / "aqua_model" / "hardware" / "data" / "h200-sxm.toml")
    doc["mode"] = "calibrated"
    cal = {
        "device": "test",
        "driver": "x",
        "torch": "x",
        "triton": "x",
        "date": "2026-12-01",
        "method": "test",
        "identity": "test",
        "base": "h200-sxm",
        "graph_launch_s": 4e-6,
        "graph_gap_s": 0.5e-6,
        "tiny_kernel_s": 1e-6,
        "sm_count": 132,
        "pattern_latency_s": {"contiguous": 2e-6},
    }
    if table:
        cal["prologue_combine_s"] = {"points": _points(), "source": "measured: test"}
    doc["calibration"] = cal
    path = tmp_path / ("with.toml" if table else "without.toml")
    path.write_text(to_toml(doc))
    return path


def test_the_fused_plan_uses_the_table_for_its_prologue_and_combine(tmp_path):
    with_t, without = load(_profile(tmp_path, table=True)), load(_profile(tmp_path, table=False))
    assert with_t.terms.small_kernels is not None and without.terms.small_kernels is None
    plan = build_plan("aqua-fused-3launch", selection="per-head")
    # B=4, H_q=16, H_kv=4 (g=4), d=128: prologue units 16 -> (2+4) x 2 x 4 = 48 us; combine units
    # 64 -> 6 x 2 x 8 = 96 us
    sizes = Sizes(heads_q=16, heads_kv=4, d=128, context=4096, batch=4, k=32)
    by = {kt.name: kt for kt in plan_time(plan, with_t, sizes)[1]}
    assert float(by["select"].time_s - by["select"].overhead_s) == pytest.approx(48e-6)
    assert float(by["combine"].time_s - by["combine"].overhead_s) == pytest.approx(96e-6)
    # the split pass is not touched, and the plan total adds exactly the two differences
    total_w, kts_w = plan_time(plan, with_t, sizes)
    total_wo, kts_wo = plan_time(plan, without, sizes)
    diff = sum(float(a.time_s - b.time_s) for a, b in zip(kts_w, kts_wo))
    assert float(total_w - total_wo) == pytest.approx(diff)
    assert float(kts_w[1].time_s) == pytest.approx(float(kts_wo[1].time_s))
    # without the plan's selection (a lone kernel) the table is not used
    select = plan.kernels[0]
    assert float(kernel_time(select, with_t, sizes).time_s) == pytest.approx(
        float(kernel_time(select, without, sizes).time_s)
    )


def test_a_prologue_handed_its_indices_keeps_its_roofline(tmp_path):
    with_t, without = load(_profile(tmp_path, table=True)), load(_profile(tmp_path, table=False))
    plan = build_plan("aqua-step-topk", selection="group")  # given indices: the three-launch path
    sizes = Sizes(heads_q=16, heads_kv=4, d=128, context=4096, batch=4, k=32)
    a = {kt.name: float(kt.time_s) for kt in plan_time(plan, with_t, sizes)[1]}
    b = {kt.name: float(kt.time_s) for kt in plan_time(plan, without, sizes)[1]}
    assert a["select"] == pytest.approx(b["select"])  # given indices: no sort, not the table's kernel
    assert a["combine"] != pytest.approx(b["combine"])


def test_datasheet_mode_is_unchanged():
    prof = load("h200-sxm")
    assert prof.terms.small_kernels is None
