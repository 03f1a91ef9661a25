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
    # target | threshold | measured | verdict | one (measured (verdict)) cell per earlier round
    rounds = len(_script().ROUNDS)
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in rows[1:]]
    assert all(len(c) == 4 + rounds and c[3] in ("met", "missed") for c in cells)
    assert all(x.endswith(("(met)", "(missed)")) for c in cells for x in c[4:])


def test_without_earlier_rounds_the_table_has_four_columns() -> None:
    table = _script().targets_table(rounds=())
    assert table.splitlines()[0] == "| target | threshold | measured | verdict |"


def _row(source="target-b1-long", backend="cudnn_attention", sdpa=50e-6, aqua=40e-6):
    return dict(
        source=source,
        B=1,
        hq=32,
        hkv=8,
        N=32768,
        d=128,
        k=64,
        selection="group",
        sdpa_backend=backend,
        sdpa_graph_s=sdpa,
        speedup_graph=sdpa / aqua,
    )


def test_a_slower_backend_picked_in_one_call_is_replaced_by_the_other_calls_faster_one() -> None:
    mod = _script()
    # this call's trial picked flash at 57.6 us; another call ran cuDNN at 49.4 us: 14% faster
    row = _row(backend="flash_attention", sdpa=57.6e-6, aqua=44.6e-6)
    (got,) = mod.fastest_sdpa_baseline([row], [[_row(sdpa=49.4e-6)]])
    assert got["sdpa_graph_s"] == 49.4e-6 and got["sdpa_backend"] == "cudnn_attention"
    assert abs(got["speedup_graph"] - 49.4 / 44.6) < 1e-12
    assert got["sdpa_this_call_s"] == 57.6e-6 and got["sdpa_this_call_backend"] == "flash_attention"


def test_drift_of_one_backend_or_a_small_gap_keeps_the_calls_own_baseline() -> None:
    mod = _script()
    row = _row(sdpa=50e-6)
    # the same backend 3% faster elsewhere: call-to-call drift, not a wrong pick
    assert mod.fastest_sdpa_baseline([row], [[_row(sdpa=48.5e-6)]]) == [row]
    # another backend, but inside the slack (4%)
    flash = _row(backend="flash_attention", sdpa=50e-6)
    assert mod.fastest_sdpa_baseline([flash], [[_row(sdpa=48e-6)]]) == [flash]
    # another call slower: never a reason to replace
    assert mod.fastest_sdpa_baseline([flash], [[_row(sdpa=60e-6)]]) == [flash]
