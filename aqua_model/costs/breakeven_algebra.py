"""Closed-form FLOP break-even of AQUA against dense attention, derived with sympy.

AQUA pays a fixed overhead per query (rotating q, rotating the new key, selecting the top-k)
and saves 2(d - k) FLOPs on every (query, key) pair. Decode: the overhead is paid once per
step, the saving N times, so AQUA wins beyond N*. Prefill over T causal tokens: overhead T
times, saving T(T+1)/2 times. Both points are derived here from :mod:`.flops`; nothing is
hard-coded.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from .._checks import check_choice
from .convention import Convention
from .flops import PHASES, flop_terms, total
from .symbols import N, T, k


def cost_difference(phase: str, convention: Convention, granularity: str = "query") -> sp.Expr:
    """AQUA minus dense FLOPs per query head (negative where AQUA is cheaper).

    Decode is a function of N; prefill of T (a plain prompt: no cached keys, causal), and of
    M_t under tile-shared selection (``granularity="tile"``).
    """
    check_choice("phase", phase, PHASES)
    aqua = total(flop_terms("aqua", phase, convention, True, granularity))
    dense = total(flop_terms("dense", phase, convention))
    diff = sp.expand(aqua - dense)
    return diff if phase == "decode" else sp.expand(diff.subs(N, 0))


@cache
def breakeven_parts(
    phase: str, convention: Convention, granularity: str = "query"
) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """``(n_star, overhead, saving_rate)`` as expressions in d, k, g (and M_t for tiles).

    The difference is linear in the context after dividing out the query count:
    diff/queries = overhead - saving_rate * x, with x = N (decode) or T + 1 (prefill).
    n_star is the root in N (decode) or in T (prefill).
    """
    diff = cost_difference(phase, convention, granularity)
    if phase == "decode":
        overhead = diff.subs(N, 0)
        saving_rate = -sp.diff(diff, N)
        return _tidy(overhead) / _tidy(saving_rate), _tidy(overhead), _tidy(saving_rate)
    per_query = sp.expand(sp.cancel(diff / T))  # overhead - saving_rate * (T + 1)
    saving_rate = -sp.diff(per_query, T)
    overhead = sp.expand(per_query + saving_rate * (T + 1))
    return _tidy(overhead) / _tidy(saving_rate) - 1, _tidy(overhead), _tidy(saving_rate)


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Factor common terms for print (no log rewriting)."""
    return sp.factor_terms(sp.expand(expr))


@cache
def max_k_expr(phase: str, convention: Convention, granularity: str = "query") -> sp.Expr:
    """The k at which AQUA and dense cost the same at context N (decode) or T (prefill)."""
    diff = cost_difference(phase, convention, granularity)
    roots = sp.solve(sp.Eq(diff, 0), k)
    if len(roots) != 1:  # pragma: no cover - the model is linear in k by construction
        raise RuntimeError(f"expected one root in k, got {roots}")
    return sp.factor_terms(roots[0])
