"""The fidelity Pareto figure: attention error against the decode byte ratio, per method."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from aqua_model._checks import check_choice

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType

SINGLE_COLUMN_WIDTH_IN = 3.3
"""Width of a one-column figure in a two-column paper, inches."""

FIGURE_HEIGHT_IN = 2.5
"""Height of the figure, inches."""

FONT_SIZE_PT = 7
"""Base font size, points: readable at single-column width."""

METHOD_STYLE = {
    "aqua": {"color": "#0072B2", "marker": "o", "label": "AQUA (SVD, top-k |q^|)"},
    "sparq": {"color": "#D55E00", "marker": "s", "label": "SparQ-style (top-k |q|)"},
    "loki": {"color": "#009E73", "marker": "^", "label": "Loki-style (SVD prefix)"},
    "random": {"color": "#000000", "marker": "x", "label": "random dims"},
}
"""Okabe-Ito colours (colour-blind safe) and a distinct marker per method."""

DATASET_LINESTYLES: tuple[LineStyleType, ...] = ("-", "--", ":", "-.")
"""Line style per dataset, in the order the datasets are given."""

METRIC_LABELS = {
    "output_rel_err": "attention output rel. error (ratio)",
    "score_rel_err": "score rel. error (ratio)",
    "kl_nats": "KL(exact || approx) (nats)",
    "energy": "query energy kept (fraction)",
    "top1_agreement": "top-1 key agreement (fraction)",
    "top8_agreement": "top-8 key overlap (fraction)",
}

DATASET_LABELS = {
    "heldout_en": "held-out English",
    "heldout_de": "German",
    "calibration_en": "calibration English",
}

X_LABEL = "decode K+V bytes read / dense, (k/d+1)/2 (ratio)"
LEGEND_HEADROOM = 1.4
"""Top of the y axis over the largest value: room for the legend above the curves."""
MARKER_SIZE = 3.0
LINE_WIDTH = 1.0


def fidelity_pareto_figure(
    table: Iterable[Mapping[str, Any]],
    *,
    metric: str = "output_rel_err",
    datasets: Sequence[str] = ("heldout_en", "heldout_de"),
) -> Figure:
    """Return the Pareto figure: ``metric`` (mean over heads) against the decode byte ratio.

    ``table`` holds rows with ``dataset``, ``method``, ``byte_ratio`` and ``metric`` (the
    summary of :func:`aqua_model.fidelity.study.aggregate`, or its CSV read as strings).
    One colour per method, one line style per dataset.
    """
    metric = check_choice("metric", metric, tuple(METRIC_LABELS))
    rows = list(table)
    if not rows:
        raise ValueError("table must hold at least one row, got none")
    datasets = tuple(datasets)
    if len(datasets) > len(DATASET_LINESTYLES):
        raise ValueError(
            f"datasets must name at most {len(DATASET_LINESTYLES)} datasets, got {len(datasets)}"
        )
    present = {str(r["dataset"]) for r in rows}
    missing = [name for name in datasets if name not in present]
    if missing:
        raise ValueError(f"datasets {missing} are not in table; it holds {sorted(present)}")

    fig = Figure(figsize=(SINGLE_COLUMN_WIDTH_IN, FIGURE_HEIGHT_IN), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method, style in METHOD_STYLE.items():
        for dataset, linestyle in zip(datasets, DATASET_LINESTYLES):
            pts = sorted(
                (float(r["byte_ratio"]), float(r[metric]))
                for r in rows
                if r["method"] == method and r["dataset"] == dataset
            )
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(
                xs,
                ys,
                linestyle=linestyle,
                marker=style["marker"],
                color=style["color"],
                markersize=MARKER_SIZE,
                linewidth=LINE_WIDTH,
            )
    handles = [
        Line2D(
            [],
            [],
            color=s["color"],
            marker=s["marker"],
            markersize=MARKER_SIZE,
            linewidth=LINE_WIDTH,
            label=s["label"],
        )
        for s in METHOD_STYLE.values()
    ]
    handles += [
        Line2D([], [], color="0.4", linestyle=ls, linewidth=LINE_WIDTH, label=DATASET_LABELS.get(name, name))
        for name, ls in zip(datasets, DATASET_LINESTYLES)
    ]
    ax.legend(handles=handles, fontsize=FONT_SIZE_PT - 1.5, frameon=False, loc="upper right", ncol=2)
    ax.set_xlabel(X_LABEL, fontsize=FONT_SIZE_PT)
    ax.set_ylabel(METRIC_LABELS[metric], fontsize=FONT_SIZE_PT)
    ax.tick_params(labelsize=FONT_SIZE_PT)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    top = max(float(r[metric]) for r in rows if r["dataset"] in datasets)
    ax.set_ylim(0.0, top * LEGEND_HEADROOM)
    return fig
