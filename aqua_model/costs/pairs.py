"""How many (query, key) pairs an attention call evaluates, in closed form."""

from __future__ import annotations

import sympy as sp

from .symbols import N, T


def visible_pairs(*, causal: bool, cached: sp.Expr = N, new: sp.Expr = T) -> sp.Expr:
    """Pairs for ``new`` queries appended after ``cached`` keys (``new`` keys of their own).

    Causal: query i (1-based among the new ones) sees the cached keys and new keys 1..i,
    so the count is new*cached + new*(new+1)/2 (the square case cached=0 gives T(T+1)/2).
    Non-causal: every query sees every key, new*(cached+new).
    """
    if causal:
        return new * cached + new * (new + 1) / 2
    return new * (cached + new)
