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


def tile_pairs(
    *, block_m: int, block_n: int, causal: bool = True, cached: sp.Expr = N, new: sp.Expr = T
) -> sp.Expr:
    """Pairs a tiled kernel multiplies: each tile of ``block_m`` queries (ceil(new/block_m)
    tiles, the last one padded) takes whole blocks of ``block_n`` keys up to its last visible
    key, so the masked half of the diagonal blocks and the padding rows are counted.

    Causal: tile j (0-based) of a FlashAttention-style loop ends at key min(cached + (j+1) block_m,
    cached + new), so it takes ceil(cached/block_n) + (j+1) block_m/block_n blocks, the last tile
    ceil((cached + new)/block_n): with n = ceil(new/block_m) tiles and block_n dividing block_m,
    block_m block_n [(n - 1) ceil(cached/block_n) + (block_m/block_n)(n - 1)n/2 + ceil((cached + new)/block_n)].
    Non-causal: n block_m block_n ceil((cached + new)/block_n).
    """
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if block_m % block_n:
        raise ValueError(f"block_n must divide block_m, got block_m={block_m}, block_n={block_n}")
    tiles = sp.ceiling(new / block_m)
    last = sp.ceiling((cached + new) / block_n)
    if not causal:
        return tiles * block_m * block_n * last
    per = sp.Integer(block_m // block_n)
    return (
        block_m
        * block_n
        * ((tiles - 1) * sp.ceiling(cached / block_n) + per * (tiles - 1) * tiles / 2 + last)
    )
