"""Reference attention: dense and AQUA against brute-force loops written from the definition."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from aqua_model.kernels.reference import (
    ProjectedKVCache,
    aqua_attention,
    aqua_attention_rotated,
    dense_attention,
)


def _rand(gen: torch.Generator, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)


def _orthogonal(gen: torch.Generator, *lead: int, d: int, dtype=torch.float64) -> torch.Tensor:
    return torch.linalg.qr(_rand(gen, *lead, d, d)).Q.to(dtype)


def _inputs(seed: int, B=2, hq=4, hkv=2, T=3, N=7, d=8, dv=None, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = _rand(g, B, hq, T, d, dtype=dtype)
    k = _rand(g, B, hkv, N, d, dtype=dtype)
    v = _rand(g, B, hkv, N, dv or d, dtype=dtype)
    P = _orthogonal(g, hkv, d=d, dtype=dtype)
    return q, k, v, P


def _brute_force(q, k, v, P, *, k_keep, selection="per-head", causal=True, scale=None, key_dims=None):
    """Loop over every (batch, head, query) and apply the definition literally."""
    B, hq, T, d = q.shape
    hkv, N = k.shape[1], k.shape[2]
    g = hq // hkv
    m = key_dims or d
    s = scale if scale is not None else 1 / math.sqrt(d)
    out = torch.zeros(B, hq, T, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(hq):
            kv = h // g
            Ph = torch.eye(d, dtype=q.dtype) if P is None else (P if P.dim() == 2 else P[kv])
            for t in range(T):
                q_hat = (q[b, h, t] @ Ph)[:m]
                if selection == "group":
                    mag = sum((q[b, j, t] @ Ph)[:m].abs() for j in range(kv * g, kv * g + g))
                else:
                    mag = q_hat.abs()
                keep = sorted(range(m), key=lambda i: -float(mag[i]))[:k_keep]
                visible = range(N - T + t + 1) if causal else range(N)
                logits = []
                for j in visible:
                    k_hat = (k[b, kv, j] @ Ph)[:m]
                    logits.append(sum(float(q_hat[i] * k_hat[i]) for i in keep) * s)
                w = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
                out[b, h, t] = sum(w[n] * v[b, kv, j] for n, j in enumerate(visible))
    return out


def test_dense_matches_brute_force_causal_and_not() -> None:
    q, k, v, _ = _inputs(0, T=4, N=6, dv=5)
    for causal in (True, False):
        want = _brute_force(q, k, v, None, k_keep=8, causal=causal)
        torch.testing.assert_close(dense_attention(q, k, v, causal=causal), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("selection", ["per-head", "group"])
@pytest.mark.parametrize("k_keep", [1, 3, 6])
def test_aqua_matches_brute_force(selection: str, k_keep: int) -> None:
    q, k, v, P = _inputs(1, T=3, N=5)
    got = aqua_attention(q, k, v, P, k_keep=k_keep, selection=selection)
    want = _brute_force(q, k, v, P, k_keep=k_keep, selection=selection)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_aqua_key_dims_and_scale_match_brute_force() -> None:
    q, k, v, P = _inputs(2, T=2, N=6, d=8)
    got = aqua_attention(q, k, v, P[0], k_keep=3, key_dims=5, scale=0.7, causal=False)
    want = _brute_force(q, k, v, P[0], k_keep=3, key_dims=5, scale=0.7, causal=False)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_aqua_at_k_equal_d_is_dense_in_fp32() -> None:
    q, k, v, P = _inputs(3, B=2, hq=8, hkv=2, T=5, N=33, d=32, dtype=torch.float32)
    dense = dense_attention(q, k, v)
    for selection in ("per-head", "group"):
        got = aqua_attention(q, k, v, P, k_keep=32, selection=selection)
        assert ((got - dense).norm() / dense.norm()).item() < 1e-5


def test_aqua_below_d_is_an_approximation() -> None:
    """k < d really drops coordinates (the test above could not tell otherwise)."""
    q, k, v, P = _inputs(4, d=16, N=20, T=2)
    dense = dense_attention(q, k, v)
    assert (aqua_attention(q, k, v, P, k_keep=4) - dense).abs().max() > 1e-3


def test_gqa_equals_explicit_repeat_and_per_head_loop() -> None:
    q, k, v, P = _inputs(5, hq=6, hkv=2, T=3, N=9)
    g = 3
    k_rep, v_rep = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    P_rep = P.repeat_interleave(g, 0)
    torch.testing.assert_close(dense_attention(q, k, v), dense_attention(q, k_rep, v_rep))
    got = aqua_attention(q, k, v, P, k_keep=3)
    torch.testing.assert_close(got, aqua_attention(q, k_rep, v_rep, P_rep, k_keep=3))
    for h in range(6):  # each head alone, against its KV head
        one = aqua_attention(
            q[:, h : h + 1], k[:, h // g : h // g + 1], v[:, h // g : h // g + 1], P[h // g], k_keep=3
        )
        torch.testing.assert_close(got[:, h : h + 1], one)


def test_group_selection_shares_indices_within_a_group() -> None:
    """Group mode = per-head mode when every head of the group has the same |q^| ranking."""
    q, k, v, P = _inputs(6, hq=4, hkv=2, T=2, N=8)
    q_same = q.clone()
    q_same[:, 1] = 2.0 * q[:, 0]  # same direction: same ranking
    q_same[:, 3] = -q[:, 2]
    a = aqua_attention(q_same, k, v, P, k_keep=3, selection="group")
    b = aqua_attention(q_same, k, v, P, k_keep=3, selection="per-head")
    torch.testing.assert_close(a, b)
    assert (
        aqua_attention(q, k, v, P, k_keep=3, selection="group") - aqua_attention(q, k, v, P, k_keep=3)
    ).abs().max() > 1e-6


def test_rotated_entry_point_equals_raw_entry_point() -> None:
    q, k, v, P = _inputs(7, hq=4, hkv=2)
    q_hat = q @ P.repeat_interleave(2, 0)
    k_hat = k @ P
    torch.testing.assert_close(
        aqua_attention_rotated(q_hat, k_hat[..., :6], v, k_keep=4),
        aqua_attention(q, k, v, P, k_keep=4, key_dims=6),
    )


@pytest.mark.parametrize("selection", ["per-head", "group"])
@pytest.mark.parametrize("key_dims", [None, 5])
def test_step_by_step_decode_equals_prefill_rows(selection: str, key_dims: int | None) -> None:
    q, k, v, P = _inputs(8, B=2, hq=4, hkv=2, T=9, N=9, d=8)
    k_keep = 3
    prefill = ProjectedKVCache(P, key_dims=key_dims)
    prefill.append(k, v)
    rows = prefill.attend(q, k_keep=k_keep, selection=selection)
    torch.testing.assert_close(
        rows, aqua_attention(q, k, v, P, k_keep=k_keep, selection=selection, key_dims=key_dims)
    )
    step = ProjectedKVCache(P, key_dims=key_dims)
    for t in range(9):
        step.append(k[:, :, t : t + 1], v[:, :, t : t + 1])
        out = step.decode_step(q[:, :, t : t + 1], k_keep=k_keep, selection=selection)
        torch.testing.assert_close(out, rows[:, :, t : t + 1], rtol=1e-10, atol=1e-10)
    assert step.length == 9
    assert step.keys_dim_major().shape == (2, 2, key_dims or 8, 9)


def test_cache_keys_are_stored_rotated() -> None:
    _, k, v, P = _inputs(9)
    cache = ProjectedKVCache(P, key_dims=3)
    cache.append(k, v)
    torch.testing.assert_close(cache.keys, (k @ P)[..., :3])
    torch.testing.assert_close(cache.values, v)


@settings(max_examples=25, deadline=None)
@given(
    hkv=st.integers(1, 3),
    g=st.integers(1, 3),
    t=st.integers(1, 4),
    extra=st.integers(0, 5),
    d=st.sampled_from([4, 8, 16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_full_k_is_exact_for_any_orthogonal_P(hkv, g, t, extra, d, seed) -> None:
    q, k, v, P = _inputs(seed, B=1, hq=hkv * g, hkv=hkv, T=t, N=t + extra, d=d)
    torch.testing.assert_close(
        aqua_attention(q, k, v, P, k_keep=d), dense_attention(q, k, v), rtol=1e-9, atol=1e-9
    )


def test_bad_inputs_name_the_argument() -> None:
    q, k, v, P = _inputs(10, hq=4, hkv=2, T=3, N=7, d=8)
    with pytest.raises(ValueError, match="k_keep must be <= 8"):
        aqua_attention(q, k, v, P, k_keep=9)
    with pytest.raises(ValueError, match="k_keep must be >= 1"):
        aqua_attention(q, k, v, P, k_keep=0)
    with pytest.raises(ValueError, match="k_keep must be <= 4"):
        aqua_attention(q, k, v, P, k_keep=5, key_dims=4)
    with pytest.raises(ValueError, match="selection must be one of"):
        aqua_attention(q, k, v, P, k_keep=2, selection="global")
    with pytest.raises(ValueError, match="multiple of H_kv"):
        dense_attention(q[:, :3], k, v)
    with pytest.raises(ValueError, match="T <= N"):
        dense_attention(q, k[:, :, :2], v[:, :, :2])
    with pytest.raises(ValueError, match="head dim"):
        dense_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match=r"P must have shape"):
        aqua_attention(q, k, v, P[:, :4, :4], k_keep=2)
    with pytest.raises(TypeError, match="floating dtype"):
        dense_attention(q, k.long(), v)
    with pytest.raises(ValueError, match=r"q must have shape \[B, H_q, T, d\]"):
        dense_attention(q[0], k, v)
    with pytest.raises(ValueError, match="scale"):
        dense_attention(q, k, v, scale=-1.0)
    cache = ProjectedKVCache(P)
    with pytest.raises(ValueError, match="empty"):
        cache.decode_step(q[:, :, :1], k_keep=2)
    cache.append(k, v)
    with pytest.raises(ValueError, match="one query per head"):
        cache.decode_step(q, k_keep=2)
    with pytest.raises(ValueError, match="do not match the cache"):
        cache.append(k, v[..., :4])
