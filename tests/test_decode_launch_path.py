"""The one-launch decode's host path: every tensor of a call on q's device (the kernel takes
their addresses), later calls launched with integer device addresses straight into Triton's C
entry point, new tensors of a cached signature read at their own addresses, and the L2 prefetch
variants computing exactly what the call without them computes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aqua_model.kernels import reference as ref, triton_decode as td
from aqua_model.kernels.kv_cache import AquaKVCache

GPU = torch.cuda.is_available() and td.HAS_TRITON
BF16_TOL = 1e-2


def test_a_tensor_on_another_device_is_named() -> None:
    cpu = torch.device("cpu")
    td.check_same_device(cpu, k=torch.zeros(1), v=None)  # None is skipped
    with pytest.raises(ValueError, match=r"v is on meta, q on cpu"):
        td.check_same_device(cpu, k=torch.zeros(1), v=torch.empty(1, device="meta"))


def _case(seed: int, B=2, hq=8, hkv=2, N=3000, d=128):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(B, hq, d, generator=g).to("cuda", torch.bfloat16)
    kT = torch.randn(B, hkv, d, N + 16, generator=g).to("cuda", torch.bfloat16)
    v = torch.randn(B, hkv, N + 16, d, generator=g).to("cuda", torch.bfloat16)
    return q, kT, v, N


def _want(q, kT, v, N, k_keep, selection):
    return ref.aqua_attention_rotated(
        q.float().unsqueeze(2),
        kT[..., :N].transpose(-1, -2).float(),
        v[:, :, :N].float(),
        k_keep=k_keep,
        selection=selection,
        causal=True,
    )[:, :, 0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
@pytest.mark.parametrize("selection", ["group", "per-head"])
def test_gpu_cached_calls_launch_by_address_and_read_each_calls_tensors(selection) -> None:
    q, kT, v, N = _case(1)
    first = td.aqua_decode(q, kT, v, k_keep=32, selection=selection, length=N)
    la = td.last_launcher()
    kern = next(iter(la.fused.values()))
    assert kern.ready and kern._raw is not None, "the compiled kernel is launched through its C entry point"
    # new tensors of the same signature: the integer path must take their addresses, not cached ones
    q2, kT2, v2, _ = _case(2)
    out = torch.full((2, 8, 128), float("nan"), dtype=torch.bfloat16, device="cuda")
    second = td.aqua_decode(q2, kT2, v2, k_keep=32, selection=selection, length=N, out=out)
    torch.cuda.synchronize()
    assert td.last_launcher() is la
    assert _rel(first, _want(q, kT, v, N, 32, selection)) <= BF16_TOL
    assert _rel(second, _want(q2, kT2, v2, N, 32, selection)) <= BF16_TOL


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
def test_gpu_a_cpu_tensor_in_a_cached_signature_is_refused() -> None:
    q, kT, v, N = _case(3)
    td.aqua_decode(q, kT, v, k_keep=32, selection="group", length=N)
    with pytest.raises(ValueError, match="v is on cpu"):
        td.aqua_decode(q, kT, v.cpu(), k_keep=32, selection="group", length=N)
    with pytest.raises(ValueError, match="k_dimmajor is on cpu"):
        td.aqua_decode(q, kT.cpu(), v, k_keep=32, selection="group", length=N)
    with pytest.raises(ValueError, match="out is on cpu"):
        td.aqua_decode(
            q, kT, v, k_keep=32, selection="group", length=N, out=torch.empty(2, 8, 128).bfloat16()
        )


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
def test_gpu_the_cache_step_refuses_a_new_key_on_the_cpu() -> None:
    cache = AquaKVCache(batch=1, heads_kv=2, head_dim=64, capacity=128, dtype=torch.bfloat16, device="cuda")
    q = torch.randn(1, 4, 64, device="cuda", dtype=torch.bfloat16)
    kn = torch.randn(1, 2, 64, dtype=torch.bfloat16)
    vn = torch.randn(1, 2, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="k is on cpu"):
        cache.decode_step(q, kn, vn, k_keep=16)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
@pytest.mark.parametrize("selection,N", [("group", 5000), ("per-head", 700), ("group", 63)])
@pytest.mark.parametrize("blocks,keys", [(0, False), (1, False), (4, False), (2, True)])
def test_gpu_prefetches_change_no_bit_of_the_output(selection, N, blocks, keys) -> None:
    q, kT, v, _ = _case(4, N=N)
    rule = td.choose_config(rows=32 if selection == "group" else 128, value_dim=128)
    base = dataclasses.replace(rule, prefetch_value_blocks=0, prefetch_keys=False)
    want = td.aqua_decode(q, kT, v, k_keep=32, selection=selection, length=N, config=base)
    cfg = dataclasses.replace(rule, prefetch_value_blocks=blocks, prefetch_keys=keys)
    got = td.aqua_decode(q, kT, v, k_keep=32, selection=selection, length=N, config=cfg)
    torch.cuda.synchronize()
    assert torch.equal(got, want)
