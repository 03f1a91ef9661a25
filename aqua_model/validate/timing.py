"""One timing function for every measurement of the validation suite.

CUDA: ``triton.testing.do_bench`` (CUDA events around each call; before every timed call it
zeroes a 256 MB buffer, which flushes the H200's 60 MB L2, so each call reads its inputs from
device memory). Without triton: the same loop written here with CUDA events and an explicit
flush buffer. With ``graph=True`` (the default on CUDA) the function is first captured into a
CUDA graph and the timed call is one graph replay: the device time of the kernels and the gaps
between them, without the Python and launch-API time on the host, which for small eager
kernels is larger than the device time and would otherwise be measured instead of the GPU.
If capture fails the function is timed eagerly and the method says so. CPU: ``time.perf_counter`` around each call after warm-up calls (no cache flush:
the CPU mode checks the pipeline, not the CPU's speed).

Every variant returns the median and the interquartile range of the per-call times.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aqua_model._checks import check_choice, check_real

#: Devices the timer knows.
DEVICES: tuple[str, ...] = ("cpu", "cuda")
#: Default warm-up budget (ms) before timed calls: long enough to compile and settle clocks.
DEFAULT_WARMUP_MS = 5.0
#: Default budget of timed calls (ms); do_bench turns it into a repeat count.
DEFAULT_REP_MS = 40.0
#: Fewest timed calls on the CPU and in the event fallback (a median of fewer is noise).
MIN_CALLS = 5
#: Most timed calls on the CPU (bounds the time spent on tiny functions).
MAX_CPU_CALLS = 200
#: Bytes zeroed before each timed call in the CUDA fallback (several times any L2 we know).
FLUSH_BYTES = 256 * 2**20
#: Quantiles asked of do_bench: lower quartile, median, upper quartile.
QUANTILES: tuple[float, float, float] = (0.25, 0.5, 0.75)

#: What each method does about caches, written into every result row.
CACHE_POLICY = {
    "do_bench": "l2-flush: do_bench zeroes a 256 MB buffer before every timed call",
    "cuda-events": "l2-flush: a 256 MB buffer is zeroed before every timed call",
    "perf_counter": "none: CPU caches are not flushed",
}
#: Eager calls on a side stream before a graph capture (allocator and library warm-up).
GRAPH_WARMUP_CALLS = 2


@dataclass(frozen=True)
class Timing:
    """Per-call time statistics in seconds, and how they were taken."""

    median_s: float
    iqr_s: float
    q25_s: float
    q75_s: float
    calls: int | None
    method: str
    cache_policy: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _quartiles(times_s: list[float]) -> tuple[float, float, float]:
    if len(times_s) == 1:
        return times_s[0], times_s[0], times_s[0]
    q = statistics.quantiles(times_s, n=4, method="inclusive")
    return q[0], statistics.median(times_s), q[2]


def _timing(times_s: list[float], method: str) -> Timing:
    q25, med, q75 = _quartiles(times_s)
    return Timing(med, q75 - q25, q25, q75, len(times_s), method, CACHE_POLICY[method])


def _time_cpu(fn: Callable[[], Any], warmup_ms: float, rep_ms: float) -> Timing:
    t_end = time.perf_counter() + warmup_ms / 1e3
    fn()
    while time.perf_counter() < t_end:
        fn()
    times: list[float] = []
    t_stop = time.perf_counter() + rep_ms / 1e3
    while len(times) < MIN_CALLS or (time.perf_counter() < t_stop and len(times) < MAX_CPU_CALLS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _timing(times, "perf_counter")


def _time_cuda_events(fn: Callable[[], Any], warmup_ms: float, rep_ms: float) -> Timing:
    import torch

    flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(MIN_CALLS):
        flush.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate_ms = max(start.elapsed_time(end) / MIN_CALLS, 1e-3)
    for _ in range(max(1, int(warmup_ms / estimate_ms))):
        fn()
    n = max(MIN_CALLS, int(rep_ms / estimate_ms))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return _timing([s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)], "cuda-events")


def _time_do_bench(fn: Callable[[], Any], warmup_ms: float, rep_ms: float) -> Timing:
    import torch
    from triton.testing import do_bench

    q25, med, q75 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    torch.cuda.synchronize()
    # do_bench repeats int(rep / estimate) times (at least once) and does not report the count.
    return Timing(
        med / 1e3, (q75 - q25) / 1e3, q25 / 1e3, q75 / 1e3, None, "do_bench", CACHE_POLICY["do_bench"]
    )


def capture_graph(fn: Callable[[], Any]) -> Any:
    """``fn`` captured into a ``torch.cuda.CUDAGraph`` (after eager warm-up calls on a side
    stream, as torch requires); replay it with ``.replay()``."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(GRAPH_WARMUP_CALLS):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # eager cached blocks cannot serve the graph's private pool
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


def time_fn(
    fn: Callable[[], Any],
    *,
    device: str,
    warmup_ms: float = DEFAULT_WARMUP_MS,
    rep_ms: float = DEFAULT_REP_MS,
    prefer: str = "do_bench",
    graph: bool = False,
) -> Timing:
    """Time ``fn()`` (no arguments) on ``device`` ("cpu" or "cuda"); median and IQR per call.

    ``prefer`` is "do_bench" (use triton's when importable) or "cuda-events" (the loop here);
    ``graph`` times replays of a CUDA graph of ``fn`` (falls back to eager calls, saying so,
    when capture fails). Both are ignored on the CPU. ``fn`` is called untimed first.
    """
    if graph and device == "cuda":
        import torch

        try:
            g = capture_graph(fn)
        except Exception as exc:  # noqa: BLE001 - eager timing instead, recorded in the method
            torch.cuda.synchronize()
            t = time_fn(fn, device=device, warmup_ms=warmup_ms, rep_ms=rep_ms, prefer=prefer)
            return Timing(
                t.median_s,
                t.iqr_s,
                t.q25_s,
                t.q75_s,
                t.calls,
                f"{t.method} (eager: graph capture failed: {type(exc).__name__})",
                t.cache_policy,
            )
        try:
            t = time_fn(g.replay, device=device, warmup_ms=warmup_ms, rep_ms=rep_ms, prefer=prefer)
        finally:
            del g
            torch.cuda.empty_cache()
        return Timing(
            t.median_s,
            t.iqr_s,
            t.q25_s,
            t.q75_s,
            t.calls,
            f"{t.method} of CUDA-graph replays",
            t.cache_policy,
        )
    check_choice("device", device, DEVICES)
    check_choice("prefer", prefer, ("do_bench", "cuda-events"))
    warmup_ms = check_real("warmup_ms", warmup_ms, minimum=0.0)
    rep_ms = check_real("rep_ms", rep_ms, minimum=0.0, strict_minimum=True)
    if not callable(fn):
        raise TypeError(f"fn must be callable with no arguments, got {fn!r:.60}")
    if device == "cpu":
        return _time_cpu(fn, warmup_ms, rep_ms)
    if prefer == "do_bench":
        try:
            import triton.testing  # noqa: F401
        except Exception:
            prefer = "cuda-events"
    if prefer == "do_bench":
        try:
            return _time_do_bench(fn, warmup_ms, rep_ms)
        except TypeError:  # a do_bench without the quantiles argument: use the loop here
            pass
    return _time_cuda_events(fn, warmup_ms, rep_ms)


def iqr_relative(t: Timing) -> float:
    """IQR over median (a quick noise figure); inf for a zero median."""
    return t.iqr_s / t.median_s if t.median_s > 0 else math.inf
