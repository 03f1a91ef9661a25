"""Symbolic decode costs of AQUA's neighbours: SparQ, Loki, Quest, H2O, AQUA+H2O, AQUA+top-k.

FLOPs are per query head and per decode step, by component (:data:`COMPONENTS`); bytes
are HBM reads per KV head and per layer, by term (:data:`BYTE_TERMS`); KV memory is per
KV head and per layer. Where a step is the same math as AQUA's, the expression is taken
from :mod:`.flops` / :mod:`.memory` (projections, top-k of d, dim-major reads, the GQA
union of per-head selections), never re-typed.

Method parameters (r, k_t, p, b, w) are named symbols of :mod:`aqua_model.costs.symbols`, like
every other symbol of the model.

What each method reads per decode step (per KV head, group selection):

* ``sparq``  r of d dims of a duplicated dim-major K over N tokens (r*N*s), the k_t chosen
  tokens' K and V rows (2*k_t*d*s), and the running mean of V (d*s). Stores K twice.
* ``loki``   the first r PCA dims of rotated keys: token-major (whole sectors of the
  prefix, N*S*ceil(r*s/S)) or a dim-major copy (r*N*s); then 2*k_t*d*s.
* ``quest``  per-page min and max keys (2*d*s per page of p tokens), then the selected
  pages' K and V (2*ceil(k_t/p)*p*d*s).
* ``h2o``    K and V of the b kept tokens (heavy hitters plus a recent window w) and the
  accumulated-score vector of the b kept tokens (read and written, then read for eviction).
* ``aqua-h2o``  AQUA's k dims on the H2O budget: AQUA's bytes with N -> b, plus H2O's.
* ``aqua-topk`` AQUA's approximate scores over N with k rotated dims (k*N*s, dim-major),
  then exact attention over the top k_t tokens of a token-major rotated copy (2*k_t*d*s).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np
import sympy as sp

from .._checks import check_choice, check_int_array
from . import memory, symbols as _symbols
from .breakeven_algebra import breakeven_parts
from .breakeven_search import BREAKEVEN_SEARCH_LIMIT, smallest_winning_context
from .convention import Convention, resolve
from .dtypes import check_element_bytes, check_whole_elements_per_sector
from .flops import flop_terms as _base_flop_terms, selection_flops
from .numeric import evaluate
from .symbols import N, S, b, d, g, k, k_t, log2, p, r, s, w

#: The peer parameters (defined with their meanings in :mod:`aqua_model.costs.symbols`).
MEANING: dict[sp.Symbol, str] = {sym: _symbols.MEANING[sym] for sym in (r, k_t, p, b, w)}

PEER_METHODS = ("sparq", "loki", "quest", "h2o", "aqua-h2o", "aqua-topk")
METHODS = ("dense", "aqua", *PEER_METHODS)
#: FLOP components, in execution order. ``approx``: the approximate scores or page bounds;
#: ``token_select``: the top-k of tokens or pages; ``bookkeeping``: SparQ's mean-V blend,
#: Quest's metadata update, H2O's score accumulation and eviction.
COMPONENTS = (
    "q_proj",
    "k_proj",
    "select",
    "approx",
    "token_select",
    "scores",
    "softmax",
    "value",
    "bookkeeping",
)
#: Byte terms: ``approx`` (keys or metadata read to choose tokens), ``attention`` (K and V
#: read by the attention proper), ``bookkeeping`` (mean V, accumulated scores).
BYTE_TERMS = ("approx", "attention", "bookkeeping")
#: Parameters of each method, by symbol name (``k`` is AQUA's kept dims).
PARAMETERS: dict[str, tuple[str, ...]] = {
    "dense": (),
    "aqua": ("k",),
    "sparq": ("r", "k_t"),
    "loki": ("r", "k_t"),
    "quest": ("p", "k_t"),
    "h2o": ("b", "w"),
    "aqua-h2o": ("k", "b", "w"),
    "aqua-topk": ("k", "k_t"),
}
#: Key layouts a method may be given (first = default); methods not listed have one layout.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "aqua": memory.LAYOUTS,
    "aqua-h2o": memory.LAYOUTS,
    "loki": ("token-major", "dim-major"),
}

#: Bytes of one approximate or accumulated score (fp32).
SCORE_BYTES = 4
#: FLOPs per dim of Quest's page bound: q*min, q*max, their max, the sum.
QUEST_BOUND_FLOPS_PER_DIM = 4
#: FLOPs per dim of Quest's metadata update for a new key (a min and a max), per KV head.
QUEST_UPDATE_FLOPS_PER_DIM = 2
#: FLOPs per element of SparQ's blend alpha*y + (1 - alpha)*v_mean (two products, one sum).
SPARQ_BLEND_FLOPS_PER_DIM = 3
#: FLOPs per element of SparQ's running-mean update v_mean += (v - v_mean)/N, per KV head.
SPARQ_MEAN_UPDATE_FLOPS_PER_DIM = 3


def _union(selected: sp.Expr, total: sp.Expr, selection: str) -> sp.Expr:
    """Distinct items a KV group reads: AQUA's GQA union formula with (k, d) -> (selected, total)."""
    return memory.selected_dims(selection).subs({k: selected, d: total}, simultaneous=True)


def _top_of(n: sp.Expr, convention: Convention) -> sp.Expr:
    """FLOPs to pick the top entries of n scores: AQUA's selection cost model with d -> n."""
    return selection_flops(convention).subs(d, n)


def quest_pages() -> sp.Expr:
    """Pages of N cached tokens (the last one may be partial)."""
    return sp.ceiling(N / p)


def quest_budget_tokens() -> sp.Expr:
    """Tokens Quest attends to: the budget rounded up to whole pages."""
    return sp.ceiling(k_t / p) * p


def check_method(method: str) -> str:
    """Return ``method`` if it is one of :data:`METHODS`."""
    return check_choice("method", method, METHODS)


def _check_layout(method: str, layout: str | None) -> str | None:
    if layout is None:
        return LAYOUTS[method][0] if method in LAYOUTS else None
    if method not in LAYOUTS:
        raise ValueError(
            f"layout is only used by {sorted(LAYOUTS)}; got layout={layout!r} for method={method!r}"
        )
    return check_choice("layout", layout, LAYOUTS[method])


@cache
def flop_terms(method: str, convention: Convention | None = None) -> dict[str, sp.Expr]:
    """Decode FLOPs per query head by component (keys of :data:`COMPONENTS`)."""
    check_method(method)
    conv = resolve(convention)
    fma = (
        sp.Integer(int(conv.flops_per_mac))
        if float(conv.flops_per_mac).is_integer()
        else sp.Float(conv.flops_per_mac)
    )
    dense = _base_flop_terms("dense", "decode", conv)
    aqua = _base_flop_terms("aqua", "decode", conv)
    soft_per_score = dense["softmax"] / N
    terms = dict.fromkeys(COMPONENTS, sp.Integer(0))

    def exact_over(tokens: sp.Expr) -> None:
        for name in ("scores", "softmax", "value"):
            terms[name] = dense[name].subs(N, tokens)

    if method in ("dense", "aqua"):
        base = dense if method == "dense" else aqua
        terms.update({name: base[name] for name in base})
    elif method == "sparq":
        terms["select"] = aqua["select"]  # top-r of d |q|: AQUA's top-k-of-d cost model
        # r-dim dot products and their softmax over all N, plus the two L1 norms of the
        # temperature sqrt(d * |q_r|_1 / |q|_1).
        terms["approx"] = fma * N * r + soft_per_score * N + d + r
        terms["token_select"] = _top_of(N, conv)
        exact_over(k_t)
        terms["bookkeeping"] = k_t + SPARQ_BLEND_FLOPS_PER_DIM * d + SPARQ_MEAN_UPDATE_FLOPS_PER_DIM * d / g
    elif method == "loki":
        terms["q_proj"], terms["k_proj"] = aqua["q_proj"], aqua["k_proj"]  # PCA basis: AQUA's rotation
        terms["approx"] = fma * N * r
        terms["token_select"] = _top_of(N, conv)
        exact_over(k_t)
    elif method == "quest":
        terms["approx"] = QUEST_BOUND_FLOPS_PER_DIM * d * quest_pages()
        terms["token_select"] = _top_of(quest_pages(), conv)
        exact_over(quest_budget_tokens())
        terms["bookkeeping"] = QUEST_UPDATE_FLOPS_PER_DIM * d / g
    elif method in ("h2o", "aqua-h2o"):
        base = dense if method == "h2o" else aqua
        terms.update({name: base[name].subs(N, b) for name in base})
        terms["bookkeeping"] = h2o_accumulate_flops() + h2o_evict_flops()
    else:  # aqua-topk
        for name in ("q_proj", "k_proj", "select"):
            terms[name] = aqua[name]
        terms["approx"] = aqua["scores"]  # AQUA's k-dim scores over all N
        terms["token_select"] = _top_of(N, conv)
        exact_over(k_t)
    return terms


def total(terms: Mapping[str, sp.Expr]) -> sp.Expr:
    """Sum of the components."""
    return sp.Add(*terms.values())


def h2o_accumulate_flops() -> sp.Expr:
    """Per query head: add its b attention probabilities to the group's accumulated scores."""
    return b


def h2o_evict_flops() -> sp.Expr:
    """Per query head: one argmin over the b - w heavy-hitter candidates per KV head, shared by g heads."""
    return (b - w) / g


def h2o_accumulate_bytes() -> sp.Expr:
    """Per KV head: read and write the b accumulated scores."""
    return 2 * b * SCORE_BYTES


def h2o_evict_bytes() -> sp.Expr:
    """Per KV head: read the b - w heavy-hitter scores to find the one to evict."""
    return (b - w) * SCORE_BYTES


def h2o_bookkeeping_bytes() -> sp.Expr:
    """Accumulated-score traffic per KV head: accumulate, then evict."""
    return h2o_accumulate_bytes() + h2o_evict_bytes()


@cache
def byte_terms(method: str, *, selection: str = "group", layout: str | None = None) -> dict[str, sp.Expr]:
    """HBM bytes one decode step reads per KV head and layer, by term (:data:`BYTE_TERMS`).

    ``selection``: ``group`` (the g heads of a KV group share one selection) or
    ``per-head`` (each head selects its own dims, tokens or pages; the expected union of
    independent uniform selections is read). ``layout``: see :data:`LAYOUTS`.
    """
    check_method(method)
    check_choice("selection", selection, memory.GQA_SELECTIONS)
    lay = _check_layout(method, layout)
    terms = dict.fromkeys(BYTE_TERMS, sp.Integer(0))
    rows = memory.kv_cache_bytes("dense").subs(N, 1)  # one token's K and V
    if method == "dense":
        terms["attention"] = memory.decode_read_bytes("dense")
    elif method == "aqua":
        assert lay is not None  # LAYOUTS gives every AQUA method a default layout
        terms["attention"] = memory.decode_read_bytes("aqua", layout=lay, selection=selection)
    elif method == "sparq":
        terms["approx"] = _union(r, d, selection) * N * s
        terms["attention"] = _union(k_t, N, selection) * rows
        terms["bookkeeping"] = memory.head_tensor_bytes(1)  # the running mean of V
    elif method == "loki":
        if lay == "dim-major":
            terms["approx"] = r * N * s
        else:  # the static prefix of each token-major row: whole sectors
            terms["approx"] = N * S * memory.sectors_per_token("prefix").subs(k, r)
        terms["attention"] = _union(k_t, N, selection) * rows
    elif method == "quest":
        terms["approx"] = quest_pages() * rows  # min and max key per page
        terms["attention"] = _union(sp.ceiling(k_t / p), quest_pages(), selection) * p * rows
    elif method == "h2o":
        terms["attention"] = memory.decode_read_bytes("dense").subs(N, b)
        terms["bookkeeping"] = h2o_bookkeeping_bytes()
    elif method == "aqua-h2o":
        assert lay is not None  # LAYOUTS gives every AQUA method a default layout
        terms["attention"] = memory.decode_read_bytes("aqua", layout=lay, selection=selection).subs(N, b)
        terms["bookkeeping"] = h2o_bookkeeping_bytes()
    else:  # aqua-topk
        terms["approx"] = memory.selected_dims(selection) * N * s  # AQUA's dim-major key read
        terms["attention"] = _union(k_t, N, selection) * rows
    return terms


def decode_read_bytes(method: str, *, selection: str = "group", layout: str | None = None) -> sp.Expr:
    """Total HBM bytes per KV head of one decode step (sum of :func:`byte_terms`)."""
    return sp.Add(*byte_terms(method, selection=selection, layout=layout).values())


@cache
def kv_cache_bytes(method: str, *, layout: str | None = None) -> sp.Expr:
    """KV memory per KV head and layer, with every copy and metadata the method keeps.

    Dense and AQUA (full rotated keys, m = d): 2*N*d*s. SparQ, AQUA+top-k and Loki with a
    dim-major copy: 3*N*d*s (SparQ also keeps the mean of V, d*s). Quest: + 2*d*s per
    page. H2O and AQUA+H2O: the budget, 2*b*d*s, plus b accumulated scores.
    """
    check_method(method)
    lay = _check_layout(method, layout)
    dense = memory.kv_cache_bytes("dense")
    if method in ("dense", "aqua") or (method == "loki" and lay == "token-major"):
        return dense if method != "aqua" else memory.kv_cache_bytes("aqua").subs(_symbols.m, d)
    if method == "sparq":
        return dense + memory.head_tensor_bytes() + memory.head_tensor_bytes(1)
    if method in ("loki", "aqua-topk"):
        return dense + memory.head_tensor_bytes()
    if method == "quest":
        return dense + quest_pages() * memory.kv_cache_bytes("dense").subs(N, 1)
    return dense.subs(N, b) + b * SCORE_BYTES  # h2o, aqua-h2o


def byte_ratio(method: str, *, selection: str = "group", layout: str | None = None) -> sp.Expr:
    """Bytes per decode step relative to dense attention."""
    return decode_read_bytes(method, selection=selection, layout=layout) / decode_read_bytes("dense")


def memory_ratio(method: str, *, layout: str | None = None) -> sp.Expr:
    """KV memory relative to dense attention."""
    return kv_cache_bytes(method, layout=layout) / kv_cache_bytes("dense")


def ceiling_speedup(method: str, *, selection: str = "group", layout: str | None = None) -> sp.Expr:
    """Memory-bound speedup ceiling: dense bytes over the method's bytes."""
    return decode_read_bytes("dense") / decode_read_bytes(method, selection=selection, layout=layout)


def tidy(expr: sp.Expr) -> sp.Expr:
    """A readable form for print: cancel and factor common terms (no log rewriting)."""
    return sp.factor_terms(sp.cancel(sp.together(expr)))


# -- validation -----------------------------------------------------------------------------


def check_params(method: str, *, d: Any, context: Any, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate a method's parameters; returns them as int arrays keyed by symbol name.

    Ranges: 1 <= k, r <= d; 1 <= k_t <= N; 1 <= p <= N with ceil(k_t/p)*p <= N (Quest);
    1 <= b <= N and 0 <= w <= b (H2O). Raises ValueError naming a missing or unknown one.
    """
    check_method(method)
    allowed = PARAMETERS[method]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"method {method!r} takes parameters {list(allowed)}; got unknown {unknown}")
    missing = [name for name in allowed if params.get(name) is None]
    if missing:
        raise ValueError(f"method {method!r} needs parameter(s) {missing} (allowed: {list(allowed)})")
    d_a = check_int_array("d", d, minimum=1)
    n_a = check_int_array("context", context, minimum=1)
    out: dict[str, np.ndarray] = {}
    for name in allowed:
        value = check_int_array(name, params[name], minimum=0 if name == "w" else 1)
        limit, label = {
            "k": (d_a, "d"),
            "r": (d_a, "d"),
            "k_t": (n_a, "context N"),
            "p": (n_a, "context N"),
            "b": (n_a, "context N"),
        }.get(name, (None, ""))
        if limit is not None and np.any(value > limit):
            raise ValueError(f"{name} must be <= {label} ({limit.tolist()}), got {name}={params[name]!r}")
        out[name] = value
    if "w" in out and np.any(out["w"] > out["b"]):
        raise ValueError(f"w (recent window) must be <= b (budget), got w={params['w']!r}, b={params['b']!r}")
    if method == "quest" and np.any(-(-out["k_t"] // out["p"]) * out["p"] > n_a):
        raise ValueError(
            f"k_t rounded up to whole pages of p must be <= context, got k_t={params['k_t']!r}, "
            f"p={params['p']!r}, context={context!r}"
        )
    return out


# -- numeric entry points ---------------------------------------------------------------------


def _values(
    method: str, *, d: Any, context: Any, g: Any, params: Mapping[str, Any], **extra: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "d": check_int_array("d", d, minimum=1),
        "N": check_int_array("context", context, minimum=1),
        "g": check_int_array("g", g, minimum=1),
    }
    values.update(check_params(method, d=d, context=context, params=params))
    values.update(extra)
    return values


def decode_flops(
    *, method: str, d: Any, context: Any, g: Any = 1, convention: Convention | None = None, **params: Any
) -> dict[str, Any]:
    """Decode FLOPs per query head by component plus ``"total"``; sizes may be arrays."""
    values = _values(method, d=d, context=context, g=g, params=params)
    terms = flop_terms(method, resolve(convention))
    out = {name: evaluate(expr, values) for name, expr in terms.items()}
    out["total"] = evaluate(total(terms), values)
    return out


def decode_bytes(
    *,
    method: str,
    d: Any,
    context: Any,
    g: Any = 1,
    dtype_bytes: Any = 2,
    sector_bytes: Any = 32,
    selection: str = "group",
    layout: str | None = None,
    **params: Any,
) -> Any:
    """HBM bytes per KV head of one decode step; sizes may be arrays."""
    values = _values(
        method,
        d=d,
        context=context,
        g=g,
        params=params,
        s=check_element_bytes("dtype_bytes", dtype_bytes),
        S=check_int_array("sector_bytes", sector_bytes, minimum=1),
    )
    if _check_layout(method, layout) == "token-major":
        check_whole_elements_per_sector(values["S"], values["s"])
    return evaluate(decode_read_bytes(method, selection=selection, layout=layout), values)


def kv_memory_bytes(
    *, method: str, d: Any, context: Any, dtype_bytes: Any = 2, layout: str | None = None, **params: Any
) -> Any:
    """KV memory per KV head and layer; sizes may be arrays."""
    values = _values(
        method,
        d=d,
        context=context,
        g=1,
        params=params,
        s=check_element_bytes("dtype_bytes", dtype_bytes),
    )
    return evaluate(kv_cache_bytes(method, layout=layout), values)


# -- FLOP break-even against dense ------------------------------------------------------------


def flop_difference(method: str, convention: Convention | None = None) -> sp.Expr:
    """Method minus dense decode FLOPs per query head (negative where the method is cheaper)."""
    conv = resolve(convention)
    return sp.expand(total(flop_terms(method, conv)) - total(flop_terms("dense", conv)))


def _has_log_of_context(expr: sp.Expr) -> bool:
    return any(isinstance(node, log2) and node.has(N) for node in sp.preorder_traversal(expr))


def breakeven_closed_form(method: str, convention: Convention | None = None) -> sp.Expr | None:
    """Context N* at which the method and dense cost the same FLOPs, in closed form.

    The method's own parameters are held fixed (a fixed token budget k_t or b). Quest's
    page count ceil(N/p) is taken as N/p (exact when p divides N). ``None`` where no
    closed form exists: a top-k over N tokens costed as a sort (N*log2 N) makes the
    equation transcendental; use :func:`breakeven_exact` then.
    """
    diff = (
        flop_difference(method, convention).replace(sp.ceiling, lambda arg: arg)
        if method == "quest"
        else flop_difference(method, convention)
    )
    if method in ("dense", "aqua") or _has_log_of_context(diff):
        return None if method != "aqua" else _aqua_closed_form(convention)
    roots = sp.solve(sp.Eq(diff, 0), N)
    return tidy(roots[0]) if len(roots) == 1 else None


def _aqua_closed_form(convention: Convention | None) -> sp.Expr:
    return breakeven_parts("decode", resolve(convention))[0]


def breakeven_exact(
    method: str,
    *,
    d: Any,
    g: Any = 1,
    convention: Convention | None = None,
    limit: int = BREAKEVEN_SEARCH_LIMIT,
    **params: Any,
) -> int | None:
    """Smallest integer context N at which the method needs strictly fewer FLOPs than dense.

    ``params`` are the method's parameters by symbol name (:data:`PARAMETERS`: k, r, k_t, p,
    b, w; scalars). The search (:func:`.breakeven_search.smallest_winning_context`) runs over
    every N from the smallest the parameters allow (N >= k_t, b, and whole Quest pages) to
    ``limit``; ``None`` if the method never wins there.
    """
    check_method(method)
    if method == "dense":
        return None
    missing = [name for name in PARAMETERS[method] if params.get(name) is None]
    if missing:
        raise ValueError(
            f"method {method!r} needs parameter(s) {missing} (allowed: {list(PARAMETERS[method])})"
        )
    own = {name: int(params[name]) for name in PARAMETERS[method]}
    lower = max([1, own.get("k_t", 1), own.get("b", 1)])
    if method == "quest":
        lower = max(lower, -(-own["k_t"] // own["p"]) * own["p"])
    diff = flop_difference(method, convention)
    values = {"d": d, "g": g, **own}
    return smallest_winning_context(
        lambda contexts: evaluate(diff, {**values, "N": contexts}) < 0, lower=lower, limit=limit
    )


__all__ = [
    "r",
    "k_t",
    "p",
    "b",
    "w",
    "MEANING",
    "METHODS",
    "PEER_METHODS",
    "COMPONENTS",
    "BYTE_TERMS",
    "PARAMETERS",
    "LAYOUTS",
    "flop_terms",
    "total",
    "byte_terms",
    "decode_read_bytes",
    "kv_cache_bytes",
    "byte_ratio",
    "memory_ratio",
    "ceiling_speedup",
    "check_params",
    "decode_flops",
    "decode_bytes",
    "kv_memory_bytes",
    "flop_difference",
    "breakeven_closed_form",
    "breakeven_exact",
    "quest_pages",
    "quest_budget_tokens",
    "h2o_bookkeeping_bytes",
    "tidy",
]
