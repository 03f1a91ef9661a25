"""Calibration micro-benchmarks, and the calibrated hardware profile they produce.

Measured on the device at hand, each with :func:`aqua_model.validate.timing.time_fn` (the
same timer, warm-up and L2 flush as the validation cases):

* launch overhead: the timed call (a CUDA-graph replay) of a one-element in-place add (what one
  kernel costs on the device when it moves nothing), and the eager back-to-back dispatch
  interval of such adds (the host's launch rate, kept for reference);
* memory bandwidth against transfer size: read-only (a float32-accumulated sum) and copy
  (``dst.copy_(src)``, bytes read plus bytes written);
* strided sub-row reads: the first d/4 channels of a token-major [M, d] tensor through a
  strided view, counted as the 32-byte sectors touched;
* gathers: ``torch.gather`` of k rows of a dim-major [H, d, L] tensor into a [H, k, L] copy,
  counted as bytes read plus bytes written (the aqua-eager plan's gather);
* matmul throughput against size for bf16, fp16 and fp32 (square n x n x n, 2 n^3 FLOPs);
* ``torch.topk`` time against rows and length;
* the implementations' own kernels (:mod:`aqua_model.validate.streams`): graph timing, SDPA decode
  and prefill, the Triton split pass (programs per SM, alignment, latency), prologue and combine,
  torch's eager matvec and torch.softmax, all at calibration shapes that are no validation case.

A memory efficiency is bytes / ((time - launch overhead) / bandwidth), because the roofline
adds the launch overhead on top of the memory term; it is capped at 1. The calibrated profile
keeps the base (datasheet) profile's peaks and sizes, and replaces the efficiencies, their
size tables and the launch overhead with measured values; a peak is replaced by the measured
rate only where the measurement beats it (then its source says so). Everything else measured
(matmul rates per dtype and size, copy bandwidth, topk times) is kept under ``[calibration]``.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aqua_model._checks import check_choice
from aqua_model._datafiles import to_toml
from aqua_model.hardware import HardwareProfile, load
from aqua_model.validate.timing import time_fn

#: Sector size assumed when counting bytes of a strided sub-row read (NVIDIA: 32 bytes).
SECTOR_BYTES = 32
#: Head dimension of the strided-read and gather benchmarks (the cases' d).
BENCH_HEAD_DIM = 128
#: Channels kept by the strided-read benchmark: a quarter of d, as in the design notes.
STRIDED_CHANNELS = BENCH_HEAD_DIM // 4
#: Rows kept by the gather benchmark (k of d), the mild AQUA setting of the case grid.
GATHER_ROWS = 96
#: Heads of the gather benchmark's [H, d, L] source.
GATHER_HEADS = 8
#: Efficiency floor written into a size table (the loader needs fractions > 0).
MIN_EFFICIENCY = 1e-3
#: In-place adds per call of the dispatch-interval benchmark.
DISPATCH_BURST = 100

#: Transfer sizes (bytes) per device and depth. GPU sizes reach several times the 60 MB L2.
SIZES_BYTES: dict[tuple[str, bool], tuple[int, ...]] = {
    ("cuda", False): tuple(2**e for e in range(16, 31, 2)),  # 64 KiB .. 1 GiB
    ("cuda", True): tuple(2**e for e in (16, 20, 24, 28, 30)),
    ("cpu", False): tuple(2**e for e in range(14, 27, 2)),  # 16 KiB .. 64 MiB
    ("cpu", True): tuple(2**e for e in (14, 18, 22)),
}
#: Square matmul sizes per device and depth.
MATMUL_SIZES: dict[tuple[str, bool], tuple[int, ...]] = {
    ("cuda", False): (256, 512, 1024, 2048, 4096, 8192),
    ("cuda", True): (1024, 4096, 8192),
    ("cpu", False): (64, 128, 256, 512),
    ("cpu", True): (64, 256),
}
#: torch.topk shapes (rows, length) per device and depth; k is 3/4 of the length.
TOPK_SHAPES: dict[tuple[str, bool], tuple[tuple[int, int], ...]] = {
    ("cuda", False): tuple((r, n) for r in (32, 256, 2048, 16384) for n in (32, 128, 1024)),
    ("cuda", True): ((32, 128), (256, 128), (16384, 128)),
    ("cpu", False): tuple((r, n) for r in (32, 256, 2048) for n in (32, 128)),
    ("cpu", True): ((32, 128), (256, 128)),
}
#: Matmul dtypes measured.
MATMUL_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp32")
#: Shipped datasheet profile used as the base when the device name contains the key.
BASE_BY_NAME: tuple[tuple[str, str], ...] = (
    ("H200", "h200-sxm"),
    ("H100", "h100-sxm"),
    ("A100", "a100-80gb-sxm"),
    ("B200", "b200"),
    ("L40S", "l40s"),
    ("4090", "rtx-4090"),
    ("MI300X", "mi300x"),
)
#: Timer settings of the micro-benchmarks (ms): the same order as the cases.
BENCH_WARMUP_MS = 5.0
BENCH_REP_MS = 25.0


@dataclass
class Calibration:
    """Raw micro-benchmark results (seconds, bytes, FLOP/s) and where they were taken."""

    device: str
    env: dict[str, Any]
    launch_s: float = math.nan
    dispatch_interval_s: float = math.nan
    read: list[tuple[int, float]] = field(default_factory=list)  # (bytes, seconds)
    copy: list[tuple[int, float]] = field(default_factory=list)  # (bytes read + written, seconds)
    strided: list[tuple[int, float]] = field(default_factory=list)  # (sector bytes counted, seconds)
    gather: list[tuple[int, float]] = field(default_factory=list)  # (bytes read + written, seconds)
    matmul: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # dtype -> (n, FLOP/s)
    topk: list[tuple[int, int, int, float]] = field(default_factory=list)  # (rows, length, k, seconds)
    method: str = ""
    streams: Any = None  # aqua_model.validate.streams.StreamResult, or None (not measured)
    sm_count: int | None = None


def _t(fn: Callable[[], Any], device: str, *, graph: bool = True) -> float:
    return time_fn(fn, device=device, warmup_ms=BENCH_WARMUP_MS, rep_ms=BENCH_REP_MS, graph=graph).median_s


#: Programs-per-SM denominator on a CPU: the Triton decode wrapper's own SM count off CUDA.
CPU_SM_COUNT = 8


def run_microbenchmarks(
    *,
    device: str,
    quick: bool = False,
    progress: bool = True,
    streams: bool = True,
    deadline_s: float | None = None,
    base: str | None = None,
) -> Calibration:
    """Run every micro-benchmark on ``device`` ("cpu" or "cuda"); ``quick`` uses fewer sizes;
    ``streams`` adds the implementation-kernel benchmarks (:mod:`.streams`), started only while
    fewer than ``deadline_s`` seconds have passed (``base``: the datasheet profile whose rates
    their efficiencies are fractions of; default from the device name)."""
    import time as _time

    import torch

    t_start = _time.monotonic()

    from aqua_model.validate.runner import environment

    check_choice("device", device, ("cpu", "cuda"))
    dev = torch.device(device)
    key = (device, bool(quick))
    cal = Calibration(device=device, env=environment(device))
    say = (lambda msg: print(f"calibrate: {msg}", flush=True)) if progress else (lambda msg: None)
    gen = torch.Generator(device=dev)
    gen.manual_seed(1)

    def rand(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.randn(shape, device=dev, generator=gen, dtype=torch.float32).to(dtype)

    tiny = rand((1,), torch.float32)
    cal.launch_s = _t(lambda: tiny.add_(1.0), device)

    def burst() -> None:
        for _ in range(DISPATCH_BURST):
            tiny.add_(1.0)

    cal.dispatch_interval_s = _t(burst, device, graph=False) / DISPATCH_BURST  # host launch rate: eager
    say(
        f"launch overhead {cal.launch_s * 1e6:.2f} us, dispatch interval {cal.dispatch_interval_s * 1e6:.2f} us"
    )

    for nbytes in SIZES_BYTES[key]:
        x = rand((nbytes // 2,), torch.bfloat16)
        cal.read.append((nbytes, _t(lambda: x.sum(dtype=torch.float32), device)))
        y = torch.empty_like(x)
        cal.copy.append((2 * nbytes, _t(lambda: y.copy_(x), device)))
        del x, y
        rows = max(1, nbytes // (BENCH_HEAD_DIM * 2))
        xt = rand((rows, BENCH_HEAD_DIM), torch.bfloat16)
        view = xt[:, :STRIDED_CHANNELS]
        sectors = math.ceil(STRIDED_CHANNELS * 2 / SECTOR_BYTES)
        cal.strided.append((rows * sectors * SECTOR_BYTES, _t(lambda: view.sum(dtype=torch.float32), device)))
        del xt, view
        length = max(1, nbytes // (GATHER_HEADS * BENCH_HEAD_DIM * 2))
        src = rand((GATHER_HEADS, BENCH_HEAD_DIM, length), torch.bfloat16)
        idx = torch.stack(
            [
                torch.randperm(BENCH_HEAD_DIM, device=dev, generator=gen)[:GATHER_ROWS]
                for _ in range(GATHER_HEADS)
            ]
        )
        index = idx[:, :, None].expand(GATHER_HEADS, GATHER_ROWS, length)
        moved = 2 * GATHER_HEADS * GATHER_ROWS * length * 2
        cal.gather.append((moved, _t(lambda: torch.gather(src, 1, index), device)))
        del src, idx, index
        say(
            f"{nbytes / 2**20:9.2f} MiB: read {cal.read[-1][1] * 1e6:9.2f} us, copy {cal.copy[-1][1] * 1e6:9.2f} us, "
            f"strided {cal.strided[-1][1] * 1e6:9.2f} us, gather {cal.gather[-1][1] * 1e6:9.2f} us"
        )
        if device == "cuda":
            torch.cuda.empty_cache()

    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    for name in MATMUL_DTYPES:
        cal.matmul[name] = []
        for n in MATMUL_SIZES[key]:
            a, b = rand((n, n), tdt[name]), rand((n, n), tdt[name])
            c = torch.empty((n, n), device=dev, dtype=tdt[name])
            t = _t(lambda: torch.matmul(a, b, out=c), device)
            cal.matmul[name].append((n, 2.0 * n**3 / t))
            del a, b, c
        say(f"matmul {name}: " + ", ".join(f"{n}: {r / 1e12:.1f} TFLOP/s" for n, r in cal.matmul[name]))

    for rows, length in TOPK_SHAPES[key]:
        x = rand((rows, length), torch.float32)
        kk = max(1, 3 * length // 4)
        cal.topk.append((rows, length, kk, _t(lambda: torch.topk(x, kk, dim=-1), device)))
    say("topk: " + ", ".join(f"{r}x{n}: {t * 1e6:.1f} us" for r, n, _, t in cal.topk))

    cal.sm_count = (
        torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else CPU_SM_COUNT
    )
    if streams:
        from aqua_model.validate.streams import run_stream_benchmarks

        ref = load(base or base_profile_name(str(cal.env.get("gpu") if device == "cuda" else "cpu"), device))
        left = None if deadline_s is None else max(0.0, deadline_s - (_time.monotonic() - t_start))
        cal.streams = run_stream_benchmarks(
            device=device,
            sm_count=cal.sm_count,
            deadline_s=left,
            progress=say,
            profile_rates={"bandwidth": ref.bandwidth_bytes_per_s, "peak_bf16": ref.peak_flops("bf16")},
        )

    tf32 = bool(torch.backends.cuda.matmul.allow_tf32) if device == "cuda" else False
    cal.method = (
        f"aqua_model.validate.microbench, timer {'triton do_bench of CUDA-graph replays with L2 flush' if device == 'cuda' else 'perf_counter'}, "
        f"warm-up {BENCH_WARMUP_MS} ms, repeats {BENCH_REP_MS} ms, median; random inputs; "
        f"{'quick' if quick else 'full'} size set; fp32 matmul allow_tf32={tf32}"
    )
    return cal


# -- the calibrated profile ----------------------------------------------------------------------


def base_profile_name(device_name: str, device: str) -> str:
    """The shipped datasheet profile a calibration builds on, from the device's name."""
    if device == "cpu":
        return "cpu-generic"
    for needle, key in BASE_BY_NAME:
        if needle.lower() in device_name.lower():
            return key
    raise ValueError(
        f"no shipped datasheet profile matches device {device_name!r}; pass base= one of the "
        f"hardware keys (aqua-model hardware list)"
    )


def _efficiency_points(
    points: list[tuple[int, float]], launch_s: float, bandwidth: float
) -> list[tuple[float, float]]:
    out = []
    for nbytes, t in points:
        net = t - launch_s
        eff = 1.0 if net <= 0 else nbytes / (net * bandwidth)
        out.append((float(nbytes), min(1.0, max(MIN_EFFICIENCY, eff))))
    return out


def _dedupe(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not out or x > out[-1][0]:
            out.append((x, y))
    return out


def build_profile_document(
    cal: Calibration, base: HardwareProfile, *, name: str, identity: str
) -> dict[str, Any]:
    """The calibrated profile as a nested dict following the hardware schema."""
    date = cal.env.get("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    where = f"{cal.env.get('gpu') if cal.device == 'cuda' else cal.env.get('cpu', 'cpu')}, {date[:10]}"
    doc: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "vendor": base.vendor,
        "kind": base.kind,
        "mode": "calibrated",
        "notes": (
            f"Calibrated from micro-benchmarks on {where} over the datasheet profile {base.key!r}: "
            "peaks and sizes are the datasheet's unless a measurement beat them; efficiencies, their size "
            "tables and the launch overhead are measured (aqua-model validate calibrate)."
        ),
    }
    # peaks: the datasheet's, unless the measurement is higher
    bw = base.bandwidth_bytes_per_s
    large_read = max(cal.read)  # the largest transfer: from device memory, not a cache
    read_rate = large_read[0] / max(large_read[1] - cal.launch_s, 1e-12)
    for field_name, q in base.quantities.items():
        doc[field_name] = _quantity_doc(q)
    if read_rate > bw:
        bw = read_rate
        doc["hbm_bandwidth_bytes_per_s"] = {
            "value": bw,
            "unit": "bytes/s",
            "source": f"measured: read-only sum of {large_read[0]} bytes, {where}",
            "note": f"beat the datasheet's {base.bandwidth_bytes_per_s:.4g} bytes/s",
        }
    pts: list[tuple[Any, float]]  # (n, flop/s) matmul points here, (bytes, efficiency) points below
    for dt, pts in cal.matmul.items():
        best = max(r for _, r in pts)
        if best > base.peak_flops(dt):
            doc[f"peak_flops_{dt}"] = {
                "value": best,
                "unit": "flop/s",
                "sparse": False,
                "source": f"measured: best {dt} square matmul, {where}",
                "note": f"beat the datasheet's {base.peak_flops(dt):.4g} flop/s",
            }
    peak_bf16 = doc["peak_flops_bf16"]["value"] * _unit_factor(doc["peak_flops_bf16"]["unit"])
    best_bf16 = max(r for _, r in cal.matmul["bf16"])
    doc["launch_overhead_s"] = {
        "value": cal.launch_s,
        "unit": "s",
        "source": f"measured: median timed call of a one-element in-place add, {where}",
        "note": f"back-to-back dispatch interval {cal.dispatch_interval_s:.3g} s",
    }
    tables: dict[str, tuple[list[tuple[float, float]], str]] = {
        "contiguous": (
            _efficiency_points(cal.read, cal.launch_s, bw),
            "read-only float32-accumulated sum of bf16",
        ),
        "strided": (
            _efficiency_points(cal.strided, cal.launch_s, bw),
            f"sum over a strided view of the first {STRIDED_CHANNELS} of {BENCH_HEAD_DIM} channels of a "
            f"token-major bf16 [M, {BENCH_HEAD_DIM}] tensor, bytes counted as {SECTOR_BYTES}-byte sectors touched",
        ),
        "gather": (
            _efficiency_points(cal.gather, cal.launch_s, bw),
            f"torch.gather of {GATHER_ROWS} of {BENCH_HEAD_DIM} rows of a dim-major bf16 [{GATHER_HEADS}, "
            f"{BENCH_HEAD_DIM}, L] tensor, bytes read plus written",
        ),
    }
    eff: dict[str, Any] = {
        "compute": {
            "value": min(1.0, best_bf16 / peak_bf16),
            "unit": "fraction",
            "source": f"measured: best bf16 square matmul {best_bf16:.4g} flop/s over peak {peak_bf16:.4g}, {where}",
        },
    }
    size_tables: dict[str, Any] = {}
    for pattern, (pts, what) in tables.items():
        pts = _dedupe(pts)
        eff[pattern] = {
            "value": pts[-1][1],
            "unit": "fraction",
            "source": f"measured: {what}, at {int(pts[-1][0])} bytes, net of launch overhead, {where}",
        }
        size_tables[pattern] = {
            "points": [[x, y] for x, y in pts],
            "x_unit": "bytes",
            "y_unit": "fraction",
            "source": f"measured: {what}, net of launch overhead, {where}",
        }
    latency = _latency_net_tables(cal, bw, where, eff, size_tables) if cal.streams is not None else None
    eff["size_table"] = size_tables
    doc["efficiency"] = eff
    doc["calibration"] = {
        "device": str(cal.env.get("gpu") if cal.device == "cuda" else cal.env.get("cpu", "cpu")),
        "driver": str(cal.env.get("driver", "unknown")),
        "torch": str(cal.env.get("torch", "unknown")),
        "triton": str(cal.env.get("triton", "unknown")),
        "date": str(date),
        "method": cal.method,
        "identity": identity,
        "base": base.key,
        "cuda": str(cal.env.get("cuda", "none")),
        "launch_overhead_s": cal.launch_s,
        "dispatch_interval_s": cal.dispatch_interval_s,
        "read_bytes_s": [[float(b), t] for b, t in cal.read],
        "copy_bytes_s": [[float(b), t] for b, t in cal.copy],
        "strided_bytes_s": [[float(b), t] for b, t in cal.strided],
        "gather_bytes_s": [[float(b), t] for b, t in cal.gather],
        "matmul_n_flops_per_s": {dt: [[float(n), r] for n, r in pts] for dt, pts in cal.matmul.items()},
        "topk_rows_length_k_s": [[float(r), float(n), float(kk), t] for r, n, kk, t in cal.topk],
    }
    if cal.sm_count is not None:
        doc["calibration"]["sm_count"] = int(cal.sm_count)
    if latency is not None:
        doc["calibration"]["pattern_latency_s"] = latency
    if cal.streams is not None:
        from aqua_model.validate.streams import calibration_spread

        st = cal.streams
        doc["calibration"].update({k: v for k, v in st.graph.items()})
        doc["calibration"]["calibration_spread"] = calibration_spread(st)
        doc["calibration"]["stream_profiler"] = (
            "torch.profiler per-kernel durations" if st.profiler else "whole-call times"
        )
        if st.softmax:
            doc["calibration"]["softmax_length_bytes_s_efficiency"] = st.softmax
        if st.attention_compute_efficiency is not None:
            doc["calibration"]["attention_compute_efficiency"] = st.attention_compute_efficiency
        doc["calibration"]["stream"] = st.tables
        if st.small_kernels is not None:
            doc["calibration"]["prologue_combine_s"] = st.small_kernels
    return doc


def _latency_net_tables(
    cal: Calibration, bw: float, where: str, eff: dict[str, Any], size_tables: dict[str, Any]
) -> dict[str, float]:
    """With graph timing measured, each pattern's size table is net of its small-transfer latency
    (the intercept of its ladder of device times, replay - graph launch), which the profile keeps
    as ``pattern_latency_s``; the contiguous pattern is then the copy ladder (an elementwise
    kernel reads and writes, as the plans count it) rather than the read-only sum."""
    from aqua_model.validate.streams import efficiency_table

    launch = cal.streams.graph["graph_launch_s"]
    ladders = {
        "contiguous": (cal.copy, "dst.copy_(src) of bf16, bytes read plus written"),
        "strided": (
            cal.strided,
            f"sum over a strided view of the first {STRIDED_CHANNELS} of {BENCH_HEAD_DIM} channels, "
            f"bytes counted as {SECTOR_BYTES}-byte sectors touched",
        ),
        "gather": (
            cal.gather,
            f"torch.gather of {GATHER_ROWS} of {BENCH_HEAD_DIM} rows of a dim-major [{GATHER_HEADS}, "
            f"{BENCH_HEAD_DIM}, L] tensor, bytes read plus written",
        ),
    }
    latency: dict[str, float] = {}
    for pattern, (points, what) in ladders.items():
        lat, table = efficiency_table([(float(b), max(t - launch, 1e-9)) for b, t in points], bw)
        latency[pattern] = lat
        source = f"measured: {what}; device time = graph replay - graph launch, net of the fitted latency {lat:.3g} s; {where}"
        eff[pattern] = {"value": table[-1][1], "unit": "fraction", "source": source}
        size_tables[pattern] = {"points": table, "x_unit": "bytes", "y_unit": "fraction", "source": source}
    return latency


def _unit_factor(unit: str) -> float:
    return {"flop/s": 1.0, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "PFLOP/s": 1e15}[unit]


def _quantity_doc(q: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"value": q.given_value, "unit": q.given_unit, "source": q.source}
    if q.sparse is not None:
        out["sparse"] = q.sparse
    if q.note is not None:
        out["note"] = q.note
    return out


def write_profile(
    cal: Calibration, out_path: str | os.PathLike[str], *, base: str | None = None
) -> HardwareProfile:
    """Write the calibrated profile TOML for ``cal`` and return it loaded (validated)."""
    device_name = str(cal.env.get("gpu") if cal.device == "cuda" else "cpu")
    base_key = base or base_profile_name(device_name, cal.device)
    base_profile = load(base_key)
    if base_profile.mode != "datasheet":
        raise ValueError(f"base must be a datasheet profile, got {base_key!r} in mode {base_profile.mode!r}")
    # the identity is stored in the file (issue 23 item 7); a renamed copy keeps it
    identity = Path(out_path).stem.lower()
    doc = build_profile_document(
        cal, base_profile, name=f"{base_profile.name} (calibrated)", identity=identity
    )
    header = (
        f"Calibrated hardware profile written by `aqua-model validate calibrate` on {cal.env.get('date')}.\n"
        f"Device {device_name}; driver {cal.env.get('driver')}; torch {cal.env.get('torch')}; "
        f"triton {cal.env.get('triton')}; CUDA {cal.env.get('cuda')}."
    )
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(doc, header=header))
    return load(path)


def calibrate_profile(
    *,
    out_path: str | os.PathLike[str],
    device: str,
    quick: bool = False,
    base: str | None = None,
    progress: bool = True,
    streams: bool = True,
    deadline_s: float | None = None,
) -> HardwareProfile:
    """Run the micro-benchmarks on ``device`` and write the calibrated profile to ``out_path``."""
    cal = run_microbenchmarks(
        device=device, quick=quick, progress=progress, streams=streams, deadline_s=deadline_s, base=base
    )
    return write_profile(cal, out_path, base=base)
