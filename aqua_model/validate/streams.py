"""Micro-benchmarks of the implementations' own kernels, for the calibrated model terms (issue 12).

Every point is taken at a *calibration shape*: contexts and prompt lengths that are powers of two
(the held-out sampler, :mod:`aqua_model.validate.sampling`, never draws one) and head layouts
named here, so no calibration point is a validation case. Each gives one term of
:mod:`aqua_model.hardware.calibrated_terms`:

* graph timing: CUDA-graph replays of a chain of n one-element adds (n = 1, 2, 4, 8, 16) and the
  device duration of one add (torch.profiler): graph_launch, the gap between dependent kernels,
  the tiny kernel's device time;
* ``sdpa-decode``: torch SDPA decode (one query per head) over a ladder of contexts, for d in
  {64, 128}, MHA and GQA; the device time of its main (longest) kernel against the bytes the
  plan counts;
* ``sdpa-prefill``: SDPA causal prefill over a ladder of prompt lengths, against the plan's FLOPs;
* ``triton-split``: the split-N pass of ``aqua_decode`` with the split count forced, so that its
  programs per SM sweep 1/4 .. 32 (occupancy and wave quantization), per head dim and row tile;
  the same pass on a row stride that is not 16-aligned (``misaligned_efficiency``) and at one
  block of one head (its small-transfer latency); and the same forced split counts at shorter
  power-of-two contexts (``FILL_CONTEXTS``), so that each program count is timed at several
  chunk lengths: the per-program pipeline fill and drain (``fill_s``, :func:`fit_split_fill`),
  of which the efficiency table is then net;
* ``prologue_combine_s``: the prologue's and the combine's own device times over units (B H_kv,
  B H_q), g in {1, 4, 8}, d and both selections (:class:`aqua_model.hardware.calibrated_terms.SmallKernelTable`);
* ``triton-prologue`` and ``triton-combine``: the prologue's and the combine's device times
  against their programs per SM (batches of 4 KV heads, 16 query heads, N = 256);
* ``torch-matvec``: the eager decode's score matmul (torch.matmul of q against K^T) over the
  context ladder, against its plan bytes;
* softmax: torch.softmax over bf16 rows against row length (1 GiB per length; as the
  library-kernel calibration of ``validation/calibrate_library_kernels.py``).

A stream table's efficiency is the plan's work (its kernel's bytes or FLOPs, evaluated by the
model's own expressions at the calibration shape) over (device time - latency) and the
datasheet rate; the latency is the intercept of a least-squares line through (work, time),
weighted by 1/time^2, clipped to [0, 0.95 x the smallest time]. So the model reproduces every
calibration point, and between points interpolates in log(work).

Device time: on CUDA, torch.profiler's per-kernel durations (each point called ``REPEATS``
times, the L2 flushed before each call); where the profiler records no CUDA kernel, the graph
replay time less the graph terms. On a CPU the whole call's wall time stands for its main kernel
(the CPU mode checks the pipeline, not the CPU).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aqua_model.costs import Sizes
from aqua_model.costs.numeric import evaluate
from aqua_model.costs.split_rule import launch_rule, split_count
from aqua_model.hardware.calibrated_terms import split_fill_s
from aqua_model.plans import build_plan
from aqua_model.validate.timing import time_fn

#: Calls of one point inside one profiler session (each after an L2 flush).
REPEATS = 5
#: Bytes zeroed before each profiled call (several times the 60 MB L2 of an H200).
FLUSH_BYTES = 256 * 2**20
#: Chain lengths of the graph-timing benchmark.
CHAIN_LENGTHS: tuple[int, ...] = (1, 2, 4, 8, 16)
#: Decode calibration ladders (batch, context): contexts are powers of two.
DECODE_LADDER: dict[str, tuple[tuple[int, int], ...]] = {
    "cuda": ((1, 128), (1, 512), (1, 2048), (2, 8192), (4, 16384), (4, 65536), (8, 131072)),
    "cpu": ((1, 64), (1, 256), (2, 512)),
}
#: Head layouts (H_q, H_kv) of the decode and prefill calibration shapes: MHA and GQA g = 4.
CAL_HEADS: dict[bool, tuple[int, int]] = {False: (8, 8), True: (16, 4)}
#: Head dims calibrated.
CAL_HEAD_DIMS: dict[str, tuple[int, ...]] = {"cuda": (64, 128), "cpu": (32,)}
#: Prefill prompt ladders (batch 1, no cached prefix).
PREFILL_LADDER: dict[str, tuple[int, ...]] = {"cuda": (256, 1024, 4096, 16384), "cpu": (32, 64, 128)}
#: Split-pass sweep: programs per SM, the row tiles per head dim, and the swept shape.
SPLIT_PROGRAMS_PER_SM: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
SPLIT_ROWS: dict[int, tuple[int, ...]] = {128: (16, 32, 64, 96, 128), 64: (16, 32, 64), 32: (16,)}
SPLIT_HEADS_KV, SPLIT_GROUP = 4, 4
SPLIT_CONTEXT: dict[str, int] = {"cuda": 262144, "cpu": 2048}
#: Split-fill sweep: shorter power-of-two contexts at which the split pass is timed again with the
#: split counts of these programs per SM (each program count then streams chunks of 4x and 16x
#: fewer blocks than at ``SPLIT_CONTEXT``: 1 to 31 blocks per split on an H200).
FILL_CONTEXTS: dict[str, tuple[int, ...]] = {"cuda": (16384, 65536), "cpu": (512,)}
FILL_PROGRAMS_PER_SM: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: Elements added to the split sweep's context for the misaligned row stride (not a multiple of 16).
MISALIGN_ELEMENTS = 8
#: Programs per SM at which the misaligned stride is measured (the launch rule's target).
MISALIGN_AT_PROGRAMS_PER_SM = 8.0
#: Prologue / combine sweep: batches of SPLIT_HEADS_KV KV heads at a short context.
PROLOGUE_BATCHES: dict[str, tuple[int, ...]] = {"cuda": (1, 8, 32, 128, 512, 1024), "cpu": (1, 4)}
PROLOGUE_CONTEXT = 256
#: The prologue/combine table (``prologue_combine_s``): units = B H_kv (one KV head per batch row,
#: so B = units) in powers of two, g in {1, 4, 8}, both selections, every calibration d, k = d / 2.
SMALL_UNITS: dict[str, tuple[int, ...]] = {"cuda": (1, 4, 16, 64, 256, 1024), "cpu": (1, 4)}
SMALL_GROUPS: dict[str, tuple[int, ...]] = {"cuda": (1, 4, 8), "cpu": (1, 4)}
SMALL_SELECTIONS: tuple[str, ...] = ("per-head", "group")
#: Tokens of all units together (B H_kv N): the context shrinks as units grow, so the launch rule
#: still spreads splits (programs per SM) as it does at the long contexts of a case and the combine
#: merges as many splits as there; 2^19 = 524288 tokens: N = 512K at one unit, 512 at 1024.
SMALL_TOTAL_TOKENS: dict[str, int] = {"cuda": 1 << 19, "cpu": 1 << 10}
#: Softmax row lengths and input bytes per length (as validation/calibrate_library_kernels.py).
SOFTMAX_LENGTHS: tuple[int, ...] = (128, 512, 2048, 8192, 32768)
SOFTMAX_INPUT_BYTES: dict[str, int] = {"cuda": 1 << 30, "cpu": 1 << 22}
#: Smallest gap written (a profile's measured seconds must be > 0): a nanosecond, far below any
#: launch the model adds.
MIN_GAP_S = 1e-9
#: Smallest efficiency written into a table (the loader needs fractions > 0).
MIN_EFFICIENCY = 1e-3
#: The latency intercept is clipped to this fraction of the smallest measured time.
LATENCY_CAP = 0.95
#: The Triton micro-benchmarks time aqua_decode's three-launch path, whose prologue, split pass and
#: combine are kernels of their own (the default call is one launch, ``_fused_kernel``, with no
#: separate parts to time; its fitted form starts from the split pass's table).
THREE_LAUNCHES = 3
#: Triton kernel names of one aqua_decode call (aqua_model.kernels.triton_decode.KERNELS).
TRITON_NAMES = {
    "triton-prologue": "_prologue_kernel",
    "triton-split": "_split_kernel",
    "triton-combine": "_combine_kernel",
}
#: Device activities that are not kernels.
NOT_KERNELS = ("Memset", "Memcpy")


@dataclass
class StreamResult:
    """Everything the stream micro-benchmarks measured (raw points kept for the profile)."""

    tables: list[dict[str, Any]] = field(default_factory=list)
    small_kernels: dict[str, Any] | None = None  # calibration.prologue_combine_s
    graph: dict[str, Any] = field(default_factory=dict)
    softmax: list[list[float]] = field(default_factory=list)
    attention_compute_efficiency: float | None = None
    spread: list[float] = field(default_factory=list)  # relative IQR of each point's repeats
    log: list[str] = field(default_factory=list)
    profiler: bool = False


class _Clock:
    """Per-kernel device durations of one callable (profiler on CUDA, wall time on a CPU)."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = device
        self.torch = torch
        self.flush = (
            torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device=device) if device == "cuda" else None
        )
        self.exclude: set[str] = set()
        self.profiler_ok = device == "cuda"
        if self.profiler_ok:
            try:
                self.exclude = set(self._profile(lambda: None, 1, raw=True))
            except Exception:  # noqa: BLE001 - no profiler: fall back to graph replays
                self.profiler_ok = False

    def _events(self, prof: Any) -> list[tuple[float, str, float]]:
        from torch.autograd import DeviceType

        out = []
        for evt in prof.events():
            if getattr(evt, "device_type", None) == DeviceType.CUDA:
                out.append((evt.time_range.start, evt.name, evt.time_range.elapsed_us() * 1e-6))
        if not out:
            for evt in prof.profiler.kineto_results.events():
                if evt.device_type() == DeviceType.CUDA:
                    out.append((evt.start_ns() / 1e3, evt.name(), evt.duration_ns() * 1e-9))
        return sorted(out)

    def _profile(self, fn: Callable[[], Any], repeats: int, raw: bool = False) -> dict[str, list[float]]:
        torch = self.torch
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize()
        assert self.flush is not None  # _profile runs on CUDA only, where the flush buffer exists
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(repeats):
                self.flush.zero_()
                fn()
            torch.cuda.synchronize()
        per: dict[str, list[float]] = {}
        for _, name, dur in self._events(prof):
            if name.startswith(NOT_KERNELS) or (not raw and name in self.exclude):
                continue
            per.setdefault(name, []).append(dur)
        if raw:
            return per
        out = {}
        for name, durs in per.items():
            c = max(1, len(durs) // repeats)
            out[name] = [sum(durs[i * c : (i + 1) * c]) for i in range(len(durs) // c)]
        return out

    def kernels(self, fn: Callable[[], Any], repeats: int = REPEATS) -> dict[str, list[float]]:
        """Per kernel name, its device time per call (seconds); "<call>" for a whole call."""
        fn()  # compile, allocate, build plans
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            if self.profiler_ok:
                got = self._profile(fn, repeats)
                if got:
                    return got
            t = time_fn(fn, device="cuda", warmup_ms=2.0, rep_ms=10.0, graph=True)
            return {"<call>": [t.median_s]}
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return {"<call>": times}


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _spread(xs: list[float]) -> float:
    if len(xs) < 4:
        return 0.0
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return float((q[2] - q[0]) / max(statistics.median(xs), 1e-30))


def _main(durs: dict[str, list[float]], name: str | None = None) -> list[float]:
    """The durations of kernel ``name`` (a Triton kernel); with ``name`` None, of the longest kernel of
    the call. Without a per-kernel profile (:meth:`_Clock.kernels` returned only the whole call's time,
    "<call>": on a CPU, or when the profiler recorded nothing) that whole-call time stands for the kernel,
    as documented there. A named kernel missing from a per-kernel profile is an error, never another
    kernel's time."""
    if name is not None:
        if set(durs) == {"<call>"}:
            return durs["<call>"]
        if name not in durs:
            raise RuntimeError(
                f"the profiler recorded no kernel {name!r} in this call; it recorded {sorted(durs)}"
            )
        return durs[name]
    if not durs:
        raise RuntimeError("the profiler recorded no kernel in this call")
    return max(durs.values(), key=_median)


def fit_latency(points: list[tuple[float, float]]) -> tuple[float, list[tuple[float, float]]]:
    """(latency, [(work, time - latency), ...]) for (work, time) points: the intercept of the
    least-squares line time = a + b work weighted by 1/time^2, clipped to [0, LATENCY_CAP x the
    smallest time] (one point: latency 0)."""
    pts = sorted(points)
    w = np.array([p[0] for p in pts], dtype=float)
    t = np.array([p[1] for p in pts], dtype=float)
    a = 0.0
    if len(pts) >= 2:
        weights = 1.0 / t**2
        A = np.stack([np.ones_like(w), w], axis=1) * np.sqrt(weights)[:, None]
        sol, *_ = np.linalg.lstsq(A, t * np.sqrt(weights), rcond=None)
        a = float(np.clip(sol[0], 0.0, LATENCY_CAP * t.min()))
    return a, [(float(x), float(y - a)) for x, y in zip(w, t)]


def fit_split_fill(points: list[tuple[float, float, float]], *, latency_s: float, sm_count: int) -> float:
    """The split pass's per-program fill (seconds) from (bytes, programs, time) points: the least
    squares (weighted by 1/time^2) of time - latency = bytes / bw(programs) + (ceil(programs /
    SMs) - 1) fill, one streaming rate per program count (occupancy) and one fill shared, so the
    fill is what stays when a program count streams fewer bytes. Clipped to >= 0; 0 when no
    program count with more than one program per SM is timed at two sizes (not identifiable)."""
    if isinstance(sm_count, bool) or not isinstance(sm_count, int) or sm_count < 1:
        raise ValueError(f"sm_count must be an integer >= 1, got {sm_count!r}")
    if not points:
        return 0.0
    keys = sorted({int(round(p[1])) for p in points})
    col = {k: i for i, k in enumerate(keys)}
    a = np.zeros((len(points), len(keys) + 1))
    y = np.zeros(len(points))
    w = np.zeros(len(points))
    for i, (nbytes, programs, t) in enumerate(points):
        if not (t > 0 and nbytes > 0):
            raise ValueError(f"points[{i}] needs bytes > 0 and time > 0, got {(nbytes, programs, t)!r}")
        a[i, col[int(round(programs))]] = nbytes
        a[i, -1] = float(split_fill_s(programs, sm_count, 1.0))
        y[i], w[i] = t - latency_s, 1.0 / t
    if np.linalg.matrix_rank(a) < a.shape[1]:
        return 0.0
    sol, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
    return float(max(0.0, sol[-1]))


def efficiency_table(points: list[tuple[float, float]], rate: float) -> tuple[float, list[list[float]]]:
    """(latency, [[work, efficiency], ...]) with efficiency = work / ((time - latency) rate),
    capped to [MIN_EFFICIENCY, 1]; works that repeat keep the first."""
    latency, net = fit_latency(points)
    out: list[list[float]] = []
    for work, t in net:
        if out and work <= out[-1][0]:
            continue
        eff = 1.0 if t <= 0 else work / (t * rate)
        out.append([work, float(min(1.0, max(MIN_EFFICIENCY, eff)))])
    return latency, out


def _plan_work(plan: str, plan_phase: str, kernel: str, what: str, **shape: Any) -> float:
    """Bytes or FLOPs of one plan kernel at a calibration shape, by the model's own expressions."""
    p = build_plan(plan, phase=plan_phase, selection=shape.pop("selection", "group"))
    kern = next(kk for kk in p.kernels if kk.name == kernel)
    sizes = Sizes(**shape)
    return float(evaluate(kern.bytes if what == "bytes" else kern.flops, sizes))


def run_stream_benchmarks(
    *,
    device: str,
    profile_rates: dict[str, float],
    sm_count: int,
    deadline_s: float | None = None,
    progress: Callable[[str], None] = lambda msg: None,
) -> StreamResult:
    """Run every stream micro-benchmark on ``device``; ``profile_rates`` holds the datasheet
    ``bandwidth`` (bytes/s) and ``peak_bf16`` (FLOP/s) the efficiencies are fractions of.
    Stops starting new benchmarks after ``deadline_s`` seconds (the tables so far are kept)."""
    import torch

    t_start = time.monotonic()
    res = StreamResult()
    clock = _Clock(device)
    res.profiler = clock.profiler_ok
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(12)
    bw, peak = profile_rates["bandwidth"], profile_rates["peak_bf16"]
    where = f"{device} calibration, {time.strftime('%Y-%m-%d')}"
    kind = "cuda" if device == "cuda" else "cpu"

    def late() -> bool:
        return deadline_s is not None and time.monotonic() - t_start > deadline_s

    def rand(*shape: int, dtype: Any = torch.bfloat16) -> torch.Tensor:
        return torch.randn(shape, device=dev, generator=gen, dtype=torch.float32).to(dtype)

    # -- graph timing ----------------------------------------------------------------------------
    tiny = torch.zeros(1, device=dev)
    chain = []
    for n in CHAIN_LENGTHS:

        def call(n: int = n) -> None:
            for _ in range(n):
                tiny.add_(1.0)

        chain.append(
            (n, time_fn(call, device=device, warmup_ms=2.0, rep_ms=10.0, graph=device == "cuda").median_s)
        )
    slope, intercept = np.polyfit([c[0] for c in chain], [c[1] for c in chain], 1)
    tiny_s = _median(_main(clock.kernels(lambda: tiny.add_(1.0)))) if clock.profiler_ok else float(slope)
    tiny_s = float(min(max(tiny_s, 1e-9), max(slope, 1e-9)))
    gap = float(max(MIN_GAP_S, slope - tiny_s))
    res.graph = {
        "graph_launch_s": float(max(1e-9, intercept + gap)),
        "graph_gap_s": gap,
        "tiny_kernel_s": tiny_s,
        "chain_n_s": [[float(n), t] for n, t in chain],
        "graph_method": (
            f"measured: CUDA-graph replays of n one-element adds, n in {list(CHAIN_LENGTHS)} (least "
            f"squares: slope = tiny kernel + gap, intercept = graph launch - gap); the add's device "
            f"time by torch.profiler ({'yes' if clock.profiler_ok else 'no: slope used'}); {where}"
        ),
    }
    progress(
        f"graph: launch {res.graph['graph_launch_s'] * 1e6:.2f} us, gap {gap * 1e6:.2f} us, tiny kernel {tiny_s * 1e6:.2f} us"
    )

    def add_table(
        stream: str,
        d: int,
        gqa: bool | None,
        rows: int,
        x: str,
        y: str,
        latency: float,
        points: list[list[float]],
        what: str,
        misaligned: float | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "stream": stream,
            "d": d,
            "rows": rows,
            "x": x,
            "y": y,
            "latency_s": latency,
            "points": points,
            "source": f"measured: {what}; {where}",
        }
        if gqa is not None:
            entry["gqa"] = gqa
        if misaligned is not None:
            entry["misaligned_efficiency"] = misaligned
        res.tables.append(entry)

    dims = CAL_HEAD_DIMS[kind]
    # -- torch SDPA decode -------------------------------------------------------------------------
    import torch.nn.functional as F

    for d in dims:
        for gqa in (False, True):
            if late():
                break
            hq, hkv = CAL_HEADS[gqa]
            pts = []
            for b, n in DECODE_LADDER[kind]:
                q, k, v = rand(b, hq, 1, d), rand(b, hkv, n, d), rand(b, hkv, n, d)
                ds = _main(
                    clock.kernels(lambda: F.scaled_dot_product_attention(q, k, v, scale=1.0, enable_gqa=gqa))
                )
                res.spread.append(_spread(ds))
                work = _plan_work(
                    "dense-fused",
                    "decode",
                    "attention",
                    "bytes",
                    heads_q=hq,
                    heads_kv=hkv,
                    d=d,
                    context=n,
                    batch=b,
                    k=d,
                )
                pts.append((work, _median(ds)))
                del q, k, v
            lat, eff = efficiency_table(pts, bw)
            add_table(
                "sdpa-decode",
                d,
                gqa,
                0,
                "bytes",
                "efficiency",
                lat,
                eff,
                f"torch SDPA decode's main (longest) kernel, (B, N) in {list(DECODE_LADDER[kind])}, H_q/H_kv = {hq}/{hkv}, "
                f"d={d}, bf16; bytes as the dense-fused plan counts them",
            )
            progress(
                f"sdpa-decode d={d} gqa={gqa}: latency {lat * 1e6:.2f} us, efficiency "
                + ", ".join(f"{w:.3g} B {e:.2f}" for w, e in eff)
            )

    # -- the Triton split pass: programs per SM, alignment, latency -------------------------------
    from aqua_model.kernels import triton_decode as td

    triton_ok = td.triton_available(dev)
    n_ctx = SPLIT_CONTEXT[kind]
    for d in dims:
        for rows in SPLIT_ROWS.get(d, (16,)):
            if late():
                break
            hq, hkv = SPLIT_HEADS_KV * SPLIT_GROUP, SPLIT_HEADS_KV
            block_n, warps, stages = launch_rule(rows)
            q = rand(1, hq, d)
            v = rand(1, hkv, n_ctx + MISALIGN_ELEMENTS, d)
            kt_al = rand(1, hkv, d, n_ctx)
            out = torch.empty(1, hq, d, dtype=torch.bfloat16, device=dev)
            work = _plan_work(
                "aqua-fused",
                "decode",
                "attention",
                "bytes",
                heads_q=hq,
                heads_kv=hkv,
                d=d,
                context=n_ctx,
                batch=1,
                k=rows,
            )

            def split_call(kt: torch.Tensor, splits: int, length: int) -> Callable[[], Any]:
                cfg = td.DecodeConfig(
                    block_n=block_n,
                    num_warps=warps,
                    num_stages=stages,
                    num_splits=splits,
                    launches=THREE_LAUNCHES,
                )
                return lambda: td.aqua_decode(
                    q,
                    kt,
                    v[:, :, :length],
                    None,
                    k_keep=rows,
                    selection="group",
                    scale=1.0,
                    config=cfg,
                    out=out,
                )

            # latency: one block of one head
            q1, kt1, v1 = rand(1, SPLIT_GROUP, d), rand(1, 1, d, block_n), rand(1, 1, block_n, d)
            out1 = torch.empty(1, SPLIT_GROUP, d, dtype=torch.bfloat16, device=dev)
            cfg1 = td.DecodeConfig(
                block_n=block_n, num_warps=warps, num_stages=stages, num_splits=1, launches=THREE_LAUNCHES
            )
            lat_d = clock.kernels(
                lambda: td.aqua_decode(
                    q1, kt1, v1, None, k_keep=rows, selection="group", scale=1.0, config=cfg1, out=out1
                )
            )
            latency = _median(_main(lat_d, TRITON_NAMES["triton-split"])) if triton_ok else 0.0

            def programs(splits: int, length: int) -> int:  # the kernel's own split count (plan_splits)
                got, _ = split_count(
                    programs=hkv, context=length, block_n=block_n, sm_count=sm_count, num_splits=splits
                )
                return hkv * int(got)

            pts, fill_pts = [], []
            for x in SPLIT_PROGRAMS_PER_SM:
                splits = max(1, round(x * sm_count / hkv))
                durs = clock.kernels(split_call(kt_al, splits, n_ctx))
                ds = _main(durs, TRITON_NAMES["triton-split"])
                res.spread.append(_spread(ds))
                pts.append((programs(splits, n_ctx), _median(ds)))
                fill_pts.append((work, float(pts[-1][0]), pts[-1][1]))
            for length in FILL_CONTEXTS[kind]:
                if late():
                    break
                work_n = _plan_work(
                    "aqua-fused",
                    "decode",
                    "attention",
                    "bytes",
                    heads_q=hq,
                    heads_kv=hkv,
                    d=d,
                    context=length,
                    batch=1,
                    k=rows,
                )
                for x in FILL_PROGRAMS_PER_SM:
                    splits = max(1, round(x * sm_count / hkv))
                    ds = _main(
                        clock.kernels(split_call(kt_al[:, :, :, :length], splits, length)),
                        TRITON_NAMES["triton-split"],
                    )
                    fill_pts.append((work_n, float(programs(splits, length)), _median(ds)))
            fill = fit_split_fill(fill_pts, latency_s=latency, sm_count=sm_count) if triton_ok else 0.0
            eff_pts: list[list[float]] = []
            for prog, t in sorted(pts):
                xp = prog / sm_count
                if eff_pts and xp <= eff_pts[-1][0]:
                    continue
                net = t - latency - float(split_fill_s(prog, sm_count, fill))
                eff_pts.append(
                    [xp, float(min(1.0, max(MIN_EFFICIENCY, work / (net * bw) if net > 0 else 1.0)))]
                )
            mis = None
            if triton_ok:
                splits = max(1, round(MISALIGN_AT_PROGRAMS_PER_SM * sm_count / hkv))
                fixed = latency + float(split_fill_s(programs(splits, n_ctx), sm_count, fill))
                kt_mis = rand(1, hkv, d, n_ctx + MISALIGN_ELEMENTS)[:, :, :, :n_ctx]  # row stride N + 8
                t_al = _median(
                    _main(clock.kernels(split_call(kt_al, splits, n_ctx)), TRITON_NAMES["triton-split"])
                )
                t_mis = _median(
                    _main(clock.kernels(split_call(kt_mis, splits, n_ctx)), TRITON_NAMES["triton-split"])
                )
                mis = float(min(1.0, max(MIN_EFFICIENCY, (t_al - fixed) / max(t_mis - fixed, 1e-12))))
                del kt_mis
            add_table(
                "triton-split",
                d,
                True,
                rows,
                "programs_per_sm",
                "efficiency",
                latency,
                eff_pts,
                f"aqua_decode's split pass (group selection, k = {rows} rows, {block_n}-token blocks, {warps} warps, "
                f"{stages} stages) over B=1, H_kv={hkv}, g={SPLIT_GROUP}, N={n_ctx}, d={d}, bf16, with the split count "
                f"forced; bytes as the aqua-fused plan counts them; latency: one block of one head; misaligned: "
                f"row stride N+{MISALIGN_ELEMENTS} at {MISALIGN_AT_PROGRAMS_PER_SM:g} programs per SM; efficiencies net "
                f"of the latency and the fill",
                mis,
            )
            if fill:
                res.tables[-1]["fill_s"] = fill
                res.tables[-1]["fill_points"] = [[b, p, t] for b, p, t in fill_pts]
                res.tables[-1]["fill_source"] = (
                    f"measured: the same split pass with the split counts of {list(FILL_PROGRAMS_PER_SM)} programs per SM "
                    f"also at N in {list(FILL_CONTEXTS[kind])} (fill_points: [bytes, programs, s]); fit_split_fill: one "
                    f"rate per program count, one fill per program after each SM's first; {where}"
                )
            progress(
                f"triton-split d={d} rows={rows}: latency {latency * 1e6:.2f} us, fill {fill * 1e6:.3f} us, efficiency "
                + ", ".join(f"{x:g}/SM {e:.2f}" for x, e in eff_pts)
                + (f", misaligned x{mis:.2f}" if mis else "")
            )
            del q, v, kt_al, out
            if device == "cuda":
                torch.cuda.empty_cache()

    # -- the Triton prologue and combine against their programs per SM ----------------------------
    if triton_ok:
        for d in dims:
            if late():
                break
            pro, comb = [], []
            hq, hkv = SPLIT_HEADS_KV * SPLIT_GROUP, SPLIT_HEADS_KV
            for b in PROLOGUE_BATCHES[kind]:
                q, kt, v = (
                    rand(b, hq, d),
                    rand(b, hkv, d, PROLOGUE_CONTEXT),
                    rand(b, hkv, PROLOGUE_CONTEXT, d),
                )
                out = torch.empty(b, hq, d, dtype=torch.bfloat16, device=dev)
                durs = clock.kernels(
                    lambda: td.aqua_decode(
                        q,
                        kt,
                        v,
                        None,
                        k_keep=32,
                        selection="group",
                        scale=1.0,
                        out=out,
                        launches=THREE_LAUNCHES,
                    )
                )
                pro.append((b * hkv / sm_count, _median(_main(durs, TRITON_NAMES["triton-prologue"]))))
                comb.append((b * hq / sm_count, _median(_main(durs, TRITON_NAMES["triton-combine"]))))
                del q, kt, v, out
            what = (
                f"aqua_decode (group selection, k = 32) at B in {list(PROLOGUE_BATCHES[kind])}, H_kv={hkv}, g={SPLIT_GROUP}, "
                f"N={PROLOGUE_CONTEXT}, d={d}, bf16, splits by the launch rule"
            )
            add_table(
                "triton-prologue",
                d,
                None,
                0,
                "programs_per_sm",
                "s",
                0.0,
                [[x, t] for x, t in _dedupe_x(pro)],
                "the prologue's device time against B H_kv / SMs; " + what,
            )
            add_table(
                "triton-combine",
                d,
                None,
                0,
                "programs_per_sm",
                "s",
                0.0,
                [[x, t] for x, t in _dedupe_x(comb)],
                "the combine's device time against B H_q / SMs; " + what,
            )
            progress(
                f"triton prologue/combine d={d}: "
                + ", ".join(f"{x:.2g}/SM {t * 1e6:.1f}/{c * 1e6:.1f} us" for (x, t), (_, c) in zip(pro, comb))
            )

    # -- the prologue/combine table: each kernel's own device time over units, g, d, selection ----
    if triton_ok and clock.profiler_ok and not late():  # per-kernel times need the profiler
        try:  # one device call per run: a failure here leaves the table out, never the calibration
            _small_kernel_sweep(res, clock, td, rand, kind, dims, where, late, progress, dev)
        except Exception as exc:  # noqa: BLE001 - reported in the log, the profile then has no table
            progress(f"prologue/combine table not measured: {exc!r}")

    # -- torch SDPA causal prefill -----------------------------------------------------------------
    for d in dims:
        for gqa in (False, True):
            if late():
                break
            hq, hkv = CAL_HEADS[gqa]
            pts = []
            for t_len in PREFILL_LADDER[kind]:
                q, k, v = rand(1, hq, t_len, d), rand(1, hkv, t_len, d), rand(1, hkv, t_len, d)
                ds = _main(
                    clock.kernels(
                        lambda: F.scaled_dot_product_attention(
                            q, k, v, is_causal=True, scale=1.0, enable_gqa=gqa
                        )
                    )
                )
                res.spread.append(_spread(ds))
                work = _plan_work(
                    "dense-fused",
                    "prefill",
                    "attention",
                    "flops",
                    heads_q=hq,
                    heads_kv=hkv,
                    d=d,
                    context=0,
                    batch=1,
                    k=d,
                    phase="prefill",
                    prompt=t_len,
                )
                pts.append((work, _median(ds)))
                del q, k, v
            lat, eff = efficiency_table(pts, peak)
            add_table(
                "sdpa-prefill",
                d,
                gqa,
                0,
                "flops",
                "efficiency",
                lat,
                eff,
                f"torch SDPA causal prefill's main kernel, B=1, T in {list(PREFILL_LADDER[kind])}, H_q/H_kv = {hq}/{hkv}, "
                f"d={d}, bf16; FLOPs as the dense-fused prefill plan counts them, over the bf16 peak",
            )
            progress(
                f"sdpa-prefill d={d} gqa={gqa}: latency {lat * 1e6:.2f} us, efficiency "
                + ", ".join(f"{w:.3g} FLOP {e:.2f}" for w, e in eff)
            )
            if d == max(dims) and gqa is False and eff:
                res.attention_compute_efficiency = float(eff[-1][1])

    # -- the eager decode's score matmul -----------------------------------------------------------
    if not late():
        d, (hq, hkv) = max(dims), CAL_HEADS[True]
        g = hq // hkv
        pts = []
        for b, n in DECODE_LADDER[kind]:
            q, k = rand(b, hkv, g, d), rand(b, hkv, n, d)
            kt = k.transpose(-1, -2)
            ds = _main(clock.kernels(lambda: torch.matmul(q, kt)))
            work = _plan_work(
                "dense-eager",
                "decode",
                "scores",
                "bytes",
                heads_q=hq,
                heads_kv=hkv,
                d=d,
                context=n,
                batch=b,
                k=d,
            )
            pts.append((work, _median(ds)))
            del q, k, kt
        lat, eff = efficiency_table(pts, bw)
        add_table(
            "torch-matvec",
            d,
            None,
            0,
            "bytes",
            "efficiency",
            lat,
            eff,
            f"torch.matmul of q [B, H_kv, g, d] against a K^T view (the eager decode's scores), (B, N) in "
            f"{list(DECODE_LADDER[kind])}, H_q/H_kv = {hq}/{hkv}, d={d}, bf16; bytes as the dense-eager plan counts them",
        )
        progress(
            f"torch-matvec: latency {lat * 1e6:.2f} us, efficiency "
            + ", ".join(f"{w:.3g} B {e:.2f}" for w, e in eff)
        )

    # -- torch.softmax against row length ----------------------------------------------------------
    if not late():
        launch_s = res.graph["graph_launch_s"] + res.graph["tiny_kernel_s"]
        for length in SOFTMAX_LENGTHS:
            rows = max(1, SOFTMAX_INPUT_BYTES[kind] // (2 * length))
            logits = rand(rows, length)
            t = time_fn(
                lambda: torch.softmax(logits, dim=-1),
                device=device,
                warmup_ms=2.0,
                rep_ms=10.0,
                graph=device == "cuda",
            ).median_s
            moved = 2 * logits.numel() * 2
            eff = moved / max(t - launch_s, 1e-12) / bw
            res.softmax.append([float(length), float(moved), t, float(min(1.0, max(MIN_EFFICIENCY, eff)))])
            del logits
        progress("softmax: " + ", ".join(f"{int(r[0])}: {r[3]:.2f}" for r in res.softmax))
    if device == "cuda":
        torch.cuda.empty_cache()
    return res


def _small_kernel_sweep(
    res: StreamResult,
    clock: _Clock,
    td: Any,
    rand: Callable[..., Any],
    kind: str,
    dims: tuple[int, ...],
    where: str,
    late: Callable[[], bool],
    progress: Callable[[str], None],
    dev: Any,
) -> None:
    """The prologue/combine table (``prologue_combine_s``) into ``res.small_kernels``."""
    import torch

    small_pts: list[list[Any]] = []
    for sel in SMALL_SELECTIONS:
        for g in SMALL_GROUPS[kind]:
            for d in dims:
                for units in SMALL_UNITS[kind]:
                    n = max(PROLOGUE_CONTEXT, SMALL_TOTAL_TOKENS[kind] // units)
                    q, kt, v = rand(units, g, d), rand(units, 1, d, n), rand(units, 1, n, d)
                    out = torch.empty(units, g, d, dtype=torch.bfloat16, device=dev)
                    durs = clock.kernels(
                        lambda: td.aqua_decode(
                            q,
                            kt,
                            v,
                            None,
                            k_keep=d // 2,
                            selection=sel,
                            scale=1.0,
                            out=out,
                            launches=THREE_LAUNCHES,
                        )
                    )
                    for which, name, u in (
                        ("prologue", "triton-prologue", units),
                        ("combine", "triton-combine", units * g),
                    ):
                        ds = _main(durs, TRITON_NAMES[name])
                        res.spread.append(_spread(ds))
                        small_pts.append(
                            [which, sel, float(g), float(d), float(u), float(max(_median(ds), 1e-9))]
                        )
                    del q, kt, v, out
        progress(
            f"prologue/combine {sel}: "
            + ", ".join(
                f"{p[0][0]} g={p[2]:g} d={p[3]:g} u={p[4]:g} {p[5] * 1e6:.1f} us"
                for p in small_pts
                if p[1] == sel and p[4] in (1.0, 64.0, 8192.0)
            )
        )
    res.small_kernels = {
        "points": small_pts,
        "source": (
            f"measured: the prologue's and the combine's own device times (torch.profiler) in aqua_decode (select_in "
            f"'prepass', k = d/2) at B in {list(SMALL_UNITS[kind])} with H_kv = 1 (units: B H_kv for the prologue, B H_q "
            f"for the combine), g in {list(SMALL_GROUPS[kind])}, d in {list(dims)}, selections {list(SMALL_SELECTIONS)}, "
            f"N = {SMALL_TOTAL_TOKENS[kind]} / B (at least {PROLOGUE_CONTEXT}), bf16, splits by the launch rule; {where}"
        ),
    }


def _dedupe_x(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not out or x > out[-1][0]:
            out.append((float(x), float(max(y, 1e-9))))
    return out


def calibration_spread(res: StreamResult) -> float:
    """The median relative interquartile range of the stream points' repeated calls (0 if none)."""
    vals = [s for s in res.spread if math.isfinite(s)]
    return float(statistics.median(vals)) if vals else 0.0
