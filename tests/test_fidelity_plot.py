"""The fidelity Pareto figure: built on Agg from a small table, single-column width, labelled axes."""

from __future__ import annotations

import pytest

from aqua_model.fidelity.methods import METHODS
from aqua_model.plots.fidelity import SINGLE_COLUMN_WIDTH_IN, fidelity_pareto_figure

D = 32


def _table(as_strings: bool = False):
    rows = []
    for dataset in ("heldout_en", "heldout_de"):
        for i, method in enumerate(METHODS):
            for k in (8, 16, 32):
                row = {
                    "dataset": dataset,
                    "method": method,
                    "k": k,
                    "byte_ratio": (k / D + 1) / 2,
                    "output_rel_err": (1 - k / D) * (0.3 + 0.1 * i),
                }
                rows.append({c: str(v) for c, v in row.items()} if as_strings else row)
    return rows


@pytest.mark.parametrize("as_strings", [False, True])
def test_figure_has_one_line_per_method_and_dataset(as_strings, tmp_path):
    fig = fidelity_pareto_figure(_table(as_strings))
    ax = fig.axes[0]
    assert len(ax.lines) == len(METHODS) * 2
    assert fig.get_size_inches()[0] == pytest.approx(SINGLE_COLUMN_WIDTH_IN)
    assert "bytes" in ax.get_xlabel() and "(ratio)" in ax.get_ylabel()
    fig.savefig(tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").stat().st_size > 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="metric must be one of"):
        fidelity_pareto_figure(_table(), metric="speed")
    with pytest.raises(ValueError, match="not in table"):
        fidelity_pareto_figure(_table(), datasets=("heldout_fr",))
    with pytest.raises(ValueError, match="at least one row"):
        fidelity_pareto_figure([])
