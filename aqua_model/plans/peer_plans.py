"""Plans of AQUA's neighbours (SparQ, Loki, Quest, H2O, AQUA+H2O, AQUA+top-k); model-only.

Each decode plan is the kernels a fused implementation of the method launches (per layer,
whole batch), with FLOPs and K/V bytes from :mod:`aqua_model.costs.peers` and the few
extra tensors (queries, outputs, materialised approximate scores, indices) counted here:

* ``sparq``      select_dims (top-r |q|), approx_scores (dim-major K copy), topk_tokens,
                 sparse_attention (gathered K/V rows + mean-V blend).
* ``loki``       q_proj, k_proj (PCA basis), approx_scores (r-dim prefix), topk_tokens,
                 sparse_attention.
* ``quest``      page_bounds (min/max metadata), topk_pages, sparse_attention over pages.
* ``h2o``        attention over the b kept tokens with in-kernel score accumulation, evict.
* ``aqua-h2o``   AQUA's q_proj, k_proj, topk; attention over b tokens on k dims; evict.
* ``aqua-topk``  AQUA's q_proj, k_proj, topk; approx_scores (k dims over N), topk_tokens,
                 sparse_attention over k_t tokens of a token-major rotated copy.

Gathered token rows (d*s bytes each, scattered) use the profile's ``gather`` efficiency;
Quest's whole pages (p*d*s contiguous bytes) and the kept H2O cache stream as
``contiguous``; Loki's token-major prefix is a ``strided`` read of whole sectors.

Prefill: these methods approximate decode only (their papers prefill densely), so a
prefill plan is the dense fused prefill plus the cache each method builds: a dim-major
key copy (SparQ, Loki dim-major, AQUA+top-k), rotated keys (Loki, AQUA+top-k), per-page
metadata (Quest). H2O needs the prefill attention probabilities to seed its accumulated
scores, which a fused kernel does not expose, so its prefill is the eager dense plan
(AQUA+H2O: the eager AQUA plan).
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from .._checks import check_choice
from ..costs import memory, peers
from ..costs.convention import Convention, resolve
from ..costs.flops import PHASES, flop_terms as base_flop_terms
from ..costs.memory import GQA_SELECTIONS
from ..costs.symbols import N, T, d, k
from .attention import (
    KV_HEADS,
    Q_HEADS,
    aqua_prologue,
    build_plan,
    per_query_heads,
    vectors_bytes,
)  # shared kernel builders, one formula each
from .kernel import INDEX_BYTES, Kernel, Plan


def _io() -> sp.Expr:
    """q read and output written, one d-vector each per query head."""
    return 2 * vectors_bytes("decode")


def _scores_bytes(count: sp.Expr) -> sp.Expr:
    """``count`` fp32 scores per query head (materialised approximate scores)."""
    return Q_HEADS * count * peers.SCORE_BYTES


def _exact(terms: dict[str, sp.Expr]) -> sp.Expr:
    return per_query_heads(terms, "scores", "softmax", "value")


def _approx_kernel(
    terms: dict[str, sp.Expr],
    kv: dict[str, sp.Expr],
    *,
    extra: sp.Expr,
    pattern: str,
    name: str = "approx_scores",
    candidates: sp.Expr = N,
) -> Kernel:
    return Kernel(
        name,
        per_query_heads(terms, "approx"),
        KV_HEADS * kv["approx"] + vectors_bytes("decode") + extra + _scores_bytes(candidates),
        pattern,
    )


def _topk_kernel(
    terms: dict[str, sp.Expr], *, candidates: sp.Expr, kept: sp.Expr, name: str = "topk_tokens"
) -> Kernel:
    return Kernel(
        name,
        per_query_heads(terms, "token_select"),
        _scores_bytes(candidates) + Q_HEADS * kept * (INDEX_BYTES + peers.SCORE_BYTES),
        "contiguous",
        unit="vector",
    )


def _sparse_kernel(
    terms: dict[str, sp.Expr], kv: dict[str, sp.Expr], *, indices: sp.Expr, pattern: str
) -> Kernel:
    flops = _exact(terms) + per_query_heads(terms, "bookkeeping")
    return Kernel(
        "sparse_attention",
        flops,
        KV_HEADS * (kv["attention"] + kv["bookkeeping"]) + Q_HEADS * indices * INDEX_BYTES + _io(),
        pattern,
    )


def _h2o_kernels(terms: dict[str, sp.Expr], kv: dict[str, sp.Expr]) -> list[Kernel]:
    attention = Kernel(
        "attention",
        _exact(terms) + Q_HEADS * peers.h2o_accumulate_flops(),
        KV_HEADS * (kv["attention"] + peers.h2o_accumulate_bytes()) + _io(),
        "contiguous",
    )
    evict = Kernel(
        "evict",
        Q_HEADS * peers.h2o_evict_flops(),
        KV_HEADS * peers.h2o_evict_bytes(),
        "contiguous",
        unit="vector",
    )
    return [attention, evict]


@cache
def build_peer_plan(
    method: str,
    *,
    phase: str = "decode",
    selection: str = "group",
    layout: str | None = None,
    convention: Convention | None = None,
) -> Plan:
    """The plan of ``method`` (any of :data:`aqua_model.costs.peers.METHODS`) for ``phase``.

    ``dense`` is the fused dense plan of :mod:`aqua_model.plans.attention`; ``aqua`` is its decode
    step (``aqua-step-topk``: q and the new key rotated, then the fused kernel), since the peers'
    plans pay their own projections too (Loki rotates by its PCA basis), and the fused prefill.
    """
    peers.check_method(method)
    check_choice("phase", phase, PHASES)
    check_choice("selection", selection, GQA_SELECTIONS)
    conv = resolve(convention)
    if method == "dense" or (method == "aqua" and phase == "prefill"):
        return build_plan(f"{method}-fused", phase=phase, selection=selection, convention=conv)
    if method == "aqua":
        return build_plan("aqua-step-topk", phase=phase, selection=selection, convention=conv)
    kernels = (
        _decode_kernels(method, selection, layout, conv)
        if phase == "decode"
        else _prefill_kernels(method, layout, conv)
    )
    description = (
        f"model-only: {method} {phase} as the kernels a fused implementation would launch "
        "(nothing in this package runs it)"
    )
    return Plan(
        name=f"{method}-{'fused' if phase == 'decode' else 'prefill'}",
        method=method,
        phase=phase,
        selection=selection,
        kernels=tuple(kernels),
        description=description,
    )


def _decode_kernels(method: str, selection: str, layout: str | None, conv: Convention) -> list[Kernel]:
    terms = peers.flop_terms(method, conv)
    kv = peers.byte_terms(method, selection=selection, layout=layout)
    prologue = aqua_prologue("decode", base_flop_terms("aqua", "decode", conv))
    if method == "sparq":
        select_dims = prologue[2]
        return [
            Kernel(
                "select_dims",
                select_dims.flops,
                select_dims.bytes.subs(k, peers.r),
                "contiguous",
                unit="vector",
            ),
            _approx_kernel(terms, kv, extra=Q_HEADS * peers.r * INDEX_BYTES, pattern="contiguous"),
            _topk_kernel(terms, candidates=N, kept=peers.k_t),
            _sparse_kernel(terms, kv, indices=peers.k_t, pattern="gather"),
        ]
    if method == "loki":
        lay = layout or peers.LAYOUTS["loki"][0]
        return [
            *prologue[:2],
            _approx_kernel(
                terms, kv, extra=sp.Integer(0), pattern="strided" if lay == "token-major" else "contiguous"
            ),
            _topk_kernel(terms, candidates=N, kept=peers.k_t),
            _sparse_kernel(terms, kv, indices=peers.k_t, pattern="gather"),
        ]
    if method == "quest":
        pages, kept_pages = peers.quest_pages(), sp.ceiling(peers.k_t / peers.p)
        return [
            _approx_kernel(
                terms, kv, extra=sp.Integer(0), pattern="contiguous", name="page_bounds", candidates=pages
            ),
            _topk_kernel(terms, candidates=pages, kept=kept_pages, name="topk_pages"),
            _sparse_kernel(terms, kv, indices=kept_pages, pattern="contiguous"),
        ]
    if method == "h2o":
        return _h2o_kernels(terms, kv)
    if method == "aqua-h2o":
        return [*prologue, *_h2o_kernels(terms, kv)]
    # aqua-topk
    return [
        *prologue,
        _approx_kernel(terms, kv, extra=Q_HEADS * k * INDEX_BYTES, pattern="contiguous"),
        _topk_kernel(terms, candidates=N, kept=peers.k_t),
        _sparse_kernel(terms, kv, indices=peers.k_t, pattern="gather"),
    ]


def _prefill_kernels(method: str, layout: str | None, conv: Convention) -> list[Kernel]:
    if method == "h2o":
        return list(build_plan("dense-eager", phase="prefill", convention=conv).kernels)
    if method == "aqua-h2o":
        return list(build_plan("aqua-eager", phase="prefill", convention=conv).kernels)
    kernels = list(build_plan("dense-fused", phase="prefill", convention=conv).kernels)
    new_keys = KV_HEADS * memory.head_tensor_bytes(T)
    copy = Kernel(
        "k_copy", sp.Integer(0), 2 * new_keys, "contiguous"
    )  # read the new keys, write them dim-major
    if method in ("loki", "aqua-topk"):
        kernels.append(
            aqua_prologue("prefill", base_flop_terms("aqua", "prefill", conv))[1]
        )  # rotate the new keys
    if method == "sparq" or method == "aqua-topk" or (method == "loki" and layout == "dim-major"):
        kernels.append(copy)
    if method == "quest":  # min/max of each new page: read the keys, write 2 vectors per page
        kernels.append(
            Kernel(
                "page_metadata",
                KV_HEADS * peers.QUEST_UPDATE_FLOPS_PER_DIM * T * d,
                new_keys + KV_HEADS * sp.ceiling(T / peers.p) * memory.kv_cache_bytes("dense").subs(N, 1),
                "contiguous",
                unit="vector",
            )
        )
    return kernels


__all__ = ["build_peer_plan"]
