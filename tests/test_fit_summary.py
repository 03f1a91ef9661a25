"""Issue 21: the frozen CPU procedure after the device call (analysis/fit_summary.py), run on
committed H200 rows standing in for the three samples: it fits, freezes conformal intervals from
the calibration rows (which then cover about 80% of those same rows by construction), scores the
test rows on every issue-21 target, and tables the time break-even."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"
spec = importlib.util.spec_from_file_location("fit_summary", ROOT / "analysis" / "fit_summary.py")
fs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fs)


def _take(src: Path, dst: Path, n: int) -> None:
    lines = src.read_text().splitlines()[:n]
    dst.write_text("\n".join(lines) + "\n")


def test_protocol_on_committed_rows(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(H200 / "h200-heldout-898775459.toml", run / "h200-fit-base.toml")
    _take(H200 / "heldout-2599853000.jsonl", run / "train.jsonl", 160)
    _take(H200 / "heldout-173469101.jsonl", run / "calibration.jsonl", 160)
    _take(H200 / "heldout-898775459.jsonl", run / "test-898775459.jsonl", 160)
    be = {
        "kind": "result",
        "model": "llama-3.1-8b",
        "heads_q": 32,
        "heads_kv": 8,
        "d": 128,
        "batch": 8,
        "k": 32,
        "selection": "per-head",
        "dtype": "bf16",
        "breakeven_context": 1024,
        "bracket": [512, 1024],
        "grid_max": 262144,
    }
    (run / "breakeven.jsonl").write_text(json.dumps(be) + "\n")
    out = tmp_path / "out"
    assert fs.main(["--run", str(run), "--seed", "898775459", "--out-dir", str(out)]) == 0
    summary = json.loads((out / "fit-898775459-summary.json").read_text())
    names = [t["target"] for t in summary["targets"]]
    assert [n for n, *_ in fs.TARGETS] == names[: len(fs.TARGETS)]
    assert any("coverage of test times: all" in n for n in names)
    # the intervals are the calibration rows' own order statistics: they cover ~80% of them
    calib = [json.loads(x) for x in (out / "fit-898775459-calibration.jsonl").read_text().splitlines()]
    from aqua_model.hardware import load

    final = load(out / "h200-fit-898775459.toml")
    iv = final.terms.interval("decode", "aqua-fused")
    res = [
        math.log(r["measured_s"] / r["predicted_calibrated_s"])
        for r in calib
        if r["status"] == "ok" and r["plan"] == "aqua-fused"
    ]
    inside = [iv.time[0] <= x <= iv.time[1] for x in res]
    assert iv.n_time == len(res) and 0.7 <= np.mean(inside) <= 0.95
    # the break-even row: the predicted break-even lies inside its own interval
    b = summary["breakeven"][0]
    assert b["measured"] == 1024 and b["flop_breakeven"] is not None
    if b["predicted"] is not None and b["predicted_low"] is not None and b["predicted_high"] is not None:
        assert b["predicted_low"] <= b["predicted"] <= b["predicted_high"]
        assert b["within_20pct"] == (abs(1024 / b["predicted"] - 1) <= 0.2)
    assert not math.isnan(summary["plans"]["decode/aqua-fused"]["median_abs"])
    assert (out / "fit-898775459-summary.md").read_text().startswith("# Fit protocol, test seed 898775459")
