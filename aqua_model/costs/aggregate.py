"""From one head to a whole model, and from one decode step to G of them, in closed form."""

from __future__ import annotations

import sympy as sp

from .symbols import B, G, H_kv, H_q, L, N, T

#: Dummy index of the decode step in :func:`decode_sum`.
STEP = sp.Symbol("i", positive=True, integer=True)


def context_at_step() -> sp.Expr:
    """Keys attended by decode step i after a T-token prompt: the prompt plus i tokens."""
    return T + STEP


def decode_sum(per_step: sp.Expr) -> sp.Expr:
    """Sum a per-step expression in N over decode steps i = 1..G with N = T + i.

    FLOPs and bytes are both summed by this one function, so they share bounds by
    construction. The result is closed form (no per-token loop).
    """
    return sp.expand(sp.summation(per_step.subs(N, context_at_step()), (STEP, 1, G)))


def per_layer_flops(per_query_head: sp.Expr) -> sp.Expr:
    """FLOPs of one layer: every query head of every sequence in the batch."""
    return B * H_q * per_query_head


def per_layer_bytes(per_kv_head: sp.Expr) -> sp.Expr:
    """Bytes of one layer: every KV head of every sequence in the batch."""
    return B * H_kv * per_kv_head


def per_model(per_layer: sp.Expr) -> sp.Expr:
    """All L layers."""
    return L * per_layer
