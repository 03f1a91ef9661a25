"""``breakeven()`` and ``max_k()``: where AQUA starts to need fewer FLOPs than dense attention."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any

import mpmath
import sympy as sp

from .._checks import check_choice, check_int
from . import symbols as sym
from .breakeven_algebra import breakeven_parts, max_k_expr
from .convention import Convention, resolve
from .flops import PHASES, flop_terms
from .sizes import MIN_HEAD_DIM, check_kept_dims

SCHEMA_VERSION = 1
#: Largest head dimension and group size accepted (real models use d <= 256, g <= 16; the
#: bound keeps the exact mpmath evaluation finite).
MAX_SIZE = 1 << 20
_PRECISION_DIGITS = 50
_MP_MODULES = [{"log2": lambda x: mpmath.log(x, 2)}, "mpmath"]


@cache
def _compiled(phase: str, convention: Convention, granularity: str = "query") -> tuple[Any, Any, sp.Expr]:
    """Lambdified overhead and saving rate (mpmath, exact enough for integer tests), in d, k, g, M_t."""
    n_star, overhead, rate = breakeven_parts(phase, convention, granularity)
    args = [sym.d, sym.k, sym.g, sym.M_t]
    return (
        sp.lambdify(args, overhead, modules=_MP_MODULES),
        sp.lambdify(args, rate, modules=_MP_MODULES),
        n_star,
    )


@dataclass(frozen=True)
class BreakEven:
    """The FLOP break-even context of AQUA against dense attention, per query head.

    ``n_star`` is the context (keys N for decode, prompt tokens T for prefill) where the two
    cost the same; ``n_min`` the smallest integer context at which AQUA is strictly cheaper
    (``None`` when it never is: ``never`` is then True and ``n_star`` is ``inf``).
    """

    d: int
    k: int
    g: int
    phase: str
    convention: Convention
    n_star: float
    n_min: int | None
    never: bool
    expr: sp.Expr
    overhead_flops: float
    saving_flops_per_unit: float
    terms: Mapping[str, sp.Expr] = field(repr=False)
    selection_tile: int | None = None

    @property
    def reduction(self) -> float:
        """Fraction of dot-product FLOPs AQUA removes: (d - k)/d (0.25 at k = 96 of 128)."""
        return (self.d - self.k) / self.d

    def latex(self) -> str:
        """The closed form as LaTeX, e.g. for a paper."""
        lhs = "N^*" if self.phase == "decode" else "T^*"
        return f"{lhs} = {sp.latex(self.expr)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result, with schema version and convention."""
        return {
            "schema_version": SCHEMA_VERSION,
            "phase": self.phase,
            "d": self.d,
            "k": self.k,
            "g": self.g,
            "selection_tile": self.selection_tile,
            "n_star": None if self.never else self.n_star,
            "n_min": self.n_min,
            "never": self.never,
            "reduction": self.reduction,
            "expr": str(self.expr),
            "latex": self.latex(),
            "overhead_flops": self.overhead_flops,
            "saving_flops_per_unit": self.saving_flops_per_unit,
            "terms": {name: str(e) for name, e in self.terms.items()},
            "convention": self.convention.to_dict(),
            "convention_label": self.convention.label(),
        }

    def __str__(self) -> str:
        ctx = "context N" if self.phase == "decode" else "prompt T"
        tile = (
            ""
            if self.selection_tile is None
            else f", selection shared by tiles of M_t={self.selection_tile} queries"
        )
        head = (
            f"AQUA {self.phase} break-even, d={self.d}, k={self.k}, g={self.g}{tile} "
            f"({self.reduction:.1%} fewer dot-product FLOPs)"
        )
        if self.never:
            why = (
                "k = d saves nothing"
                if self.k == self.d
                else "the per-token overhead grows as fast as the saving"
            )
            body = f"AQUA never needs fewer FLOPs than dense attention ({why})."
        else:
            body = f"{ctx}* = {self.n_star:.6g}; AQUA is cheaper from {ctx} = {self.n_min}."
        return f"{head}\n  {body}\n  closed form: {self.expr}\n  convention: {self.convention.label()}"


def _validate(d_: Any, k_: Any, g_: Any, phase: str) -> tuple[int, int, int, str]:
    d_i = check_int("d", d_, minimum=MIN_HEAD_DIM, maximum=MAX_SIZE)
    k_i = int(check_kept_dims(check_int("k", k_, minimum=1), d_i))
    g_i = check_int("g", g_, minimum=1, maximum=MAX_SIZE)
    return d_i, k_i, g_i, check_choice("phase", phase, PHASES)


def _tile(selection_tile: Any, phase: str) -> int | None:
    """``selection_tile`` checked: None (per-query selection) or queries per tile >= 1, prefill only."""
    if selection_tile is None:
        return None
    tile = check_int("selection_tile", selection_tile, minimum=1, maximum=MAX_SIZE)
    if phase != "prefill":
        raise ValueError(
            f"selection_tile (queries sharing one selection) is a prefill option; phase must be 'prefill', "
            f"got phase={phase!r} with selection_tile={selection_tile!r}"
        )
    return tile


def breakeven(
    d: int = 128,
    k: int = 96,
    *,
    g: int = 1,
    phase: str = "decode",
    convention: Convention | None = None,
    selection_tile: int | None = None,
) -> BreakEven:
    """FLOP break-even of AQUA (k of d dims) against dense attention.

    Decode under the default convention: N* = d(2d + 2d/g + log2 d) / (2(d - k)), i.e.
    1038 at d=128, k=96, g=1, so AQUA is cheaper from N = 1039. Prefill (causal, per-query
    selection): T* = d(2d + 2d/g + log2 d)/(d - k) - 1. ``selection_tile=M`` (prefill): the
    M queries of a tile share one selection, T* = d(2d + 2d/g + (log2 d + 2(M - 1))/M)/(d - k) - 1
    (2 = the convention's tile_sum_flops_per_dim; M = 1 is the per-query value).
    """
    d_i, k_i, g_i, phase = _validate(d, k, g, phase)
    return _breakeven(d_i, k_i, g_i, phase, resolve(convention), _tile(selection_tile, phase))


@lru_cache(maxsize=4096)
def _breakeven(
    d_i: int, k_i: int, g_i: int, phase: str, conv: Convention, tile: int | None = None
) -> BreakEven:
    """Cached core of :func:`breakeven` (results are immutable)."""
    granularity = "query" if tile is None else "tile"
    overhead_fn, rate_fn, expr = _compiled(phase, conv, granularity)
    with mpmath.workdps(_PRECISION_DIGITS):
        overhead = overhead_fn(d_i, k_i, g_i, 1 if tile is None else tile)
        rate = rate_fn(d_i, k_i, g_i, 1 if tile is None else tile)
        never = rate <= 0
        if never:
            n_star, n_min = math.inf, None
        else:
            root = overhead / rate - (1 if phase == "prefill" else 0)
            n_star = float(root)
            n_min = max(1, int(mpmath.floor(root + mpmath.mpf(10) ** (-30))) + 1)
    subs = {sym.d: d_i, sym.k: k_i, sym.g: g_i, sym.M_t: 1 if tile is None else tile}
    if phase == "prefill":
        subs[sym.N] = 0  # the prefill break-even is for a plain prompt (no cached keys)
    terms = MappingProxyType(
        {
            f"{method}.{name}": sp.sympify(e).subs(subs)
            for method in ("dense", "aqua")
            for name, e in flop_terms(method, phase, conv, True, granularity).items()
        }
    )
    return BreakEven(
        d=d_i,
        k=k_i,
        g=g_i,
        phase=phase,
        convention=conv,
        n_star=n_star,
        n_min=n_min,
        never=bool(never),
        expr=expr,
        overhead_flops=float(overhead),
        saving_flops_per_unit=float(rate),
        terms=terms,
        selection_tile=tile,
    )


def max_k(
    d: int = 128,
    context: int = 4096,
    *,
    g: int = 1,
    phase: str = "decode",
    convention: Convention | None = None,
    selection_tile: int | None = None,
) -> int | None:
    """Largest k (1 <= k < d) at which AQUA needs strictly fewer FLOPs than dense at ``context``.

    ``context`` is N for decode and the prompt length T for prefill. ``None`` if no k wins.
    ``selection_tile``: as in :func:`breakeven` (prefill, queries sharing one selection).
    """
    d_i, _, g_i, phase = _validate(d, 1, g, phase)
    ctx = check_int("context", context, minimum=1)
    conv = resolve(convention)
    tile = _tile(selection_tile, phase)
    root = max_k_expr(phase, conv, "query" if tile is None else "tile")
    value = root.subs({sym.d: d_i, sym.g: g_i, sym.N: ctx, sym.T: ctx, sym.M_t: tile or 1}).evalf(
        _PRECISION_DIGITS
    )
    # AQUA is cheaper for every k strictly below the root (the cost grows with k).
    candidate = min(d_i - 1, int(mpmath.ceil(mpmath.mpf(str(value)) - mpmath.mpf(10) ** (-30))) - 1)
    return candidate if candidate >= 1 else None
