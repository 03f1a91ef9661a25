"""Issue 21: the one kernel-time form, its profile data, the roofline's use of it, its range check,
and the fitting routine (recovering known parameters from synthetic plan times)."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from aqua_model._datafiles import read_toml, to_toml
from aqua_model.hardware import load
from aqua_model.hardware.kernel_forms import FORM_PARAMS, form_terms_s, parse_form
from aqua_model.models import resolve_shape
from aqua_model.plans import build_plan
from aqua_model.simulator.roofline import kernel_time, plan_time, timing_key
from aqua_model.simulator.simulation import sizes_of
from aqua_model.validate.fit import FIT_PLANS, fit_forms, starting_form, write_fitted_profile
from aqua_model.validate.sampling import sample_cases

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "validation" / "results" / "h200" / "h200-heldout-898775459.toml"
SM = 132
W = 4.8e12  # the H200 datasheet bandwidth of the base profile (hbm_bandwidth_bytes_per_s)

PARAMS = {
    "latency_s": 3e-6,
    "per_launch_s": 1e-6,
    "per_wave_s": 2e-6,
    "eta_m_max": 0.8,
    "eta_c_max": 0.5,
    "half_bytes_per_sm": 0.0,
    "sat_power": 1.0,
    "half_d": 0.0,
    "half_flops_per_sm": 0.0,
    "half_sm_fraction": 0.0,
    "overlap_power": 64.0,
    "gqa_power": 0.0,
    "per_merge_s": 0.0,
    "misaligned_factor": 0.5,
}


def _terms(**kw):
    args = {
        "flops": 0.0,
        "nbytes": 1e9,
        "launches": 1,
        "programs": SM,
        "misaligned": False,
        "head_dim": 128,
        "group": 1,
        "sm_count": SM,
        "peak_flops_per_s": 1e15,
        "bandwidth_bytes_per_s": W,
    }
    args.update(kw)
    params = {**PARAMS, **args.pop("params", {})}
    return form_terms_s(params, **args)


def test_form_known_answers():
    # one wave, aligned, no saturation: latency + B / (W eta_m_max)
    t, _c, m = _terms()
    assert math.isclose(float(t), 3e-6 + 1e9 / (W * 0.8))
    # 2 SM + 1 programs are 3 waves: two per-wave costs more; 3 launches: two per-launch costs more
    t3, _, _ = _terms(programs=2 * SM + 1, launches=3)
    assert math.isclose(float(t3 - t), 2 * 2e-6 + 2 * 1e-6)
    # misaligned rows divide the bandwidth efficiency by the factor
    _, _, mm = _terms(misaligned=True)
    assert math.isclose(float(mm), 2 * float(m))
    # compute-bound: F / (P eta_c), and with half_d = d the efficiency halves
    _t_c, c_c, _ = _terms(flops=1e12, nbytes=1.0)
    assert math.isclose(float(c_c), 1e12 / (1e15 * 0.5))
    _, c_h, _ = _terms(flops=1e12, nbytes=1.0, params={"half_d": 128.0})
    assert math.isclose(float(c_h), 2 * float(c_c))
    # saturation with p = 1: x / (x + h) at x = h is one half
    _, _, m_s = _terms(nbytes=SM * 1000.0, params={"half_bytes_per_sm": 1000.0})
    assert math.isclose(float(m_s), 2 * SM * 1000.0 / (W * 0.8))
    # few programs: bytes per busy SM grow, so the saturation term is smaller per byte
    _, _, few = _terms(nbytes=SM * 1000.0, programs=1, params={"half_bytes_per_sm": 1000.0})
    assert float(few) < float(m_s)
    # a launch filling half the SMs with h = 1: par = 2 * 0.5 / 1.5 = 2/3 of the bandwidth
    _, _, half = _terms(programs=SM // 2, params={"half_sm_fraction": 1.0})
    assert math.isclose(float(half), float(m) * 1.5)
    # a per-SM FLOP half-point equal to the FLOPs per SM halves the compute efficiency
    _, c_f, _ = _terms(flops=1e12, nbytes=1.0, params={"half_flops_per_sm": 1e12 / SM})
    assert math.isclose(float(c_f), 2 * float(c_c))
    # gqa_power 0.5 at g = 4: the bandwidth efficiency halves (4^-0.5)
    _, _, mg = _terms(group=4, params={"gqa_power": 0.5})
    assert math.isclose(float(mg), 2 * float(m))
    # a kernel merging its own splits: per_merge per round trip of its merge, none without one
    one, _, _ = _terms(group=4)
    merged, _, m_merged = _terms(group=4, merge_rounds=3, params={"per_merge_s": 1e-6})
    unsplit, _, _ = _terms(group=4, merge_rounds=0, params={"per_merge_s": 1e-6})
    assert math.isclose(float(merged), float(one) + 3 * 1e-6) and float(unsplit) == float(one)
    assert float(m_merged) == float(m)  # the merge is a fixed cost, not a memory term
    # overlap power 1: compute and memory add; 64: their max to 1%
    t1, c1, m1 = _terms(flops=1e12, params={"overlap_power": 1.0})
    assert math.isclose(float(t1), 3e-6 + float(c1) + float(m1))
    t64, c64, m64 = _terms(flops=1e12)
    assert float(t64) - 3e-6 == pytest.approx(max(float(c64), float(m64)), rel=0.011)
    # a kernel moving no bytes has no memory term (no 0 / 0)
    _, _, zero = _terms(nbytes=0.0, params={"half_bytes_per_sm": 1000.0})
    assert float(zero) == 0.0


def test_form_monotone_in_bytes():
    nbytes = np.logspace(3, 10, 50)
    t, _, _ = _terms(nbytes=nbytes, params={"half_bytes_per_sm": 5e4, "sat_power": 2.0})
    assert np.all(np.diff(t) > 0)
    # the efficiency it implies never exceeds eta_m_max and rises with size
    eff = nbytes / (W * (t - 3e-6))
    assert np.all(eff <= 0.8 + 1e-12) and np.all(np.diff(eff) >= -1e-12)


def _entry(**over):
    e = {"key": "triton-split", "geometry": "split-n", **PARAMS}
    e.update(over)
    return e


def test_parse_form_is_strict():
    assert parse_form(_entry(), 0, "x.toml").eta_m_max == 0.8
    with pytest.raises(
        ValueError, match=r"x.toml: calibration.forms\[0\] has unknown key\(s\) \['latncy_s'\]"
    ):
        parse_form(_entry(latncy_s=1e-6), 0, "x.toml")
    with pytest.raises(ValueError, match=r"latency_s is 1e\+300; allowed range \[0, 0.001\]"):
        parse_form(_entry(latency_s=1e300), 0, "x.toml")
    with pytest.raises(ValueError, match=r"eta_m_max is 1.5; allowed range"):
        parse_form(_entry(eta_m_max=1.5), 0, "x.toml")
    missing = _entry()
    del missing["per_wave_s"]
    with pytest.raises(ValueError, match=r"is missing \['per_wave_s'\]"):
        parse_form(missing, 0, "x.toml")
    with pytest.raises(ValueError, match="geometry is 'grid'; allowed"):
        parse_form(_entry(geometry="grid"), 0, "x.toml")
    # a form written before gqa_power existed (the seed-2324754193 profile) reads as gqa_power 0, the
    # value that reproduces it (g ** 0 = 1); given, it is checked like every parameter
    legacy = _entry()
    del legacy["gqa_power"]
    assert parse_form(legacy, 0, "x.toml").gqa_power == 0.0
    with pytest.raises(ValueError, match=r"gqa_power is 2.0; allowed range \[-1, 1\]"):
        parse_form(_entry(gqa_power=2.0), 0, "x.toml")


def _with_forms(tmp_path, forms, name="forms-test"):
    doc = read_toml(BASE)
    doc["calibration"]["forms"] = forms
    doc["calibration"].pop("intervals", None)
    path = tmp_path / f"{name}.toml"
    path.write_text(to_toml(doc, header="test"))
    return load(path)


def _sizes(context, batch=4, hq=32, hkv=8, d=128, k=32, phase="decode", dtype="bf16"):
    shape = resolve_shape(None, heads_q=hq, heads_kv=hkv, d=d, dtype=dtype)
    return sizes_of(shape, phase=phase, context=context, batch=batch, k=k, prompt=None)


def test_roofline_uses_the_form_and_flags_extrapolation(tmp_path):
    fit = {
        "seeds": [1],
        "n": 10,
        "ranges": {"bytes": [1e5, 1e8], "flops": [0.0, 1e12], "programs": [1.0, 1e4]},
        "residual_quantiles": {"q10": -0.1, "q50": 0.0, "q90": 0.1},
        "source": "fitted: test",
    }
    plan = build_plan("aqua-fused", phase="decode", selection="group")
    split = next(k for k in plan.kernels if k.stream == "triton-split")
    prof = _with_forms(tmp_path, [_entry(key=timing_key(split), fit=fit, per_merge_s=1e-6)])
    inside = kernel_time(split, prof, _sizes(4096))
    assert inside.extrapolates == ()
    # the form's own value, plus the graph launch model
    from aqua_model.costs.numeric import evaluate
    from aqua_model.simulator.roofline import merge_round_trips, misaligned, programs_of

    values = {"S": prof.sector_bytes, **_sizes(4096).values()}
    nbytes = float(evaluate(split.bytes, values))
    # B H_kv = 32 units over 4096 tokens: the split rule's count for the one-launch kernel (several
    # splits, so the kernel merges, in the split rule's rounds for g = 4, d = 128); other
    # geometries merge nothing
    from aqua_model.costs.split_rule import FUSED_LAUNCH, merge_rounds, split_count

    splits = int(split_count(programs=32, context=4096, block_n=FUSED_LAUNCH[0], sm_count=SM)[0])
    rounds = merge_round_trips("split-n", split, values, SM)
    assert splits > 1 and float(rounds) == int(merge_rounds(group=4, splits=splits, value_dim=128)) >= 1
    assert float(merge_round_trips("per-q-head", split, values, SM)) == 0
    busy, _, _ = form_terms_s(
        {**PARAMS, "per_merge_s": 1e-6},
        flops=float(evaluate(split.flops, values)),
        nbytes=nbytes,
        launches=1,
        programs=programs_of("split-n", split, values, SM),
        misaligned=misaligned(split, values),
        head_dim=128,
        group=4,
        merge_rounds=rounds,
        sm_count=SM,
        peak_flops_per_s=prof.peak_flops("bf16"),
        bandwidth_bytes_per_s=prof.bandwidth_bytes_per_s,
    )
    assert math.isclose(float(inside.time_s), float(busy) + prof.terms.graph_launch_s)
    # at a context whose bytes exceed the fitted range, the time says it extrapolates
    outside = kernel_time(split, prof, _sizes(262143))
    assert "bytes" in outside.extrapolates


def test_a_profile_with_forms_needs_sm_count(tmp_path):
    doc = read_toml(BASE)
    doc["calibration"]["forms"] = [_entry()]
    del doc["calibration"]["sm_count"]
    path = tmp_path / "nosm.toml"
    path.write_text(to_toml(doc, header="test"))
    with pytest.raises(ValueError, match="sm_count"):
        load(path)


def _synthetic_rows(prof, n_cases):
    """Rows whose 'measured' time is the plan time under ``prof`` (known forms)."""
    rows = []
    cases, _ = sample_cases(seed=7, n=n_cases, core_only=True)
    for c in cases:
        if (c["phase"], c["plan"]) not in FIT_PLANS:
            continue
        shape = resolve_shape(None, heads_q=c["heads_q"], heads_kv=c["heads_kv"], d=c["d"], dtype=c["dtype"])
        sizes = sizes_of(
            shape, phase=c["phase"], context=c["context"], batch=c["batch"], k=c["k"], prompt=c["prompt"]
        )
        total, _ = plan_time(build_plan(c["plan"], phase=c["phase"], selection=c["selection"]), prof, sizes)
        rows.append({**c, "status": "ok", "measured_s": float(total), "case_id": str(len(rows))})
    return rows


def test_fit_recovers_known_forms(tmp_path):
    base = load(BASE)
    from aqua_model.validate.fit import GEOMETRY_OF

    # the keys the core plans' kernels carry, and their geometries, from the plans themselves
    keys = sorted(
        {
            timing_key(k)
            for phase, name in FIT_PLANS
            for sel in ("group", "per-head")
            for k in build_plan(name, phase=phase, selection=sel).kernels
        }
    )
    geometry = GEOMETRY_OF
    truth = []
    for key in keys:
        start = starting_form(key, base)
        # the truth: the start moved by a known amount (latency +1 us, bandwidth efficiency -10%)
        start = {**start, "latency_s": start["latency_s"] + 1e-6, "eta_m_max": 0.9 * start["eta_m_max"]}
        truth.append({"key": key, "geometry": geometry.get(key, "device"), **start})
    assert any(geometry.get(key) == "split-n" for key in keys)  # the default decode's one launch
    true_prof = _with_forms(tmp_path, truth, "truth")
    rows = _synthetic_rows(true_prof, 60)
    entries, fitted = fit_forms(rows, base, seeds=(7,))
    measured = np.array([r["measured_s"] for r in rows])
    err = np.abs(fitted / measured - 1)
    assert np.median(err) < 0.01 and err.max() < 0.05
    # every form records its fit
    for e in entries:
        assert e["fit"]["n"] >= 1 and set(e["fit"]["ranges"]) == {"bytes", "flops", "programs"}
        assert set(FORM_PARAMS) <= set(e)
    # and the written profile predicts as the routine did (write_fitted_profile checks it)
    out = tmp_path / "renamed-on-disk.toml"
    write_fitted_profile(profile=BASE, rows=rows, out=out, seeds=(7,), name="fitted-test")
    prof = load(out)
    assert prof.mode == "calibrated:fitted-test" and set(prof.terms.forms) == set(keys)


def test_fit_refuses_a_profile_without_graph_terms(tmp_path):
    doc = read_toml(BASE)
    del doc["calibration"]["graph_launch_s"]
    path = tmp_path / "nograph.toml"
    path.write_text(to_toml(doc, header="test"))
    with pytest.raises(ValueError, match="CUDA-graph terms"):
        fit_forms([], load(path), seeds=(1,))


def test_starting_values_come_from_the_micro_benchmarks():
    base = load(BASE)
    split = starting_form("triton-split:_fused_kernel", base)
    tables = [t for t in base.terms.streams if t.stream == "triton-split"]
    assert split["latency_s"] == min(t.latency_s for t in tables)
    assert split["misaligned_factor"] == min(
        t.misaligned_efficiency for t in tables if t.misaligned_efficiency
    )
    generic = starting_form("vector-contiguous", base)
    assert generic["latency_s"] == base.terms.pattern_latency_s["contiguous"]
    assert copy.deepcopy(generic) == generic


def test_a_prediction_outside_the_fitted_range_says_so(tmp_path):
    from aqua_model.simulator import predict

    plan = build_plan("aqua-fused", phase="decode", selection="group")
    split = next(k for k in plan.kernels if k.stream == "triton-split")
    fit = {
        "seeds": [1],
        "n": 10,
        "ranges": {"bytes": [1e5, 1e8], "flops": [0.0, 1e12], "programs": [1.0, 1e4]},
        "residual_quantiles": {"q10": -0.1, "q50": 0.0, "q90": 0.1},
        "source": "fitted: test",
    }
    prof = _with_forms(tmp_path, [_entry(key=timing_key(split), fit=fit, per_merge_s=1e-6)])
    kw = dict(plan="aqua-fused", phase="decode", batch=4, heads_q=32, heads_kv=8, d=128, k=32, gpu=prof)
    assert "extrapolates" not in predict(context=4096, **kw).status
    far = predict(context=262143, **kw)
    assert "extrapolates: attention (bytes) outside the fitted range" in far.status


def test_a_split_kernel_without_a_geometry_is_refused():
    from aqua_model.validate.fit import _geometry

    plan = build_plan("aqua-fused", phase="decode", selection="group")
    split = next(k for k in plan.kernels if k.stream == "triton-split")
    with pytest.raises(ValueError, match="no launch geometry"):
        _geometry("triton-split:_renamed_kernel", split)
