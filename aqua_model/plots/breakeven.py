"""Figure (a): FLOP break-even context against k, per head dim d, decode and prefill."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from aqua_model.costs.flop_breakeven import breakeven

from .style import CYCLE, GREY, new_figure, styled

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType

#: Head dims shown.
HEAD_DIMS: tuple[int, ...] = (64, 128, 256)
#: Phases shown, with their line style.
PHASE_STYLES: dict[str, LineStyleType] = {"decode": "-", "prefill": "--"}
#: The paper's operating point (AQUA, arXiv 2509.11155): d = 128, k = 96.
PAPER_D = 128
PAPER_K = 96
#: Upper end of the y axis (tokens): the curves diverge as k -> d.
Y_MAX_TOKENS = 3e5


@dataclass(frozen=True)
class BreakEvenCurve:
    """n_star(k) for one (d, phase, g); ``k`` runs 1..d-1 (k = d never breaks even)."""

    d: int
    phase: str
    g: int
    k: np.ndarray
    n_star: np.ndarray


def breakeven_data(
    *, head_dims: Sequence[int] = HEAD_DIMS, phases: Sequence[str] = tuple(PHASE_STYLES), g: int = 1
) -> list[BreakEvenCurve]:
    """Break-even curves from :func:`aqua_model.breakeven` for every head dim and phase."""
    curves = []
    for phase in phases:
        for d in head_dims:
            ks = np.arange(1, d)
            n_star = np.array([breakeven(d, int(k), g=g, phase=phase).n_star for k in ks], dtype=float)
            curves.append(BreakEvenCurve(d, phase, g, ks, n_star))
    return curves


def paper_point(phase: str, *, g: int = 1) -> tuple[int, float]:
    """(k, n_star) of the paper's operating point (d = 128, k = 96) for ``phase``."""
    return PAPER_K, breakeven(PAPER_D, PAPER_K, g=g, phase=phase).n_star


@styled
def breakeven_figure(curves: Sequence[BreakEvenCurve]) -> Figure:
    """Log-y break-even context against k: colour = d, line style = phase, paper point marked."""
    if not curves:
        raise ValueError("curves must hold at least one curve, got none")
    fig, ax = new_figure(height_in=2.5)
    dims = sorted({c.d for c in curves})
    colour = {d: CYCLE[i] for i, d in enumerate(dims)}
    phases = [p for p in PHASE_STYLES if any(c.phase == p for c in curves)]
    for c in curves:
        ax.plot(c.k, c.n_star, color=colour[c.d], linestyle=PHASE_STYLES[c.phase])
    g = curves[0].g
    values = []
    for phase in phases:
        k, n = paper_point(phase, g=g)
        ax.plot(
            [k],
            [n],
            marker="o",
            markersize=5,
            markerfacecolor="white",
            markeredgecolor="black",
            zorder=5,
            linestyle="none",
        )
        values.append(f"{'N*' if phase == 'decode' else 'T*'} = {n:,.0f}")
    ax.set_yscale("log")
    ax.set_xlim(0, max(dims))
    ax.set_ylim(top=Y_MAX_TOKENS)
    ax.set_xlabel("kept dimensions k (of d)")
    ax.set_ylabel("FLOP break-even context (tokens)")
    ax.grid(True, which="major")
    handles = [Line2D([], [], color=colour[d], label=f"d = {d}") for d in dims]
    handles += [
        Line2D(
            [], [], color=GREY, linestyle=PHASE_STYLES[p], label=f"{p} ({'N*' if p == 'decode' else 'T*'})"
        )
        for p in phases
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            markerfacecolor="white",
            markeredgecolor="black",
            linestyle="none",
            label=f"paper point d = {PAPER_D}, k = {PAPER_K}: {', '.join(values)}",
        )
    )
    ax.legend(handles=handles[:-1], loc="upper left", ncol=2)
    ax.add_artist(ax.legend_)
    ax.legend(handles=handles[-1:], loc="lower right")
    ax.set_title(f"AQUA needs fewer FLOPs above the curve (g = {g})", loc="left")
    return fig
