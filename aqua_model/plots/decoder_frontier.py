"""The accuracy-speed frontier: measured perplexity increase against the predicted H200 speedup.

One panel per target shape (SmolLM2-135M at 8K, Llama-3.1-8B at 32K); per method one line over
k (English solid, German dashed). Quality is measured on SmolLM2-135M (analysis/decoder_study.py);
speedups are the roofline simulator's predictions (aqua_model.simulate / aqua_model.compare).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

from . import register
from .style import GREY, OKABE_ITO, new_figure, note, savefig, styled

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType

FRONTIER_CSV = Path("analysis") / "results" / "decoder_frontier.csv"

SERIES = {
    ("aqua", "per-head"): {"color": OKABE_ITO["blue"], "marker": "o", "label": "AQUA, per-head"},
    ("aqua", "group"): {"color": OKABE_ITO["sky_blue"], "marker": "D", "label": "AQUA, group"},
    ("sparq", "per-head"): {"color": OKABE_ITO["vermillion"], "marker": "s", "label": "SparQ-style dims"},
    ("loki", "per-head"): {"color": OKABE_ITO["bluish_green"], "marker": "^", "label": "Loki-style prefix"},
    ("random", "per-head"): {"color": OKABE_ITO["black"], "marker": "x", "label": "random dims"},
    ("dense+h2o", "per-head"): {"color": OKABE_ITO["orange"], "marker": "v", "label": "H2O"},
    ("aqua+h2o", "per-head"): {"color": OKABE_ITO["reddish_purple"], "marker": "P", "label": "AQUA+H2O"},
}
"""Colour, marker and label per (method, selection) series (Okabe-Ito palette)."""

LANG_STYLES: dict[str, LineStyleType] = {"en": "-", "de": "--"}
SPEEDUP_TICKS = (0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
"""Speedup ticks of the log x axis."""
SYMLOG_LINEAR_PCT = 1.0
"""Perplexity increases below this many percent are drawn on a linear scale, above on a log scale."""
Y_TOP_PCT = 1000.0
"""Top of the y axis (percent): random dims run far beyond it at small k."""


def read_frontier(root: Path) -> list[dict[str, str]] | None:
    """The committed frontier rows, or None when the study has not been run."""
    path = root / FRONTIER_CSV
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@styled
def frontier_figure(rows: Iterable[Mapping[str, Any]]) -> Figure:
    """Return the two-panel frontier figure from rows of ``decoder_frontier.csv`` (strings or numbers)."""
    rows = list(rows)
    if not rows:
        raise ValueError("rows must hold at least one frontier row, got none")
    missing = {
        "target",
        "method",
        "selection",
        "predicted_speedup",
        "ppl_increase_pct_en",
        "ppl_increase_pct_de",
    } - set(rows[0])
    if missing:
        raise ValueError(f"rows miss the columns {sorted(missing)}")
    targets = list(dict.fromkeys(str(r["target"]) for r in rows))
    fig, axes = new_figure(width="double", height_in=3.0, ncols=len(targets), sharey=True)
    axes = [axes] if len(targets) == 1 else list(axes)
    for ax, target in zip(axes, targets):
        mine = [r for r in rows if r["target"] == target]
        for (method, selection), style in SERIES.items():
            pts = [r for r in mine if r["method"] == method and r["selection"] == selection]
            if not pts:
                continue
            for lang, ls in LANG_STYLES.items():
                xy = sorted(
                    (float(r["predicted_speedup"]), float(r[f"ppl_increase_pct_{lang}"])) for r in pts
                )
                ax.plot(
                    *zip(*xy),
                    linestyle=ls,
                    marker=style["marker"],
                    color=style["color"],
                    markersize=3,
                    linewidth=0.9,
                )
        ax.axvline(1.0, color=GREY, linewidth=0.6, linestyle=":")
        ax.axhline(0.0, color=GREY, linewidth=0.6)
        ax.set_yscale("symlog", linthresh=SYMLOG_LINEAR_PCT)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(SPEEDUP_TICKS))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-SYMLOG_LINEAR_PCT, Y_TOP_PCT)
        context = mine[0].get("context", "")
        ax.set_title(f"{target}, context {context}, batch {mine[0].get('batch', '')}")
        ax.set_xlabel("predicted H200 decode attention speedup over dense (x)")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    axes[0].set_ylabel("perplexity increase on SmolLM2-135M (%)")
    handles = [
        Line2D([], [], color=s["color"], marker=s["marker"], markersize=3, linewidth=0.9, label=s["label"])
        for s in SERIES.values()
    ]
    handles += [
        Line2D([], [], color=GREY, linestyle=ls, label={"en": "held-out English", "de": "German"}[lang])
        for lang, ls in LANG_STYLES.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, frameon=False)
    note(fig, "quality: SmolLM2-135M, 128-token segments; speed: roofline, H200 datasheet")
    return fig


@register(
    "decoder_frontier",
    "accuracy-speed frontier: SmolLM2-135M perplexity increase against the predicted H200 decode speedup, per method and k",
    "analysis/results/decoder_frontier.csv (analysis/decoder_study.py), drawn by aqua_model.plots.decoder_frontier",
)
def build_decoder_frontier(out_dir: Path, root: Path) -> Sequence[Path]:
    rows = read_frontier(root)
    if not rows:
        return []
    return savefig(frontier_figure(rows), out_dir / "decoder_frontier")
