"""Fused decode kernels: the fallback on CPU, and the Triton kernels on a GPU (marked ``gpu``).

GPU checks compare bf16 kernels with the reference computed in float32 on the same (upcast)
inputs: ||out - ref|| / ||ref|| <= 1e-2, no NaN, and every output element written (the output
and the split workspace are poisoned with NaN before each run).
"""

from __future__ import annotations

import os

import pytest
import torch

from aqua_model.kernels import reference as ref
from aqua_model.kernels import triton_decode as td

GPU = torch.cuda.is_available() and td.HAS_TRITON
INTERPRETER = td.HAS_TRITON and os.environ.get("TRITON_INTERPRET") == "1"


def _inputs(seed, *, B, hq, hkv, N, d, m=None, dtype=torch.float32, device="cpu"):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)

    return rnd(B, hq, d), rnd(B, hkv, m or d, N), rnd(B, hkv, N, d)


def _rel(out: torch.Tensor, want: torch.Tensor) -> float:
    return ((out.double() - want.double()).norm() / want.double().norm()).item()


def _aqua_ref(q, kT, v, *, k_keep, selection):
    o = ref.aqua_attention_rotated(
        q.float()[:, :, None], kT.float().transpose(-1, -2), v.float(), k_keep=k_keep, selection=selection
    )
    return o[:, :, 0]


# ---------------------------------------------------------------- CPU: fallback and errors


def test_fallback_on_cpu_equals_reference() -> None:
    if td.triton_available(torch.device("cpu")):
        pytest.skip("the Triton interpreter is active: the fallback path is not taken")
    q, kT, v = _inputs(0, B=2, hq=4, hkv=2, N=50, d=16, m=12)
    for selection in ("per-head", "group"):
        got = td.aqua_decode(q, kT, v, k_keep=5, selection=selection)
        torch.testing.assert_close(got, _aqua_ref(q, kT, v, k_keep=5, selection=selection))
    k = kT.transpose(-1, -2)[..., :12]
    q12 = q[..., :12]
    torch.testing.assert_close(td.dense_decode(q12, k.contiguous(), v), ref.dense_attention(q12[:, :, None], k, v)[:, :, 0])


def test_fallback_rotates_by_P_and_keeps_4d_shape() -> None:
    if td.triton_available(torch.device("cpu")):
        pytest.skip("the Triton interpreter is active")
    g = torch.Generator().manual_seed(1)
    B, hq, hkv, N, d = 1, 4, 2, 20, 8
    q, k, v = torch.randn(B, hq, 1, d, generator=g), torch.randn(B, hkv, N, d, generator=g), torch.randn(B, hkv, N, d, generator=g)
    P = torch.linalg.qr(torch.randn(hkv, d, d, generator=g)).Q
    cache = ref.ProjectedKVCache(P)
    cache.append(k, v)
    got = td.aqua_decode(q, cache.keys_dim_major(), cache.values, P, k_keep=3)
    assert got.shape == (B, hq, 1, d)
    torch.testing.assert_close(got, cache.decode_step(q, k_keep=3))


def test_split_plan_covers_the_context_without_empty_splits() -> None:
    for N in (1, 63, 64, 65, 1000, 4096, 65536):
        for programs in (1, 64, 256, 4096):
            cfg = td.DecodeConfig(block_n=64, programs_per_sm=8)
            splits, chunk = td.plan_splits(programs=programs, context=N, config=cfg, device=torch.device("cpu"))
            assert chunk % 64 == 0 and splits >= 1
            assert (splits - 1) * chunk < N <= splits * chunk


def test_bad_arguments() -> None:
    q, kT, v = _inputs(2, B=1, hq=4, hkv=2, N=10, d=8)
    with pytest.raises(ValueError, match="k_keep must be <= 8"):
        td.aqua_decode(q, kT, v, k_keep=9)
    with pytest.raises(ValueError, match="selection must be one of"):
        td.aqua_decode(q, kT, v, k_keep=2, selection="all")
    with pytest.raises(ValueError, match="select_in must be one of"):
        td.aqua_decode(q, kT, v, k_keep=2, select_in="cpu")
    with pytest.raises(ValueError, match="one query per head"):
        td.aqua_decode(q[:, :, None].expand(1, 4, 2, 8), kT, v, k_keep=2)
    with pytest.raises(ValueError, match="multiple of H_kv"):
        td.aqua_decode(q[:, :3], kT, v, k_keep=2)
    with pytest.raises(ValueError, match="v must be"):
        td.aqua_decode(q, kT, v[:, :, :5], k_keep=2)
    with pytest.raises(TypeError, match="k_dimmajor must be a floating"):
        td.aqua_decode(q, kT.long(), v, k_keep=2)
    with pytest.raises(ValueError, match="key_layout must be one of"):
        td.dense_decode(q, kT, v, key_layout="paged")


# ---------------------------------------------------------------- Triton interpreter (local, optional)


@pytest.mark.skipif(not INTERPRETER, reason="needs triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize(
    "selection,select_in", [("per-head", "kernel"), ("group", "kernel"), ("per-head", "torch"), ("group", "prepass")]
)
def test_interpreter_matches_reference(selection: str, select_in: str) -> None:
    q, kT, v = _inputs(3, B=2, hq=4, hkv=2, N=150, d=32, m=24)
    out = torch.full((2, 4, 32), float("nan"))
    cfg = td.DecodeConfig(block_n=32, num_splits=3)
    got = td.aqua_decode(q, kT, v, k_keep=10, selection=selection, select_in=select_in, out=out, poison_workspace=True, config=cfg)
    assert not torch.isnan(got).any()
    assert _rel(got, _aqua_ref(q, kT, v, k_keep=10, selection=selection)) < 1e-5


# ---------------------------------------------------------------- GPU


GPU_CASES = [
    # B, hq, hkv, N, d, m, k_keep
    (2, 8, 8, 4096, 128, 128, 32),
    (2, 8, 2, 3000, 128, 128, 96),  # GQA, N not a multiple of the block
    (1, 4, 1, 777, 64, 64, 20),  # k not a power of two
    (2, 4, 2, 1500, 128, 80, 48),  # truncated cache, m = 80 stored dims
    (1, 2, 2, 1, 128, 128, 128),  # one key, k = d
]


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
@pytest.mark.parametrize("B,hq,hkv,N,d,m,k_keep", GPU_CASES)
@pytest.mark.parametrize("selection", ["per-head", "group"])
@pytest.mark.parametrize("select_in", ["kernel", "prepass", "torch"])
def test_gpu_aqua_bf16_matches_fp32_reference(B, hq, hkv, N, d, m, k_keep, selection, select_in) -> None:
    q, kT, v = _inputs(4 + N, B=B, hq=hq, hkv=hkv, N=N, d=d, m=m, dtype=torch.bfloat16, device="cuda")
    out = torch.full((B, hq, d), float("nan"), dtype=torch.bfloat16, device="cuda")
    got = td.aqua_decode(
        q, kT, v, k_keep=k_keep, selection=selection, select_in=select_in, out=out, poison_workspace=True,
        config=td.DecodeConfig(block_n=64, programs_per_sm=8),
    )
    torch.cuda.synchronize()
    assert not torch.isnan(got).any(), "unwritten or NaN output"
    assert _rel(got, _aqua_ref(q, kT, v, k_keep=k_keep, selection=selection)) <= 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
@pytest.mark.parametrize("B,hq,hkv,N,d", [(2, 8, 8, 4096, 128), (2, 8, 2, 3001, 128), (1, 4, 4, 33, 64)])
@pytest.mark.parametrize("key_layout", ["token-major", "dim-major"])
def test_gpu_dense_bf16_matches_fp32_reference(B, hq, hkv, N, d, key_layout) -> None:
    q, kT, v = _inputs(5 + N, B=B, hq=hq, hkv=hkv, N=N, d=d, dtype=torch.bfloat16, device="cuda")
    k_tok = kT.transpose(-1, -2).contiguous()
    k_in = k_tok if key_layout == "token-major" else kT
    out = torch.full((B, hq, d), float("nan"), dtype=torch.bfloat16, device="cuda")
    got = td.dense_decode(q, k_in, v, key_layout=key_layout, out=out, poison_workspace=True)
    torch.cuda.synchronize()
    want = ref.dense_attention(q.float()[:, :, None], k_tok.float(), v.float())[:, :, 0]
    assert not torch.isnan(got).any()
    assert _rel(got, want) <= 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
@pytest.mark.parametrize("B,hq,hkv,N,d,k_keep", [(2, 8, 8, 4096, 128, 32), (2, 8, 2, 3000, 128, 96)])
@pytest.mark.parametrize("selection", ["per-head", "group"])
def test_gpu_aqua_reads_a_token_major_view(B, hq, hkv, N, d, k_keep, selection) -> None:
    q, kT, v = _inputs(6 + N, B=B, hq=hq, hkv=hkv, N=N, d=d, dtype=torch.bfloat16, device="cuda")
    k_view = kT.transpose(-1, -2).contiguous().transpose(-1, -2)  # token-major storage, [B, H, d, N] view
    assert k_view.stride(-2) == 1
    out = torch.full((B, hq, d), float("nan"), dtype=torch.bfloat16, device="cuda")
    got = td.aqua_decode(q, k_view, v, k_keep=k_keep, selection=selection, out=out, poison_workspace=True)
    torch.cuda.synchronize()
    assert not torch.isnan(got).any(), "unwritten or NaN output"
    assert _rel(got, _aqua_ref(q, kT, v, k_keep=k_keep, selection=selection)) <= 1e-2


def test_keys_must_be_contiguous_along_one_axis() -> None:
    q, kT, v = _inputs(9, B=1, hq=2, hkv=2, N=64, d=32)
    strided = kT[:, :, :, ::2]  # neither axis contiguous
    with pytest.raises(ValueError, match="contiguous along N"):
        td.aqua_decode(q, strided, v[:, :, ::2], k_keep=8)
