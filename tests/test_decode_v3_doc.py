"""docs/kernels.md quotes the one-launch decode's targets table exactly as
analysis/decode_v3_targets.py prints it from the committed H200 results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "decode_v3_targets", ROOT / "analysis" / "decode_v3_targets.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_docs_table_is_the_scripts_output() -> None:
    table = _script().targets_table()
    assert table in (ROOT / "docs" / "kernels.md").read_text(encoding="utf-8")


def test_the_table_reads_the_committed_rows() -> None:
    # a row per target the issue names: the short shape, two break-evens, six at 16K, four at batch 1,
    # the random-shape bandwidth and the host overhead
    rows = [
        line for line in _script().targets_table().splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert len(rows) == 1 + 1 + 2 + 6 + 4 + 1 + 1
    # target | threshold | measured | verdict | before (the previous round's measured and verdict)
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in rows[1:]]
    assert all(len(c) == 5 and c[3] in ("met", "missed") for c in cells)
    assert all(c[4].endswith(("(met)", "(missed)")) for c in cells)


def test_without_a_before_directory_the_table_has_four_columns() -> None:
    table = _script().targets_table(before=None)
    assert table.splitlines()[0] == "| target | threshold | measured | verdict |"
