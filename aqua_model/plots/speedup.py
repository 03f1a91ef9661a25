"""Figures (b) and (c): predicted speedup of AQUA fused decode over dense fused on a GPU.

(b) a heatmap over context x k with the 1.0 contour; (c) speedup against context for a few
k, with measured points, the FLOP break-even and the time break-even marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from aqua_model.costs.flop_breakeven import breakeven
from aqua_model.hardware import HardwareProfile, resolve_profile
from aqua_model.simulator import simulate, time_breakeven

from .measured import NO_MEASUREMENTS
from .style import CYCLE, GREY, new_figure, note, styled

#: The AQUA plan of the speedup figures: a decode step, with q and the new key rotated (the
#: figures are for Llama-3.1-8B, whose RoPE keeps P from being folded into W_Q and W_K), as the
#: validation suite measured it.
PLAN = "aqua-step-topk"

#: Contexts of the heatmap (log-spaced, tokens) and its k values.
HEATMAP_CONTEXT_RANGE: tuple[int, int] = (256, 131072)
HEATMAP_POINTS = 64
HEATMAP_KS: tuple[int, ...] = tuple(range(8, 129, 4))
#: Diverging colour map (blue = AQUA faster, red = slower; readable with colour-blindness).
HEATMAP_CMAP = "RdBu"
#: Contours drawn on the heatmap besides 1.0.
EXTRA_CONTOURS: tuple[float, ...] = (1.1, 1.2, 1.4)
#: The k values of figure (c) and its context range.
LINE_KS: tuple[int, ...] = (32, 64, 96, 112)
LINE_CONTEXT_RANGE: tuple[int, int] = (128, 131072)
LINE_POINTS = 120


@dataclass(frozen=True)
class Shape:
    """The decode shape the speedup figures are drawn for."""

    heads_q: int = 32
    heads_kv: int = 8
    d: int = 128
    batch: int = 8
    label: str = "Llama-3.1-8B layer"

    @property
    def g(self) -> int:
        return self.heads_q // self.heads_kv

    def kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`aqua_model.simulate` for this shape."""
        return {"heads_q": self.heads_q, "heads_kv": self.heads_kv, "d": self.d, "batch": self.batch}

    def describe(self) -> str:
        return f"{self.label}: {self.heads_q} q / {self.heads_kv} kv heads, d = {self.d}, batch {self.batch}"


@dataclass(frozen=True)
class SpeedupGrid:
    """Predicted speedup over ``contexts`` (rows) x ``ks`` (columns)."""

    contexts: np.ndarray
    ks: np.ndarray
    speedup: np.ndarray
    gpu: str
    mode: str
    shape: Shape


def log_contexts(lo: int, hi: int, points: int) -> np.ndarray:
    """Distinct integer contexts, log-spaced from ``lo`` to ``hi`` inclusive."""
    return np.unique(np.round(np.geomspace(lo, hi, points)).astype(int))


def speedup_grid_data(
    *,
    gpu: str | HardwareProfile = "h200",
    shape: Shape = Shape(),
    contexts: Sequence[int] | None = None,
    ks: Sequence[int] = HEATMAP_KS,
) -> SpeedupGrid:
    """Fused-plan speedup over dense fused on ``gpu`` for every context and k (one simulate call)."""
    profile = resolve_profile(gpu)
    ctx = (
        np.asarray(contexts) if contexts is not None else log_contexts(*HEATMAP_CONTEXT_RANGE, HEATMAP_POINTS)
    )
    k_arr = np.asarray(ks)
    sim = simulate(gpu=profile, context=ctx[:, None], k=k_arr[None, :], plan=PLAN, **shape.kwargs())
    return SpeedupGrid(
        ctx,
        k_arr,
        np.broadcast_to(sim.speedup, (ctx.size, k_arr.size)).copy(),
        profile.name,
        profile.mode,
        shape,
    )


@styled
def speedup_heatmap_figure(grid: SpeedupGrid) -> Figure:
    """Heatmap of the predicted speedup (log-x context, k on y) with the 1.0 contour."""
    fig, ax = new_figure(height_in=2.6)
    s = grid.speedup
    span = max(float(s.max()) - 1.0, 1.0 - float(s.min()), 1e-3)
    norm = TwoSlopeNorm(vmin=1.0 - span, vcenter=1.0, vmax=1.0 + span)
    mesh = ax.pcolormesh(
        grid.contexts, grid.ks, s.T, shading="nearest", cmap=HEATMAP_CMAP, norm=norm, rasterized=True
    )
    cs = ax.contour(grid.contexts, grid.ks, s.T, levels=[1.0], colors="black", linewidths=1.2)
    ax.clabel(cs, fmt={1.0: "1.0x"}, fontsize=6, inline_spacing=2)
    extra = [lv for lv in EXTRA_CONTOURS if s.min() < lv < s.max()]
    if extra:
        cs2 = ax.contour(
            grid.contexts, grid.ks, s.T, levels=extra, colors="black", linewidths=0.5, linestyles=":"
        )
        ax.clabel(cs2, fmt={lv: f"{lv:.1f}x" for lv in extra}, fontsize=5.5, inline_spacing=2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context N (cached tokens, log scale)")
    ax.set_ylabel(f"kept dimensions k (of d = {grid.shape.d:d})")
    cbar = fig.colorbar(mesh, ax=ax, pad=0.02)
    cbar.set_label("predicted speedup (dense / AQUA)")
    cbar.ax.tick_params(labelsize=6)
    ax.set_title(
        f"{_gpu_short(grid.gpu)} ({grid.mode}), AQUA fused decode\n{grid.shape.describe()}",
        loc="left",
        fontsize=6.5,
    )
    return fig


def _gpu_short(name: str) -> str:
    return name.replace("NVIDIA ", "")


@dataclass(frozen=True)
class SpeedupLines:
    """Figure (c)'s data: predicted speedup per k, both break-evens, measured points."""

    contexts: np.ndarray
    ks: tuple[int, ...]
    predicted: dict[int, np.ndarray]
    flop_breakeven: dict[int, float]
    time_breakeven: dict[int, int | None]
    gpu: str
    mode: str
    shape: Shape
    calibrated: dict[int, np.ndarray] | None = None
    calibrated_mode: str | None = None
    measured: list[dict[str, float]] = field(default_factory=list)


def speedup_lines_data(
    *,
    gpu: str | HardwareProfile = "h200",
    shape: Shape = Shape(),
    ks: Sequence[int] = LINE_KS,
    contexts: Sequence[int] | None = None,
    calibrated: HardwareProfile | None = None,
    measured: Sequence[Mapping[str, float]] = (),
) -> SpeedupLines:
    """Predicted lines from :func:`simulate`, FLOP break-even from :func:`breakeven` (n_star,
    with g of the shape) and time break-even from :func:`time_breakeven`; ``measured`` rows
    hold ``context``, ``k``, ``speedup`` and ``source``."""
    profile = resolve_profile(gpu)
    ctx = np.asarray(contexts) if contexts is not None else log_contexts(*LINE_CONTEXT_RANGE, LINE_POINTS)
    ks = tuple(int(k) for k in ks)
    k_arr = np.asarray(ks)[None, :]
    pred = simulate(gpu=profile, context=ctx[:, None], k=k_arr, plan=PLAN, **shape.kwargs()).speedup
    cal = None
    if calibrated is not None:
        cal_s = simulate(gpu=calibrated, context=ctx[:, None], k=k_arr, plan=PLAN, **shape.kwargs()).speedup
        cal = {k: np.asarray(cal_s[:, i]) for i, k in enumerate(ks)}
    return SpeedupLines(
        contexts=ctx,
        ks=ks,
        predicted={k: np.asarray(pred[:, i]) for i, k in enumerate(ks)},
        flop_breakeven={k: breakeven(shape.d, k, g=shape.g, phase="decode").n_star for k in ks},
        time_breakeven={k: time_breakeven(gpu=profile, k=k, plan=PLAN, **shape.kwargs()) for k in ks},
        gpu=profile.name,
        mode=profile.mode,
        shape=shape,
        calibrated=cal,
        calibrated_mode=None if calibrated is None else calibrated.mode,
        measured=[dict(m) for m in measured],
    )


#: Marker per measurement source in figure (c).
SOURCE_MARKERS: dict[str, tuple[str, str]] = {
    "validation": ("o", "measured (validation suite)"),
    "decode_kernels": ("s", "measured (SDPA / Triton kernel)"),
}


@styled
def speedup_lines_figure(data: SpeedupLines) -> Figure:
    """Speedup against context (log-x) per k: predicted lines, measured points, break-evens."""
    fig, ax = new_figure(height_in=3.2)
    colour = {k: CYCLE[i] for i, k in enumerate(data.ks)}
    ax.axhline(1.0, color=GREY, linewidth=0.6, zorder=1)
    for k in data.ks:
        ax.plot(data.contexts, data.predicted[k], color=colour[k], zorder=3)
        if data.calibrated is not None:
            ax.plot(
                data.contexts, data.calibrated[k], color=colour[k], linestyle="--", linewidth=0.8, zorder=3
            )
        ax.plot(
            [data.flop_breakeven[k]],
            [1.0],
            marker="x",
            color=colour[k],
            markersize=5,
            markeredgewidth=1.2,
            linestyle="none",
            zorder=4,
        )
        tb = data.time_breakeven[k]
        if tb is not None:
            ax.plot(
                [tb],
                [1.0],
                marker="o",
                markerfacecolor="white",
                markeredgecolor=colour[k],
                markersize=5,
                markeredgewidth=1.2,
                linestyle="none",
                zorder=4,
            )
    sources = []
    for src, (marker, _) in SOURCE_MARKERS.items():
        pts = [m for m in data.measured if m.get("source") == src and int(m["k"]) in colour]
        if pts:
            sources.append(src)
        for m in pts:
            ax.plot(
                [m["context"]],
                [m["speedup"]],
                marker=marker,
                color=colour[int(m["k"])],
                markersize=3.5,
                markeredgecolor="black",
                markeredgewidth=0.4,
                linestyle="none",
                zorder=5,
            )
    ax.set_xscale("log", base=2)
    ax.set_xlim(data.contexts.min(), data.contexts.max())
    ax.set_xlabel("context N (cached tokens, log scale)")
    ax.set_ylabel("speedup over dense fused (x)")
    ax.grid(True)
    k_handles = [Line2D([], [], color=colour[k], label=f"k = {k}") for k in data.ks]
    kinds = [Line2D([], [], color=GREY, label=f"predicted ({data.mode})")]
    if data.calibrated is not None:
        kinds.append(
            Line2D(
                [],
                [],
                color=GREY,
                linestyle="--",
                label=f"predicted ({str(data.calibrated_mode).split(':')[0]})",
            )
        )
    kinds += [
        Line2D(
            [], [], marker="x", color=GREY, linestyle="none", markeredgewidth=1.2, label="FLOP break-even N*"
        ),
        Line2D(
            [],
            [],
            marker="o",
            markerfacecolor="white",
            markeredgecolor=GREY,
            linestyle="none",
            label="time break-even",
        ),
    ]
    kinds += [
        Line2D(
            [],
            [],
            marker=SOURCE_MARKERS[s][0],
            color=GREY,
            markeredgecolor="black",
            markeredgewidth=0.4,
            linestyle="none",
            label=SOURCE_MARKERS[s][1],
        )
        for s in sources
    ]
    ax.legend(handles=k_handles, loc="upper left", ncol=1)
    fig.legend(handles=kinds, loc="outside lower center", ncol=2, columnspacing=1.0)
    lo = (
        min(float(min(v.min() for v in data.predicted.values())), *(m["speedup"] for m in data.measured))
        if data.measured
        else float(min(v.min() for v in data.predicted.values()))
    )
    hi = (
        max(float(max(v.max() for v in data.predicted.values())), *(m["speedup"] for m in data.measured))
        if data.measured
        else float(max(v.max() for v in data.predicted.values()))
    )
    ax.set_ylim(max(lo - 0.05 * (hi - lo), 0.0), hi + 0.08 * (hi - lo))
    ax.set_title(
        f"{_gpu_short(data.gpu)}, fused decode, {data.shape.heads_q}/{data.shape.heads_kv} heads, d = {data.shape.d}, "
        f"batch {data.shape.batch}",
        loc="left",
    )
    if not data.measured:
        note(fig, NO_MEASUREMENTS)
    return fig
