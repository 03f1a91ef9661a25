"""Which head dims each implementation can run: a plan is a prediction for any shape, but the
code behind it may refuse some; at such a shape the plan is model-only, and says so.

The Triton kernels tile the head dim with ``tl.arange``, which takes powers of two only, and
``tl.dot`` takes tiles of at least 16 (:data:`TRITON_MIN_HEAD_DIM`); the prefill kernel's
register tiles stop at 256 (:data:`TRITON_PREFILL_MAX_HEAD_DIM`). torch's SDPA and the eager
torch plans run any head dim.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .kernel import Plan

#: Smallest head dim a Triton kernel tiles (tl.dot's smallest tile side).
TRITON_MIN_HEAD_DIM = 16
#: Largest head dim the Triton prefill kernel holds in registers (kernels/triton_prefill.py).
TRITON_PREFILL_MAX_HEAD_DIM = 256
#: (module, function) of an implementation -> (smallest, largest or None) power-of-two head dim
#: it runs; an implementation absent here runs any head dim.
HEAD_DIM_LIMITS: Mapping[tuple[str, str], tuple[int, int | None]] = MappingProxyType(
    {
        ("aqua_model.kernels.triton_decode", "aqua_decode"): (TRITON_MIN_HEAD_DIM, None),
        ("aqua_model.kernels.eager", "aqua_step_decode"): (TRITON_MIN_HEAD_DIM, None),  # calls aqua_decode
        ("aqua_model.kernels.kv_cache", "decode_step"): (TRITON_MIN_HEAD_DIM, None),
        ("aqua_model.kernels.triton_prefill", "aqua_prefill"): (
            TRITON_MIN_HEAD_DIM,
            TRITON_PREFILL_MAX_HEAD_DIM,
        ),
    }
)


def shape_limit(plan: Plan, *, d: int) -> str:
    """ "" when the code behind ``plan`` runs head dim ``d`` (or nothing implements the plan);
    else "model-only at d=...: <why>"."""
    impl = plan.implementation
    if impl is None:
        return ""
    limits = HEAD_DIM_LIMITS.get((impl.module, impl.function))
    if limits is None:
        return ""
    low, high = limits
    if d >= low and d & (d - 1) == 0 and (high is None or d <= high):
        return ""
    allowed = f"powers of two from {low}" + (f" to {high}" if high is not None else "")
    return (
        f"model-only at d={d}: {impl.module}.{impl.function} runs head dims that are {allowed}, "
        "so no measured kernel stands behind this prediction"
    )


__all__ = ["HEAD_DIM_LIMITS", "TRITON_MIN_HEAD_DIM", "TRITON_PREFILL_MAX_HEAD_DIM", "shape_limit"]
