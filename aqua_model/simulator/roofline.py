"""Roofline time of a kernel and of a plan on a hardware profile.

time = max(FLOPs / (peak * compute efficiency), bytes / (bandwidth * memory efficiency(pattern,
bytes))) + launches * launch overhead. Efficiencies and the overhead come from the profile
(datasheet assumptions or a calibrated file); a kernel is labelled by the larger term. A
library kernel measured by a calibrated profile uses that measurement: torch.topk takes the
larger of its roofline time and its measured time; torch.softmax its measured bandwidth
efficiency at its row length; a fused attention kernel its measured compute efficiency.

Calibrated terms (issue 12; only where a calibrated profile holds them, see
:mod:`aqua_model.hardware.calibrated_terms`): a kernel whose implementation was micro-benchmarked
(``Kernel.stream``) takes its device time from that table: a small-transfer latency plus its
bytes (or FLOPs) over the measured efficiency, where a split-N Triton kernel's efficiency is read
at its programs per SM (the split rule of :mod:`aqua_model.costs.split_rule` against the SM
count: occupancy and wave quantization) and falls by the measured factor when its key rows are
not 16-element aligned; a split table with a measured per-program fill (``fill_s``, the
pipeline fill and drain of one split) adds it once per program each SM runs after its first
(:func:`aqua_model.hardware.calibrated_terms.split_fill_s`). The split-N decode's prologue (when it
selects: a tl.sort of d entries per program) and its combine take, where the profile holds
``prologue_combine_s``, their measured time at the plan's selection, g, d and units (B H_kv
programs for the prologue, B H_q for the combine): latency-bound kernels a byte roofline cannot
see (:class:`aqua_model.hardware.calibrated_terms.SmallKernelTable`). A profile that says how a CUDA graph is timed replaces the launch
overhead and its overlap by graph_launch + the kernels' device times + one gap per launch after
the first (:func:`contributions`); every other kernel's device time is then its roofline (on
size tables net of the pattern's small-transfer latency) plus that latency, and the device time
of a tiny kernel per further launch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..costs.alignment import ALIGN_ELEMENTS
from ..costs.numeric import evaluate
from ..costs.sizes import Sizes
from ..costs.split_rule import DEFAULT_LAUNCHES, merge_rounds, split_programs
from ..hardware import HardwareProfile
from ..hardware.calibrated_terms import split_fill_s
from ..hardware.kernel_forms import GEOMETRIES, KernelForm
from ..plans import Kernel, Plan
from ..plans.attention import TORCH_TOPK_LAUNCHES

#: Elementwise work (softmax, |q|, selection) runs on the fp32 vector units.
VECTOR_DTYPE = "fp32"
#: Tokens per page of the AQUA KV cache (aqua_model.kernels.kv_cache.DEFAULT_PAGE_TOKENS; checked
#: equal by tests/test_heldout_model.py, since this layer cannot import torch).
CACHE_PAGE_TOKENS = 128


@dataclass(frozen=True)
class KernelTime:
    """A kernel evaluated on a profile; array fields broadcast over the swept values.

    ``flops_utilisation`` and ``bandwidth_utilisation`` are the fractions of the datasheet
    peak rate (of the unit the kernel runs on) and bandwidth that the predicted time implies.
    ``time_s`` is the kernel launched alone and ``overhead_s`` the part of it that is launch;
    ``graph_gap_s`` is set (seconds per launch after a plan's first) when the profile times
    graphs of kernels (:func:`contributions`), else None.
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
    launches: int = 1
    graph_gap_s: float | None = None
    #: Features of this kernel outside the range its fitted form was fitted on (by name); () when
    #: inside, or when no fitted form timed it. A non-empty tuple marks the time as extrapolated.
    extrapolates: tuple[str, ...] = ()

    @property
    def bound(self) -> np.ndarray:
        """ "compute" or "memory" per point: the larger roofline term."""
        return np.where(self.compute_s > self.memory_s, "compute", "memory")


def roofline_terms_s(
    flops: Any,
    nbytes: Any,
    *,
    peak_flops_per_s: float,
    compute_efficiency: Any,
    bandwidth_bytes_per_s: float,
    memory_efficiency: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """The two roofline terms (seconds): FLOPs over the achievable rate, bytes over the
    achievable bandwidth. Every roofline time of the package is built from these."""
    compute_s = flops / (peak_flops_per_s * compute_efficiency)
    memory_s = nbytes / (bandwidth_bytes_per_s * np.asarray(memory_efficiency))
    return compute_s, memory_s


def timing_key(kernel: Kernel) -> str:
    """The key a profile's fitted form is looked up by: the implementation kernel a plan names
    (``Kernel.stream``), with the CUDA kernel it launches when it declares exactly one
    (``"triton-split:_fused_kernel"``: one stream may name different CUDA kernels in different
    plans), else ``<unit>-<pattern>`` (a generic kernel of that access pattern)."""
    if not kernel.stream:
        return f"{kernel.unit}-{kernel.pattern}"
    if len(kernel.launch_names) == 1:
        return f"{kernel.stream}:{kernel.launch_names[0]}"
    return kernel.stream


def misaligned(kernel: Kernel, values: dict[str, Any]) -> np.ndarray:
    """True where the kernel streams key rows whose stride is not a multiple of
    ``ALIGN_ELEMENTS`` (a ``row_stride`` of 0 means aligned by construction)."""
    if kernel.row_stride == 0:
        return np.asarray(False)
    stride = np.rint(evaluate(kernel.row_stride, values)).astype(np.int64)
    return np.asarray(stride % ALIGN_ELEMENTS != 0)


def merge_round_trips(geometry: str, kernel: Kernel, values: dict[str, Any], sm_count: int) -> np.ndarray:
    """Round trips to L2 of the merge a kernel runs itself: under the one-launch geometry "split-n",
    :func:`aqua_model.costs.split_rule.merge_rounds` of its group, its splits (programs over
    B H_kv) and d (0 for a one-split call); 0 for every other geometry (the three-launch path
    merges in its own combine kernel)."""
    if geometry != "split-n":
        return np.asarray(0.0)
    units = np.asarray(values["B"], dtype=np.int64) * np.asarray(values["H_kv"], dtype=np.int64)
    splits = np.rint(programs_of(geometry, kernel, values, sm_count) / units).astype(np.int64)
    group = np.asarray(values["H_q"], dtype=np.int64) // np.asarray(values["H_kv"], dtype=np.int64)
    return merge_rounds(group=group, splits=splits, value_dim=values["d"]).astype(float)


def programs_of(geometry: str, kernel: Kernel, values: dict[str, Any], sm_count: int) -> np.ndarray:
    """Programs a kernel runs under the named launch geometry
    (:data:`aqua_model.hardware.kernel_forms.GEOMETRIES`): "split-n" the split rule of
    :mod:`aqua_model.costs.split_rule` for the default (one-launch) decode, "split-n-3launch" for
    its three-launch path's split pass, at the kernel's tile rows (keys aligned by construction,
    ``row_stride`` 0, are paged in pages of ``CACHE_PAGE_TOKENS``, which the rule's token block
    must divide); "per-kv-head" B H_kv; "per-q-head" B H_q; "device" one per SM."""
    if geometry in ("split-n", "split-n-3launch"):
        rows = np.rint(evaluate(kernel.tile_rows, values)).astype(np.int64)
        page = CACHE_PAGE_TOKENS if kernel.row_stride == 0 else None
        return split_programs(
            batch=values["B"],
            heads_kv=values["H_kv"],
            context=values["N"],
            rows=rows,
            d=values["d"],
            sm_count=sm_count,
            page=page,
            launches=3 if geometry == "split-n-3launch" else DEFAULT_LAUNCHES,
        ).astype(float)
    if geometry == "per-kv-head":
        return np.asarray(values["B"], dtype=float) * np.asarray(values["H_kv"], dtype=float)
    if geometry == "per-q-head":
        return np.asarray(values["B"], dtype=float) * np.asarray(values["H_q"], dtype=float)
    if geometry == "device":
        return np.asarray(float(sm_count))
    raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")


def _programs(kernel: Kernel, values: dict[str, Any], sm_count: int) -> np.ndarray:
    """Programs of a stream kernel under the legacy stream tables (profiles without fitted forms)."""
    geometry = {"triton-split": "split-n", "triton-prologue": "per-kv-head"}.get(kernel.stream, "per-q-head")
    return programs_of(geometry, kernel, values, sm_count)


def _small_kernel_s(
    kernel: Kernel, profile: HardwareProfile, values: dict[str, Any], selection: str | None
) -> np.ndarray | None:
    """Measured device time of the split-N prologue or combine (``prologue_combine_s``), or None.

    The prologue's table holds the selecting prologue (``select`` with its selection FLOPs); a
    prologue handed the indices (``aqua-step-topk``) or one that also rotates (the cache step) keeps
    its stream table."""
    table = profile.terms.small_kernels
    if table is None or selection is None:
        return None
    if kernel.stream == "triton-prologue" and kernel.name == "select" and kernel.flops != 0:
        which, heads = "prologue", values["H_kv"]
    elif kernel.stream == "triton-combine":
        which, heads = "combine", values["H_q"]
    else:
        return None
    units = np.asarray(values["B"], dtype=float) * np.asarray(heads, dtype=float)
    g = float(np.max(np.asarray(values["H_q"], dtype=float) / np.asarray(values["H_kv"], dtype=float)))
    return np.asarray(table(which, selection, g=g, d=float(np.max(values["d"])), units=units), dtype=float)


def _stream_busy_s(
    kernel: Kernel,
    profile: HardwareProfile,
    values: dict[str, Any],
    flops: np.ndarray,
    nbytes: np.ndarray,
    peak: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(device time, compute term, memory term) from the kernel's stream table, or None."""
    terms = profile.terms
    if not kernel.stream:
        return None
    rows = int(np.max(np.rint(evaluate(kernel.tile_rows, values)))) if kernel.tile_rows != 0 else 0
    table = terms.stream(
        kernel.stream, d=int(values["d"]), gqa=int(values["H_q"]) != int(values["H_kv"]), rows=rows
    )
    if table is None or (table.x == "programs_per_sm" and terms.sm_count is None):
        return None
    x = {"bytes": nbytes, "flops": flops}.get(table.x)
    fill_s: Any = 0.0
    if x is None:
        programs = _programs(kernel, values, cast(int, terms.sm_count))
        x = programs / terms.sm_count
        if (
            table.fill_s
        ):  # the split pass's per-program pipeline fill and drain, per program after each SM's first
            fill_s = split_fill_s(programs, cast(int, terms.sm_count), table.fill_s)
    zero = np.zeros(np.shape(x))
    if table.y == "s":
        busy = np.asarray(table(x), dtype=float) + table.latency_s
        return busy, zero, busy
    eff = np.asarray(table(x), dtype=float)
    if table.misaligned_efficiency is not None and kernel.row_stride != 0:
        stride = np.rint(evaluate(kernel.row_stride, values)).astype(np.int64)
        eff = np.where(stride % ALIGN_ELEMENTS != 0, eff * table.misaligned_efficiency, eff)
    if table.x == "flops":
        compute_s = flops / (peak * eff)
        return table.latency_s + compute_s, compute_s, zero
    memory_s = nbytes / (profile.bandwidth_bytes_per_s * eff)
    return table.latency_s + memory_s + fill_s, zero, memory_s


def kernel_time(
    kernel: Kernel, profile: HardwareProfile, sizes: Sizes, *, selection: str | None = None
) -> KernelTime:
    """Roofline time of ``kernel`` at ``sizes`` (numbers or broadcastable arrays), in the
    storage dtype of ``sizes``; ``selection`` (the plan's) picks the measured prologue/combine
    times of a calibrated profile (None: not used)."""
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
    efficiency: float | np.ndarray
    if kernel.op == "softmax" and profile.softmax_table is not None:
        efficiency = profile.softmax_table(evaluate(kernel.op_length, values))
    else:
        efficiency = profile.memory_efficiency(kernel.pattern, np.maximum(nbytes, 1.0))
    compute_s, memory_s = roofline_terms_s(
        flops,
        nbytes,
        peak_flops_per_s=peak,
        compute_efficiency=compute_eff,
        bandwidth_bytes_per_s=profile.bandwidth_bytes_per_s,
        memory_efficiency=efficiency,
    )
    busy_s = np.maximum(compute_s, memory_s)
    launches = kernel.launches
    terms = profile.terms
    form = terms.forms.get(timing_key(kernel))
    outside: tuple[str, ...] = ()
    gap: float | None
    if form is not None:
        # the one kernel-time form: its device time, then the launch model below
        busy_s, compute_s, memory_s, outside = _form_time(form, kernel, profile, values, flops, nbytes, peak)
        if terms.graph_timing:
            assert terms.graph_launch_s is not None and terms.graph_gap_s is not None  # graph_timing
            overhead = terms.graph_launch_s + (launches - 1) * terms.graph_gap_s
            gap = terms.graph_gap_s
        else:
            overhead = launches * profile.launch_overhead_s
            gap = None
    elif terms.graph_timing:
        assert terms.graph_launch_s is not None and terms.graph_gap_s is not None  # graph_timing
        assert terms.tiny_kernel_s is not None  # graph_timing
        # device time of every launch: the stream table where the implementation was measured, else
        # the roofline plus a tiny kernel's device time per launch (the size tables are net of it)
        small = _small_kernel_s(kernel, profile, values, selection)
        stream = _stream_busy_s(kernel, profile, values, flops, nbytes, peak) if small is None else None
        if small is not None:  # a latency-bound kernel's measured time (its launch is the graph's)
            busy_s, compute_s, memory_s = (
                small + (launches - 1) * terms.tiny_kernel_s,
                np.zeros(np.shape(small)),
                small,
            )
        elif stream is not None:
            busy_s, compute_s, memory_s = stream
        elif kernel.op == "topk" and profile.topk_table is not None:
            # a measured torch.topk replay is graph_launch + its two kernels + one gap
            call_s = profile.topk_table(evaluate(kernel.op_rows, values), evaluate(kernel.op_length, values))
            call_s = np.maximum(call_s - terms.graph_launch_s - terms.graph_gap_s, terms.tiny_kernel_s)
            busy_s = np.maximum(busy_s, call_s) + (launches - TORCH_TOPK_LAUNCHES) * terms.tiny_kernel_s
        else:  # the pattern's small-transfer latency (its size table is net of it), a tiny kernel per extra launch
            busy_s = (
                busy_s
                + terms.pattern_latency_s.get(kernel.pattern, terms.tiny_kernel_s)
                + (launches - 1) * terms.tiny_kernel_s
            )
        overhead = terms.graph_launch_s + (launches - 1) * terms.graph_gap_s
        gap = terms.graph_gap_s
    else:
        if kernel.op == "topk" and profile.topk_table is not None:
            # measured torch.topk time, which includes its own launch
            busy_s = np.maximum(
                busy_s,
                profile.topk_table(evaluate(kernel.op_rows, values), evaluate(kernel.op_length, values)),
            )
            launches -= 1
        overhead = launches * profile.launch_overhead_s
        gap = None
    time_s = busy_s + overhead
    # achieved fraction of the datasheet peak rate and bandwidth over the kernel's time
    flops_util = flops / time_s / peak
    bw_util = nbytes / time_s / profile.bandwidth_bytes_per_s
    return KernelTime(
        kernel.name,
        kernel.pattern,
        flops,
        nbytes,
        compute_s,
        memory_s,
        overhead,
        time_s,
        flops_util,
        bw_util,
        kernel.launches,
        gap,
        outside,
    )


def _form_time(
    form: KernelForm,
    kernel: Kernel,
    profile: HardwareProfile,
    values: dict[str, Any],
    flops: np.ndarray,
    nbytes: np.ndarray,
    peak: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(device time, compute term, memory term, features outside the fitted range) of ``kernel``
    by its fitted form; the form's SM count is the profile's (a profile with forms must give it)."""
    sm_count = profile.terms.sm_count
    if sm_count is None:
        raise ValueError(
            f"profile {profile.name!r} has fitted kernel-time forms but no calibration.sm_count; "
            "the forms place programs over SMs and cannot be evaluated without it"
        )
    programs = programs_of(form.geometry, kernel, values, sm_count)
    busy, compute_s, memory_s = form.terms_s(
        flops=flops,
        nbytes=nbytes,
        launches=kernel.launches,
        programs=programs,
        misaligned=misaligned(kernel, values),
        head_dim=values["d"],
        group=np.asarray(values["H_q"], dtype=float) / np.asarray(values["H_kv"], dtype=float),
        merge_rounds=merge_round_trips(form.geometry, kernel, values, sm_count),
        sm_count=sm_count,
        peak_flops_per_s=peak,
        bandwidth_bytes_per_s=profile.bandwidth_bytes_per_s,
    )
    outside = tuple(form.outside({"bytes": nbytes, "flops": flops, "programs": programs}))
    return busy, compute_s, memory_s, outside


def floor_time_s(flops: Any, nbytes: Any, profile: HardwareProfile, *, unit: str, dtype: str) -> np.ndarray:
    """The datasheet floor of a kernel: its larger roofline term at 100% efficiency, no launch
    (``unit`` "matrix" runs at the storage dtype's peak, "vector" at fp32's)."""
    peak = profile.peak_flops(dtype if unit == "matrix" else VECTOR_DTYPE)
    compute_s, memory_s = roofline_terms_s(
        flops,
        nbytes,
        peak_flops_per_s=peak,
        compute_efficiency=1.0,
        bandwidth_bytes_per_s=profile.bandwidth_bytes_per_s,
        memory_efficiency=1.0,
    )
    return np.maximum(compute_s, memory_s)


#: FLOPs per parameter per token of the non-attention matrix work (one multiply-add each).
FLOPS_PER_PARAM_PER_TOKEN = 2.0


def weights_time_s(
    profile: HardwareProfile, *, weight_bytes: float, params: float, batch: Any, dtype: str, layers: int
) -> np.ndarray:
    """Time of the non-attention work of ``layers`` layers on one GPU: the larger of reading its
    ``weight_bytes`` once and doing 2 FLOPs per parameter per sequence, plus one launch overhead
    per layer (norms, RoPE and sampling left out: a few percent of a decode step)."""
    flops = FLOPS_PER_PARAM_PER_TOKEN * params * np.asarray(batch, dtype=float)
    compute_s, memory_s = roofline_terms_s(
        flops,
        weight_bytes,
        peak_flops_per_s=profile.peak_flops(dtype),
        compute_efficiency=profile.compute_efficiency,
        bandwidth_bytes_per_s=profile.bandwidth_bytes_per_s,
        memory_efficiency=profile.memory_efficiency("contiguous", weight_bytes),
    )
    return np.maximum(memory_s, compute_s) + layers * profile.launch_overhead_s


def contributions(kernels: list[KernelTime]) -> list[np.ndarray]:
    """Each kernel's share of its plan's total time, in launch order.

    Kernels run one after another on one stream, queued asynchronously: the first pays its
    launch overhead in full; each later kernel's launch overlaps the previous kernel's work,
    so only the part of its overhead longer than that work is exposed. On a profile that times
    CUDA graphs (``graph_gap_s`` set) the plan is graph_launch + every kernel's device time +
    one gap per launch after the first, so a later kernel adds its device time and a gap per
    launch.
    """
    if kernels and all(kt.graph_gap_s is not None for kt in kernels):
        shares = [kernels[0].time_s]
        for cur in kernels[1:]:
            assert cur.graph_gap_s is not None  # every kernel's, checked above
            shares.append((cur.time_s - cur.overhead_s) + cur.launches * cur.graph_gap_s)
        return shares
    shares = [kernels[0].time_s]
    for prev, cur in itertools.pairwise(kernels):
        busy_prev = prev.time_s - prev.overhead_s
        shares.append((cur.time_s - cur.overhead_s) + np.maximum(0.0, cur.overhead_s - busy_prev))
    return shares


def plan_time(plan: Plan, profile: HardwareProfile, sizes: Sizes) -> tuple[np.ndarray, list[KernelTime]]:
    """Total time of a plan (see :func:`contributions`) and each kernel's time as if launched alone."""
    kernels = [kernel_time(kern, profile, sizes, selection=plan.selection) for kern in plan.kernels]
    return np.asarray(sum(contributions(kernels), start=np.zeros(()))), kernels
