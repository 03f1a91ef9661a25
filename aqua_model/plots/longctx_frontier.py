"""The accuracy-speed frontier at matched context: long-context perplexity increase against the decode speedup.

One panel per (model, context): per selection mode ("per-head", "group") one line over k, the
perplexity increase of the last scored positions at that context (with its 95% bootstrap
interval) against the H200 decode-attention speedup of the fused AQUA kernel at the same context
and the model's shape (with its interval). Filled markers: measured speedups; hollow: predicted
(the roofline on the frozen calibrated H200 profile). Rows come from
analysis/results/longctx_tradeoff.csv (analysis/longctx_tradeoff.py).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from . import register
from .style import GREY, OKABE_ITO, new_figure, note, savefig, styled

TRADEOFF_CSV = Path("analysis") / "results" / "longctx_tradeoff.csv"

SELECTION_STYLES = {
    "per-head": {"color": OKABE_ITO["blue"], "marker": "o", "label": "AQUA, per-head selection"},
    "group": {"color": OKABE_ITO["vermillion"], "marker": "D", "label": "AQUA, group selection"},
}
"""Colour, marker and label per selection mode (Okabe-Ito palette)."""

FIGURE_BATCH = 8
"""Decode batch drawn (the table has batches 1 and 8; one batch per figure keeps one point per k)."""

SYMLOG_LINEAR_PCT = 1.0
"""Perplexity increases below this many percent are drawn on a linear scale, above on a log scale."""

REQUIRED = (
    "model",
    "context",
    "k",
    "selection",
    "ppl_increase_pct",
    "ppl_increase_lo_pct",
    "ppl_increase_hi_pct",
    "speedup",
    "speed_source",
)


def read_tradeoff(root: Path) -> list[dict[str, str]] | None:
    """The committed trade-off rows, or None when the table has not been made."""
    path = root / TRADEOFF_CSV
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _f(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


@styled
def tradeoff_figure(rows: Iterable[Mapping[str, Any]], *, batch: int = FIGURE_BATCH) -> Figure:
    """The frontier at matched context from rows of ``longctx_tradeoff.csv`` with a measured quality
    (rows with a ``batch`` column: those of ``batch`` only)."""
    rows = [
        r
        for r in rows
        if r.get("ppl_increase_pct") not in (None, "") and int(float(r.get("batch", batch) or batch)) == batch
    ]
    if not rows:
        raise ValueError(
            "rows must hold at least one trade-off row with a measured perplexity increase, got none"
        )
    missing = set(REQUIRED) - set(rows[0])
    if missing:
        raise ValueError(f"rows miss the columns {sorted(missing)}")
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    contexts = sorted({int(float(r["context"])) for r in rows})
    fig, grid = new_figure(
        width="double", height_in=2.3 * len(models), nrows=len(models), ncols=len(contexts)
    )
    axes = np.array(grid, dtype=object).reshape(len(models), len(contexts))
    for i, model in enumerate(models):
        for j, context in enumerate(contexts):
            ax = axes[i][j]
            mine = [r for r in rows if r["model"] == model and int(float(r["context"])) == context]
            for sel, style in SELECTION_STYLES.items():
                pts = sorted((r for r in mine if r["selection"] == sel), key=lambda r: float(r["k"]))
                if not pts:
                    continue
                xs = [float(r["speedup"]) for r in pts]
                ys = [float(r["ppl_increase_pct"]) for r in pts]
                ax.plot(xs, ys, color=style["color"], linewidth=0.9)
                for r, x, y in zip(pts, xs, ys):
                    lo, hi = _f(r["ppl_increase_lo_pct"]), _f(r["ppl_increase_hi_pct"])
                    slo, shi = _f(r.get("speedup_lo")), _f(r.get("speedup_hi"))
                    ax.errorbar(
                        [x],
                        [y],
                        yerr=None if lo is None or hi is None else [[y - lo], [hi - y]],
                        xerr=None if slo is None or shi is None else [[x - slo], [shi - x]],
                        color=style["color"],
                        marker=style["marker"],
                        markersize=3.5,
                        linewidth=0.6,
                        markerfacecolor=style["color"] if r["speed_source"] == "measured" else "white",
                    )
                    ax.annotate(
                        f"k={int(float(r['k']))}",
                        (x, y),
                        fontsize=5,
                        xytext=(2, 2),
                        textcoords="offset points",
                    )
            ax.axvline(1.0, color=GREY, linewidth=0.6, linestyle=":")
            ax.axhline(0.0, color=GREY, linewidth=0.6)
            ax.set_yscale("symlog", linthresh=SYMLOG_LINEAR_PCT)
            short = model.removesuffix("-Instruct")
            ax.set_title(f"{short}, N = {context}, batch {batch}", fontsize=6.5)
            ax.grid(True, linewidth=0.3, alpha=0.5)
            if i == len(models) - 1:
                ax.set_xlabel("H200 decode speedup over SDPA (x)")
            if j == 0:
                ax.set_ylabel("perplexity increase (%)")
    handles = [
        Line2D([], [], color=s["color"], marker=s["marker"], markersize=3.5, linewidth=0.9, label=s["label"])
        for s in SELECTION_STYLES.values()
    ]
    handles += [
        Line2D([], [], color=GREY, marker="o", linestyle="", markersize=3.5, label="measured speedup"),
        Line2D(
            [],
            [],
            color=GREY,
            marker="o",
            linestyle="",
            markerfacecolor="white",
            markersize=3.5,
            label="predicted",
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    note(
        fig,
        "quality: the last scored positions after a dense prefill, 95% CI; "
        "speed: fused AQUA decode over SDPA at the same shape, N and batch",
    )
    return fig


@register(
    "longctx_frontier",
    "accuracy-speed frontier at matched context: long-context perplexity increase against the H200 decode speedup, "
    "per model, context and selection mode",
    "analysis/results/longctx_tradeoff.csv (analysis/longctx_tradeoff.py), drawn by aqua_model.plots.longctx_frontier",
)
def build_longctx_frontier(out_dir: Path, root: Path) -> Sequence[Path]:
    rows = read_tradeoff(root)
    if not rows:
        return []
    return savefig(tradeoff_figure(rows), out_dir / "longctx_frontier")
