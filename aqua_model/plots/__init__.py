"""Figure functions of aqua_model and the registry that ``aqua-model figures`` runs.

Each figure module has data-building functions (computed from the model, compared by the
tests) and a figure function that takes that data and returns a matplotlib Figure built on an
Agg canvas (see :mod:`aqua_model.plots.style`).

Registry: :data:`FIGURES` maps a figure stem to a :class:`FigureEntry` whose ``build(out_dir,
root)`` writes ``<out_dir>/<stem>.pdf`` and ``.png`` and returns the paths (``root`` is the
repository root, where committed results are read). Another module adds figures with
``@register("stem", "what it shows", "from what data")``; modules named in
:data:`PLUGIN_MODULES` are imported by :func:`load_figures` when they exist (e.g. the
peers engineer's ``aqua_model.plots.peers_chart``), so adding one needs no edit here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Builds one figure: (out_dir, root) -> the files written.
FigureBuilder = Callable[[Path, Path], Sequence[Path]]


@dataclass(frozen=True)
class FigureEntry:
    """A registered figure: its builder and the README line (what it shows, from what data)."""

    name: str
    build: FigureBuilder
    shows: str
    data: str


#: Every registered figure, in registration order.
FIGURES: dict[str, FigureEntry] = {}

#: Modules that register figures; missing optional ones are skipped.
CORE_MODULES: tuple[str, ...] = ("aqua_model.plots.catalog",)
PLUGIN_MODULES: list[str] = [
    "aqua_model.plots.peers_chart",
    "aqua_model.plots.decoder_frontier",
    "aqua_model.plots.longctx_frontier",
]


def register(name: str, shows: str, data: str) -> Callable[[FigureBuilder], FigureBuilder]:
    """Decorator: add ``fn(out_dir, root)`` to :data:`FIGURES` under ``name`` (unique)."""

    def deco(fn: FigureBuilder) -> FigureBuilder:
        if name in FIGURES and FIGURES[name].build is not fn:
            raise ValueError(
                f"figure name {name!r} is already registered by {FIGURES[name].build.__module__}"
            )
        FIGURES[name] = FigureEntry(name, fn, shows, data)
        return fn

    return deco


def load_figures() -> dict[str, FigureEntry]:
    """Import the core figure modules and every plugin module that exists; return :data:`FIGURES`."""
    for mod in CORE_MODULES:
        importlib.import_module(mod)
    for mod in PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    return FIGURES


__all__ = ["FIGURES", "FigureEntry", "PLUGIN_MODULES", "load_figures", "register"]
