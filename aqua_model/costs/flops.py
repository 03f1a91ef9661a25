"""Symbolic FLOPs of dense attention and of AQUA, per query head and per component.

Components, in execution order:

* ``q_proj``  rotate the query by P (d x d);
* ``k_proj``  rotate the new key(s) by P, shared by the g query heads of a KV group;
* ``select``  |q^| and the top-k of d;
* ``scores``  q . k over the kept dims;
* ``softmax`` normalise the scores;
* ``value``   the probability-weighted sum of values (always all d dims).

Dense attention has only the last three. Selection granularity (``granularity``): ``"query"``,
each query its own k dims (the paper's AQUA); ``"tile"``, in prefill, the M_t queries of a
tile of one head share the top-k of their summed |q^| (what a tensor-core kernel can exploit:
the score product of the tile then runs over k dims). Only ``select`` depends on it: a tile
pays M_t - 1 magnitude sums and one top-k, so per query (selection + (M_t - 1) d c) / M_t with
c = ``tile_sum_flops_per_dim``; at M_t = 1 that is the per-query count. Every expression is in the symbols of
:mod:`aqua_model.costs.symbols` and depends on a :class:`~aqua_model.costs.convention.Convention`.
This module is the single source of truth for FLOPs: the break-even, the simulator, the
figures and the FLOP cross-check all read these expressions.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from .._checks import check_choice
from .convention import Convention
from .pairs import visible_pairs
from .symbols import M_t, N, T, d, g, k, log2

METHODS = ("dense", "aqua")
PHASES = ("decode", "prefill")
COMPONENTS = ("q_proj", "k_proj", "select", "scores", "softmax", "value")
#: Selection granularities: each query its own dims, or a tile of M_t queries (prefill) shares them.
GRANULARITIES = ("query", "tile")


def selection_flops(convention: Convention, granularity: str = "query") -> sp.Expr:
    """FLOPs per query to take |q^| and pick the top-k of its d entries: for one query
    (``"query"``), or its share of a tile of M_t queries that sums their |q^| and picks once
    (``"tile"``: (selection + (M_t - 1) d tile_sum_flops_per_dim) / M_t; free under "none")."""
    check_choice("granularity", granularity, GRANULARITIES)
    if convention.selection == "sort":
        one = d * log2(d)
    elif convention.selection == "select":
        one = _num(convention.select_flops_per_dim) * d
    else:
        return sp.Integer(0)
    if granularity == "query":
        return one
    return (one + (M_t - 1) * d * _num(convention.tile_sum_flops_per_dim)) / M_t


def _num(value: float) -> sp.Expr:
    """A convention number as an exact sympy number where it is integral."""
    return sp.Integer(int(value)) if float(value).is_integer() else sp.Float(value)


@cache
def flop_terms(
    method: str, phase: str, convention: Convention, causal: bool = True, granularity: str = "query"
) -> dict[str, sp.Expr]:
    """Per-query-head FLOPs by component.

    Decode: one query against N keys. Prefill: T new queries after N cached keys (N = 0 is
    a plain prompt), with :func:`visible_pairs` pairs (causal or not). ``granularity``
    "tile" (prefill only) shares each selection among M_t queries (symbol M_t).
    """
    check_choice("method", method, METHODS)
    check_choice("phase", phase, PHASES)
    check_choice("granularity", granularity, GRANULARITIES)
    if granularity == "tile" and phase == "decode":
        raise ValueError(
            "granularity 'tile' (selection shared by a tile of queries) is a prefill option; a decode step "
            "has one query per head, so phase must be 'prefill', got 'decode'"
        )
    fma = _num(convention.flops_per_mac)
    soft = _num(convention.softmax_flops_per_score)
    if phase == "decode":
        queries, pairs, new_keys, all_keys = sp.Integer(1), N, sp.Integer(1), N
    else:
        queries, pairs, new_keys, all_keys = T, visible_pairs(causal=causal), T, N + T
    terms = dict.fromkeys(COMPONENTS, sp.Integer(0))
    terms["softmax"] = soft * pairs
    terms["value"] = fma * pairs * d
    if method == "dense":
        terms["scores"] = fma * pairs * d
        return terms
    if convention.projection == "online":
        terms["q_proj"] = queries * fma * d**2
        projected = new_keys if convention.key_projection == "shared" else all_keys
        terms["k_proj"] = projected * fma * d**2 / g
    terms["select"] = queries * selection_flops(convention, granularity)
    terms["scores"] = fma * pairs * k
    return terms


def total(terms: dict[str, sp.Expr]) -> sp.Expr:
    """Sum of the components."""
    return sp.Add(*terms.values())
