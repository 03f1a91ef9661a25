"""Fused AQUA prefill with tile-shared selection: the torch references (always), the Triton kernel
under Triton's interpreter (when triton is installed and TRITON_INTERPRET=1) and on a GPU
(marked ``gpu``, skipped without CUDA).

Tolerances: float32 through the interpreter matches the float32 reference to <= 1e-5 (max
abs); float16 in the interpreter and bf16 on a GPU to a relative Frobenius error <= 1e-2
(operands rounded to 11 / 8 significant bits, products accumulated in fp32; errors of a few 1e-3
are expected). The interpreter has no bf16 (numpy has none), so bf16 is checked on the GPU only.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from aqua_model.kernels import reference as ref, triton_prefill as tp

GPU = torch.cuda.is_available() and tp.HAS_TRITON
INTERPRETER = tp.HAS_TRITON and os.environ.get("TRITON_INTERPRET") == "1"
FP32_TOL = 1e-5
LOW_PRECISION_TOL = 1e-2


def _inputs(seed, *, B, hq, hkv, T, N=None, d, dv=None, dtype=torch.float32, device="cpu"):
    g = torch.Generator(device="cpu").manual_seed(seed)
    N = T if N is None else N

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)

    return rnd(B, hq, T, d), rnd(B, hkv, N, d), rnd(B, hkv, N, dv or d)


def _rel(out: torch.Tensor, want: torch.Tensor) -> float:
    return ((out.double() - want.double()).norm() / want.double().norm()).item()


# ---------------------------------------------------------------- references (any machine)


def test_tile_indices_are_the_top_k_of_the_summed_magnitudes_by_brute_force() -> None:
    q, _, _ = _inputs(1, B=1, hq=2, hkv=1, T=11, d=8)
    idx = tp.tile_indices(q, k_keep=3, block_m=4)  # tiles of rows 0-3, 4-7, 8-10
    assert idx.shape == (1, 2, 3, 3)
    for h, t in itertools.product(range(2), range(3)):
        rows = range(4 * t, min(11, 4 * t + 4))
        sums = [sum(abs(float(q[0, h, r, j])) for r in rows) for j in range(8)]
        best = sorted(sorted(range(8), key=lambda j: -sums[j])[:3])
        assert idx[0, h, t].tolist() == best


def test_tile_keep_mask_is_shared_by_the_rows_of_a_tile_and_keeps_k_dims() -> None:
    q, _, _ = _inputs(2, B=2, hq=3, hkv=1, T=37, d=16)
    keep = tp.tile_keep_mask(q, k_keep=5, block_m=8)
    assert keep.shape == q.shape and keep.dtype == torch.bool
    assert bool((keep.sum(-1) == 5).all())
    for t0 in range(0, 37, 8):
        tile = keep[:, :, t0 : t0 + 8]
        assert bool((tile == tile[:, :, :1]).all())
    # with one query per tile it is per-query selection: the reference's own top-k
    per_query = ref.select_dims(q, k_keep=5, selection="per-head", g=1)
    want = torch.zeros_like(keep).scatter_(-1, per_query, True)
    assert torch.equal(tp.tile_keep_mask(q, k_keep=5, block_m=1), want)


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2)])
def test_reference_at_one_query_per_tile_is_per_query_aqua(hq, hkv) -> None:
    q, k, v = _inputs(3, B=2, hq=hq, hkv=hkv, T=19, N=23, d=16)
    got = tp.aqua_prefill_reference(q, k, v, k_keep=6, block_m=1)
    want = ref.aqua_attention_rotated(q, k, v, k_keep=6, selection="per-head")
    assert (got - want).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("block_m", [1, 16, 64])
def test_reference_at_k_equal_d_is_dense_attention(block_m) -> None:
    q, k, v = _inputs(4, B=1, hq=4, hkv=2, T=40, d=16)
    got = tp.aqua_prefill_reference(q, k, v, k_keep=16, block_m=block_m)
    assert (got - ref.dense_attention(q, k, v)).abs().max().item() <= FP32_TOL


def test_tile_sharing_changes_the_output_below_k_equal_d() -> None:
    # the rule matters: with k < d, tiles of 16 select other dims than single queries do
    q, k, v = _inputs(5, B=1, hq=2, hkv=2, T=32, d=16)
    per_query = tp.aqua_prefill_reference(q, k, v, k_keep=8, block_m=1)
    tiled = tp.aqua_prefill_reference(q, k, v, k_keep=8, block_m=16)
    assert (per_query - tiled).abs().max().item() > 1e-2


def test_given_indices_override_the_selection() -> None:
    q, k, v = _inputs(6, B=1, hq=1, hkv=1, T=8, d=16)
    idx = torch.tensor([[[[0, 1, 2, -1]]]])  # one tile of 8, slots 0..2 used, the last unused
    got = tp.aqua_prefill_reference(q, k, v, k_keep=3, block_m=8, indices=idx)
    q_sel = torch.zeros_like(q)
    q_sel[..., :3] = q[..., :3]
    want = ref.dense_attention(q_sel, k, v, scale=16**-0.5)
    assert (got - want).abs().max().item() <= FP32_TOL


def test_slot_parts_split_k_into_power_of_two_parts_and_stop_at_d() -> None:
    assert tp.slot_parts(k_keep=96, d=128) == (64, 32, 0)
    assert tp.slot_parts(k_keep=32, d=128) == (32, 0, 0)
    assert tp.slot_parts(k_keep=112, d=128) == (64, 32, 16)
    assert tp.slot_parts(k_keep=128, d=128) == (128, 0, 0)
    assert tp.slot_parts(k_keep=120, d=128) == (128, 0, 0)  # 120 rounds up to 128 = d: no gather
    assert tp.slot_parts(k_keep=40, d=64) == (32, 16, 0)
    for d in (64, 128):
        for k in range(1, d + 1):
            parts = tp.slot_parts(k_keep=k, d=d)
            assert k <= sum(parts) <= d and all(p == 0 or p >= 16 for p in parts)


@pytest.mark.skipif(INTERPRETER, reason="the Triton interpreter is active: the fallback path is not taken")
def test_fallback_without_a_gpu_is_the_tile_reference() -> None:
    q, k, v = _inputs(7, B=1, hq=4, hkv=2, T=50, d=64)
    cfg = tp.PrefillConfig(block_m=16, block_n=16)
    out, idx = tp.aqua_prefill(q, k.transpose(-1, -2), v, k_keep=24, config=cfg, return_indices=True)
    assert idx.shape == (1, 4, 4, 32) and bool((idx[..., 24:] == -1).all())
    assert torch.equal(idx[..., :24].long(), tp.tile_indices(q, k_keep=24, block_m=16))
    want = tp.aqua_prefill_reference(q, k, v, k_keep=24, block_m=16)
    assert (out - want).abs().max().item() <= FP32_TOL
    dense, none = tp.aqua_prefill(q, k.transpose(-1, -2), v, k_keep=64, return_indices=True)
    assert none is None and (dense - ref.dense_attention(q, k, v)).abs().max().item() <= FP32_TOL


def test_bad_arguments_name_themselves() -> None:
    q, k, v = _inputs(8, B=1, hq=2, hkv=1, T=16, d=64)
    kt = k.transpose(-1, -2)
    with pytest.raises(ValueError, match="k_keep"):
        tp.aqua_prefill(q, kt, v, k_keep=65)
    with pytest.raises(ValueError, match="k_hat_t must be dim-major"):
        tp.aqua_prefill(q, k, v, k_keep=8)
    with pytest.raises(ValueError, match="block_m must be one of"):
        tp.PrefillConfig(block_m=48)
    with pytest.raises(ValueError, match="block_n"):
        tp.PrefillConfig(block_m=16, block_n=32)
    with pytest.raises(TypeError, match="config"):
        tp.aqua_prefill(q, kt, v, k_keep=8, config=16)
    q48, k48, v48 = _inputs(8, B=1, hq=2, hkv=1, T=16, d=48)
    with pytest.raises(ValueError, match="d must be a power of two"):
        tp.aqua_prefill(q48, k48.transpose(-1, -2), v48, k_keep=8)
    with pytest.raises(ValueError, match="H_q must be a multiple of H_kv"):
        tp.aqua_prefill(q, kt.expand(1, 3, 64, 16), v.expand(1, 3, 16, 64), k_keep=8)
    with pytest.raises(ValueError, match="block_m must be >= 1"):
        tp.tile_indices(q, k_keep=4, block_m=0)


# ---------------------------------------------------------------- Triton interpreter (local, optional)


def _check_indices(q, idx, *, k_keep, block_m) -> None:
    """The kernel's kept dims are a top-k of the tile sums: every kept sum >= every dropped one
    (up to fp32 summation order), ascending, -1 in the unused slots."""
    T, d = q.shape[2], q.shape[3]
    tiles = -(-T // block_m)
    mag = (
        torch.nn.functional.pad(q.abs().double(), (0, 0, 0, tiles * block_m - T))
        .reshape(*q.shape[:2], tiles, block_m, d)
        .sum(3)
    )
    used = idx[..., :k_keep].long()
    assert bool((idx[..., k_keep:] == -1).all())
    assert bool((used[..., 1:] > used[..., :-1]).all())
    kept = torch.zeros_like(mag, dtype=torch.bool).scatter_(-1, used, True)
    low_kept = mag.masked_fill(~kept, float("inf")).min(-1).values
    high_dropped = mag.masked_fill(kept, float("-inf")).max(-1).values
    assert bool((low_kept >= high_dropped - 1e-5 * mag.max()).all())


CASES = [  # B, hq, hkv, T, N, d, k_keep, block_m, block_n, causal
    (1, 2, 1, 40, 40, 32, 16, 16, 16, True),
    (1, 2, 2, 64, 80, 64, 48, 32, 16, True),  # 48 = 32 + 16; N > T: chunked prefill after 16 cached keys
    (2, 4, 2, 33, 33, 64, 24, 16, 16, True),  # 24 -> 32 slots, 8 padded
    (1, 2, 1, 70, 70, 64, 56, 32, 16, True),  # 56 rounds up to 64 = d slots: 8 zero, still selected
    (1, 1, 1, 50, 50, 64, 40, 16, 16, False),
    (1, 6, 2, 4, 4, 64, 24, 16, 16, True),  # g = 3, fewer queries than one tile
    (1, 2, 1, 3, 20, 16, 9, 16, 16, True),  # 3 queries after 17 cached keys, d = 16
]


@pytest.mark.skipif(not INTERPRETER, reason="needs triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("B,hq,hkv,T,N,d,k_keep,block_m,block_n,causal", CASES)
def test_interpreter_matches_the_tile_reference(
    B, hq, hkv, T, N, d, k_keep, block_m, block_n, causal
) -> None:
    q, k, v = _inputs(10 + T, B=B, hq=hq, hkv=hkv, T=T, N=N, d=d)
    cfg = tp.PrefillConfig(block_m=block_m, block_n=block_n, num_warps=4, num_stages=1)
    out = torch.full((B, hq, T, d), float("nan"))
    got, idx = tp.aqua_prefill(
        q,
        k.transpose(-1, -2).contiguous(),
        v,
        k_keep=k_keep,
        causal=causal,
        config=cfg,
        out=out,
        return_indices=True,
    )
    assert got is out and not bool(torch.isnan(out).any())
    _check_indices(q, idx, k_keep=k_keep, block_m=block_m)
    want = tp.aqua_prefill_reference(q, k, v, k_keep=k_keep, block_m=block_m, causal=causal, indices=idx)
    assert (got - want).abs().max().item() <= FP32_TOL


@pytest.mark.skipif(not INTERPRETER, reason="needs triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("key_layout", ["dim-major", "token-major view"])
def test_interpreter_dense_control_and_token_major_keys(key_layout) -> None:
    q, k, v = _inputs(21, B=1, hq=4, hkv=2, T=45, d=32)
    kt = k.transpose(-1, -2).contiguous() if key_layout == "dim-major" else k.transpose(-1, -2)
    cfg = tp.PrefillConfig(block_m=16, block_n=16, num_warps=4, num_stages=1)
    dense = tp.aqua_prefill(q, kt, v, k_keep=32, config=cfg)
    assert (dense - ref.dense_attention(q, k, v)).abs().max().item() <= FP32_TOL
    aqua, idx = tp.aqua_prefill(q, kt, v, k_keep=16, config=cfg, return_indices=True)
    want = tp.aqua_prefill_reference(q, k, v, k_keep=16, block_m=16, indices=idx)
    assert (aqua - want).abs().max().item() <= FP32_TOL


@pytest.mark.skipif(not INTERPRETER, reason="needs triton and TRITON_INTERPRET=1")
def test_interpreter_value_dim_differs_from_the_key_dim() -> None:
    q, k, v = _inputs(23, B=1, hq=2, hkv=1, T=66, d=64, dv=32)
    cfg = tp.PrefillConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)
    got, idx = tp.aqua_prefill(
        q, k.transpose(-1, -2).contiguous(), v, k_keep=27, config=cfg, return_indices=True
    )
    assert got.shape == (1, 2, 66, 32)
    want = tp.aqua_prefill_reference(q, k, v, k_keep=27, block_m=32, indices=idx)
    assert (got - want).abs().max().item() <= FP32_TOL


@pytest.mark.skipif(not INTERPRETER, reason="needs triton and TRITON_INTERPRET=1")
def test_interpreter_half_precision() -> None:
    q, k, v = _inputs(22, B=1, hq=2, hkv=1, T=48, d=64, dtype=torch.float16)
    cfg = tp.PrefillConfig(block_m=16, block_n=16, num_warps=4, num_stages=1)
    got, idx = tp.aqua_prefill(
        q, k.transpose(-1, -2).contiguous(), v, k_keep=32, config=cfg, return_indices=True
    )
    assert got.dtype == torch.float16
    want = tp.aqua_prefill_reference(q.float(), k.float(), v.float(), k_keep=32, block_m=16, indices=idx)
    assert _rel(got, want) <= LOW_PRECISION_TOL


# ---------------------------------------------------------------- GPU (bf16)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
@pytest.mark.parametrize("d,hq,hkv", [(128, 8, 8), (128, 8, 2), (64, 6, 2)])
@pytest.mark.parametrize("k_keep", [32, 64, 96, 128])
@pytest.mark.parametrize("block_m", [64, 128])
def test_gpu_bf16_matches_the_reference(d, hq, hkv, k_keep, block_m) -> None:
    if k_keep > d:
        pytest.skip("k_keep > d")
    T = 1000  # ragged: not a multiple of any tile
    q, k, v = _inputs(31 + k_keep, B=2, hq=hq, hkv=hkv, T=T, d=d, dtype=torch.bfloat16, device="cuda")
    cfg = tp.default_config(d=d, block_m=block_m)
    out = torch.full((2, hq, T, d), float("nan"), dtype=torch.bfloat16, device="cuda")
    got, idx = tp.aqua_prefill(
        q, k.transpose(-1, -2).contiguous(), v, k_keep=k_keep, config=cfg, out=out, return_indices=True
    )
    torch.cuda.synchronize()
    assert not bool(torch.isnan(got).any())
    if k_keep < d:
        _check_indices(q.float(), idx, k_keep=k_keep, block_m=block_m)
    want = tp.aqua_prefill_reference(
        q.float(), k.float(), v.float(), k_keep=k_keep, block_m=block_m, indices=idx
    )
    assert _rel(got, want) <= LOW_PRECISION_TOL
    if k_keep == d:
        sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hq != hkv)
        assert _rel(got, sdpa.float()) <= LOW_PRECISION_TOL


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
def test_gpu_launches_what_its_plan_says() -> None:
    # the plan aqua-tile-fused lists one kernel; the validation workloads cannot build this call
    # yet (they select per KV group), so the launch count is checked here with the same profiler
    import re

    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from aqua_model.plans import build_plan

    plan = build_plan("aqua-tile-fused", phase="prefill")
    q, k, v = _inputs(41, B=1, hq=32, hkv=8, T=256, d=128, dtype=torch.bfloat16, device="cuda")
    kt = k.transpose(-1, -2).contiguous()
    for _ in range(3):
        tp.aqua_prefill(q, kt, v, k_keep=32)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        tp.aqua_prefill(q, kt, v, k_keep=32)
        torch.cuda.synchronize()
    names = [
        e.name
        for e in prof.events()
        if getattr(e, "device_type", None) == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))
    ]
    assert len(names) == plan.launches == 1, names
    assert all(re.search(p, n) for p, n in zip(plan.launch_names(), names)), names
