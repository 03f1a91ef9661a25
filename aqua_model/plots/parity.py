"""Figure (e): predicted against measured time per case, with +-10 % bands, per plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .measured import NO_MEASUREMENTS
from .style import GREY, PLAN_COLOURS, PLAN_MARKERS, new_figure, note, styled

#: Relative band drawn around y = x.
BAND = 0.10
#: Prediction columns of validation.jsonl, by mode.
MODES: dict[str, str] = {"datasheet": "predicted_datasheet_s", "calibrated": "predicted_calibrated_s"}
SECONDS_TO_US = 1e6


@dataclass(frozen=True)
class ParityPoint:
    """One case: its plan and phase, measured and predicted time (s)."""

    plan: str
    phase: str
    measured_s: float
    predicted_s: float

    @property
    def within_band(self) -> bool:
        return abs(self.predicted_s / self.measured_s - 1.0) <= BAND


def parity_data(rows: Iterable[Mapping]) -> dict[str, list[ParityPoint]]:
    """Points per prediction mode ("datasheet", "calibrated") from usable validation rows."""
    out: dict[str, list[ParityPoint]] = {}
    for mode, column in MODES.items():
        pts = [
            ParityPoint(str(r.get("plan")), str(r.get("phase")), float(r["measured_s"]), float(r[column]))
            for r in rows
            if isinstance(r.get(column), (int, float)) and r[column] > 0 and r.get("measured_s", 0) > 0
        ]
        if pts:
            out[mode] = pts
    return out


def _band_axes(ax, lo: float, hi: float) -> None:
    x = np.geomspace(lo, hi, 50)
    ax.fill_between(x, x * (1 - BAND), x * (1 + BAND), color=GREY, alpha=0.2, linewidth=0)
    ax.plot(x, x, color=GREY, linewidth=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.grid(True, which="major")


@styled
def parity_figure(data: Mapping[str, Sequence[ParityPoint]]) -> Figure:
    """One log-log panel per prediction mode; a placeholder panel when ``data`` is empty."""
    modes = [m for m in MODES if data.get(m)]
    if not modes:
        fig, ax = new_figure(height_in=2.6)
        _band_axes(ax, 10.0, 1e4)
        ax.text(
            0.5,
            0.5,
            "no validation results yet:\nrun the validation suite to fill\nvalidation/results/h200/validation.jsonl",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=6,
            color=GREY,
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": GREY, "linewidth": 0.5},
        )
        ax.set_xlabel("measured time (µs)")
        ax.set_ylabel("predicted time (µs)")
        note(fig, NO_MEASUREMENTS)
        return fig
    fig, axes = new_figure(width="double" if len(modes) > 1 else "single", height_in=3.0, ncols=len(modes))
    axes = np.atleast_1d(axes)
    all_t = [t for m in modes for p in data[m] for t in (p.measured_s, p.predicted_s)]
    lo, hi = min(all_t) * SECONDS_TO_US / 1.5, max(all_t) * SECONDS_TO_US * 1.5
    for ax, mode in zip(axes, modes):
        _band_axes(ax, lo, hi)
        handles = []
        for plan in [pl for pl in PLAN_COLOURS if any(p.plan == pl for p in data[mode])] + sorted(
            {p.plan for p in data[mode]} - set(PLAN_COLOURS)
        ):
            pts = [p for p in data[mode] if p.plan == plan]
            colour, marker = PLAN_COLOURS.get(plan, GREY), PLAN_MARKERS.get(plan, "o")
            ax.plot(
                [p.measured_s * SECONDS_TO_US for p in pts],
                [p.predicted_s * SECONDS_TO_US for p in pts],
                marker=marker,
                linestyle="none",
                markersize=3,
                markerfacecolor="none",
                markeredgecolor=colour,
                markeredgewidth=0.7,
                alpha=0.9,
            )
            within = sum(p.within_band for p in pts)
            handles.append(
                Line2D(
                    [],
                    [],
                    marker=marker,
                    linestyle="none",
                    markerfacecolor="none",
                    markeredgecolor=colour,
                    label=f"{plan}: {within}/{len(pts)} within ±{BAND:.0%}",
                )
            )
        ax.legend(handles=handles, loc="upper left", handletextpad=0.3)
        ax.set_xlabel("measured time (µs)")
        ax.set_ylabel(f"predicted time, {mode} (µs)")
        n_in = sum(p.within_band for p in data[mode])
        ax.set_title(f"{mode}: {n_in}/{len(data[mode])} cases within ±{BAND:.0%} (band)", loc="left")
    return fig
