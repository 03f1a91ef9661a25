"""AquaKVCache: paged rotated keys, values, append / attend / decode_step, against the eager
reference cache (``reference.ProjectedKVCache``, which grows by concatenation); the Triton path
on a GPU (marked ``gpu``) and in the interpreter (TRITON_INTERPRET=1) against the same reference.
Tolerances as in tests/test_kernels_triton_decode.py (bf16 1e-2, float32 1e-5 relative)."""

from __future__ import annotations

import os

import pytest
import torch

from aqua_model.kernels import reference as ref, triton_decode as td
from aqua_model.kernels.kv_cache import AquaKVCache, decode_step

GPU = torch.cuda.is_available() and td.HAS_TRITON
INTERPRETER = td.HAS_TRITON and os.environ.get("TRITON_INTERPRET") == "1"


def _rel(out: torch.Tensor, want: torch.Tensor) -> float:
    return ((out.double() - want.double()).norm() / want.double().norm()).item()


def _setup(seed: int, *, B=2, hq=4, hkv=2, d=16, m=None, layers=1, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    P = torch.linalg.qr(torch.randn(layers, hkv, d, d, generator=g)).Q
    cache = AquaKVCache(
        batch=B,
        heads_kv=hkv,
        head_dim=d,
        capacity=100,
        projection=P,
        key_dims=m,
        layers=layers,
        page_tokens=16,
        dtype=dtype,
        device=device,
    )
    refs = [ref.ProjectedKVCache(P[i].to(device), key_dims=m) for i in range(layers)]
    return g, P, cache, refs


def test_append_stores_rotated_keys_dim_major_across_pages() -> None:
    g, P, cache, (rc,) = _setup(0, m=12)
    for t in (5, 20, 1, 14):  # 40 tokens: crosses page boundaries of 16
        k, v = torch.randn(2, 2, t, 16, generator=g), torch.randn(2, 2, t, 16, generator=g)
        cache.append(k, v)
        rc.append(k, v)
    assert cache.length() == 40 == rc.length
    torch.testing.assert_close(cache.keys_dim_major(), rc.keys_dim_major())
    torch.testing.assert_close(cache.cached_values(), rc.values)
    assert cache.capacity == 112  # 100 rounded up to whole pages of 16


@pytest.mark.parametrize("selection", ["per-head", "group"])
def test_attend_and_decode_step_equal_the_reference_cache(selection) -> None:
    g, P, cache, (rc,) = _setup(1, hq=6, hkv=2, m=10)
    k, v = torch.randn(2, 2, 30, 16, generator=g), torch.randn(2, 2, 30, 16, generator=g)
    cache.append(k, v)
    rc.append(k, v)
    q = torch.randn(2, 6, 1, 16, generator=g)
    torch.testing.assert_close(
        cache.attend(q, k_keep=4, selection=selection), rc.decode_step(q, k_keep=4, selection=selection)
    )
    k1, v1 = torch.randn(2, 2, 16, generator=g), torch.randn(2, 2, 16, generator=g)
    got = decode_step(cache, q[:, :, 0], k1, v1, k_keep=4, selection=selection)
    rc.append(k1[:, :, None], v1[:, :, None])
    torch.testing.assert_close(got, rc.decode_step(q, k_keep=4, selection=selection)[:, :, 0])
    assert cache.length() == 31


def test_layers_are_independent() -> None:
    g, P, cache, refs = _setup(2, layers=2)
    for layer in (0, 1):
        k, v = torch.randn(2, 2, 9 + layer, 16, generator=g), torch.randn(2, 2, 9 + layer, 16, generator=g)
        cache.append(k, v, layer=layer)
        refs[layer].append(k, v)
    q = torch.randn(2, 4, 16, generator=g)
    for layer in (0, 1):
        assert cache.length(layer) == 9 + layer
        torch.testing.assert_close(
            cache.attend(q, k_keep=5, layer=layer), refs[layer].decode_step(q[:, :, None], k_keep=5)[:, :, 0]
        )


def test_cache_errors() -> None:
    g, P, cache, _ = _setup(3)
    with pytest.raises(ValueError, match="empty"):
        cache.attend(torch.randn(2, 4, 16), k_keep=3)
    with pytest.raises(ValueError, match="cannot append 200"):
        cache.append(torch.randn(2, 2, 200, 16), torch.randn(2, 2, 200, 16))
    with pytest.raises(ValueError, match="k must be"):
        cache.append(torch.randn(2, 3, 1, 16), torch.randn(2, 3, 1, 16))
    with pytest.raises(ValueError, match="v must be"):
        cache.append(torch.randn(2, 2, 2, 16), torch.randn(2, 2, 3, 16))
    with pytest.raises(ValueError, match="layer must be <= 0"):
        cache.append(torch.randn(2, 2, 1, 16), torch.randn(2, 2, 1, 16), layer=1)
    with pytest.raises(ValueError, match="decode_step appends one token"):
        cache.decode_step(torch.randn(2, 4, 16), torch.randn(2, 2, 2, 16), torch.randn(2, 2, 2, 16), k_keep=2)
    with pytest.raises(ValueError, match="page_tokens must be a power of two"):
        AquaKVCache(batch=1, heads_kv=1, head_dim=8, capacity=10, page_tokens=24)
    with pytest.raises(ValueError, match="key_dims must be <= 8"):
        AquaKVCache(batch=1, heads_kv=1, head_dim=8, capacity=10, key_dims=9)
    with pytest.raises(ValueError, match="projection must be"):
        AquaKVCache(batch=1, heads_kv=2, head_dim=8, capacity=10, projection=torch.eye(4))
    with pytest.raises(TypeError, match="dtype must be"):
        AquaKVCache(batch=1, heads_kv=1, head_dim=8, capacity=10, dtype=torch.int32)


def test_step_at_a_position_repeats_and_cache_holding_replays_the_last_token() -> None:
    g, P, cache, (rc,) = _setup(5)
    k, v = torch.randn(2, 2, 20, 16, generator=g), torch.randn(2, 2, 20, 16, generator=g)
    cache.append(k, v)
    q = torch.randn(2, 4, 16, generator=g)
    k1, v1 = torch.randn(2, 2, 16, generator=g), torch.randn(2, 2, 16, generator=g)
    a = cache.decode_step(q, k1, v1, k_keep=5, position=20)
    b = cache.decode_step(q, k1, v1, k_keep=5, position=20)  # the same step again: same output and length
    torch.testing.assert_close(a, b)
    assert cache.length() == 21
    with pytest.raises(ValueError, match="position must be <= 21"):
        cache.decode_step(q, k1, v1, k_keep=5, position=22)
    from aqua_model.kernels.kv_cache import cache_holding

    held, k_last, v_last = cache_holding(cache.keys_dim_major(), cache.cached_values(), P[0])
    torch.testing.assert_close(held.keys_dim_major(), cache.keys_dim_major())
    again = held.decode_step(q, k_last, v_last, k_keep=5, position=20)  # re-append token 20: nothing changes
    torch.testing.assert_close(again, a, rtol=1e-4, atol=1e-5)


def test_without_projection_keys_are_stored_as_given() -> None:
    cache = AquaKVCache(batch=1, heads_kv=1, head_dim=16, capacity=32, page_tokens=16, dtype=torch.float32)
    k = torch.randn(1, 1, 20, 16)
    cache.append(k, torch.randn(1, 1, 20, 16))
    torch.testing.assert_close(cache.keys_dim_major(), k.transpose(-1, -2))
    cache.reset()
    assert cache.length() == 0


@pytest.mark.skipif(not INTERPRETER, reason="needs triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("selection", ["per-head", "group"])
def test_interpreter_decode_step_equals_the_reference(selection) -> None:
    g, P, cache, (rc,) = _setup(4, hq=6, hkv=2, d=32, m=24)
    k, v = torch.randn(2, 2, 40, 32, generator=g), torch.randn(2, 2, 40, 32, generator=g)
    cache.append(k, v)
    rc.append(k, v)
    for _ in range(2):
        q = torch.randn(2, 6, 32, generator=g)
        k1, v1 = torch.randn(2, 2, 32, generator=g), torch.randn(2, 2, 32, generator=g)
        got = cache.decode_step(q, k1, v1, k_keep=7, selection=selection)
        rc.append(k1[:, :, None], v1[:, :, None])
        assert _rel(got, rc.decode_step(q[:, :, None], k_keep=7, selection=selection)[:, :, 0]) < 1e-5
    # the prologue wrote the rotated keys where the torch path would have
    torch.testing.assert_close(cache.keys_dim_major(), rc.keys_dim_major(), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
@pytest.mark.parametrize(
    "hq,hkv,d,m,k_keep", [(32, 8, 128, 128, 32), (40, 8, 128, 128, 96), (12, 12, 64, 48, 24)]
)
@pytest.mark.parametrize("selection", ["per-head", "group"])
def test_gpu_decode_step_matches_the_fp32_reference(hq, hkv, d, m, k_keep, selection) -> None:
    B, N0 = 2, 3000
    g = torch.Generator().manual_seed(hq + k_keep)
    P = torch.linalg.qr(torch.randn(hkv, d, d, generator=g)).Q
    cache = AquaKVCache(
        batch=B,
        heads_kv=hkv,
        head_dim=d,
        capacity=N0 + 8,
        projection=P,
        key_dims=m,
        dtype=torch.bfloat16,
        device="cuda",
    )
    k = torch.randn(B, hkv, N0, d, generator=g).to("cuda", torch.bfloat16)
    v = torch.randn(B, hkv, N0, d, generator=g).to("cuda", torch.bfloat16)
    cache.append(k, v)
    rc = ref.ProjectedKVCache(P.cuda(), key_dims=m)
    rc.append(k.float(), v.float())
    g_heads = hq // hkv
    for _ in range(3):
        q = torch.randn(B, hq, d, generator=g).to("cuda", torch.bfloat16)
        k1 = torch.randn(B, hkv, d, generator=g).to("cuda", torch.bfloat16)
        v1 = torch.randn(B, hkv, d, generator=g).to("cuda", torch.bfloat16)
        out = torch.full((B, hq, d), float("nan"), dtype=torch.bfloat16, device="cuda")
        got = cache.decode_step(q, k1, v1, k_keep=k_keep, selection=selection, out=out)
        rc.append(k1.float()[:, :, None], v1.float()[:, :, None])
        # the kernel selects on q^ rounded to bf16 (documented): the reference selects on the same values
        q_hat = ref.rotate(q.float()[:, :, None], P.cuda(), g=g_heads).to(torch.bfloat16).float()
        want = ref.aqua_attention_rotated(q_hat, rc.keys, rc.values, k_keep=k_keep, selection=selection)[
            :, :, 0
        ]
        torch.cuda.synchronize()
        assert not torch.isnan(got).any()
        assert _rel(got, want) <= 1e-2
    # the appended keys: rotated by P in fp32 and stored in bf16 (one rounding: well within 1e-2)
    assert _rel(cache.keys_dim_major().float(), rc.keys_dim_major()) <= 1e-2
    assert cache.length() == N0 + 3


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA and triton")
def test_gpu_decode_step_in_a_cuda_graph() -> None:
    B, hq, hkv, d = 1, 32, 8, 128
    P = torch.linalg.qr(torch.randn(hkv, d, d)).Q
    cache = AquaKVCache(batch=B, heads_kv=hkv, head_dim=d, capacity=2048, projection=P, device="cuda")
    cache.append(torch.randn(B, hkv, 1000, d, device="cuda"), torch.randn(B, hkv, 1000, d, device="cuda"))
    q = torch.randn(B, hq, d, device="cuda", dtype=torch.bfloat16)
    k1 = torch.randn(B, hkv, d, device="cuda", dtype=torch.bfloat16)
    v1 = torch.randn(B, hkv, d, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(B, hq, d, device="cuda", dtype=torch.bfloat16)
    eager = cache.decode_step(
        q, k1, v1, k_keep=32, out=out, position=1000
    ).clone()  # warm-up: compiles, allocates
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # the documented way: a step at a fixed position can be replayed
        cache.decode_step(q, k1, v1, k_keep=32, out=out, position=1000)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
