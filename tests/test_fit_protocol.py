"""Issue 21: the three samples of one sampler, the split-conformal intervals from the calibration
sample, and the aligned dim-major keys of the aqua-fused workload."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aqua_model.hardware import load
from aqua_model.simulator.intervals import interval_from_residuals
from aqua_model.validate.intervals import freeze_intervals, residuals
from aqua_model.validate.sampling import (
    ROLE_SEED_OFFSETS,
    SAMPLE_ROLES,
    read_cases,
    sample_cases,
    write_cases,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "validation" / "results" / "h200" / "h200-heldout-898775459.toml"


def test_core_only_draws_the_same_shapes_without_the_extra_plan():
    full, _ = sample_cases(seed=11, n=60)
    core, _ = sample_cases(seed=11, n=40, core_only=True)
    assert all(r["role"] == "core" for r in core)
    full_core = [r for r in full if r["role"] == "core"]

    # the same draws: the core cases of the full sample begin with the core-only sample's
    def key(r):
        return (r["plan"], r["context"], r["batch"], r["heads_q"], r["heads_kv"], r["d"], r["k"], r["dtype"])

    assert [key(r) for r in core][:20] == [key(r) for r in full_core][:20]


def test_roles_and_seeds_are_recorded(tmp_path):
    assert SAMPLE_ROLES == ("train", "calibration", "test")
    assert len(set(ROLE_SEED_OFFSETS.values())) == 3
    out = tmp_path / "train.jsonl"
    meta = write_cases(seed=5, n=10, out_path=out, role="train", core_only=True, scale="cpu")
    assert meta["role"] == "train" and meta["core_only"] is True
    meta2, cases = read_cases(out)
    assert meta2["role"] == "train" and len(cases) >= 10
    with pytest.raises(ValueError, match="role"):
        write_cases(seed=5, n=10, out_path=out, role="holdout")


def test_conformal_intervals_are_the_plain_order_statistics(tmp_path):
    src = ROOT / "validation" / "results" / "h200" / "heldout-898775459-insample.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    entries = freeze_intervals(profile=BASE, results=[src], out=tmp_path / "conf.toml", conformal=True)
    time_r, speed_r = residuals(rows)
    by_plan = {(e["phase"], e["plan"]): e for e in entries}
    e = by_plan[("decode", "aqua-fused")]
    assert tuple(e["time"]) == interval_from_residuals(time_r[("decode", "aqua-fused")], spread=0.0)
    assert tuple(e["speedup"]) == interval_from_residuals(speed_r[("decode", "aqua-fused")], spread=0.0)
    # the 10% / 90% order statistics by the finite-sample rule, derived here from the residuals
    r = np.sort(time_r[("decode", "aqua-fused")])
    n = r.size
    lo, hi = r[math.floor((n + 1) * 0.1) - 1], r[math.ceil((n + 1) * 0.9) - 1]
    assert e["time"][0] == pytest.approx(lo) and e["time"][1] == pytest.approx(hi)
    assert "calibration-sample" in e["source"] and "not widened" in e["source"]
    assert load(tmp_path / "conf.toml").terms.interval("decode", "aqua-fused") is not None


def test_the_aqua_fused_workload_has_aligned_key_rows():
    torch = pytest.importorskip("torch")
    from aqua_model.validate.cases import Case
    from aqua_model.validate.workloads import make_inputs

    case = Case(
        phase="decode",
        plan="aqua-fused",
        context=333,
        batch=1,
        heads_q=4,
        heads_kv=2,
        d=64,
        k=16,
        dtype="fp16",
        prompt=None,
        selection="group",
    )
    inp = make_inputs(case, device=torch.device("cpu"), seed=0, layouts=("rotated-dim-major",))
    assert inp.k_hat_t.shape[-1] == 333
    assert inp.k_hat_t.stride(-2) == 336 and inp.k_hat_t.stride(-2) % 16 == 0


def test_each_dim_major_plan_declares_the_row_stride_its_workload_runs():
    """The plan's declared K^T row stride is the one its validation workload allocates: a 16-aligned
    capacity for aqua-fused (and the other plans over the same key copy), exactly N for
    aqua-fused-exact; the misaligned flag follows."""
    torch = pytest.importorskip("torch")
    from dataclasses import replace

    from aqua_model.costs.numeric import evaluate
    from aqua_model.plans import build_plan
    from aqua_model.simulator.roofline import misaligned
    from aqua_model.validate.cases import Case
    from aqua_model.validate.workloads import build, layouts_for, make_inputs, set_layouts

    base = Case(
        phase="decode",
        plan="aqua-fused",
        context=333,
        batch=1,
        heads_q=4,
        heads_kv=2,
        d=64,
        k=16,
        dtype="fp32",
        prompt=None,
        selection="group",
    )
    inp = None
    for plan, want_stride, want_misaligned in (
        ("aqua-fused", 336, False),
        ("aqua-fused-exact", 333, True),
        ("aqua-fused-3launch", 336, False),
        ("aqua-step-topk", 336, False),
        ("aqua-fused", 336, False),  # back from the exact copy: the aligned one is drawn again
    ):
        case = replace(base, plan=plan)
        if inp is None:
            inp = make_inputs(case, device=torch.device("cpu"), seed=0, layouts=layouts_for(case))
        else:  # the runner's reuse of one shape's inputs across plans
            set_layouts(inp, case, device=torch.device("cpu"), seed=0, layouts=layouts_for(case))
        attention = next(k for k in build_plan(plan).kernels if k.name == "attention")
        assert int(evaluate(attention.row_stride, {"N": 333})) == want_stride == inp.k_hat_t.stride(-2)
        assert bool(misaligned(attention, {"N": 333})) is want_misaligned
        assert inp.k_hat_t.shape[-1] == 333
        wl = build(case, inp)  # the workload runs (the eager fallback on a CPU) and matches the reference
        wl.total()
        out, ref = wl.reference()
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="share the Inputs field"):
        set_layouts(
            inp,
            base,
            device=torch.device("cpu"),
            seed=0,
            layouts=("rotated-dim-major", "rotated-dim-major-exact"),
        )


def test_warm_up_keeps_the_default_rules_split_count():
    from aqua_model.costs.split_rule import launch_rule, padded_tile_rows, split_count, tile_rows
    from aqua_model.validate.cases import Case
    from aqua_model.validate.warmup import warm_case

    for batch, n in ((1, 200_001), (8, 65_537), (3, 9_999)):
        case = Case(
            phase="decode", plan="aqua-fused", context=n, batch=batch, heads_q=32, heads_kv=8, d=128, k=32
        )
        small = warm_case(case, 132)
        rows = tile_rows(d=128, k=32, g=4, selection="group")
        bn = launch_rule(padded_tile_rows(rows, 128))[0]
        count = [
            int(split_count(programs=batch * 8, context=c, block_n=bn, sm_count=132)[0][()])
            for c in (n, small.context)
        ]
        assert count[0] == count[1] and small.context <= n and small.context % 16 == n % 16
