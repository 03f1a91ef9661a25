"""The frontier figure and table helpers: built from a small table, registered, bad input named."""

from __future__ import annotations

import pytest

from aqua_model.plots import load_figures
from aqua_model.plots.decoder_frontier import SERIES, frontier_figure


def _rows(as_strings=False):
    rows = []
    for target in ("SmolLM2-135M", "Llama-3.1-8B"):
        for i, (method, selection) in enumerate(SERIES):
            for k in (0.75, 0.5):
                row = {
                    "target": target,
                    "context": 8192,
                    "batch": 8,
                    "method": method,
                    "selection": selection,
                    "predicted_speedup": 1 + (1 - k) / 2,
                    "ppl_increase_pct_en": (1 - k) * (i + 1),
                    "ppl_increase_pct_de": (1 - k) * (i + 2),
                }
                rows.append({c: str(v) for c, v in row.items()} if as_strings else row)
    return rows


@pytest.mark.parametrize("as_strings", [False, True])
def test_one_line_per_series_and_language_in_each_panel(as_strings, tmp_path):
    fig = frontier_figure(_rows(as_strings))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.lines) == 2 * len(SERIES) + 2  # + the speedup-1 and zero-increase guides
        assert "speedup" in ax.get_xlabel()
    assert "perplexity" in fig.axes[0].get_ylabel()
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_bad_tables_are_named():
    with pytest.raises(ValueError, match="at least one frontier row"):
        frontier_figure([])
    with pytest.raises(ValueError, match="miss the columns"):
        frontier_figure([{"target": "x"}])


def test_the_figure_is_registered():
    assert "decoder_frontier" in load_figures()
