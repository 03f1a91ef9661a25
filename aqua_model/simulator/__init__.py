"""The simulator: the roofline time of a plan's kernels on a hardware profile, and what is
built on it (simulate, speedup, predict, time break-even, end-to-end latency, comparison
with AQUA's peers, report rows). The roofline time lives in :mod:`.roofline` only.
"""

from __future__ import annotations

from .comparison import Comparison, MethodRow, compare
from .parallel import DecodeStep, DoesNotFit, Layout, decode_step, plan_layout, smallest_tensor_parallel
from .roofline import KernelTime, kernel_time, plan_time
from .simulation import (
    AQUA_PLAN_ALIASES,
    BASELINE_PLAN,
    PlanResult,
    Prediction,
    Simulation,
    check_fits_memory,
    max_fitting_context,
    predict,
    simulate,
    speedup,
    time_breakeven,
)
from .whole_model import EndToEnd, end_to_end

__all__ = [
    "AQUA_PLAN_ALIASES",
    "BASELINE_PLAN",
    "Comparison",
    "EndToEnd",
    "KernelTime",
    "MethodRow",
    "PlanResult",
    "Prediction",
    "Simulation",
    "check_fits_memory",
    "compare",
    "end_to_end",
    "kernel_time",
    "max_fitting_context",
    "plan_time",
    "predict",
    "simulate",
    "speedup",
    "time_breakeven",
    "DecodeStep",
    "DoesNotFit",
    "Layout",
    "decode_step",
    "plan_layout",
    "smallest_tensor_parallel",
]
