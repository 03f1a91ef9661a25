"""Row alignment of a dim-major key cache: the one home of the aligned row stride.

Triton specialises an integer argument divisible by 16 (its ``do_not_specialize`` docs); a
dim-major key row stride that is not makes every key load a scalar load
(``validation/decode_ptx_check.py``, ``analysis/results/decode_kernels_ptx.md``). A real cache
therefore stores K^T [.., d, capacity] with the capacity rounded up to a multiple of
:data:`ALIGN_ELEMENTS` (``AquaKVCache``'s pages are such a multiple) and hands the kernel a view of
its first N columns: the row stride is :func:`aligned_capacity` of N, not N.

The plans (``aqua_model.plans.attention``) declare this stride and the validation workloads
(``aqua_model.validate.workloads``) allocate it, both through :func:`aligned_capacity`.
"""

from __future__ import annotations

import numbers
from typing import overload

import sympy as sp

#: Elements a dim-major key row stride must be a multiple of for aligned (vectorised) loads.
ALIGN_ELEMENTS = 16


@overload
def aligned_capacity(tokens: int) -> int: ...
@overload
def aligned_capacity(tokens: sp.Expr) -> sp.Expr: ...
def aligned_capacity(tokens: int | sp.Expr) -> int | sp.Expr:
    """The row stride (elements) of a dim-major key cache holding ``tokens`` tokens: ``tokens``
    rounded up to a multiple of :data:`ALIGN_ELEMENTS`. An int (>= 1) gives an int; a sympy
    expression (a symbolic context such as ``N``) gives the symbolic ceiling."""
    if isinstance(tokens, sp.Expr):
        return sp.ceiling(tokens / ALIGN_ELEMENTS) * ALIGN_ELEMENTS
    if isinstance(tokens, bool) or not isinstance(tokens, numbers.Integral):
        raise TypeError(
            f"tokens must be an int or a sympy expression, got {tokens!r} ({type(tokens).__name__})"
        )
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    n = int(tokens)
    return -(-n // ALIGN_ELEMENTS) * ALIGN_ELEMENTS


__all__ = ["ALIGN_ELEMENTS", "aligned_capacity"]
