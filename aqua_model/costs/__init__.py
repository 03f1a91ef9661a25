"""The costs layer (the lowest of the model): named symbols, the counting convention and the
dtypes; the symbolic FLOPs (:mod:`.flops`, the only home of FLOP counts) and bytes
(:mod:`.memory`, the only home of KV-cache and read bytes) of dense attention and AQUA, the
pair counts, sums over steps, the FLOP break-even (algebra, :func:`breakeven`/:func:`max_k`,
the one integer search), AQUA's peers, collectives, and :class:`Sizes`, the validated sizes
of one evaluation. Nothing here knows about hardware, plans or the simulator.

Numeric entry points (vectorised over numpy arrays) evaluate the symbolic expressions of
:mod:`.flops` and :mod:`.memory` through :func:`.numeric.evaluate`; no formula is re-typed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_choice, check_int_array
from . import memory
from .convention import Convention, resolve
from .dtypes import DTYPE_BYTES, check_element_bytes, check_whole_elements_per_sector, kv_element_bytes
from .flops import COMPONENTS, METHODS, PHASES, flop_terms, total
from .numeric import evaluate
from .sizes import Sizes, check_context, check_kept_dims

__all__ = [
    "COMPONENTS",
    "METHODS",
    "PHASES",
    "Sizes",
    "component_flops",
    "decode_read_bytes",
    "kv_cache_bytes",
    "flop_terms",
    "total",
    "evaluate",
]


def _shape_values(d: Any, k: Any, g: Any, method: str) -> dict[str, np.ndarray]:
    d_a = check_int_array("d", d, minimum=1)
    k_a = check_kept_dims(d if (method == "dense" and k is None) else k, d)
    return {"d": d_a, "k": k_a, "g": check_int_array("g", g, minimum=1)}


def _context_values(phase: str, context: Any, prompt: Any) -> dict[str, np.ndarray]:
    """Validated N (and T for prefill), by :func:`.sizes.check_context`."""
    ctx, prompt_a = check_context(phase, context, prompt)
    return {"N": ctx} if prompt_a is None else {"N": ctx, "T": prompt_a}


def component_flops(
    *,
    method: str,
    phase: str,
    d: Any,
    k: Any,
    context: Any,
    prompt: Any = None,
    g: Any = 1,
    causal: bool = True,
    convention: Convention | None = None,
    selection_tile: Any = None,
) -> dict[str, Any]:
    """FLOPs per query head by component (keys of :data:`COMPONENTS`), plus ``"total"``.

    Decode: one query against ``context`` keys. Prefill: ``prompt`` new queries after
    ``context`` cached keys (pass ``context=0`` for a plain prompt). ``selection_tile``
    (prefill): queries sharing one selection (None: per query; 1 gives the same counts).
    Every size may be a numpy array; results broadcast.
    """
    check_choice("method", method, METHODS)
    check_choice("phase", phase, PHASES)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be True or False, got {causal!r}")
    values = {**_shape_values(d, k, g, method), **_context_values(phase, context, prompt)}
    granularity = "query"
    if selection_tile is not None:
        if phase != "prefill":
            raise ValueError(
                f"selection_tile (queries sharing one selection) is a prefill option; phase must be "
                f"'prefill', got phase={phase!r} with selection_tile={selection_tile!r}"
            )
        values["M_t"] = check_int_array("selection_tile", selection_tile, minimum=1)
        granularity = "tile"
    terms = flop_terms(method, phase, resolve(convention), causal, granularity)
    out = {name: evaluate(expr, values) for name, expr in terms.items()}
    out["total"] = evaluate(total(terms), values)
    return out


def decode_read_bytes(
    *,
    method: str,
    d: Any,
    k: Any,
    context: Any,
    g: Any = 1,
    dtype_bytes: Any = None,
    kv_dtype: str | None = None,
    layout: str = "dim-major",
    selection: str = "group",
    pattern: str = "random",
    sector_bytes: Any = 32,
) -> Any:
    """K and V bytes one decode step reads, per KV head and layer (see :mod:`.memory`).

    The element size is ``dtype_bytes`` (an integer) or that of ``kv_dtype`` (``bf16``, ``fp16``,
    ``fp32``, ``fp8``, ``int4`` with its scales: :func:`.dtypes.kv_element_bytes`); bf16 if neither.
    """
    values = _shape_values(d, k, g, method)
    values["N"] = check_int_array("context", context, minimum=1)
    values["s"] = _element_bytes(dtype_bytes, kv_dtype)
    if layout == "token-major" and kv_dtype == "int4":
        raise ValueError(
            "layout 'token-major' with kv_dtype 'int4' is not modelled: the sector model needs a whole "
            "number of elements per sector, and int4 group scales are stored apart; use layout 'dim-major'"
        )
    values["S"] = check_int_array("sector_bytes", sector_bytes, minimum=1)
    if layout == "token-major" and method == "aqua":
        check_whole_elements_per_sector(values["S"], values["s"])
    expr = memory.decode_read_bytes(method, layout=layout, selection=selection, pattern=pattern)
    return evaluate(expr, values)


def kv_cache_bytes(
    *,
    method: str,
    d: Any,
    context: Any,
    dtype_bytes: Any = None,
    kv_dtype: str | None = None,
    key_dims: Any = None,
) -> Any:
    """KV-cache bytes per KV head and layer; AQUA may store only ``key_dims`` = m <= d key dims.

    The element size is ``dtype_bytes`` (an integer) or that of ``kv_dtype`` (``fp8``: 1 byte,
    ``int4``: 0.625 with its scales, ...); bf16 (2 bytes) if neither is given.
    """
    check_choice("method", method, METHODS)
    d_a = check_int_array("d", d, minimum=1)
    values = {
        "d": d_a,
        "N": check_int_array("context", context, minimum=0),
        "s": _element_bytes(dtype_bytes, kv_dtype),
    }
    if method == "aqua":
        m_a = d_a if key_dims is None else check_int_array("key_dims", key_dims, minimum=1)
        if np.any(m_a > d_a):
            raise ValueError(f"key_dims must be <= d, got key_dims={key_dims!r}, d={d!r}")
        values["m"] = m_a
    return evaluate(memory.kv_cache_bytes(method), values)


def _element_bytes(dtype_bytes: Any, kv_dtype: str | None) -> Any:
    """The element size ``s``: ``dtype_bytes`` (one of :data:`.dtypes.ELEMENT_BYTES`) or ``kv_dtype``'s, bf16 by default."""
    if dtype_bytes is not None and kv_dtype is not None:
        raise ValueError(
            f"give dtype_bytes or kv_dtype, not both; got dtype_bytes={dtype_bytes!r}, kv_dtype={kv_dtype!r}"
        )
    if kv_dtype is not None:
        return np.asarray(kv_element_bytes(kv_dtype))
    return check_element_bytes("dtype_bytes", DTYPE_BYTES["bf16"] if dtype_bytes is None else dtype_bytes)
