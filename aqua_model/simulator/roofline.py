"""Roofline time of a kernel and of a plan on a hardware profile.

time = max(FLOPs / (peak * compute efficiency), bytes / (bandwidth * memory efficiency(pattern,
bytes))) + launches * launch overhead. Efficiencies and the overhead come from the profile
(datasheet assumptions or a calibrated file); a kernel is labelled by the larger term. A
library kernel measured by a calibrated profile uses that measurement: torch.topk takes the
larger of its roofline time and its measured time; torch.softmax its measured bandwidth
efficiency at its row length; a fused attention kernel its measured compute efficiency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..costs.numeric import evaluate
from ..costs.sizes import Sizes
from ..hardware import HardwareProfile
from ..plans import Kernel, Plan

#: Elementwise work (softmax, |q|, selection) runs on the fp32 vector units.
VECTOR_DTYPE = "fp32"


@dataclass(frozen=True)
class KernelTime:
    """A kernel evaluated on a profile; array fields broadcast over the swept values.

    ``flops_utilisation`` and ``bandwidth_utilisation`` are the fractions of the datasheet
    peak rate (of the unit the kernel runs on) and bandwidth that the predicted time implies.
    """

    name: str
    pattern: str
    flops: np.ndarray
    bytes: np.ndarray
    compute_s: np.ndarray
    memory_s: np.ndarray
    overhead_s: float
    time_s: np.ndarray
    flops_utilisation: np.ndarray
    bandwidth_utilisation: np.ndarray

    @property
    def bound(self) -> np.ndarray:
        """"compute" or "memory" per point: the larger roofline term."""
        return np.where(self.compute_s > self.memory_s, "compute", "memory")


def roofline_terms_s(flops: Any, nbytes: Any, *, peak_flops_per_s: float, compute_efficiency: Any,
                     bandwidth_bytes_per_s: float, memory_efficiency: Any) -> tuple[np.ndarray, np.ndarray]:
    """The two roofline terms (seconds): FLOPs over the achievable rate, bytes over the
    achievable bandwidth. Every roofline time of the package is built from these."""
    compute_s = flops / (peak_flops_per_s * compute_efficiency)
    memory_s = nbytes / (bandwidth_bytes_per_s * np.asarray(memory_efficiency))
    return compute_s, memory_s


def kernel_time(kernel: Kernel, profile: HardwareProfile, sizes: Sizes) -> KernelTime:
    """Roofline time of ``kernel`` at ``sizes`` (numbers or broadcastable arrays), in the
    storage dtype of ``sizes``."""
    if not isinstance(sizes, Sizes):
        raise TypeError(f"sizes must be an aqua_model.costs.Sizes, got {type(sizes).__name__}")
    dtype = sizes.dtype
    values = {"S": profile.sector_bytes, **sizes.values()}
    flops = np.asarray(evaluate(kernel.flops, values), dtype=float)
    nbytes = np.asarray(evaluate(kernel.bytes, values), dtype=float)
    peak = profile.peak_flops(dtype if kernel.unit == "matrix" else VECTOR_DTYPE)
    compute_eff = profile.compute_efficiency
    if kernel.op == "attention" and profile.attention_compute_efficiency is not None:
        compute_eff = profile.attention_compute_efficiency
    if kernel.op == "softmax" and profile.softmax_table is not None:
        efficiency = profile.softmax_table(evaluate(kernel.op_length, values))
    else:
        efficiency = profile.memory_efficiency(kernel.pattern, np.maximum(nbytes, 1.0))
    compute_s, memory_s = roofline_terms_s(flops, nbytes, peak_flops_per_s=peak, compute_efficiency=compute_eff,
                                           bandwidth_bytes_per_s=profile.bandwidth_bytes_per_s, memory_efficiency=efficiency)
    busy_s = np.maximum(compute_s, memory_s)
    launches = kernel.launches
    if kernel.op == "topk" and profile.topk_table is not None:
        # measured torch.topk time, which includes its own launch
        busy_s = np.maximum(busy_s, profile.topk_table(evaluate(kernel.op_rows, values), evaluate(kernel.op_length, values)))
        launches -= 1
    overhead = launches * profile.launch_overhead_s
    time_s = busy_s + overhead
    # achieved fraction of the datasheet peak rate and bandwidth over the kernel's time
    flops_util = flops / time_s / peak
    bw_util = nbytes / time_s / profile.bandwidth_bytes_per_s
    return KernelTime(kernel.name, kernel.pattern, flops, nbytes, compute_s, memory_s, overhead, time_s, flops_util, bw_util)


def floor_time_s(flops: Any, nbytes: Any, profile: HardwareProfile, *, unit: str, dtype: str) -> np.ndarray:
    """The datasheet floor of a kernel: its larger roofline term at 100% efficiency, no launch
    (``unit`` "matrix" runs at the storage dtype's peak, "vector" at fp32's)."""
    peak = profile.peak_flops(dtype if unit == "matrix" else VECTOR_DTYPE)
    compute_s, memory_s = roofline_terms_s(flops, nbytes, peak_flops_per_s=peak, compute_efficiency=1.0,
                                           bandwidth_bytes_per_s=profile.bandwidth_bytes_per_s, memory_efficiency=1.0)
    return np.maximum(compute_s, memory_s)


#: FLOPs per parameter per token of the non-attention matrix work (one multiply-add each).
FLOPS_PER_PARAM_PER_TOKEN = 2.0


def weights_time_s(profile: HardwareProfile, *, weight_bytes: float, params: float, batch: Any, dtype: str,
                   layers: int) -> np.ndarray:
    """Time of the non-attention work of ``layers`` layers on one GPU: the larger of reading its
    ``weight_bytes`` once and doing 2 FLOPs per parameter per sequence, plus one launch overhead
    per layer (norms, RoPE and sampling left out: a few percent of a decode step)."""
    flops = FLOPS_PER_PARAM_PER_TOKEN * params * np.asarray(batch, dtype=float)
    compute_s, memory_s = roofline_terms_s(flops, weight_bytes, peak_flops_per_s=profile.peak_flops(dtype),
                                           compute_efficiency=profile.compute_efficiency,
                                           bandwidth_bytes_per_s=profile.bandwidth_bytes_per_s,
                                           memory_efficiency=profile.memory_efficiency("contiguous", weight_bytes))
    return np.maximum(memory_s, compute_s) + layers * profile.launch_overhead_s


def contributions(kernels: list[KernelTime]) -> list[np.ndarray]:
    """Each kernel's share of its plan's total time, in launch order.

    Kernels run one after another on one stream, queued asynchronously: the first pays its
    launch overhead in full; each later kernel's launch overlaps the previous kernel's work,
    so only the part of its overhead longer than that work is exposed.
    """
    shares = [kernels[0].time_s]
    for prev, cur in zip(kernels, kernels[1:]):
        busy_prev = prev.time_s - prev.overhead_s
        shares.append((cur.time_s - cur.overhead_s) + np.maximum(0.0, cur.overhead_s - busy_prev))
    return shares


def plan_time(plan: Plan, profile: HardwareProfile, sizes: Sizes) -> tuple[np.ndarray, list[KernelTime]]:
    """Total time of a plan (see :func:`contributions`) and each kernel's time as if launched alone."""
    kernels = [kernel_time(kern, profile, sizes) for kern in plan.kernels]
    return np.asarray(sum(contributions(kernels), start=np.zeros(()))), kernels
