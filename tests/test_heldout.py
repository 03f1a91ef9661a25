"""Issue 12: the held-out sampler and its frozen-model record, the calibrated model terms, the
intervals and the plan verdicts, and the CPU form of sample + run + report."""

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from aqua_model._datafiles import to_toml
from aqua_model.costs import Sizes
from aqua_model.costs.split_rule import launch_rule, split_count, split_programs
from aqua_model.hardware import load
from aqua_model.plans import build_plan
from aqua_model.simulator import predict, simulate
from aqua_model.simulator.intervals import interval_from_residuals
from aqua_model.simulator.roofline import ALIGN_ELEMENTS, kernel_time, plan_time
from aqua_model.validate import sampling
from aqua_model.validate.cases import kv_bytes

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"


# -- the sampler ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drawn():
    return sampling.sample_cases(seed=11, n=150)


def test_sampling_is_deterministic_and_seed_dependent(drawn):
    again, _ = sampling.sample_cases(seed=11, n=150)
    other, _ = sampling.sample_cases(seed=12, n=150)
    assert again == drawn[0] and other != drawn[0]


def test_samples_follow_the_documented_distribution(drawn):
    rows, redraws = drawn
    decode = [r for r in rows if r["phase"] == "decode"]
    for r in rows:
        ctx = r["context"] if r["phase"] == "decode" else r["prompt"]
        assert 256 <= ctx <= 262144 and ctx & (ctx - 1) != 0  # never a power of two (calibration shapes are)
        assert 1 <= r["batch"] <= 64 and r["heads_q"] in sampling.HEADS_Q
        g = r["heads_q"] // r["heads_kv"]
        assert r["heads_q"] % r["heads_kv"] == 0 and g <= 8 and r["d"] in (64, 128)
        assert (r["k"] == r["d"]) if r["plan"].startswith("dense") else (8 <= r["k"] <= r["d"])
        if r["plan"] in sampling.GROUP_ONLY_PLANS or r["plan"].startswith("dense"):
            assert r["selection"] == "group"
    assert {r["selection"] for r in rows if r["plan"] == "aqua-fused"} == {"group", "per-head"}
    assert {r["dtype"] for r in rows} == {"bf16", "fp16"} and {r["phase"] for r in rows} == {
        "decode",
        "prefill",
    }
    # every decode shape is measured by SDPA and by the default aqua_decode call
    by_shape = {}
    for r in decode:
        by_shape.setdefault(r["shape_index"], set()).add(r["plan"])
    assert all({"dense-fused", "aqua-fused"} <= plans for plans in by_shape.values())
    assert set(redraws) == {"power_of_two", "kv_bytes", "working_set", "call_time", "extra_plan_over_budget"}


def test_samples_respect_the_device_budget(drawn):
    from aqua_model.validate.cases import Case

    for r in drawn[0]:
        case = Case(
            **{
                k: r[k]
                for k in (
                    "phase",
                    "plan",
                    "context",
                    "batch",
                    "heads_q",
                    "heads_kv",
                    "d",
                    "k",
                    "dtype",
                    "prompt",
                    "selection",
                )
            }
        )
        assert kv_bytes(case) <= sampling.MAX_KV_BYTES


def test_seed_rule_is_the_first_8_hex_digits():
    # 0x0a56edad = 10*16^6 + 5*16^5 + 6*16^4 + 14*16^3 + 13*16^2 + 10*16 + 13 = 173469101
    assert sampling.seed_from_commit("0a56edadbd825e84d433d82a88a76b3a01eb8d0f") == 173469101
    with pytest.raises(ValueError, match="commit"):
        sampling.seed_from_commit("xyz")


def test_fingerprint_sees_any_change_and_run_refuses_a_changed_model(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "aqua_model" / "costs", pkg)
    before = sampling.model_fingerprint(pkg)
    f = pkg / "split_rule.py"
    f.write_text(f.read_text().replace("PROGRAMS_PER_SM = 8", "PROGRAMS_PER_SM = 9"))
    assert sampling.model_fingerprint(pkg) != before
    with pytest.raises(ValueError, match="model changed since the cases were drawn"):
        sampling.check_frozen({"model_sha256": before, "model_commit": "abc"})
    sampling.check_frozen({"model_sha256": sampling.model_fingerprint()})


def test_case_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"kind": "case"}\n')
    with pytest.raises(ValueError, match="meta record"):
        sampling.read_cases(bad)
    with pytest.raises(FileNotFoundError):
        sampling.read_cases(tmp_path / "missing.jsonl")


# -- the model terms -------------------------------------------------------------------------------


def test_split_rule_is_the_kernels_rule():
    torch = pytest.importorskip("torch")
    from aqua_model.kernels import kv_cache, triton_decode as td
    from aqua_model.simulator import roofline

    assert roofline.CACHE_PAGE_TOKENS == kv_cache.DEFAULT_PAGE_TOKENS
    rng = random.Random(3)
    sm = td._sm_count(torch.device("cpu"))  # the wrapper's own SM count off CUDA
    for _ in range(300):
        B, hkv, N, d = (
            rng.randint(1, 64),
            rng.choice([1, 4, 8, 32]),
            rng.randint(1, 300000),
            rng.choice([64, 128]),
        )
        k, g, sel = rng.randint(1, d), rng.choice([1, 2, 4, 7, 8]), rng.choice(["group", "per-head"])
        rows = td.tile_rows(
            m=d,
            k_keep=k,
            group=g,
            mode=td._SEL_GROUP if sel == "group" else td._SEL_HEAD,
            shared=sel == "group",
        )
        cfg = td.choose_config(rows=rows, value_dim=d)
        assert (cfg.block_n, cfg.num_warps, cfg.num_stages) == launch_rule(rows)
        splits, _ = td.plan_splits(programs=B * hkv, context=N, config=cfg, device=torch.device("cpu"))
        assert (
            int(split_programs(batch=B, heads_kv=hkv, context=N, rows=rows, d=d, sm_count=sm))
            == B * hkv * splits
        )


def _profile(tmp_path: Path, *, intervals=()) -> Path:
    """A calibrated H200 profile with graph timing and one triton-split table (efficiency 0.5 at
    1 program per SM, 0.8 at 8; latency 3 us; misaligned x0.5)."""
    from aqua_model._datafiles import read_toml

    doc = read_toml(ROOT / "aqua_model" / "hardware" / "data" / "h200-sxm.toml")
    doc["mode"] = "calibrated"
    doc["calibration"] = {
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
        "stream": [
            {
                "stream": "triton-split",
                "d": 128,
                "gqa": True,
                "rows": 32,
                "x": "programs_per_sm",
                "y": "efficiency",
                "latency_s": 3e-6,
                "points": [[1.0, 0.5], [8.0, 0.8]],
                "misaligned_efficiency": 0.5,
                "source": "measured: test",
            }
        ],
        "intervals": list(intervals),
    }
    path = tmp_path / "cal.toml"
    path.write_text(to_toml(doc))
    return path


def test_split_pass_time_is_latency_plus_bytes_over_its_occupancy_efficiency(tmp_path):
    prof = load(_profile(tmp_path))

    def attention_of(plan):
        return next(k for k in build_plan(plan).kernels if k.name == "attention")

    # B=1, H_kv=4, N=65536, k=32 (group), the one-launch rule: 64-token blocks, 1024 blocks; splits
    # = min(floor(2 x 132 / 4) = 66, ceil(1024 / 1) = 1024) = 66, chunks of ceil(1024 / 66) = 16
    # blocks, so ceil(1024 / 16) = 64 splits: 256 programs, 256/132 per SM
    assert (
        launch_rule(32)[0] == 64
        and int(split_count(programs=4, context=65536, block_n=64, sm_count=132)[0]) == 64
    )
    x = 256 / 132
    eff = np.interp(np.log(x), np.log([1.0, 8.0]), [0.5, 0.8])
    for plan, n, factor in (
        ("aqua-fused", 65536, 1.0),
        ("aqua-fused-exact", 65536, 1.0),
        # aqua-fused's keys are a view of a 16-aligned capacity: N + 8 is not misaligned there
        ("aqua-fused", 65536 + 8, 1.0),
        ("aqua-fused-exact", 65536 + 8, 0.5),
    ):  # the exactly-N layout's misaligned row stride N + 8 costs the measured factor
        sizes = Sizes(heads_q=16, heads_kv=4, d=128, context=n, batch=1, k=32)
        kt = kernel_time(attention_of(plan), prof, sizes)
        nbytes = float(kt.bytes)
        x_n = int(split_programs(batch=1, heads_kv=4, context=n, rows=32, d=128, sm_count=132)) / 132
        eff_n = np.interp(np.log(x_n), np.log([1.0, 8.0]), [0.5, 0.8])
        exact_misaligned = plan == "aqua-fused-exact" and n % ALIGN_ELEMENTS != 0
        assert exact_misaligned == (factor < 1) and (x_n == x if n == 65536 else True)
        want = 3e-6 + nbytes / (prof.bandwidth_bytes_per_s * eff_n * factor)
        assert float(kt.time_s) == pytest.approx(want + 4e-6)  # launched alone: plus the graph launch
    assert eff == pytest.approx(np.interp(np.log(x), np.log([1.0, 8.0]), [0.5, 0.8]))


def test_graph_timing_adds_the_kernels_device_times_and_one_gap_per_later_launch(tmp_path):
    prof = load(_profile(tmp_path))
    plan = build_plan("aqua-step-topk")
    sizes = Sizes(heads_q=16, heads_kv=4, d=128, context=4096, batch=2, k=32)
    total, kernels = plan_time(plan, prof, sizes)
    busy = sum(float(kt.time_s - kt.overhead_s) for kt in kernels)
    assert float(total) == pytest.approx(4e-6 + busy + (plan.launches - 1) * 0.5e-6)


# -- intervals and verdicts ------------------------------------------------------------------------


def test_interval_rule_known_answer_and_coverage():
    assert interval_from_residuals([0.1, 0.2, 0.3, 0.4]) is None  # fewer than 5
    r = [0.1 * i for i in range(1, 10)]  # n = 9: a = floor(10 x 0.1) = 1, b = ceil(10 x 0.9) = 9
    assert interval_from_residuals(r) == pytest.approx((0.1, 0.9))
    # spread 0.1349 is sigma 0.1; each half-width 0.4 widens to sqrt(0.4^2 + (1.2816 x 0.1)^2)
    lo, hi = interval_from_residuals(r, spread=0.1349)
    h = math.sqrt(0.4**2 + (1.2815516 * 0.1) ** 2)
    assert (lo, hi) == pytest.approx((0.5 - h, 0.5 + h), rel=1e-5)
    rng = np.random.default_rng(0)
    lo, hi = interval_from_residuals(rng.normal(size=400))
    fresh = rng.normal(size=20000)
    assert 0.77 < float(np.mean((fresh >= lo) & (fresh <= hi))) < 0.83


def test_predictions_carry_the_frozen_interval(tmp_path):
    entry = {
        "phase": "decode",
        "plan": "aqua-fused",
        "level": 0.8,
        "time": [-0.1, 0.2],
        "n_time": 9,
        "speedup": [-0.3, 0.05],
        "n_speedup": 9,
        "source": "derived: test",
    }
    prof = load(_profile(tmp_path, intervals=[entry]))
    kw = dict(phase="decode", context=20000, batch=4, heads_q=32, heads_kv=8, d=128, k=32)
    p = predict(plan="aqua-fused", gpu=prof, **kw)
    assert (p.low_s, p.high_s) == pytest.approx((p.total_s * math.exp(-0.1), p.total_s * math.exp(0.2)))
    s = simulate(gpu=prof, context=20000, batch=4, heads_q=32, heads_kv=8, d=128, k=32)
    lo, hi = s.speedup_interval
    assert (float(lo), float(hi)) == pytest.approx(
        (float(s.speedup) * math.exp(-0.3), float(s.speedup) * math.exp(0.05))
    )
    assert s.speedup_text() == f"{float(s.speedup):.2f}x [{float(lo):.2f}, {float(hi):.2f}]"
    assert (
        predict(plan="dense-fused", gpu=prof, **{**kw, "k": 128}).low_s is None
    )  # no interval for that plan
    assert predict(plan="aqua-fused", gpu="h200", **kw).low_s is None  # datasheet: none


@pytest.mark.skipif(not (H200 / "plan_status.toml").is_file(), reason="no held-out verdicts committed")
def test_unvalidated_plans_are_said_so():
    from aqua_model._datafiles import read_toml
    from aqua_model.simulator.plan_status import UNVALIDATED_P90, status_entry

    for e in read_toml(H200 / "plan_status.toml")["plan"]:
        assert (e["status"] == "unvalidated") == (e["heldout_p90_abs"] > UNVALIDATED_P90)
        assert status_entry(e["phase"], e["plan"])["status"] == e["status"]
        p = predict(
            plan=e["plan"],
            phase=e["phase"],
            context=0 if e["phase"] == "prefill" else 4096,
            batch=2,
            heads_q=8,
            heads_kv=8,
            d=128,
            k=128 if e["plan"].startswith("dense") else 32,
            gpu="h200",
            prompt=512 if e["phase"] == "prefill" else None,
        )
        assert p.status.startswith("unvalidated") == (e["status"] == "unvalidated")


def test_heldout_targets_and_coverage_known_answer():
    from aqua_model.validate.report import build_report, coverage, heldout_targets

    rows = []
    for i, err in enumerate([0.01, -0.02, 0.03, 0.05, -0.5]):  # |e|: median 0.03, max 0.5
        m = 1e-4 * (i + 1)
        rows.append(
            {
                "case_id": f"decode/dense-fused/N{i}",
                "phase": "decode",
                "plan": "dense-fused",
                "status": "ok",
                "measured_s": m,
                "predicted_calibrated_s": m * (1 + err),
                "predicted_calibrated_low_s": m * 0.9,
                "predicted_calibrated_high_s": m * 1.1,
                "context": i,
                "batch": 1,
                "heads_q": 8,
                "heads_kv": 8,
                "d": 128,
                "dtype": "bf16",
                "prompt": None,
            }
        )
    rep = build_report(rows)
    t = {x["target"]: x for x in heldout_targets(rep)}
    assert t["decode dense-fused (SDPA): median abs error"]["value"] == pytest.approx(0.03)
    assert t["decode dense-fused (SDPA): median abs error"]["met"] is True
    assert t["decode dense-fused (SDPA): max abs error"]["met"] is False
    assert coverage(rows)["all"] == (5, 5)  # every measurement lies in [0.9 m, 1.1 m]
    assert t["80% interval coverage of held-out times"]["met"] is False  # 100% is above the 75-85% goal


# -- the CPU pipeline: sample, run, intervals, report -----------------------------------------------


def test_cpu_sample_run_and_report(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    from aqua_model.commands.validate_cmd import main

    prof, ins, cases, held = (tmp_path / n for n in ("cpu.toml", "ins.jsonl", "cases.jsonl", "held.jsonl"))
    assert main(["calibrate", "--out", str(prof), "--device", "cpu", "--quick"]) == 0
    assert load(prof).terms.graph_timing and load(prof).terms.streams
    timing = ["--rep-ms", "1", "--warmup-ms", "0.5", "--no-progress"]
    assert (
        main(["run", "--profile", str(prof), "--out", str(ins), "--device", "cpu", "--grid", "cpu", *timing])
        == 0
    )
    assert main(["intervals", "--profile", str(prof), "--results", str(ins), "--out", str(prof)]) == 0
    assert load(prof).terms.intervals
    assert main(["sample", "--seed", "5", "--n", "12", "--out", str(cases), "--scale", "cpu"]) == 0
    meta = json.loads(cases.read_text().splitlines()[0])
    assert meta["seed"] == 5 and meta["model_sha256"] == sampling.model_fingerprint()
    assert (
        main(
            [
                "run",
                "--profile",
                str(prof),
                "--cases",
                str(cases),
                "--out",
                str(held),
                "--device",
                "cpu",
                *timing,
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in held.read_text().splitlines()]
    assert len(rows) == meta["cases"] and all(r["status"] == "ok" for r in rows)
    assert all(
        r["heldout_seed"] == 5 and r["case_source"] == "heldout" and r["model_sha256"] == meta["model_sha256"]
        for r in rows
    )
    md, status = tmp_path / "h.md", tmp_path / "s.toml"
    capsys.readouterr()
    assert (
        main(
            [
                "report",
                str(ins),
                "--heldout",
                str(held),
                "--heldout-markdown",
                str(md),
                "--status-out",
                str(status),
                "--no-cases",
            ]
        )
        == 0
    )
    text = md.read_text()
    assert "| plan | in-sample median |" in text and "## The issue's targets" in text and status.is_file()
    # a changed model is refused
    monkeypatch.setattr(sampling, "model_fingerprint", lambda root=None: "0" * 64)
    assert (
        main(
            [
                "run",
                "--profile",
                str(prof),
                "--cases",
                str(cases),
                "--out",
                str(tmp_path / "x.jsonl"),
                "--device",
                "cpu",
                *timing,
            ]
        )
        == 2
    )
    assert "model changed since the cases were drawn" in capsys.readouterr().err
