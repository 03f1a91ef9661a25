"""Implementation plans: the kernels an implementation launches, each with symbolic FLOPs and
bytes taken from the cost model, an access pattern and a launch count.

All expressions are for ONE layer, over the batch and all heads (symbols B, H_q, H_kv,
g = H_q/H_kv, N, T, d, k, s). FLOPs come from :mod:`aqua_model.costs.flops` and the K/V
bytes from :mod:`aqua_model.costs.memory`; the few extra tensors a kernel reads or writes
(q, outputs, materialised scores, indices) are counted here, each named.

Decode plans (one new token per sequence against N cached keys):

* ``dense-fused``      one FlashAttention/SDPA-style kernel reading K and V once.
* ``dense-eager``      scores, softmax, value as three kernels; scores materialised.
* ``aqua-eager``       q_proj, k_proj, topk, gather (a materialised copy of the selected
                       key dims per query head), scores, softmax, value.
* ``aqua-fused``       q_proj, k_proj, topk, and one fused split-N kernel (plus its
                       combine launch) that reads the selected rows of a dim-major K^T [d, N]
                       and all of V.

The eager selection ``topk`` is three launches (abs, group sum, torch.topk); a calibrated
profile replaces its roofline time by the measured torch.topk time for its rows and length.
* ``aqua-token-major`` the same fused kernel over a token-major K [N, d]: whole sectors.

Prefill plans (T new tokens after N cached keys, causal): ``dense-fused`` (visible pairs
only), ``dense-eager`` (the full rectangle, then a mask pass over it), ``aqua-eager`` (per-query
selection by masking q^: the matmul still spans all d dims, so no FLOP saving), and
``aqua-fused`` (an ideal fused kernel doing 2k FLOPs per visible pair; not yet built).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from .._checks import check_choice
from ..costs import memory
from ..costs.convention import Convention, resolve
from ..costs.flops import PHASES, flop_terms
from ..costs.memory import GQA_SELECTIONS
from ..costs.symbols import B, H_kv, H_q, N, T, d, k, s
from .kernel import INDEX_BYTES, Kernel, Plan

DECODE_PLANS = ("dense-fused", "dense-eager", "aqua-eager", "aqua-fused", "aqua-token-major")
PREFILL_PLANS = ("dense-fused", "dense-eager", "aqua-eager", "aqua-fused")
#: Launches of the eager selection: |q^| (abs), the sum over the group's heads, torch.topk.
TOPK_LAUNCHES = 3
#: Launches of the split-N fused decode kernel: the split pass and the log-sum-exp combine.
SPLIT_N_LAUNCHES = 2

# -- tensor sizes used by several kernels (elements x bytes per element) --------------------
Q_HEADS = B * H_q          # query heads over the batch
KV_HEADS = B * H_kv        # KV heads over the batch


def _queries(phase: str) -> sp.Expr:
    return sp.Integer(1) if phase == "decode" else T


def _keys(phase: str) -> sp.Expr:
    return N if phase == "decode" else N + T


def vectors_bytes(phase: str) -> sp.Expr:
    """One d-vector per query head and query (q, q^ or the output)."""
    return Q_HEADS * _queries(phase) * d * s


def _projection_bytes() -> sp.Expr:
    """P, one d x d matrix per KV head of the layer (shared over the batch)."""
    return H_kv * d * d * s


def per_query_heads(terms: dict[str, sp.Expr], *names: str) -> sp.Expr:
    return Q_HEADS * sp.Add(*(terms[n] for n in names))


def aqua_prologue(phase: str, terms: dict[str, sp.Expr]) -> list[Kernel]:
    """q_proj, k_proj and topk, shared by every AQUA plan."""
    new_keys = KV_HEADS * _queries(phase)
    return [
        Kernel("q_proj", per_query_heads(terms, "q_proj"), 2 * vectors_bytes(phase) + _projection_bytes(), "contiguous"),
        Kernel("k_proj", per_query_heads(terms, "k_proj"), 2 * new_keys * d * s + _projection_bytes(), "contiguous"),
        Kernel("topk", per_query_heads(terms, "select"), vectors_bytes(phase) + Q_HEADS * _queries(phase) * k * (s + INDEX_BYTES),
               "contiguous", launches=TOPK_LAUNCHES, unit="vector", op="topk", op_rows=Q_HEADS * _queries(phase), op_length=d),
    ]


def _eager_tail(phase: str, dense_terms: dict[str, sp.Expr]) -> list[Kernel]:
    """softmax and value of an eager plan: scores materialised as a full [queries, keys] matrix."""
    score_elems = Q_HEADS * _queries(phase) * _keys(phase)
    return [
        Kernel("softmax", per_query_heads(dense_terms, "softmax"), 2 * score_elems * s, "contiguous", unit="vector",
               op="softmax", op_rows=Q_HEADS * _queries(phase), op_length=_keys(phase)),
        Kernel("value", per_query_heads(dense_terms, "value"), score_elems * s + KV_HEADS * _keys(phase) * d * s + vectors_bytes(phase), "contiguous"),
    ]


@lru_cache(maxsize=None)
def build_plan(name: str, *, phase: str = "decode", selection: str = "group", convention: Convention | None = None) -> Plan:
    """The plan called ``name`` for ``phase``; see the module docstring for the list."""
    check_choice("phase", phase, PHASES)
    check_choice("plan", name, DECODE_PLANS if phase == "decode" else PREFILL_PLANS)
    check_choice("selection", selection, GQA_SELECTIONS)
    conv = resolve(convention)
    method = name.split("-", 1)[0]
    if phase == "decode":
        kernels = _decode_kernels(name, selection, conv)
    else:
        kernels = _prefill_kernels(name, conv)
    return Plan(name=name, method=method, phase=phase, selection=selection, kernels=tuple(kernels))


def _decode_kernels(name: str, selection: str, conv: Convention) -> list[Kernel]:
    dense = flop_terms("dense", "decode", conv)
    aqua = flop_terms("aqua", "decode", conv)
    kv_dense = KV_HEADS * memory.decode_read_bytes("dense")
    if name == "dense-fused":
        return [Kernel("attention", per_query_heads(dense, "scores", "softmax", "value"), kv_dense + 2 * vectors_bytes("decode"), "contiguous", op="attention")]
    if name == "dense-eager":
        scores = Kernel("scores", per_query_heads(dense, "scores"), KV_HEADS * N * d * s + vectors_bytes("decode") + Q_HEADS * N * s, "contiguous")
        return [scores, *_eager_tail("decode", dense)]
    prologue = aqua_prologue("decode", aqua)
    if name == "aqua-eager":
        # torch.gather reads the selected dims of each query head's KV group and writes a
        # [N, k] copy per query head; the matmul then reads that copy.
        gathered = Q_HEADS * N * k * s
        gather = Kernel("gather", sp.Integer(0), Q_HEADS * N * k * s + gathered + Q_HEADS * k * INDEX_BYTES, "gather")
        scores = Kernel("scores", per_query_heads(aqua, "scores"), gathered + vectors_bytes("decode") + Q_HEADS * N * s, "contiguous")
        return [*prologue, gather, scores, *_eager_tail("decode", dense)]
    layout, pattern = ("dim-major", "contiguous") if name == "aqua-fused" else ("token-major", "strided")
    kv_aqua = KV_HEADS * memory.decode_read_bytes("aqua", layout=layout, selection=selection, pattern="random")
    io = 2 * vectors_bytes("decode") + Q_HEADS * k * INDEX_BYTES
    return [*prologue, Kernel("attention", per_query_heads(aqua, "scores", "softmax", "value"), kv_aqua + io, pattern,
                              launches=SPLIT_N_LAUNCHES, op="attention")]


def _prefill_kernels(name: str, conv: Convention) -> list[Kernel]:
    dense_causal = flop_terms("dense", "prefill", conv, True)
    dense_rect = flop_terms("dense", "prefill", conv, False)
    aqua = flop_terms("aqua", "prefill", conv, True)
    kv_read = 2 * KV_HEADS * (N + T) * d * s
    io = 2 * vectors_bytes("prefill")
    if name == "dense-fused":
        return [Kernel("attention", per_query_heads(dense_causal, "scores", "softmax", "value"), kv_read + io, "contiguous", op="attention")]
    if name == "aqua-fused":
        return [*aqua_prologue("prefill", aqua), Kernel("attention", per_query_heads(aqua, "scores", "softmax", "value"),
                                                          kv_read + io + Q_HEADS * T * k * INDEX_BYTES, "contiguous", op="attention")]
    score_elems = Q_HEADS * T * (N + T)
    scores = Kernel("scores", per_query_heads(dense_rect, "scores"), KV_HEADS * (N + T) * d * s + vectors_bytes("prefill") + score_elems * s, "contiguous")
    # the causal mask is applied to the materialised scores in place: one more read and write
    mask = Kernel("mask", sp.Integer(0), 2 * score_elems * s, "contiguous", unit="vector")
    tail = [mask, *_eager_tail("prefill", dense_rect)]
    if name == "dense-eager":
        return [scores, *tail]
    return [*aqua_prologue("prefill", aqua), scores, *tail]


def plan_names(phase: str) -> tuple[str, ...]:
    """The plans available for ``phase``."""
    return DECODE_PLANS if check_choice("phase", phase, PHASES) == "decode" else PREFILL_PLANS


__all__ = ["build_plan", "plan_names", "DECODE_PLANS", "PREFILL_PLANS", "TOPK_LAUNCHES", "SPLIT_N_LAUNCHES"]
