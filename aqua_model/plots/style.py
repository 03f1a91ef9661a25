"""The one figure style of aqua-model: palette, fonts, sizes, and reproducible saving.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot, no
global state), inside :func:`style_context`, and written by :func:`savefig` as PDF (vector,
TrueType fonts, no timestamp) and PNG (fixed dpi, no software tag) so reruns give the same bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib
from cycler import cycler
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Width of a one-column figure in a two-column paper (inches).
SINGLE_COLUMN_IN = 3.3
#: Width of a full-page (two-column) figure (inches).
DOUBLE_COLUMN_IN = 7.0
#: Default height of a figure (inches).
DEFAULT_HEIGHT_IN = 2.4

#: Base font size (points): readable when printed at column width.
FONT_SIZE_PT = 7.0
#: Tick labels and legends (points).
SMALL_FONT_PT = 6.0
#: Footnotes such as "no measurements committed" (points).
NOTE_FONT_PT = 5.5
#: Raster resolution of the PNG files (dots per inch).
PNG_DPI = 300
#: Salt for SVG ids, so that SVG output (if ever used) is reproducible too.
SVG_HASH_SALT = "aqua-model"

#: Okabe & Ito (2008) colour-blind-safe palette, by name.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
#: Colour cycle used for series (yellow last: it is pale on white).
CYCLE: tuple[str, ...] = tuple(
    OKABE_ITO[n]
    for n in ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue", "black", "yellow")
)
#: Neutral grey for reference lines, bands and notes.
GREY = "#7F7F7F"

#: Colour per plan, used by every figure that shows plans.
PLAN_COLOURS: dict[str, str] = {
    "dense-fused": OKABE_ITO["black"],
    "dense-eager": OKABE_ITO["reddish_purple"],
    "aqua-step-topk": OKABE_ITO["blue"],
    "aqua-eager": OKABE_ITO["vermillion"],
    "aqua-step-topk-token-major": OKABE_ITO["bluish_green"],
    "aqua-fused": OKABE_ITO["sky_blue"],
    "aqua-token-major": OKABE_ITO["orange"],
}
#: Marker per plan.
PLAN_MARKERS: dict[str, str] = {
    "dense-fused": "s",
    "dense-eager": "D",
    "aqua-step-topk": "o",
    "aqua-eager": "^",
    "aqua-step-topk-token-major": "v",
    "aqua-fused": "p",
    "aqua-token-major": "<",
}

#: matplotlib settings applied while a figure is built and saved.
RC: dict[Any, Any] = {  # keys: matplotlib rcParams names (its stubs type them as a Literal)
    "font.family": "DejaVu Sans",
    "font.size": FONT_SIZE_PT,
    "axes.titlesize": FONT_SIZE_PT,
    "axes.labelsize": FONT_SIZE_PT,
    "xtick.labelsize": SMALL_FONT_PT,
    "ytick.labelsize": SMALL_FONT_PT,
    "legend.fontsize": SMALL_FONT_PT,
    "legend.title_fontsize": SMALL_FONT_PT,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "axes.linewidth": 0.6,
    "axes.prop_cycle": cycler(color=list(CYCLE)),
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "grid.linewidth": 0.3,
    "grid.alpha": 0.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": SVG_HASH_SALT,
    "svg.fonttype": "none",
    "image.cmap": "cividis",
    "savefig.dpi": PNG_DPI,
    "figure.dpi": 100,
}

#: PDF metadata: no creation date and no producer string, so bytes do not change on rerun.
PDF_METADATA: dict[str, str | None] = {
    "CreationDate": None,
    "Producer": None,
    "Creator": "aqua-model figures",
}
#: PNG metadata: no "Software" text chunk.
PNG_METADATA: dict[str, str | None] = {"Software": None}

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def style_context() -> Iterator[None]:
    """Apply :data:`RC` for the duration of the block."""
    with matplotlib.rc_context(RC):
        yield


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: build the figure inside :func:`style_context` (rcParams are read when artists are made)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with style_context():
            return fn(*args, **kwargs)

    return wrapper


def new_figure(
    *,
    width: str = "single",
    height_in: float = DEFAULT_HEIGHT_IN,
    nrows: int = 1,
    ncols: int = 1,
    **subplot_kw: Any,
) -> tuple[Figure, Any]:
    """A constrained-layout Figure on an Agg canvas and its axes (``width``: "single" or "double")."""
    widths = {"single": SINGLE_COLUMN_IN, "double": DOUBLE_COLUMN_IN}
    if width not in widths:
        raise ValueError(f"width must be one of {sorted(widths)}, got width={width!r}")
    if height_in <= 0:
        raise ValueError(f"height_in must be > 0, got height_in={height_in!r}")
    fig = Figure(figsize=(widths[width], height_in), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True, **subplot_kw)
    return fig, axes


def note(fig: Figure, text: str) -> None:
    """A small grey note at the top right of the figure (the layout keeps it clear of the axes)."""
    fig.suptitle(text, x=0.995, ha="right", fontsize=NOTE_FONT_PT, color=GREY)


def savefig(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``<stem>.pdf`` and ``<stem>.png`` reproducibly; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    pdf, png = stem.with_name(stem.name + ".pdf"), stem.with_name(stem.name + ".png")
    with style_context():
        fig.savefig(pdf, format="pdf", metadata=PDF_METADATA)
        fig.savefig(png, format="png", dpi=PNG_DPI, metadata=PNG_METADATA)
    return [pdf, png]


__all__ = [
    "CYCLE",
    "DOUBLE_COLUMN_IN",
    "GREY",
    "OKABE_ITO",
    "PLAN_COLOURS",
    "PLAN_MARKERS",
    "RC",
    "SINGLE_COLUMN_IN",
    "new_figure",
    "note",
    "savefig",
    "style_context",
    "styled",
]
