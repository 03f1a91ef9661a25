"""Selection granularity in the cost model: per query, or shared by a tile of M_t queries (prefill).

Counted by hand and by brute force: a tile of M queries sums M magnitudes (M - 1 adds of
|q^| per dim, 2 FLOPs each under the default convention) and selects once (d log2 d under
"sort"); the kernel's multiplied pairs are counted by replaying its loop bounds.
"""

from __future__ import annotations

import math

import pytest
import sympy as sp

import aqua_model
from aqua_model import Convention
from aqua_model.costs import component_flops
from aqua_model.costs.flops import flop_terms, selection_flops
from aqua_model.costs.numeric import evaluate
from aqua_model.costs.pairs import tile_pairs, visible_pairs
from aqua_model.costs.symbols import M_t


@pytest.mark.parametrize("selection", ["sort", "select", "none"])
def test_one_query_per_tile_is_per_query_selection(selection) -> None:
    conv = Convention(selection=selection)
    assert sp.simplify(selection_flops(conv, "tile").subs(M_t, 1) - selection_flops(conv)) == 0
    tiled = flop_terms("aqua", "prefill", conv, True, "tile")
    per_query = flop_terms("aqua", "prefill", conv)
    for name in per_query:
        assert sp.simplify(tiled[name].subs(M_t, 1) - per_query[name]) == 0, name


def test_tile_selection_flops_counted_by_hand() -> None:
    # d = 128, T = 4096 queries in tiles of 64: 64 tiles, each 63 * 128 sums of 2 FLOPs and one
    # sort of 128 * log2(128) = 896 comparisons -> 64 * (16128 + 896) = 1,089,536 FLOPs.
    got = component_flops(
        method="aqua", phase="prefill", d=128, k=96, context=0, prompt=4096, selection_tile=64
    )
    assert got["select"] == 64 * (63 * 128 * 2 + 128 * 7)
    per_query = component_flops(method="aqua", phase="prefill", d=128, k=96, context=0, prompt=4096)
    assert per_query["select"] == 4096 * 896
    # only the selection moves: scores, values, softmax and rotations are the same
    for name in ("q_proj", "k_proj", "scores", "softmax", "value"):
        assert got[name] == per_query[name]
    # the tile sum's FLOPs per dim is the convention's named number
    cheap = component_flops(
        method="aqua",
        phase="prefill",
        d=128,
        k=96,
        context=0,
        prompt=4096,
        selection_tile=64,
        convention=Convention(tile_sum_flops_per_dim=1.0),
    )
    assert cheap["select"] == 64 * (63 * 128 + 896)


def test_tile_breakeven_closed_form() -> None:
    # per query: 2d^2 + 2d^2/g + (d log2 d + 2 d (M - 1))/M; saving (d - k) per pair * 2 / 2 per
    # query pair of T(T+1)/2: T* = overhead/(d - k) - 1. d = 128, k = 96, g = 1, M = 64:
    # (65536 + (896 + 16128)/64)/32 - 1 = 65802/32 - 1 = 2055.3125 -> cheaper from T = 2056.
    r = aqua_model.breakeven(d=128, k=96, phase="prefill", selection_tile=64)
    assert r.n_star == 2055.3125 and r.n_min == 2056 and r.selection_tile == 64
    assert r.expr.has(M_t)
    assert r.to_dict()["selection_tile"] == 64 and "tiles of M_t=64" in str(r)
    # M = 1 is the per-query point T* = 66432/32 - 1 = 2075 (docs/costs.md)
    per_query = aqua_model.breakeven(d=128, k=96, phase="prefill")
    assert (
        aqua_model.breakeven(d=128, k=96, phase="prefill", selection_tile=1).n_star
        == per_query.n_star
        == 2075.0
    )
    assert per_query.selection_tile is None and not per_query.expr.has(M_t)
    # larger tiles amortise the selection: the break-even falls towards (2d^2 + 2d^2/g + 2d)/(d - k) - 1
    stars = [
        aqua_model.breakeven(d=128, k=96, phase="prefill", selection_tile=m).n_star
        for m in (1, 16, 64, 128, 4096)
    ]
    assert stars == sorted(stars, reverse=True)
    assert stars[-1] > (65536 + 256) / 32 - 1


def test_tile_breakeven_agrees_with_the_flop_counts() -> None:
    r = aqua_model.breakeven(d=64, k=32, g=3, phase="prefill", selection_tile=16)

    def diff(T: int) -> float:
        kw = dict(phase="prefill", d=64, context=0, prompt=T, g=3)
        return float(
            component_flops(method="aqua", k=32, selection_tile=16, **kw)["total"]
            - component_flops(method="dense", k=64, **kw)["total"]
        )

    assert diff(r.n_min) < 0 <= diff(r.n_min - 1)
    assert aqua_model.max_k(d=64, context=r.n_min, g=3, phase="prefill", selection_tile=16) >= 32


def test_tile_granularity_is_a_prefill_option() -> None:
    with pytest.raises(ValueError, match="selection_tile.*prefill"):
        aqua_model.breakeven(d=128, k=96, selection_tile=64)
    with pytest.raises(ValueError, match="selection_tile.*prefill"):
        component_flops(method="aqua", phase="decode", d=128, k=96, context=100, selection_tile=64)
    with pytest.raises(ValueError, match="granularity 'tile'"):
        flop_terms("aqua", "decode", Convention(), True, "tile")
    with pytest.raises(ValueError, match="granularity"):
        flop_terms("aqua", "prefill", Convention(), True, "block")
    with pytest.raises(ValueError, match="selection_tile"):
        aqua_model.breakeven(d=128, k=96, phase="prefill", selection_tile=0)
    with pytest.raises(ValueError, match="tile_sum_flops_per_dim"):
        Convention(tile_sum_flops_per_dim=-1.0)


def _kernel_pairs(T: int, N: int, block_m: int, block_n: int, causal: bool) -> int:
    """Replay of the kernel's loop bounds (aqua_model.kernels.triton_prefill._prefill_kernel):
    program m takes key blocks 0 .. min(N + (m+1) block_m, N + T) (all N + T keys if not causal)."""
    total = 0
    for m in range(math.ceil(T / block_m)):
        hi = min(N + (m + 1) * block_m, N + T) if causal else N + T
        total += block_m * block_n * math.ceil(hi / block_n)
    return total


@pytest.mark.parametrize("block_m,block_n", [(128, 64), (64, 64), (128, 128), (64, 16), (16, 16)])
def test_tile_pairs_match_the_kernel_loop(block_m, block_n) -> None:
    for causal in (True, False):
        expr = tile_pairs(block_m=block_m, block_n=block_n, causal=causal)
        for T in (1, 7, 63, 64, 65, 200, 1000):
            for N in (0, 5, 64, 130):
                got = float(evaluate(expr, {"N": N, "T": T}))
                assert got == _kernel_pairs(T, N, block_m, block_n, causal)
                assert got >= float(evaluate(visible_pairs(causal=causal), {"N": N, "T": T}))


def test_tile_pairs_approach_the_visible_pairs_at_long_prompts() -> None:
    # the waste is the masked half of the diagonal blocks: about block_m/2 per query, so below
    # (block_m/2 + block_n)/(T/2) of the T^2/2 visible pairs
    T = 65536
    waste = float(evaluate(tile_pairs(block_m=128, block_n=64), {"N": 0, "T": T})) / (T * (T + 1) / 2) - 1
    assert 0 < waste < (64 + 64) / (T / 2)
    with pytest.raises(ValueError, match="block_n must divide block_m"):
        tile_pairs(block_m=64, block_n=128)
