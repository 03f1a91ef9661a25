"""Fast numeric evaluation of the symbolic model: cached ``sympy.lambdify`` to numpy.

Every sweep in the package (simulator, figures, benchmarks) evaluates expressions through
:func:`evaluate`, so a formula is never re-typed as numpy code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import sympy as sp
from scipy.special import comb

from .sizes import Sizes
from .symbols import BY_NAME


def _binomial(n: Any, r: Any) -> Any:
    """Real-valued binomial coefficient that is 0 outside 0 <= r <= n (sector model)."""
    return comb(n, r, exact=False)


_MODULES: list[Any] = [
    {"binomial": _binomial, "ceiling": np.ceil, "floor": np.floor, "log2": np.log2},
    "numpy",
]


@lru_cache(maxsize=512)
def compile_expr(expr: sp.Expr) -> tuple[Callable[..., Any], tuple[str, ...]]:
    """Lambdify ``expr`` once; returns the numpy function and its argument names in order."""
    names = tuple(sorted(sym.name for sym in expr.free_symbols))
    fn = sp.lambdify([BY_NAME[n] for n in names], expr, modules=_MODULES)
    return fn, names


def evaluate(expr: sp.Expr, values: Mapping[str, Any] | Sizes) -> Any:
    """Evaluate ``expr`` with symbol names mapped to numbers or numpy arrays (broadcast), or
    with the sizes of a :class:`~aqua_model.costs.sizes.Sizes`.

    Raises ValueError naming any symbol the expression needs and ``values`` lacks: no
    silent default for missing data.
    """
    if isinstance(values, Sizes):
        values = values.values()
    fn, names = compile_expr(sp.sympify(expr))
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"cannot evaluate {expr}: no value for symbol(s) {missing}; got {sorted(values)}")
    out = np.asarray(fn(*(np.asarray(values[n], dtype=float) for n in names)), dtype=float)
    shape = np.broadcast_shapes(*(np.shape(v) for v in values.values()))
    return np.broadcast_to(out, np.broadcast_shapes(out.shape, shape)).copy() if shape != out.shape else out
