"""The fused AQUA prefill kernel with tile-shared selection, as a plan: ``aqua-tile-fused``.

What it describes: one launch of ``aqua_model.kernels.triton_prefill.aqua_prefill(q_hat,
k_hat_t, v, k_keep=k)`` (q arrives rotated; keys are cached rotated and dim-major, as in the
decode plan ``aqua-fused``; rotating q and k is not counted). Each program takes a tile of
M = BLOCK_M queries of one head, selects the k dims with the largest summed |q^| (the cost
model's tile-granularity selection), and runs the FlashAttention-2 loop over whole
BLOCK_M x BLOCK_N blocks of keys up to its last visible key.

So its FLOPs are those of the blocks it multiplies, not of the visible pairs alone:
:func:`aqua_model.costs.pairs.tile_pairs` pairs (padding and the masked half of the diagonal
blocks included), each with 2 * slots FLOPs for the scores (slots = k rounded up to the
kernel's 16-dim operand edge, at most d), 2d for the values and the convention's softmax
FLOPs; plus the selection of each tile. It runs on tensor cores and is compute-bound at every
prompt length that matters (its intensity is hundreds of FLOPs per byte), so its time is
FLOPs / (peak x the compute efficiency of fused attention on the profile): a datasheet
profile's assumption, or a calibrated profile's measurement. ``validation/bench_prefill.py``
measures this kernel's own efficiency at one shape outside its grid. Run on the H200
(``validation/results/h200/prefill_kernels.jsonl``), this plan misses: a median error of 20.9%
against the kernel, because one efficiency cannot see that the kernel's rate drops at k < d
(gathering the selected rows); see docs/prefill.md.

Bytes: q^ and the output once, K^T and V once per KV head (the programs of a head re-read them,
through L2, which a compute-bound kernel hides).
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from ..costs import memory
from ..costs.convention import Convention, resolve
from ..costs.flops import flop_terms
from ..costs.pairs import tile_pairs
from ..costs.symbols import B, H_kv, H_q, M_t, N, T, d, k, s
from .kernel import Implementation, Kernel, Plan

#: The plans of this module (prefill phase).
PLANS = ("aqua-tile-fused",)
#: Queries per tile (BLOCK_M) of the plan: the kernel's default and the accuracy study's M = 128.
DEFAULT_BLOCK_M = 128
#: Keys per loop step (BLOCK_N) of the kernel's default configuration.
DEFAULT_BLOCK_N = 64
#: The score product's inner dimension is padded to a multiple of this (the smallest tensor-core
#: operand edge; the kernel splits it into at most three power-of-two parts, exact for k = 16j
#: with at most three bits in j, e.g. 32, 64, 96, 112, 128). The kernel's d is a power of two
#: >= 16, so the rounded k never exceeds d.
SLOT_MULTIPLE = 16
#: The CUDA kernel one call launches (aqua_model.kernels.triton_prefill.KERNELS).
TRITON_PREFILL = r"_prefill_kernel"
_IMPL = Implementation.of("aqua_model.kernels.triton_prefill", "aqua_prefill")


def slots(kept: sp.Expr = k) -> sp.Expr:
    """The score product's inner dimension: k rounded up to a multiple of SLOT_MULTIPLE."""
    return SLOT_MULTIPLE * sp.ceiling(kept / SLOT_MULTIPLE)


def executed_flops(*, block_m: int, block_n: int, convention: Convention) -> sp.Expr:
    """FLOPs of the multiplied blocks of one layer, all query heads of the batch: per pair
    2 * slots (scores) + 2 d (values) + softmax, and one tile selection per tile."""
    terms = flop_terms("aqua", "prefill", convention, True, granularity="tile")
    pairs = tile_pairs(block_m=block_m, block_n=block_n, causal=True)
    fma, soft = sp.nsimplify(convention.flops_per_mac), sp.nsimplify(convention.softmax_flops_per_score)
    per_pair = fma * slots() + fma * d + soft
    select = terms["select"].subs(M_t, block_m)  # T queries: tile sums and one top-k per tile
    return B * H_q * (pairs * per_pair + select)


@cache
def build(
    name: str = "aqua-tile-fused",
    *,
    block_m: int = DEFAULT_BLOCK_M,
    block_n: int = DEFAULT_BLOCK_N,
    convention: Convention | None = None,
) -> Plan:
    """The plan ``name`` (prefill) at tile ``block_m`` and key block ``block_n``."""
    if name not in PLANS:
        raise ValueError(f"plan must be one of {PLANS}, got {name!r}")
    for arg, value in (("block_m", block_m), ("block_n", block_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 16 or value & (value - 1):
            raise ValueError(f"{arg} must be a power of two >= 16, got {value!r}")
    if block_n > block_m:
        raise ValueError(f"block_n must be <= block_m={block_m}, got {block_n}")
    conv = resolve(convention)
    kv = H_kv * B * memory.kv_cache_bytes("dense").subs(N, N + T)  # K^T and V of the cached and new tokens
    io = 2 * B * H_q * T * d * s  # q^ read, output written
    kern = Kernel(
        "attention",
        executed_flops(block_m=block_m, block_n=block_n, convention=conv),
        kv + io,
        "contiguous",
        op="attention",
        launch_names=(TRITON_PREFILL,),
    )
    desc = (
        f"AQUA prefill, one fused Triton kernel (aqua_prefill): tiles of {block_m} queries share the top-k of their summed "
        f"|q^|, the score product runs over k gathered dims of a dim-major K^T; whole {block_m}x{block_n} blocks counted; "
        "q^ given (rotation not counted)"
    )
    return Plan(
        name=name,
        method="aqua",
        phase="prefill",
        selection="per-head",
        kernels=(kern,),
        description=desc,
        implementation=_IMPL,
        key_layout="rotated-dim-major",
    )


__all__ = ["DEFAULT_BLOCK_M", "DEFAULT_BLOCK_N", "PLANS", "SLOT_MULTIPLE", "build", "executed_flops", "slots"]
