"""Simulator plans of AQUA's neighbours and a matched-settings comparison against dense.

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

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import sympy as sp

from ._checks import check_choice, check_int
from .convention import Convention, resolve
from .costs import peers
from .costs.flops import flop_terms as base_flop_terms
from .costs.memory import GQA_SELECTIONS
from .costs.numeric import evaluate
from .dtypes import dtype_bytes
from .hardware import HardwareProfile
from .plans import INDEX_BYTES, KV_HEADS, PHASES, Q_HEADS, Kernel, Plan, build_plan
from .plans import aqua_prologue, per_query_heads, vectors_bytes  # shared kernel builders, one formula each
from .roofline import plan_time
from .simulate import check_fits_memory, resolve_profile, resolve_shape
from .symbols import N, T, d, k, s

SCHEMA_VERSION = 1
#: Baseline plans a comparison may be made against.
BASELINES = ("dense-fused", "dense-eager")
#: Default approximate dims as a fraction of d: SparQ's 1/8-transfer setting uses r = d/8
#: with k_t = N/16 (their Table; quoted from memory, see analysis/peers_published.py).
DEFAULT_DIMS_FRACTION = sp.Rational(1, 8)
#: Default tokens kept as a fraction of N: 2048 of 32768, Quest's budget at 32K.
DEFAULT_TOKENS_FRACTION = sp.Rational(1, 16)
#: Default AQUA kept dims as a fraction of d: k = 96 of 128, a 25% reduction.
DEFAULT_AQUA_FRACTION = sp.Rational(3, 4)
#: Quest's default page size in tokens (Quest's released code uses 16; from memory).
DEFAULT_PAGE_TOKENS = 16
#: H2O splits its budget evenly between heavy hitters and the recent window.
DEFAULT_WINDOW_FRACTION = sp.Rational(1, 2)


def _io() -> sp.Expr:
    """q read and output written, one d-vector each per query head."""
    return 2 * vectors_bytes("decode")


def _scores_bytes(count: sp.Expr) -> sp.Expr:
    """``count`` fp32 scores per query head (materialised approximate scores)."""
    return Q_HEADS * count * peers.SCORE_BYTES


def _exact(terms: dict[str, sp.Expr]) -> sp.Expr:
    return per_query_heads(terms, "scores", "softmax", "value")


def _approx_kernel(terms: dict[str, sp.Expr], kv: dict[str, sp.Expr], *, extra: sp.Expr, pattern: str, name: str = "approx_scores",
                   candidates: sp.Expr = N) -> Kernel:
    return Kernel(name, per_query_heads(terms, "approx"), KV_HEADS * kv["approx"] + vectors_bytes("decode") + extra + _scores_bytes(candidates), pattern)


def _topk_kernel(terms: dict[str, sp.Expr], *, candidates: sp.Expr, kept: sp.Expr, name: str = "topk_tokens") -> Kernel:
    return Kernel(name, per_query_heads(terms, "token_select"), _scores_bytes(candidates) + Q_HEADS * kept * (INDEX_BYTES + peers.SCORE_BYTES), "contiguous", unit="vector")


def _sparse_kernel(terms: dict[str, sp.Expr], kv: dict[str, sp.Expr], *, indices: sp.Expr, pattern: str) -> Kernel:
    flops = _exact(terms) + per_query_heads(terms, "bookkeeping")
    return Kernel("sparse_attention", flops, KV_HEADS * (kv["attention"] + kv["bookkeeping"]) + Q_HEADS * indices * INDEX_BYTES + _io(), pattern)


def _h2o_kernels(terms: dict[str, sp.Expr], kv: dict[str, sp.Expr]) -> list[Kernel]:
    attention = Kernel("attention", _exact(terms) + Q_HEADS * peers.h2o_accumulate_flops(),
                       KV_HEADS * (kv["attention"] + peers.h2o_accumulate_bytes()) + _io(), "contiguous")
    evict = Kernel("evict", Q_HEADS * peers.h2o_evict_flops(), KV_HEADS * peers.h2o_evict_bytes(), "contiguous", unit="vector")
    return [attention, evict]


@lru_cache(maxsize=None)
def build_peer_plan(method: str, *, phase: str = "decode", selection: str = "group", layout: str | None = None,
                    convention: Convention | None = None) -> Plan:
    """The plan of ``method`` (any of :data:`aqua_model.costs.peers.METHODS`) for ``phase``.

    ``dense`` and ``aqua`` are the fused plans of :mod:`aqua_model.plans`.
    """
    peers.check_method(method)
    check_choice("phase", phase, PHASES)
    check_choice("selection", selection, GQA_SELECTIONS)
    conv = resolve(convention)
    if method in ("dense", "aqua"):
        return build_plan(f"{method}-fused", phase=phase, selection=selection, convention=conv)
    kernels = _decode_kernels(method, selection, layout, conv) if phase == "decode" else _prefill_kernels(method, layout, conv)
    return Plan(name=f"{method}-{'fused' if phase == 'decode' else 'prefill'}", method=method, phase=phase, selection=selection, kernels=tuple(kernels))


def _decode_kernels(method: str, selection: str, layout: str | None, conv: Convention) -> list[Kernel]:
    terms = peers.flop_terms(method, conv)
    kv = peers.byte_terms(method, selection=selection, layout=layout)
    prologue = aqua_prologue("decode", base_flop_terms("aqua", "decode", conv))
    if method == "sparq":
        select_dims = prologue[2]
        return [Kernel("select_dims", select_dims.flops, select_dims.bytes.subs(k, peers.r), "contiguous", unit="vector"),
                _approx_kernel(terms, kv, extra=Q_HEADS * peers.r * INDEX_BYTES, pattern="contiguous"),
                _topk_kernel(terms, candidates=N, kept=peers.k_t),
                _sparse_kernel(terms, kv, indices=peers.k_t, pattern="gather")]
    if method == "loki":
        lay = layout or peers.LAYOUTS["loki"][0]
        return [*prologue[:2],
                _approx_kernel(terms, kv, extra=sp.Integer(0), pattern="strided" if lay == "token-major" else "contiguous"),
                _topk_kernel(terms, candidates=N, kept=peers.k_t),
                _sparse_kernel(terms, kv, indices=peers.k_t, pattern="gather")]
    if method == "quest":
        pages, kept_pages = peers.quest_pages(), sp.ceiling(peers.k_t / peers.p)
        return [_approx_kernel(terms, kv, extra=sp.Integer(0), pattern="contiguous", name="page_bounds", candidates=pages),
                _topk_kernel(terms, candidates=pages, kept=kept_pages, name="topk_pages"),
                _sparse_kernel(terms, kv, indices=kept_pages, pattern="contiguous")]
    if method == "h2o":
        return _h2o_kernels(terms, kv)
    if method == "aqua-h2o":
        return [*prologue, *_h2o_kernels(terms, kv)]
    # aqua-topk
    return [*prologue,
            _approx_kernel(terms, kv, extra=Q_HEADS * k * INDEX_BYTES, pattern="contiguous"),
            _topk_kernel(terms, candidates=N, kept=peers.k_t),
            _sparse_kernel(terms, kv, indices=peers.k_t, pattern="gather")]


def _prefill_kernels(method: str, layout: str | None, conv: Convention) -> list[Kernel]:
    if method == "h2o":
        return list(build_plan("dense-eager", phase="prefill", convention=conv).kernels)
    if method == "aqua-h2o":
        return list(build_plan("aqua-eager", phase="prefill", convention=conv).kernels)
    kernels = list(build_plan("dense-fused", phase="prefill", convention=conv).kernels)
    new_keys = KV_HEADS * T * d * s
    copy = Kernel("k_copy", sp.Integer(0), 2 * new_keys, "contiguous")  # read the new keys, write them dim-major
    if method in ("loki", "aqua-topk"):
        kernels.append(aqua_prologue("prefill", base_flop_terms("aqua", "prefill", conv))[1])  # rotate the new keys
    if method == "sparq" or method == "aqua-topk" or (method == "loki" and layout == "dim-major"):
        kernels.append(copy)
    if method == "quest":  # min/max of each new page: read the keys, write 2 vectors per page
        kernels.append(Kernel("page_metadata", KV_HEADS * peers.QUEST_UPDATE_FLOPS_PER_DIM * T * d,
                              new_keys + KV_HEADS * sp.ceiling(T / peers.p) * 2 * d * s, "contiguous", unit="vector"))
    return kernels


# -- comparison at matched settings -----------------------------------------------------------

@dataclass(frozen=True)
class MethodRow:
    """One method at the compared setting; ratios are relative to dense attention."""

    method: str
    settings: dict[str, int]
    bytes_per_step: float
    bytes_ratio: float
    kv_memory_ratio: float
    ceiling: float
    predicted_speedup: float
    time_s: float
    flop_breakeven_closed_form: str | None
    flop_breakeven_context: int | None
    closed_forms: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "settings": self.settings, "bytes_per_step_per_kv_head": self.bytes_per_step,
                "bytes_ratio": self.bytes_ratio, "kv_memory_ratio": self.kv_memory_ratio, "ceiling": self.ceiling,
                "predicted_speedup": self.predicted_speedup, "time_s": self.time_s,
                "flop_breakeven_closed_form": self.flop_breakeven_closed_form,
                "flop_breakeven_context": self.flop_breakeven_context, "closed_forms": self.closed_forms}


@dataclass(frozen=True)
class Comparison:
    """Every method against the dense baseline at one shape, on one hardware profile."""

    gpu: str
    mode: str
    baseline: str
    baseline_time_s: float
    inputs: dict[str, Any]
    convention: Convention
    rows: list[MethodRow]

    def row(self, method: str) -> MethodRow:
        for row in self.rows:
            if row.method == method:
                return row
        raise KeyError(f"no row for method {method!r}; have {[r.method for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "gpu": self.gpu, "mode": self.mode, "baseline": self.baseline,
                "baseline_time_s": self.baseline_time_s, "inputs": self.inputs, "convention": self.convention.to_dict(),
                "units": {"bytes_per_step_per_kv_head": "bytes", "time_s": "s per layer", "ratios": "method / dense"},
                "methods": [row.to_dict() for row in self.rows]}


def default_settings(*, d: int, context: int) -> dict[str, int]:
    """Matched defaults: r = d/8, k_t = b = N/16, p = 16, w = b/2, AQUA k = 3d/4 (each >= 1)."""
    tokens = max(1, int(context * DEFAULT_TOKENS_FRACTION))
    return {"r": max(1, int(d * DEFAULT_DIMS_FRACTION)), "k_t": tokens, "p": DEFAULT_PAGE_TOKENS, "b": tokens,
            "w": int(tokens * DEFAULT_WINDOW_FRACTION), "k": max(1, int(d * DEFAULT_AQUA_FRACTION))}


def _closed_forms(method: str, selection: str, layout: str | None, conv: Convention) -> dict[str, str]:
    return {
        "bytes_per_kv_head": str(peers.tidy(peers.decode_read_bytes(method, selection=selection, layout=layout))),
        "bytes_ratio": str(peers.tidy(peers.byte_ratio(method, selection=selection, layout=layout))),
        "kv_memory_ratio": str(peers.tidy(peers.memory_ratio(method, layout=layout))),
        "flops_per_query_head": str(sp.simplify(peers.total(peers.flop_terms(method, conv)))),
    }


def compare(
    *,
    d: int,
    context: int,
    gpu: str | HardwareProfile = "h200",
    batch: int = 8,
    heads_q: int = 32,
    heads_kv: int = 8,
    methods: tuple[str, ...] = peers.METHODS,
    r: int | None = None,
    k_t: int | None = None,
    page: int | None = None,
    budget: int | None = None,
    window: int | None = None,
    aqua_k: int | None = None,
    selection: str = "group",
    layouts: dict[str, str] | None = None,
    dtype: str = "bf16",
    baseline: str = "dense-fused",
    convention: Convention | None = None,
) -> Comparison:
    """Every method at matched settings against the dense baseline plan on ``gpu``.

    Settings left ``None`` take :func:`default_settings`; AQUA+top-k's approximate stage uses
    k = r dims, matched to SparQ's and Loki's. Per method: bytes per decode step
    and KV memory relative to dense, the FLOP break-even context (closed form where one
    exists, else the exact integer found by search), the memory-bound ceiling (dense bytes
    over the method's bytes) and the roofline-predicted speedup over ``baseline``.
    """
    check_choice("baseline", baseline, BASELINES)
    check_choice("selection", selection, GQA_SELECTIONS)
    for method in methods:
        peers.check_method(method)
    profile = resolve_profile(gpu)
    shape = resolve_shape(None, heads_q=heads_q, heads_kv=heads_kv, d=d, dtype=dtype)
    n_ctx = check_int("context", context, minimum=1)
    defaults = default_settings(d=shape.d, context=n_ctx)
    given = {"r": r, "k_t": k_t, "p": page, "b": budget, "w": window, "k": aqua_k}
    settings = {name: (defaults[name] if value is None else check_int(name, value, minimum=0 if name == "w" else 1)) for name, value in given.items()}
    if budget is not None and window is None:
        settings["w"] = int(settings["b"] * DEFAULT_WINDOW_FRACTION)
    conv = resolve(convention)
    layouts = dict(layouts or {})
    values: dict[str, Any] = {"B": check_int("batch", batch, minimum=1), "H_q": shape.heads_q, "H_kv": shape.heads_kv, "g": shape.g,
                              "N": n_ctx, "d": shape.d, "s": dtype_bytes(dtype), "S": profile.sector_bytes, **settings}
    check_fits_memory(shape, profile, values)
    base_time, _ = plan_time(build_plan(baseline, phase="decode", selection=selection, convention=conv), profile, values, dtype=dtype)
    dense_bytes = float(evaluate(peers.decode_read_bytes("dense"), values))
    rows = []
    for method in methods:
        layout = layouts.get(method)
        own = {name: settings[name] for name in peers.PARAMETERS[method]}
        if method == "aqua-topk":  # its approximate stage is matched to SparQ's and Loki's r dims
            own["k"] = settings["r"]
        peers.check_params(method, d=shape.d, context=n_ctx, params=own)
        mvalues = {**values, **own}
        method_bytes = float(evaluate(peers.decode_read_bytes(method, selection=selection, layout=layout), mvalues))
        time_s, _ = plan_time(build_peer_plan(method, selection=selection, layout=layout, convention=conv), profile, mvalues, dtype=dtype)
        closed = peers.breakeven_closed_form(method, conv)
        rows.append(MethodRow(
            method=method, settings=own, bytes_per_step=method_bytes, bytes_ratio=method_bytes / dense_bytes,
            kv_memory_ratio=float(evaluate(peers.memory_ratio(method, layout=layout), mvalues)),
            ceiling=dense_bytes / method_bytes, predicted_speedup=float(base_time / time_s), time_s=float(time_s),
            flop_breakeven_closed_form=None if closed is None else str(closed),
            flop_breakeven_context=peers.breakeven_exact(method, {"d": shape.d, "g": shape.g, **own}, convention=conv),
            closed_forms=_closed_forms(method, selection, layout, conv)))
    inputs = {"d": shape.d, "context": n_ctx, "batch": int(values["B"]), "heads_q": shape.heads_q, "heads_kv": shape.heads_kv,
              "dtype": dtype, "selection": selection, "layouts": layouts}
    return Comparison(profile.name, profile.mode, baseline, float(base_time), inputs, conv, rows)


__all__ = ["build_peer_plan", "compare", "default_settings", "Comparison", "MethodRow", "BASELINES"]
