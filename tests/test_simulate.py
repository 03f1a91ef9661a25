"""Roofline simulator: golden values with derivations, brute-force byte counts, ceilings."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from aqua_model.costs.numeric import evaluate
from aqua_model.hardware import load
from aqua_model.plans import build_plan, plan_names
from aqua_model.simulator import end_to_end, predict, simulate, speedup, time_breakeven

H200 = load("h200")
BF16 = 2
IDX = 8  # int64 top-k index
IDX32 = 4  # int32 index written by the Triton selection pre-pass


def test_dense_fused_golden_value():
    # B=8, H_q=H_kv=32, d=128, N=65536, bf16: K and V are 2*N*d*2 bytes per KV head,
    # times 256 KV heads = 8,589,934,592 B, plus q read (256*128*2 = 65,536 B) by cuDNN's flash
    # kernel; its split-KV reduction writes o (65,536 B). Memory-bound at 4.8 TB/s x 0.90 (the
    # H200 file's contiguous efficiency): 1.98844 ms, plus one 4 us launch (the reduction's
    # launch hides behind the flash kernel's work) = 1.99244 ms per layer.
    p = predict(
        plan="dense-fused",
        phase="decode",
        context=65536,
        batch=8,
        heads_q=32,
        heads_kv=32,
        d=128,
        k=128,
        gpu=H200,
    )
    assert p.kernels[0]["bytes"] == 8_589_934_592 + 65_536 and p.kernels[1]["bytes"] == 65_536
    assert p.total_s == pytest.approx((8_589_934_592 + 131_072) / (4.8e12 * 0.90) + 4e-6, rel=1e-12)
    assert p.kernels[0]["bound"] == "memory" and p.mode == "datasheet"


def test_aqua_fused_golden_speedup_at_k32():
    # Same shape, k=32: the fused kernel reads 32 of 128 key rows and all of V: (32+128)/256
    # of the dense bytes, so the attention kernel is 1.6x faster before the small selection
    # pre-pass (aqua-fused, one 4 us launch) or the step's prologue (aqua-step-topk: q_proj,
    # k_proj, topk, each about one 4 us launch); predicted speedup just under 1.6, the step's lower.
    s = simulate(gpu=H200, heads_q=32, heads_kv=32, d=128, context=65536, batch=8, k=32)
    step = simulate(
        gpu=H200, heads_q=32, heads_kv=32, d=128, context=65536, batch=8, k=32, plan="aqua-step-topk"
    )
    assert float(s.ceiling) == pytest.approx(1.6)
    assert 1.55 < float(step.speedup) < float(s.speedup) < 1.6


SMALL = {"B": 2, "H_q": 4, "H_kv": 2, "g": 2, "N": 24, "T": 5, "d": 16, "k": 4, "s": 2, "S": 32}


def nbytes(*shapes, itemsize=BF16):
    return sum(int(np.prod(shape)) * itemsize for shape in shapes)


def brute_force_decode_bytes(plan):
    """Tensors each kernel reads and writes, as an implementation would allocate them."""
    B, Hq, Hkv, N, d, k = (SMALL[x] for x in ("B", "H_q", "H_kv", "N", "d", "k"))
    q = (B, Hq, d)
    P = (Hkv, d, d)
    KV = (B, Hkv, N, d)
    scores = (B, Hq, N)
    if plan == "dense-fused":  # cuDNN's flash kernel reads q, K and V; its reduction writes o
        return {"attention": nbytes(q, KV, KV), "reduce": nbytes(q)}
    if plan == "dense-eager":
        return {
            "scores": nbytes(q, KV, scores),
            "softmax": nbytes(scores, scores),
            "value": nbytes(scores, KV, q),
        }
    prologue = {
        "q_proj": nbytes(q, P, q),
        "k_proj": nbytes((B, Hkv, d), P, (B, Hkv, d)),
        "topk": nbytes(q, (B, Hq, k)) + nbytes((B, Hq, k), itemsize=IDX),
    }
    if plan == "aqua-eager":  # the gather's second launch reads the indices and q^'s kept dims, writes them
        gathered = (B, Hq, N, k)
        return {
            **prologue,
            "gather": nbytes(gathered, gathered)
            + nbytes((B, Hq, k), itemsize=IDX)
            + nbytes((B, Hq, k), (B, Hq, k)),
            "scores": nbytes(q, gathered, scores),
            "softmax": nbytes(scores, scores),
            "value": nbytes(scores, KV, q),
        }
    # the Triton decode is one launch (issue 22): q^ read, the selection inside each program (no
    # index or q^ copy written), K^'s kept rows and V, the output written
    g = Hq // Hkv
    rows = nbytes((B, Hkv, k), itemsize=IDX32) + nbytes((B, Hkv, g, k))
    if plan == "aqua-step-topk":  # group selection: k rows of K^T per KV head, all of V
        # given indices run the three-launch path: the selection inside aqua_decode also writes and
        # reads a float copy of |q^| (4 + 4 bytes per element) and writes the int32 indices of the
        # groups, which the prologue reads with q^; it writes the kept rows and q^ on them (rows)
        given = nbytes((B, Hkv, k), itemsize=IDX32)
        topk = prologue["topk"] + nbytes(q, itemsize=8) + given
        return {
            **prologue,
            "topk": topk,
            "select": nbytes(q) + given + rows,
            "attention": nbytes((B, Hkv, k, N), KV) + rows,
            "combine": nbytes(q),
        }
    if plan in ("aqua-fused", "aqua-fused-exact"):  # q^ given; one launch selects, streams and merges
        return {"attention": nbytes(q) + nbytes((B, Hkv, k, N), KV) + nbytes(q)}
    if plan == "aqua-fused-3launch":  # the prologue writes the kept rows and q^ on them, read back
        return {
            "select": nbytes(q) + rows,
            "attention": nbytes((B, Hkv, k, N), KV) + rows,
            "combine": nbytes(q),
        }
    raise AssertionError(plan)


@pytest.mark.parametrize(
    "plan",
    [
        "dense-fused",
        "dense-eager",
        "aqua-eager",
        "aqua-fused",
        "aqua-fused-exact",
        "aqua-step-topk",
        "aqua-fused-3launch",
    ],
)
def test_kernel_bytes_equal_brute_force_tensor_counts(plan):
    expected = brute_force_decode_bytes(plan)
    got = {kern.name: evaluate(kern.bytes, SMALL) for kern in build_plan(plan).kernels}
    assert got == expected


def test_token_major_bytes_count_whole_sectors():
    # d=16 bf16 is one 32-byte sector per token row: any selected channel reads the whole row.
    B, Hq, Hkv, N, d, k = (SMALL[x] for x in ("B", "H_q", "H_kv", "N", "d", "k"))
    rows = nbytes((B, Hkv, N, d), (B, Hkv, N, d))
    io = nbytes((B, Hq, d), (B, Hq, d))  # the one launch reads q^ and writes the output
    # the step's given indices run the three-launch path: its split pass reads the prologue's kept
    # rows (int32) and q^ on them
    kept = nbytes((B, Hkv, k), itemsize=IDX32) + nbytes((B, Hkv, Hq // Hkv, k))
    for name, extra in (("aqua-step-topk-token-major", kept), ("aqua-token-major", io)):
        split = next(kern for kern in build_plan(name).kernels if kern.name == "attention")
        assert evaluate(split.bytes, SMALL) == pytest.approx(rows + extra)


def test_prefill_dense_fused_counts_visible_pairs_and_reads_kv_once():
    T, N, d, B, Hq, Hkv = (SMALL[x] for x in ("T", "N", "d", "B", "H_q", "H_kv"))
    kern = build_plan("dense-fused", phase="prefill").kernels[0]
    pairs = sum(N + i for i in range(1, T + 1))  # query i sees the N cached keys and i new ones
    assert evaluate(kern.flops, SMALL) == B * Hq * pairs * (2 * d + 5 + 2 * d)
    assert evaluate(kern.bytes, SMALL) == nbytes(
        (B, Hkv, N + T, d), (B, Hkv, N + T, d), (B, Hq, T, d), (B, Hq, T, d)
    )


@settings(max_examples=200, deadline=None)
@given(
    ctx=st.integers(1, 1 << 19),
    k=st.integers(1, 128),
    batch=st.integers(1, 4),
    g=st.sampled_from([1, 4, 8]),
    gpu=st.sampled_from(["h200", "h100", "a100", "mi300x", "l40s", "b200"]),
)
def test_fused_decode_speedup_never_exceeds_byte_ceiling(ctx, k, batch, g, gpu):
    # each kernel's time is a fixed launch cost plus its bytes' time, so the ratio of the sums is at
    # most the larger of the two ratios (mediant): the byte ceiling, or SDPA's launches over AQUA's
    # (2 against the one-launch call: it can win by more than bytes at a few tokens)
    s = simulate(gpu=gpu, heads_q=32, heads_kv=32 // g, d=128, context=ctx, batch=batch, k=k)
    launch_ratio = build_plan("dense-fused").launches / build_plan("aqua-fused").launches
    assert float(s.speedup) <= max(float(s.ceiling), launch_ratio) + 1e-12


def test_vectorised_over_context_k_and_batch():
    ctx = np.array([1024, 8192, 65536])[:, None, None]
    k = np.array([32, 96])[None, :, None]
    batch = np.array([1, 8])[None, None, :]
    sp = speedup(gpu="h200", heads_q=32, heads_kv=8, d=128, context=ctx, k=k, batch=batch)
    assert sp.shape == (3, 2, 2)
    one = speedup(gpu="h200", heads_q=32, heads_kv=8, d=128, context=8192, k=96, batch=8)
    assert sp[1, 1, 1] == pytest.approx(float(one))


def test_time_breakeven_is_where_speedup_crosses_one():
    kw = dict(gpu="h200", heads_q=32, heads_kv=8, d=128, batch=8, k=32)
    n = time_breakeven(**kw)
    assert n is not None
    assert float(speedup(context=n, **kw)) > 1
    if n > 1:  # n = 1: the one-launch call wins from the first token
        assert 1 >= float(speedup(context=n - 1, **kw))


def test_eager_aqua_never_beats_dense_fused_in_decode():
    # The gather materialises a [N, k] copy per query head: more bytes than dense reads.
    assert time_breakeven(gpu="h200", heads_q=32, heads_kv=32, d=128, batch=8, k=96, plan="eager") is None


def test_per_head_selection_reads_the_union_of_the_group():
    kw = dict(gpu="h200", heads_q=32, heads_kv=8, d=128, context=32768, batch=8, k=32)
    assert float(speedup(selection="per-head", **kw)) < float(speedup(selection="group", **kw))


def test_end_to_end_is_amdahl():
    e = end_to_end(gpu="h200", model="llama-3.1-8b", context=32768, k=32, batch=8)
    kernel = simulate(gpu="h200", model="llama-3.1-8b", context=32768, k=32, batch=8)
    f = float(e.attention_fraction)
    assert float(e.speedup) == pytest.approx(1 / ((1 - f) + f / float(kernel.speedup)))
    assert 1 < float(e.speedup) < float(kernel.speedup)


def test_sliding_window_caps_attended_context():
    a = simulate(gpu="h200", model="mistral-7b-v0.1", context=4096, k=32, batch=4)
    b = simulate(gpu="h200", model="mistral-7b-v0.1", context=16384, k=32, batch=4)
    assert float(a.dense.time_s) == float(b.dense.time_s)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"gpu": "h300"}, "known devices"),
        ({"model": "llama-9"}, "known models"),
        ({"plan": "flash"}, "plan must be one of"),
        ({"context": 200_000}, "exceeds the maximum context"),
        ({"context": 131072, "batch": 64, "model": "llama-3.1-70b"}, "KV cache needs"),
        ({"k": 129}, "k must be <= 128"),
    ],
)
def test_bad_input_is_reported(kwargs, fragment):
    base = dict(gpu="h200", model="llama-3.1-8b", context=4096, k=32, batch=1)
    with pytest.raises(ValueError, match=fragment):
        simulate(**{**base, **kwargs})


def test_every_plan_builds_for_its_phase():
    for phase in ("decode", "prefill"):
        for name in plan_names(phase):
            assert build_plan(name, phase=phase).kernels


def test_prediction_states_its_mode(tmp_path):
    text = (load("h200").path and open(load("h200").path).read()).replace(
        'mode = "datasheet"', 'mode = "calibrated"'
    )
    text += '\n[calibration]\ndevice = "NVIDIA H200"\ndriver = "test"\ntorch = "test"\ntriton = "test"\ndate = "2026-11-28"\nmethod = "unit test copy of the datasheet file"\nbase = "h200-sxm"\n'
    path = tmp_path / "h200-test.toml"
    path.write_text(text)
    try:
        prof = load(path)
    except ValueError as exc:  # the loader's schema for calibrated files is authoritative
        pytest.skip(f"calibrated schema differs: {exc}")
    assert prof.mode.startswith("calibrated:")
    assert (
        predict(
            plan="dense-fused",
            phase="decode",
            context=4096,
            batch=1,
            heads_q=8,
            heads_kv=8,
            d=128,
            k=128,
            gpu=prof,
        ).mode
        == prof.mode
    )


def test_kernel_table_reports_utilisation():
    s = simulate(gpu=H200, heads_q=32, heads_kv=32, d=128, context=65536, batch=8, k=32)
    attention = s.dense.table()[0]
    # memory-bound at the datasheet profile's 0.90 contiguous efficiency, plus one 4 us launch
    assert attention["bandwidth_utilisation"] == pytest.approx(
        0.90 * (1 - 4e-6 / attention["time_s"]), rel=1e-9
    )
    assert 0 < attention["flops_utilisation"] < attention["bandwidth_utilisation"]


junk = st.one_of(
    st.integers(-3, 200_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-2, 5), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    context=junk,
    k=junk,
    batch=junk,
    d=junk,
    heads_kv=junk,
    plan=st.sampled_from(["fused", "eager", "token-major", "x"]),
    phase=st.sampled_from(["decode", "prefill", "y"]),
)
def test_only_value_or_type_errors_escape_the_simulator(context, k, batch, d, heads_kv, plan, phase):
    try:
        simulate(
            gpu="h200",
            heads_q=32,
            heads_kv=heads_kv,
            d=d,
            context=context,
            k=k,
            batch=batch,
            plan=plan,
            phase=phase,
            prompt=128 if phase == "prefill" else None,
        )
    except (ValueError, TypeError):
        pass
