"""Byte formulas against brute-force counts of the elements and sectors read."""

from itertools import combinations

import numpy as np
import pytest
import sympy as sp

from aqua_model import decode_read_bytes, kv_cache_bytes
from aqua_model.costs import memory
from aqua_model.costs.numeric import evaluate


def sectors_touched(channels, sector_channels):
    return len({c // sector_channels for c in channels})


@pytest.mark.parametrize(
    "d_,k_,s_,S_", [(16, 3, 2, 8), (16, 5, 4, 16), (12, 4, 2, 8), (8, 8, 2, 4), (16, 1, 2, 8)]
)
def test_random_channel_sectors_equal_exhaustive_average(d_, k_, s_, S_):
    c = S_ // s_
    counts = [sectors_touched(sub, c) for sub in combinations(range(d_), k_)]
    expected = evaluate(memory.sectors_per_token("random"), {"d": d_, "k": k_, "s": s_, "S": S_})
    assert expected == pytest.approx(np.mean(counts), rel=1e-12)


def test_random_sectors_with_independent_heads_match_exhaustive_average():
    d_, k_, s_, S_, heads = 12, 3, 2, 8, 2
    c = S_ // s_
    subsets = list(combinations(range(d_), k_))
    counts = [sectors_touched(set(a) | set(b), c) for a in subsets for b in subsets]
    expr = memory.sectors_per_token("random", heads=sp.Integer(heads))
    assert evaluate(expr, {"d": d_, "k": k_, "s": s_, "S": S_}) == pytest.approx(np.mean(counts), rel=1e-12)


@pytest.mark.parametrize("k_", [1, 7, 8, 9, 31, 32, 96, 128])
def test_prefix_channels_touch_ceil_k_over_c_sectors(k_):
    c = 16  # 32-byte sectors of bf16
    assert evaluate(memory.sectors_per_token("prefix"), {"k": k_, "s": 2, "S": 32}) == sectors_touched(
        range(k_), c
    )


def test_union_of_per_head_selections_matches_exhaustive_average():
    d_, k_, g_ = 10, 3, 2
    subsets = list(combinations(range(d_), k_))
    mean_union = np.mean([len(set(a) | set(b)) for a in subsets for b in subsets])
    assert evaluate(memory.selected_dims("per-head"), {"d": d_, "k": k_, "g": g_}) == pytest.approx(
        mean_union
    )
    assert evaluate(memory.selected_dims("group"), {"k": k_}) == k_


def test_dense_and_dim_major_bytes_count_elements_read():
    N_, d_, k_, s_ = 1000, 128, 32, 2
    K = np.zeros((d_, N_), np.uint16)
    rows = np.random.default_rng(0).choice(d_, k_, replace=False)
    bytes_k = K[rows].nbytes
    bytes_v = np.zeros((N_, d_), np.uint16).nbytes
    assert decode_read_bytes(method="aqua", d=d_, k=k_, context=N_, dtype_bytes=s_) == bytes_k + bytes_v
    assert decode_read_bytes(method="dense", d=d_, k=d_, context=N_, dtype_bytes=s_) == 2 * bytes_v


def test_token_major_random_channels_read_almost_everything():
    # 96 random channels out of 128 leave a 16-channel sector untouched with probability
    # C(112, 96)/C(128, 96) ~ 6e-12, so the key read is essentially all of K.
    aqua = decode_read_bytes(method="aqua", d=128, k=96, context=4096, layout="token-major")
    dense = decode_read_bytes(method="dense", d=128, k=128, context=4096)
    assert aqua == pytest.approx(dense, rel=1e-9)


def test_kv_cache_bytes():
    assert kv_cache_bytes(method="dense", d=128, context=1000) == 2 * 1000 * 128 * 2
    assert kv_cache_bytes(method="aqua", d=128, context=1000, key_dims=64) == (64 + 128) * 1000 * 2
    assert kv_cache_bytes(method="aqua", d=128, context=1000) == kv_cache_bytes(
        method="dense", d=128, context=1000
    )
    with pytest.raises(ValueError, match="key_dims must be <= d"):
        kv_cache_bytes(method="aqua", d=128, context=10, key_dims=129)


@pytest.mark.parametrize("k_,ceiling", [(96, 256 / 224), (32, 1.6), (1, 256 / 129)])
def test_byte_ceiling(k_, ceiling):
    assert evaluate(memory.byte_ceiling_speedup(), {"d": 128, "k": k_}) == pytest.approx(ceiling)
    assert ceiling < 2


def test_vectorised_over_arrays():
    ctx = np.array([1024, 2048, 4096])
    k_ = np.array([[32], [96]])
    out = decode_read_bytes(method="aqua", d=128, k=k_, context=ctx)
    assert out.shape == (2, 3)
    assert out[1, 2] == (96 + 128) * 4096 * 2
