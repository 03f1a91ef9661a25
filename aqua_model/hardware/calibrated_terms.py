"""The calibrated model terms of a hardware profile (issue 12): each a micro-benchmark result.

A calibrated profile's ``[calibration]`` table may hold, beside the raw micro-benchmark tables:

``graph_launch_s``, ``graph_gap_s``, ``tiny_kernel_s``
    How a CUDA graph of a plan's kernels is timed: the replay of a graph of n one-element adds
    takes graph_launch + n tiny_kernel + (n - 1) gap (``chain_n_s``: the measured replays against
    n; tiny_kernel: the device duration of one such add, by torch.profiler). So a plan's graph
    time is graph_launch + the sum of its kernels' device times + one gap per launch after the
    first: launch overhead, and how much of it overlaps.
``pattern_latency_s``
    Per access pattern (contiguous, strided, gather), the device time of a vanishing transfer: the
    intercept of that pattern's size ladder (its efficiency size table is then net of it), the
    small-transfer latency of a generic kernel.
``sm_count``
    Streaming multiprocessors (the device's properties), against which the simulator places the
    programs of a split-N kernel (occupancy, wave quantization).
``stream``
    An array of tables, one per (implementation kernel, head dim, GQA or not, tile rows): the
    device time of that kernel measured at calibration shapes (never validation cases) as
    ``points`` [[x, y], ...], ``x`` in "bytes", "flops" or "programs_per_sm", ``y`` an
    "efficiency" (of the bandwidth, or of the peak for "flops") net of ``latency_s`` (the
    kernel's small-transfer latency: its time at vanishing size), or "s" (a time); optional
    ``misaligned_efficiency``: the factor by which the kernel's bandwidth falls when its key row
    stride is not a multiple of 16 elements; optional ``fill_s`` (``triton-split`` only): the
    per-program fixed cost of the split pass (its pipeline fill and drain), charged once per
    program an SM runs after its first (:func:`split_fill_s`), with ``fill_points`` (the raw
    [bytes, programs, seconds] of its micro-benchmark) and ``fill_source``.
``prologue_combine_s``
    The small kernels of the Triton split-N decode, timed alone (their own device time by
    torch.profiler) at calibration shapes: ``points`` [[kernel, selection, g, d, units, seconds],
    ...] with kernel "prologue" (units = B H_kv, its programs) or "combine" (units = B H_q), every
    (g, d) pair measured per (kernel, selection), each at one or more units, and ``source``. These kernels are latency
    bound (a tl.sort of d entries per program, a few small writes), so their time follows programs
    per SM and d, not bytes (:class:`SmallKernelTable`).
``forms``
    An array of tables, one per timing key: the fitted kernel-time form of
    :mod:`aqua_model.hardware.kernel_forms` (its parameters, its launch geometry and the record of
    its fit). A kernel whose key has a form takes its device time from it, and from nothing else.
``intervals``
    An array of tables, one per (phase, plan): the 10% and 90% quantiles of ln(measured /
    predicted) for the plan's time (``time``) and for its speedup over dense-fused
    (``speedup``), from the plan's in-sample residuals widened by the calibration spread
    (:mod:`aqua_model.simulator.intervals`), frozen with the model before any held-out run.

Nothing here is fitted to validation rows except the intervals, which come from the in-sample
grid by construction and are judged on held-out cases.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .kernel_forms import KernelForm, parse_forms

#: Kernel classes a stream table may describe (the plans' ``Kernel.stream`` values).
STREAM_NAMES: tuple[str, ...] = (
    "sdpa-decode",
    "sdpa-prefill",
    "triton-prologue",
    "triton-split",
    "triton-combine",
    "torch-matvec",
)
#: What a stream table's points are against, and what they give.
STREAM_X: tuple[str, ...] = ("bytes", "flops", "programs_per_sm")
STREAM_Y: tuple[str, ...] = ("efficiency", "s")
#: Level of the stored intervals (their quantiles are (1 - level) / 2 and (1 + level) / 2).
INTERVAL_LEVEL = 0.8


@dataclass(frozen=True)
class StreamTable:
    """One implementation kernel's measured device time at calibration shapes.

    ``__call__(x)`` interpolates ``y`` linearly in log(x), constant beyond the measured ends.
    """

    stream: str
    d: int
    gqa: bool | None
    rows: int
    x: str
    y: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    latency_s: float
    misaligned_efficiency: float | None
    source: str
    fill_s: float = 0.0
    fill_source: str = ""

    def __call__(self, x: Any) -> np.ndarray:
        lx = np.log(np.maximum(np.asarray(x, dtype=float), 1e-30))
        return np.interp(lx, np.log(np.asarray(self.xs)), np.asarray(self.ys))

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form (one entry of ``[calibration] stream``)."""
        out: dict[str, Any] = {
            "stream": self.stream,
            "d": self.d,
            "rows": self.rows,
            "x": self.x,
            "y": self.y,
            "latency_s": self.latency_s,
            "points": [[a, b] for a, b in zip(self.xs, self.ys)],
            "source": self.source,
        }
        if self.gqa is not None:
            out["gqa"] = self.gqa
        if self.misaligned_efficiency is not None:
            out["misaligned_efficiency"] = self.misaligned_efficiency
        if self.fill_s:
            out["fill_s"] = self.fill_s
            out["fill_source"] = self.fill_source
        return out


def split_fill_s(programs: Any, sm_count: int, fill_s: float) -> np.ndarray:
    """The split pass's pipeline fill and drain (seconds): ``fill_s`` for every program an SM runs
    after its first, ceil(programs / SMs) - 1 of them (the first program's fill is inside the
    kernel's one-block latency). 0 when ``fill_s`` is 0; grows with the splits."""
    if isinstance(sm_count, bool) or not isinstance(sm_count, int) or sm_count < 1:
        raise ValueError(f"sm_count must be an integer >= 1, got {sm_count!r}")
    if not math.isfinite(fill_s) or fill_s < 0:
        raise ValueError(f"fill_s must be a finite number of seconds >= 0, got {fill_s!r}")
    waves = np.ceil(np.maximum(np.asarray(programs, dtype=float), 1.0) / sm_count)
    return (waves - 1.0) * float(fill_s)


#: Kernels of ``prologue_combine_s`` and what their units count.
SMALL_KERNELS: dict[str, str] = {"prologue": "B H_kv", "combine": "B H_q"}
#: Selections a ``prologue_combine_s`` point may name (aqua_model.kernels.triton_decode's).
SMALL_KERNEL_SELECTIONS: tuple[str, ...] = ("per-head", "group")


def _interp_axis(x: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``ys`` (first axis over ``xs``) at scalar ``x``, clipped to the ends."""
    if len(xs) == 1:
        return ys[0]
    x = float(np.clip(x, xs[0], xs[-1]))
    j = int(np.clip(np.searchsorted(xs, x, side="right") - 1, 0, len(xs) - 2))
    w = (x - xs[j]) / (xs[j + 1] - xs[j])
    return (1.0 - w) * ys[j] + w * ys[j + 1]


@dataclass(frozen=True)
class SmallKernelTable:
    """Measured device time of the split-N decode's prologue and combine (``prologue_combine_s``).

    Per (kernel, selection) a full (g, d) grid, each cell a curve of seconds over units (the
    combine's units, B H_q, differ by g); read by interpolating log(seconds) linearly in
    log(units) on each curve, then in d, then in g, each held constant beyond the measured ends. A selection that was not measured falls back to the other one."""

    grids: Mapping[
        tuple[str, str],
        tuple[
            tuple[float, ...],
            tuple[float, ...],
            Mapping[tuple[float, float], tuple[tuple[float, ...], np.ndarray]],
        ],
    ]
    source: str
    points: tuple[tuple[Any, ...], ...] = ()

    def __call__(self, kernel: str, selection: str, *, g: float, d: float, units: Any) -> np.ndarray:
        """Seconds of one launch of ``kernel`` at ``units`` programs (array), group size ``g``, head dim ``d``."""
        if kernel not in SMALL_KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(SMALL_KERNELS)}, got {kernel!r}")
        key = (kernel, selection)
        if key not in self.grids:
            have = sorted(s for k, s in self.grids if k == kernel)
            if not have:
                raise ValueError(f"prologue_combine_s holds no {kernel!r} points")
            key = (kernel, have[0])
        gs, ds, curves = self.grids[key]
        lu = np.log(np.maximum(np.asarray(units, dtype=float), 1e-30))
        # log seconds at these units on every measured (g, d) curve, then linear in d, then in g
        at = np.array(
            [
                [np.interp(lu, np.log(np.asarray(curves[(g_, d_)][0])), curves[(g_, d_)][1]) for d_ in ds]
                for g_ in gs
            ]
        )
        plane = _interp_axis(float(g), np.asarray(gs), at)
        return np.exp(_interp_axis(float(d), np.asarray(ds), plane))

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form of ``[calibration] prologue_combine_s``."""
        return {"points": [list(p) for p in self.points], "source": self.source}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> SmallKernelTable:
        """Parse and check ``calibration.prologue_combine_s``."""
        name = "calibration.prologue_combine_s"
        if not isinstance(raw, dict) or "points" not in raw or "source" not in raw:
            raise ValueError(f"{where}: {name} must be a table with 'points' and 'source', got {raw!r:.80}")
        source = raw["source"]
        if not isinstance(source, str) or not source.startswith("measured:"):
            raise ValueError(f"{where}: {name}.source must start with 'measured:', got {source!r:.60}")
        pts = raw["points"]
        if not isinstance(pts, list) or not pts:
            raise ValueError(
                f"{where}: {name}.points must be a non-empty array of [kernel, selection, g, d, units, seconds]"
            )
        cells: dict[tuple[str, str], dict[tuple[float, float, float], float]] = {}
        for p in pts:
            if not (isinstance(p, list) and len(p) == 6):
                raise ValueError(
                    f"{where}: {name}.points entries must be [kernel, selection, g, d, units, seconds], got {p!r:.80}"
                )
            kernel, selection = p[0], p[1]
            if kernel not in SMALL_KERNELS:
                raise ValueError(
                    f"{where}: {name}.points kernel is {kernel!r}; allowed: {', '.join(SMALL_KERNELS)}"
                )
            if selection not in SMALL_KERNEL_SELECTIONS:
                raise ValueError(
                    f"{where}: {name}.points selection is {selection!r}; allowed: {', '.join(SMALL_KERNEL_SELECTIONS)}"
                )
            g, d, units, sec = (_number(v, f"{name}.points", where) for v in p[2:])
            cells.setdefault((kernel, selection), {})[(g, d, units)] = sec
        grids = {}
        for key, cell in cells.items():
            gs, ds = (sorted({c[i] for c in cell}) for i in range(2))
            missing = [(g, d) for g in gs for d in ds if not any(c[:2] == (g, d) for c in cell)]
            if missing:
                raise ValueError(
                    f"{where}: {name}.points must cover every (g, d) pair for {key}; missing {missing[:4]}"
                )
            curves = {}
            for g in gs:
                for d in ds:
                    us = sorted(c[2] for c in cell if c[:2] == (g, d))
                    curves[(g, d)] = (tuple(us), np.log(np.array([cell[(g, d, u)] for u in us])))
            grids[key] = (tuple(gs), tuple(ds), MappingProxyType(curves))
        return cls(MappingProxyType(grids), source, tuple(tuple(p) for p in pts))


@dataclass(frozen=True)
class PlanInterval:
    """The frozen 80% interval of one plan: quantiles of ln(measured / predicted)."""

    phase: str
    plan: str
    time: tuple[float, float]
    speedup: tuple[float, float] | None
    n_time: int
    n_speedup: int
    source: str
    level: float = INTERVAL_LEVEL

    def time_bounds(self, predicted_s: Any) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of a predicted time."""
        p = np.asarray(predicted_s, dtype=float)
        return p * math.exp(self.time[0]), p * math.exp(self.time[1])

    def speedup_bounds(self, predicted: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) of a predicted speedup over dense-fused, or None without a speedup interval."""
        if self.speedup is None:
            return None
        p = np.asarray(predicted, dtype=float)
        return p * math.exp(self.speedup[0]), p * math.exp(self.speedup[1])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": self.phase,
            "plan": self.plan,
            "level": self.level,
            "time": list(self.time),
            "n_time": self.n_time,
            "n_speedup": self.n_speedup,
            "source": self.source,
        }
        if self.speedup is not None:
            out["speedup"] = list(self.speedup)
        return out


@dataclass(frozen=True)
class CalibratedTerms:
    """The issue-12 terms of a calibrated profile (any of them may be absent)."""

    graph_launch_s: float | None = None
    graph_gap_s: float | None = None
    tiny_kernel_s: float | None = None
    sm_count: int | None = None
    streams: tuple[StreamTable, ...] = ()
    pattern_latency_s: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    intervals: Mapping[tuple[str, str], PlanInterval] = field(default_factory=lambda: MappingProxyType({}))
    small_kernels: SmallKernelTable | None = None
    #: The fitted kernel-time forms by timing key (:mod:`aqua_model.hardware.kernel_forms`).
    forms: Mapping[str, KernelForm] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def graph_timing(self) -> bool:
        """True when the profile says how a graph of kernels is timed (the three graph terms)."""
        return None not in (self.graph_launch_s, self.graph_gap_s, self.tiny_kernel_s)

    def stream(self, name: str, *, d: int, gqa: bool, rows: int = 0) -> StreamTable | None:
        """The table of kernel ``name`` measured nearest this shape: the same head dim if any was
        measured (else the nearest), the same GQA class if any, then the nearest tile rows on the
        same side of the launch rule's 64-row switch (else the nearest overall). None if none."""
        cands = [t for t in self.streams if t.stream == name]
        if not cands:
            return None
        best_d = min({t.d for t in cands}, key=lambda x: (abs(x - d), x))
        cands = [t for t in cands if t.d == best_d]
        same = [t for t in cands if t.gqa is None or t.gqa == gqa]
        cands = same or cands
        side = [t for t in cands if (t.rows > 64) == (rows > 64)]
        cands = side or cands
        return min(cands, key=lambda t: (abs(t.rows - rows), t.rows))

    def interval(self, phase: str, plan: str) -> PlanInterval | None:
        """The frozen interval of ``phase``/``plan``, or None."""
        return self.intervals.get((phase, plan))


def _number(value: Any, field: str, where: str, *, positive: bool = True) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (positive and value <= 0)
    ):
        raise ValueError(
            f"{where}: field {field!r} must be a finite number{' > 0' if positive else ''}, got {value!r}"
        )
    return float(value)


def _stream(entry: Any, i: int, where: str) -> StreamTable:
    name = f"calibration.stream[{i}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: {name} must be a table, got {entry!r:.60}")
    for key in ("stream", "d", "x", "y", "points", "latency_s", "source"):
        if key not in entry:
            raise ValueError(f"{where}: {name} is missing {key!r}")
    if entry["stream"] not in STREAM_NAMES:
        raise ValueError(f"{where}: {name}.stream is {entry['stream']!r}; allowed: {', '.join(STREAM_NAMES)}")
    if entry["x"] not in STREAM_X or entry["y"] not in STREAM_Y:
        raise ValueError(
            f"{where}: {name} needs x in {STREAM_X} and y in {STREAM_Y}, got {entry['x']!r}, {entry['y']!r}"
        )
    pts = entry["points"]
    ok = isinstance(pts, list) and len(pts) >= 1 and all(isinstance(p, list) and len(p) == 2 for p in pts)
    if not ok:
        raise ValueError(f"{where}: {name}.points must be [[x, y], ...] with at least one point")
    xs = [_number(p[0], f"{name}.points", where) for p in pts]
    ys = [_number(p[1], f"{name}.points", where) for p in pts]
    if any(b <= a for a, b in zip(xs, xs[1:])):
        raise ValueError(f"{where}: {name}.points needs x strictly increasing, got {xs}")
    if entry["y"] == "efficiency" and any(y > 1.0 for y in ys):
        raise ValueError(f"{where}: {name}.points efficiencies must be in (0, 1], got {ys}")
    mis = entry.get("misaligned_efficiency")
    if mis is not None and not 0 < _number(mis, f"{name}.misaligned_efficiency", where) <= 1:
        raise ValueError(f"{where}: {name}.misaligned_efficiency must be in (0, 1], got {mis}")
    gqa = entry.get("gqa")
    if gqa is not None and not isinstance(gqa, bool):
        raise ValueError(f"{where}: {name}.gqa must be true or false, got {gqa!r}")
    source = entry["source"]
    if not isinstance(source, str) or not source.startswith(("measured:", "derived:")):
        raise ValueError(
            f"{where}: {name}.source must start with 'measured:' or 'derived:', got {source!r:.60}"
        )
    fill = _number(entry.get("fill_s", 0.0), f"{name}.fill_s", where, positive=False)
    if fill < 0 or (fill and entry["stream"] != "triton-split"):
        raise ValueError(
            f"{where}: {name}.fill_s must be >= 0 seconds and only on a triton-split table, got {fill!r}"
        )
    fill_source = entry.get("fill_source", "")
    if fill and (not isinstance(fill_source, str) or not fill_source.startswith("measured:")):
        raise ValueError(
            f"{where}: {name}.fill_source must start with 'measured:' when fill_s is set, got {fill_source!r:.60}"
        )
    return StreamTable(
        entry["stream"],
        int(_number(entry["d"], f"{name}.d", where)),
        gqa,
        int(_number(entry.get("rows", 0), f"{name}.rows", where, positive=False)),
        entry["x"],
        entry["y"],
        tuple(xs),
        tuple(ys),
        _number(entry["latency_s"], f"{name}.latency_s", where, positive=False),
        None if mis is None else float(mis),
        source,
        fill,
        str(fill_source),
    )


def _interval(entry: Any, i: int, where: str) -> PlanInterval:
    name = f"calibration.intervals[{i}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: {name} must be a table, got {entry!r:.60}")
    for key in ("phase", "plan", "time", "n_time", "source"):
        if key not in entry:
            raise ValueError(f"{where}: {name} is missing {key!r}")

    def pair(key: str) -> tuple[float, float]:
        v = entry[key]
        if not (isinstance(v, list) and len(v) == 2):
            raise ValueError(f"{where}: {name}.{key} must be [low, high], got {v!r}")
        lo, hi = (_number(x, f"{name}.{key}", where, positive=False) for x in v)
        if lo > hi:
            raise ValueError(f"{where}: {name}.{key} must have low <= high, got {v!r}")
        return lo, hi

    return PlanInterval(
        str(entry["phase"]),
        str(entry["plan"]),
        pair("time"),
        pair("speedup") if "speedup" in entry else None,
        int(entry["n_time"]),
        int(entry.get("n_speedup", 0)),
        str(entry["source"]),
        float(entry.get("level", INTERVAL_LEVEL)),
    )


def parse(cal: Mapping[str, Any], where: str) -> CalibratedTerms:
    """The terms of one ``[calibration]`` table (absent ones stay None / empty)."""
    graph = {}
    for name in ("graph_launch_s", "graph_gap_s", "tiny_kernel_s"):
        if name in cal:
            graph[name] = _number(cal[name], f"calibration.{name}", where, positive=name != "graph_gap_s")
    sm = cal.get("sm_count")
    if sm is not None and (isinstance(sm, bool) or not isinstance(sm, int) or sm < 1):
        raise ValueError(f"{where}: field 'calibration.sm_count' must be an integer >= 1, got {sm!r}")
    forms = parse_forms(cal.get("forms", []), where)
    streams_raw = cal.get("stream", [])
    placed = (
        bool(forms)
        or len(graph) == 3
        or any(
            isinstance(e, dict) and e.get("x") == "programs_per_sm"
            for e in (streams_raw if isinstance(streams_raw, list) else [])
        )
    )
    if sm is None and placed:
        raise ValueError(
            f"{where}: field 'calibration.sm_count' is missing; a profile with CUDA-graph terms, fitted forms or "
            "tables over programs per SM places programs over SMs and needs it (issue 23 item 7)"
        )
    if not isinstance(streams_raw, list):
        raise ValueError(f"{where}: field 'calibration.stream' must be an array of tables")
    lat_raw = cal.get("pattern_latency_s", {})
    if not isinstance(lat_raw, dict):
        raise ValueError(
            f"{where}: field 'calibration.pattern_latency_s' must be a table of seconds per pattern"
        )
    latency = {
        str(k): _number(v, f"calibration.pattern_latency_s.{k}", where, positive=False)
        for k, v in lat_raw.items()
    }
    intervals_raw = cal.get("intervals", [])
    if not isinstance(intervals_raw, list):
        raise ValueError(f"{where}: field 'calibration.intervals' must be an array of tables")
    intervals = {}
    for i, e in enumerate(intervals_raw):
        iv = _interval(e, i, where)
        intervals[(iv.phase, iv.plan)] = iv
    small = (
        SmallKernelTable.from_dict(cal["prologue_combine_s"], where) if "prologue_combine_s" in cal else None
    )
    return CalibratedTerms(
        graph.get("graph_launch_s"),
        graph.get("graph_gap_s"),
        graph.get("tiny_kernel_s"),
        sm,
        tuple(_stream(e, i, where) for i, e in enumerate(streams_raw)),
        MappingProxyType(latency),
        MappingProxyType(intervals),
        small,
        forms,
    )


__all__ = [
    "INTERVAL_LEVEL",
    "SMALL_KERNELS",
    "SMALL_KERNEL_SELECTIONS",
    "SmallKernelTable",
    "STREAM_NAMES",
    "STREAM_X",
    "STREAM_Y",
    "CalibratedTerms",
    "PlanInterval",
    "StreamTable",
    "parse",
    "split_fill_s",
]
