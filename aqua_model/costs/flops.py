"""Symbolic FLOPs of dense attention and of AQUA, per query head and per component.

Components, in execution order:

* ``q_proj``  rotate the query by P (d x d);
* ``k_proj``  rotate the new key(s) by P, shared by the g query heads of a KV group;
* ``select``  |q^| and the top-k of d;
* ``scores``  q . k over the kept dims;
* ``softmax`` normalise the scores;
* ``value``   the probability-weighted sum of values (always all d dims).

Dense attention has only the last three. Every expression is in the symbols of
:mod:`aqua_model.costs.symbols` and depends on a :class:`~aqua_model.costs.convention.Convention`.
This module is the single source of truth for FLOPs: the break-even, the simulator, the
figures and the FLOP cross-check all read these expressions.
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from .._checks import check_choice
from .convention import Convention
from .symbols import N, T, d, g, k, log2
from .pairs import visible_pairs

METHODS = ("dense", "aqua")
PHASES = ("decode", "prefill")
COMPONENTS = ("q_proj", "k_proj", "select", "scores", "softmax", "value")


def selection_flops(convention: Convention) -> sp.Expr:
    """FLOPs to take |q^| and pick the top-k of its d entries, for one query."""
    if convention.selection == "sort":
        return d * log2(d)
    if convention.selection == "select":
        return _num(convention.select_flops_per_dim) * d
    return sp.Integer(0)


def _num(value: float) -> sp.Expr:
    """A convention number as an exact sympy number where it is integral."""
    return sp.Integer(int(value)) if float(value).is_integer() else sp.Float(value)


@lru_cache(maxsize=None)
def flop_terms(method: str, phase: str, convention: Convention, causal: bool = True) -> dict[str, sp.Expr]:
    """Per-query-head FLOPs by component.

    Decode: one query against N keys. Prefill: T new queries after N cached keys (N = 0 is
    a plain prompt), with :func:`visible_pairs` pairs (causal or not).
    """
    check_choice("method", method, METHODS)
    check_choice("phase", phase, PHASES)
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
    terms["select"] = queries * selection_flops(convention)
    terms["scores"] = fma * pairs * k
    return terms


def total(terms: dict[str, sp.Expr]) -> sp.Expr:
    """Sum of the components."""
    return sp.Add(*terms.values())
