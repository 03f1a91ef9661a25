"""analysis/kernel_change_check.py: the frozen fit-1675854939 profile scored on the old and the new
one-launch decode kernel's H200 rows. Its statistics are the package's |p/m - 1| ones on hand-made
rows, its predictions are the validation runner's, a refused shape is listed and never dropped, and
on the committed files it scores exactly the rows they hold."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "kernel_change_check", ROOT / "analysis" / "kernel_change_check.py"
)
assert spec is not None and spec.loader is not None
kc = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = kc  # dataclasses look their module up there
spec.loader.exec_module(kc)

SHAPE = kc.Shape(B=8, hq=32, hkv=8, N=16384, d=128, k=32, selection="group", dtype="bf16")
#: A shape whose one-layer KV cache (2.2 TB) exceeds the H200's memory: the model refuses it.
TOO_BIG = kc.Shape(B=64, hq=64, hkv=64, N=1 << 20, d=128, k=32, selection="group", dtype="bf16")


def _scored(pred_aqua: float, pred_sdpa: float, meas_aqua: float = 1.0, meas_sdpa: float = 1.0):
    row = kc.Measured(SHAPE, "grid", meas_aqua, meas_sdpa)
    return kc.Scored(row, kc.Predicted(pred_aqua, pred_sdpa))


def _bench_row(shape, aqua_s: float = 1e-4, sdpa_s: float = 1.2e-4, dtype: str = "bfloat16") -> dict:
    return {
        "B": shape.B,
        "hq": shape.hq,
        "hkv": shape.hkv,
        "N": shape.N,
        "d": shape.d,
        "k": shape.k,
        "selection": shape.selection,
        "dtype": dtype,
        "source": "random",
        "aqua_graph_s": aqua_s,
        "sdpa_graph_s": sdpa_s,
    }


def test_error_statistics_equal_hand_computed_values():
    # AQUA predicted 1.1x, 0.8x, 1.0x of measured; SDPA exact, so the speedup's ratio is 1 / AQUA's
    scored = [_scored(1.1, 1.0), _scored(0.8, 1.0), _scored(1.0, 1.0)]
    st = kc.error_summary(scored)
    aqua = st["aqua"]
    assert aqua.n == 3
    assert aqua.median_abs == pytest.approx(0.1)
    assert aqua.p90_abs == pytest.approx(0.1 + 0.8 * (0.2 - 0.1))  # sorted |e| 0, 0.1, 0.2: linear at 90%
    assert aqua.max_abs == pytest.approx(0.2)
    assert aqua.median_signed == pytest.approx(0.0)
    assert st["sdpa"].max_abs == 0.0
    sp = st["speedup"]  # 1/1.1 - 1, 1/0.8 - 1, 0
    assert sp.median_abs == pytest.approx(1 - 1 / 1.1)
    assert sp.max_abs == pytest.approx(0.25)
    assert sp.median_signed == pytest.approx(0.0)


def test_speedup_is_sdpa_over_aqua_on_both_sides():
    # predicted speedup 2.0 / 1.0 = 2, measured 3.0 / 2.0 = 1.5: error 2 / 1.5 - 1
    st = kc.error_summary([_scored(1.0, 2.0, meas_aqua=2.0, meas_sdpa=3.0)])
    assert st["speedup"].median_signed == pytest.approx(2.0 / 1.5 - 1)


def test_dtype_names_map_to_the_models():
    assert kc.model_dtype("bfloat16") == "bf16"
    assert kc.model_dtype("float16") == "fp16"
    with pytest.raises(ValueError):
        kc.model_dtype("float32")


def test_predictions_are_the_validation_runners():
    from aqua_model.hardware import load
    from aqua_model.validate.cases import Case
    from aqua_model.validate.runner import predictions

    profile = load(kc.PROFILE)
    datasheet = load(profile.calibration["base"])
    got = kc.predict_shape(SHAPE, profile)
    case = Case(
        phase="decode",
        plan="aqua-fused",
        context=SHAPE.N,
        batch=SHAPE.B,
        heads_q=SHAPE.hq,
        heads_kv=SHAPE.hkv,
        d=SHAPE.d,
        k=SHAPE.k,
        dtype=SHAPE.dtype,
        selection=SHAPE.selection,
    )
    ref = predictions(case, datasheet, profile)
    assert got.aqua_s == pytest.approx(ref["predicted_calibrated_s"], rel=1e-12)
    assert got.sdpa_s / got.aqua_s == pytest.approx(ref["predicted_speedup_calibrated"], rel=1e-12)


def test_merge_tile_is_restored():
    from aqua_model.costs import split_rule

    before = split_rule.MERGE_TILE_VALUES
    with kc.merge_tile(8192):
        assert split_rule.MERGE_TILE_VALUES == 8192
    assert split_rule.MERGE_TILE_VALUES == before


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_refused_shape_is_listed_not_dropped(tmp_path):
    old = _write(tmp_path / "old.jsonl", [_bench_row(SHAPE), _bench_row(TOO_BIG)])
    new = _write(tmp_path / "new.jsonl", [_bench_row(SHAPE)])
    cases = {"train": _write(tmp_path / "cases.jsonl", [{"kind": "meta"}])}
    text, scored = kc.build_report((kc.FilePair("tables", old, new),), fit_cases=cases)
    assert len(scored[("tables", "old")]) == 2
    refused = [s for s in scored[("tables", "old")] if s.predicted is None]
    assert [s.row.shape for s in refused] == [TOO_BIG]
    assert "Shapes the model refuses: 1" in text
    assert TOO_BIG.label() in text
    assert math.isnan(kc.interval_share(refused))


def test_overlap_with_the_fits_cases_is_found(tmp_path):
    case = {
        "kind": "case",
        "phase": "decode",
        "plan": "dense-fused",
        "context": SHAPE.N,
        "batch": SHAPE.B,
        "heads_q": SHAPE.hq,
        "heads_kv": SHAPE.hkv,
        "d": SHAPE.d,
        "k": SHAPE.d,
        "dtype": "bf16",
        "selection": "group",
    }
    fit = kc.fit_case_keys({"train": _write(tmp_path / "train.jsonl", [case])})
    rows = [kc.Measured(SHAPE, "grid", 1.0, 1.0)]
    assert kc.fit_overlap(rows, fit) == [("train", "dense-fused", SHAPE)]


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_committed_files_every_row_scored_or_listed(tmp_path):
    text, scored = kc.build_report()
    for pair in kc.PAIRS:
        for kernel in kc.KERNELS:
            assert len(scored[(pair.name, kernel)]) == _lines(pair.path(kernel))
    n = {key: len(v) for key, v in scored.items()}
    assert n == {
        ("tables", "old"): 73,
        ("tables", "new"): 140,
        ("targets", "old"): 29,
        ("targets", "new"): 29,
        ("tables-sort", "old"): 73,
        ("tables-sort", "new"): 70,
        ("targets-sort", "old"): 29,
        ("targets-sort", "new"): 29,
    }
    refused = sum(1 for v in scored.values() for s in v if s.predicted is None)
    assert ("Shapes the model refuses: none" in text) == (refused == 0)
    # the Markdown table's n per (pair, kernel, dtype, all rows) adds up to the scored rows
    table = [
        line.split(" | ")
        for line in text.splitlines()
        if any(line.startswith(f"| {pair.name} |") for pair in kc.PAIRS)
    ]
    in_all = {}
    for cells in table:
        if len(cells) == 18 and cells[3] == "all":
            key = (cells[0].strip("| "), cells[1])
            in_all[key] = in_all.get(key, 0) + int(cells[4])
    assert in_all == {key: n[key] - sum(1 for s in scored[key] if s.predicted is None) for key in n}
    out = tmp_path / "check.md"
    assert kc.main(["--out", str(out)]) == 0
    assert out.read_text() == text
