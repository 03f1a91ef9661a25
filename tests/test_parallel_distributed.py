"""The distributed validation script on the CPU: two gloo processes run a tiny split layer and the
all-reduce sweep, the split layer matches the whole one, the check can fail, and the report
fits and compares. The multi-GPU NCCL run itself needs GPUs (see validation/README.md)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from aqua_model import hardware
from aqua_model._datafiles import read_toml

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover - depends on the torch build
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "validation" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


layer_script = _load("parallel_decode_layer")
report_script = _load("parallel_report")


@pytest.fixture(scope="module")
def gloo_run(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("par") / "t2.jsonl"
    # the spawned processes import the script by its module name; they inherit this sys.path
    folder = str(ROOT / "validation")
    sys.path.insert(0, folder)
    try:
        code = layer_script.main(
            [
                "--spawn",
                "2",
                "--start-method",
                "fork",
                "--backend",
                "gloo",
                "--tiny",
                "--quick",
                "--contexts",
                "64",
                "--batches",
                "1,2",
                "--k",
                "4",
                "--out",
                str(out),
            ]
        )
    finally:
        sys.path.remove(folder)
    assert code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_gloo_run_writes_every_kind_of_row(gloo_run):
    kinds = [r["kind"] for r in gloo_run]
    assert kinds[0] == "env" and gloo_run[0]["world_size"] == 2 and gloo_run[0]["backend"] == "gloo"
    assert gloo_run[0]["multicast_env"] == layer_script.MULTICAST_OFF
    sizes = [r["message_bytes"] for r in gloo_run if r["kind"] == "all_reduce"]
    # 2^10 .. 2^16 in steps of 4x, plus each batch's hidden state (B * 64 * 4 bytes in fp32)
    assert sizes == sorted({1024, 4096, 16384, 65536, 256, 512})
    layers = [r for r in gloo_run if r["kind"] == "layer"]
    assert {(r["plan"], r["batch"]) for r in layers} == {(p, b) for p in layer_script.PLANS for b in (1, 2)}
    for r in layers:
        assert r["layer_median_s"] > 0 and r["attention_s"] > 0 and r["matmuls_s"] > 0
        assert (r["heads_q_per_rank"], r["heads_kv_per_rank"], r["intermediate_per_rank"]) == (2, 1, 64)


def test_split_layer_matches_the_whole_layer(gloo_run):
    checked = [r for r in gloo_run if r["kind"] == "layer" and "correct" in r]
    assert {r["plan"] for r in checked} == set(layer_script.PLANS)
    for r in checked:
        assert r["correct"] is True and r["attention_rel_err"] < 1e-4 and r["mlp_rel_err"] < 1e-4


def _ring_rows(t: int, a0: float, a: float, beta: float) -> list[dict]:
    """All-reduce rows as the ring model gives them (the gloo timings are too noisy to fit)."""
    rows = []
    for m in (2**10, 2**14, 2**18, 2**22):
        s = a0 + 2 * (t - 1) * a + 2 * (t - 1) / t * m / beta
        rows.append(
            {
                "schema_version": 1,
                "kind": "all_reduce",
                "world_size": t,
                "message_bytes": m,
                "median_s": s,
                "q25_s": s,
                "q75_s": s,
                "busbw_bytes_per_s": m / s * 2 * (t - 1) / t,
            }
        )
    return rows


def test_report_fits_and_compares(gloo_run, tmp_path):
    ring = _ring_rows(2, 30e-6, 0.47e-6, 2e9)
    path = tmp_path / "run.jsonl"
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in [r for r in gloo_run if r["kind"] != "all_reduce"] + ring)
    )
    md, toml = tmp_path / "report.md", tmp_path / "fitted.toml"
    assert report_script.main([str(path), "--markdown", str(md), "--interconnect-out", str(toml)]) == 0
    text = md.read_text()
    assert "| dense-fused | 2 | 64 | 1 | 4 |" in text and "| aqua-fused | 2 | 64 | 2 | 4 |" in text
    # one world size: alpha stays at the H200 file's 0.47 us, so alpha_0 = 30 us and beta = 2 GB/s come back
    assert "alpha_0 = 30.00 us, alpha = 0.47 us, beta = 2.0 GB/s" in text
    table = read_toml(toml)["interconnect"]  # a profile's [interconnect] table, ready to paste
    assert table["kind"] == "nvlink" and table["link_bandwidth_bytes_per_s"]["value"] == pytest.approx(2e9)
    # the fitted interconnect predicts one all-reduce of the layer's message (batch 1: 64 fp32 = 256 bytes)
    h200 = hardware.load("h200")
    fit = report_script.fit_ring(
        [(2, r["message_bytes"], r["median_s"]) for r in ring], step_latency_s=0.47e-6
    )
    prof = dataclasses.replace(
        h200, interconnect=report_script.fitted_interconnect(h200.interconnect, fit, "test")
    )
    rows = report_script.read_rows([str(path)])
    (line,) = [
        x
        for x in report_script.layer_table(rows, {"fit": prof})
        if x["batch"] == 1 and x["plan"] == "dense-fused"
    ]
    assert line["fit_all_reduce_us"] == pytest.approx((30e-6 + 2 * 0.47e-6 + 256 / 2e9) * 1e6, rel=1e-6)


# -- pieces that need no second process -----------------------------------------------------------


def test_shards_follow_megatron_and_replicate_kv_beyond_h_kv():
    shape = layer_script.Shape(hidden=64, heads_q=8, heads_kv=2, head_dim=16, intermediate=128)
    split = [layer_script.shard_of(shape, 2, r) for r in range(2)]
    assert [(s.q_heads, s.kv_heads, s.mlp) for s in split] == [
        (range(0, 4), range(0, 1), range(0, 64)),
        (range(4, 8), range(1, 2), range(64, 128)),
    ]
    # t = 4 > H_kv = 2: query heads 2r, 2r+1 read KV head (2r) // g = r // 2, held by two ranks each
    rep = [layer_script.shard_of(shape, 4, r) for r in range(4)]
    assert [s.kv_heads.start for s in rep] == [0, 0, 1, 1] and all(s.heads_kv == 1 for s in rep)
    for s in rep:
        assert {h // (shape.heads_q // shape.heads_kv) for h in s.q_heads} == {s.kv_heads.start}
    with pytest.raises(ValueError, match="must divide"):
        layer_script.shard_of(shape, 3, 0)


@pytest.fixture()
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("plan", layer_script.PLANS)
def test_the_correctness_check_can_fail(one_process_group, plan):
    shape = layer_script.Shape(**layer_script.TINY)
    shard = layer_script.shard_of(shape, 1, 0)
    dev = torch.device("cpu")
    full = layer_script.full_layer(shape, 3, dev)
    w = layer_script.slice_layer(full, shape, shard, torch.float32)
    gen = torch.Generator().manual_seed(1)
    k = torch.randn(1, shape.heads_kv, 32, shape.head_dim, generator=gen)
    v = torch.randn(1, shape.heads_kv, 32, shape.head_dim, generator=gen)
    x = torch.randn(1, shape.hidden, generator=gen)
    cache = layer_script.make_cache(k, v, plan)
    attend = layer_script.attention_fn(plan, 4)
    good = layer_script.check_layer(
        0, 1, shape, shard, full, w, cache, attend, x, k, v, plan, 4, torch.float32, dev
    )
    assert good["correct"] is True
    w.down = w.down * 1.01  # one weight off by 1%: the MLP output is then 1% off
    bad = layer_script.check_layer(
        0, 1, shape, shard, full, w, cache, attend, x, k, v, plan, 4, torch.float32, dev
    )
    assert bad["correct"] is False and bad["mlp_rel_err"] == pytest.approx(0.01, rel=1e-3)


def test_ring_fit_recovers_known_parameters():
    # points drawn from the ring model itself with alpha_0 = 5 us, alpha = 0.6 us, beta = 300 GB/s
    a0, a, beta = 5e-6, 0.6e-6, 300e9
    pts = [
        (t, m, a0 + 2 * (t - 1) * a + 2 * (t - 1) / t * m / beta)
        for t in (2, 4, 8)
        for m in (2.0**10, 2.0**16, 2.0**22, 2.0**26)
    ]
    fit = report_script.fit_ring(pts, step_latency_s=1e-6)
    assert fit.fixed_latency_s == pytest.approx(a0, rel=1e-6) and fit.step_latency_s == pytest.approx(
        a, rel=1e-6
    )
    assert fit.bandwidth_bytes_per_s == pytest.approx(beta, rel=1e-6) and fit.median_abs_rel_err < 1e-9
    # one world size: alpha is the given one and alpha_0 takes up the rest of the constant
    one = report_script.fit_ring([p for p in pts if p[0] == 8], step_latency_s=1e-6)
    assert one.step_latency_s == 1e-6 and one.fixed_latency_s == pytest.approx(a0 + 14 * (a - 1e-6), rel=1e-6)
    assert one.bandwidth_bytes_per_s == pytest.approx(beta, rel=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        report_script.fit_ring(pts[:1], step_latency_s=1e-6)


def test_multicast_switches_are_forced_off_in_the_script():
    for key, value in layer_script.MULTICAST_OFF.items():
        assert os.environ[key] == value
    assert layer_script.MULTICAST_OFF["NCCL_NVLS_ENABLE"] == "0"
