"""Peers figure: byte ratio and predicted decode speedup of every method at matched settings.

Left: K/V bytes per decode step relative to dense (log scale), with KV memory relative to
dense as markers. Right: the roofline-predicted speedup over dense fused decode on a GPU
(H200 by default) as bars, and the memory-bound ceiling (dense bytes / method bytes) as ticks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from aqua_model.simulator.comparison import Comparison, compare

from . import register
from .style import GREY, OKABE_ITO, new_figure, note, savefig, styled

#: Colour per method (Okabe-Ito).
METHOD_COLOURS: dict[str, str] = {
    "dense": OKABE_ITO["black"],
    "aqua": OKABE_ITO["blue"],
    "sparq": OKABE_ITO["vermillion"],
    "loki": OKABE_ITO["bluish_green"],
    "quest": OKABE_ITO["orange"],
    "h2o": OKABE_ITO["reddish_purple"],
    "aqua-h2o": OKABE_ITO["sky_blue"],
    "aqua-topk": OKABE_ITO["yellow"],
}
#: Display label per method.
METHOD_LABELS: dict[str, str] = {
    "dense": "dense",
    "aqua": "AQUA",
    "sparq": "SparQ",
    "loki": "Loki",
    "quest": "Quest",
    "h2o": "H2O",
    "aqua-h2o": "AQUA+H2O",
    "aqua-topk": "AQUA+top-k",
}
#: Figure height (inches); the width is the double-column 7 in.
FIGURE_HEIGHT_IN = 2.6
BAR_WIDTH = 0.7
CEILING_TICK_HALF_WIDTH = 0.4


@styled
def peers_figure(comparison: Comparison | None = None, **compare_kwargs: Any) -> Figure:
    """The figure for ``comparison``, or for ``compare(**compare_kwargs)`` (default d=128, N=32768, H200)."""
    if comparison is None:
        compare_kwargs.setdefault("d", 128)
        compare_kwargs.setdefault("context", 32768)
        comparison = compare(**compare_kwargs)
    elif compare_kwargs:
        raise ValueError(
            f"give either comparison or compare() keywords, not both; got {sorted(compare_kwargs)}"
        )
    rows = [row for row in comparison.rows if row.method != "dense"]
    if not rows:
        raise ValueError("comparison holds no method besides dense")
    x = np.arange(len(rows))
    colours = [METHOD_COLOURS.get(row.method, GREY) for row in rows]
    labels = [METHOD_LABELS.get(row.method, row.method) for row in rows]
    fig, (ax_bytes, ax_speed) = new_figure(width="double", height_in=FIGURE_HEIGHT_IN, ncols=2)

    ax_bytes.bar(
        x, [row.bytes_ratio for row in rows], BAR_WIDTH, color=colours, edgecolor="black", linewidth=0.4
    )
    ax_bytes.plot(
        x,
        [row.kv_memory_ratio for row in rows],
        linestyle="none",
        marker="D",
        color="black",
        markerfacecolor="white",
    )
    ax_bytes.axhline(1.0, color=GREY, linewidth=0.6, linestyle="--")
    ax_bytes.set_yscale("log")
    ax_bytes.set_ylabel("relative to dense (ratio)")
    ax_bytes.set_title("bytes per decode step (bars), KV memory (diamonds)")

    ax_speed.bar(
        x, [row.predicted_speedup for row in rows], BAR_WIDTH, color=colours, edgecolor="black", linewidth=0.4
    )
    for xi, row in zip(x, rows):
        ax_speed.hlines(
            row.ceiling,
            xi - CEILING_TICK_HALF_WIDTH,
            xi + CEILING_TICK_HALF_WIDTH,
            color="black",
            linewidth=1.0,
        )
    ax_speed.axhline(1.0, color=GREY, linewidth=0.6, linestyle="--")
    ax_speed.set_yscale("log")
    ax_speed.set_ylabel(f"speedup over {comparison.baseline} (ratio)")
    ax_speed.set_title(f"predicted on {comparison.gpu} (bars), byte ceiling (ticks)")

    for ax in (ax_bytes, ax_speed):
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.grid(True, axis="y", which="both")
    inp = comparison.inputs
    settings = {name: value for row in rows for name, value in row.settings.items() if name != "k"}
    note(
        fig,
        f"d={inp['d']}, N={inp['context']}, batch {inp['batch']}, {inp['heads_q']} q / {inp['heads_kv']} kv heads, "
        + ", ".join(f"{name}={value}" for name, value in sorted(settings.items()))
        + f"; AQUA k={comparison.row('aqua').settings['k'] if any(r.method == 'aqua' for r in rows) else '-'}, AQUA+top-k k=r"
        + f"; {comparison.mode} profile",
    )
    return fig


#: Stem of the registered figure file.
FIGURE_STEM = "peers"


@register(
    FIGURE_STEM,
    "byte ratio, KV memory and predicted H200 decode speedup of AQUA, SparQ, Loki, Quest, H2O, AQUA+H2O, AQUA+top-k at matched settings (d=128, N=32768)",
    "the symbolic peer cost model and roofline plans (aqua_model.compare, datasheet H200 profile)",
)
def build_peers_figure(out_dir: Path, root: Path) -> Sequence[Path]:
    """Write ``<out_dir>/peers.pdf`` and ``.png`` (``root`` unused: the figure reads no committed results)."""
    return savefig(peers_figure(), Path(out_dir) / FIGURE_STEM)


__all__ = ["build_peers_figure", "peers_figure", "METHOD_COLOURS", "METHOD_LABELS"]
