"""Symbolic memory model: KV-cache sizes and HBM bytes read per decode step, by key layout.

All sizes are per KV head and per layer unless said otherwise; multiply by B*H_kv*L for a
model (see :mod:`aqua_model.costs.aggregate`). This is the single source of truth for
bytes: the simulator's kernels and the figures read these expressions.

Key layouts:

* ``dim-major``  K^T stored [d, N]: the k selected rows are contiguous runs of N elements,
  so reading k of d dims moves exactly k*N*s bytes.
* ``token-major`` K stored [N, d]: one token's d channels are one row of d*s bytes made of
  whole memory sectors of S bytes (S/s channels each). Reading k of the d channels still
  moves every sector that holds at least one selected channel.
"""

from __future__ import annotations

import sympy as sp

from .._checks import check_choice
from .flops import METHODS
from .symbols import N, S, d, g, k, m, s

LAYOUTS = ("dim-major", "token-major")
#: Memory access patterns a kernel may declare; a hardware profile gives an efficiency for each.
PATTERNS: tuple[str, ...] = ("contiguous", "strided", "gather")
CHANNEL_PATTERNS = ("random", "prefix")
GQA_SELECTIONS = ("group", "per-head")


def head_tensor_bytes(tokens: sp.Expr = N) -> sp.Expr:
    """Bytes of one KV head's keys (or values) for ``tokens`` tokens: tokens*d*s."""
    return tokens * d * s


def kv_cache_bytes(method: str) -> sp.Expr:
    """KV-cache bytes per KV head and layer for N cached tokens.

    Dense stores K and V: 2*N*d*s. AQUA stores its rotated keys truncated to the m leading
    dims of P (m = d keeps the full key; m < d is the KV-memory saving) and full values:
    (m + d)*N*s.
    """
    check_choice("method", method, METHODS)
    return 2 * head_tensor_bytes() if method == "dense" else (m + d) * N * s


def selected_dims(selection: str) -> sp.Expr:
    """Expected number of distinct key dims a KV group reads per decode step.

    ``group``: the g query heads of a KV group share one selection of k dims. ``per-head``:
    each head picks its own k; with independent, uniformly random selections the union
    has expected size d*(1 - (1 - k/d)^g) (each dim is missed by one head with probability
    1 - k/d). With g = 1 both are k.
    """
    check_choice("selection", selection, GQA_SELECTIONS)
    if selection == "group":
        return k
    return d * (1 - (1 - k / d) ** g)


def sectors_per_token(pattern: str, heads: sp.Expr = sp.Integer(1)) -> sp.Expr:
    """Expected S-byte sectors touched in one token-major key row of d*s bytes.

    A row has d*s/S sectors, each holding c = S/s channels. ``random``: the k channels are
    a uniformly random k-subset of d; a sector is untouched with the hypergeometric
    probability C(d-c, k)/C(d, k), and with ``heads`` independent selections (per-head GQA)
    with that probability to the power ``heads``. ``prefix``: the k channels are the first
    k, touching ceil(k/c) aligned sectors.
    """
    check_choice("pattern", pattern, CHANNEL_PATTERNS)
    per_sector = S / s
    if pattern == "prefix":
        return sp.ceiling(k / per_sector)
    untouched = sp.binomial(d - per_sector, k) / sp.binomial(d, k)
    return d * s / S * (1 - untouched**heads)


def decode_read_bytes(
    method: str,
    *,
    layout: str = "dim-major",
    selection: str = "group",
    pattern: str = "random",
) -> sp.Expr:
    """HBM bytes of K and V that one decode step must read, per KV head and layer.

    Dense reads all of K and V: 2*N*d*s. AQUA reads the selected key dims (layout dependent)
    and all of V: V is never sparsified, so the byte ratio to dense is at best (k/d + 1)/2.
    """
    check_choice("method", method, METHODS)
    check_choice("layout", layout, LAYOUTS)
    values = head_tensor_bytes()
    if method == "dense":
        return head_tensor_bytes() + values
    if layout == "dim-major":
        return selected_dims(selection) * N * s + values
    heads = sp.Integer(1) if selection == "group" else g
    return N * S * sectors_per_token(pattern, heads) + values


def byte_ceiling_speedup() -> sp.Expr:
    """Upper bound on the decode speedup of dimension-only sparsity in a memory-bound step.

    Dense bytes over AQUA dim-major bytes with group selection: 2d/(k + d). It is 1.14 at
    k = 96 of 128, 1.6 at k = 32, and below 2 for every k >= 1.
    """
    return sp.simplify(decode_read_bytes("dense") / decode_read_bytes("aqua"))
