"""The matched-context trade-off table and figure: measured speedups where the H200 file has the row,
predictions with their interval elsewhere, Llama speed-only, bad measured rows named."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from aqua_model.plots import load_figures
from aqua_model.plots.longctx_frontier import tradeoff_figure

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "longctx_tradeoff", ROOT / "analysis" / "longctx_tradeoff.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _summary(mod):
    rows = []
    for shape in mod.SHAPES[:2]:
        for context in mod.TRADEOFF_CONTEXTS:
            for frac in mod.K_FRACTIONS:
                k = int(frac * shape["d"])
                for sel in mod.SELECTIONS:
                    inc = (1 - float(frac)) * (3.0 if sel == "group" else 1.0)
                    rows.append(
                        {
                            "model": shape["model"],
                            "context": str(context),
                            "method": "aqua",
                            "k": str(k),
                            "selection": sel,
                            "ppl_increase_pct": str(inc),
                            "ppl_increase_lo_pct": str(inc - 0.5),
                            "ppl_increase_hi_pct": str(inc + 0.5),
                            "significant": str(inc > 0.5),
                            "kl_nats": "0.01",
                        }
                    )
    return rows


def test_measured_rows_replace_predictions_and_the_rest_are_predicted_with_intervals(tmp_path):
    mod = _module()
    qwen = mod.SHAPES[1]
    measured = [
        {
            "heads_q": qwen["heads_q"],
            "heads_kv": qwen["heads_kv"],
            "d": qwen["d"],
            "k": 32,
            "selection": "group",
            "batch": mod.BATCH,
            "context": 4096,
            "dtype": "bfloat16",
            "sdpa_graph_s": 2.0e-5,
            "sdpa_graph_iqr_s": 0.2e-5,
            "aqua_graph_s": 1.6e-5,
            "aqua_graph_iqr_s": 0.2e-5,
            "speedup_graph": 1.25,
        }
    ]
    rows = mod.tradeoff_rows(_summary(mod), measured, source="m.jsonl")
    n = len(mod.SHAPES) * len(mod.BATCHES) * len(mod.TRADEOFF_CONTEXTS) * len(mod.K_FRACTIONS) * 2
    assert len(rows) == n
    hit = [r for r in rows if r["speed_source"] == "measured"]
    assert len(hit) == 1 and hit[0]["speedup"] == 1.25 and hit[0]["model"] == qwen["model"]
    assert hit[0]["k"] == 32 and hit[0]["context"] == 4096 and hit[0]["selection"] == "group"
    # the range from the IQRs: (2.0 - 0.1) / (1.6 + 0.1) and (2.0 + 0.1) / (1.6 - 0.1)
    assert hit[0]["speedup_lo"] == pytest.approx(1.9 / 1.7, abs=1e-4)
    assert hit[0]["speedup_hi"] == pytest.approx(2.1 / 1.5, abs=1e-4)
    # a plain 'speedup' column (no timings) is read too, without a range
    plain = dict(measured[0], speedup=1.5)
    for f in ("speedup_graph", "sdpa_graph_s"):
        plain.pop(f)
    got = [
        r for r in mod.tradeoff_rows(_summary(mod), [plain], source="m") if r["speed_source"] == "measured"
    ]
    assert len(got) == 1 and got[0]["speedup"] == 1.5 and got[0]["speedup_lo"] is None
    pred = [r for r in rows if r["speed_source"] == "predicted"]
    assert all(r["speedup_lo"] <= r["speedup"] <= r["speedup_hi"] for r in pred)  # the profile's 80% interval
    llama = [r for r in rows if r["model"] == "Llama-3.1-8B"]
    assert llama and all(
        r["ppl_increase_pct"] is None and r["quality"].startswith("not measured") for r in llama
    )
    # the prediction is the simulator's own number at that shape
    import aqua_model

    r = next(
        r
        for r in pred
        if r["model"] == qwen["model"] and r["context"] == 8192 and r["k"] == 16 and r["batch"] == 8
    )
    sim = aqua_model.simulate(
        gpu=str(mod.PREDICTION_PROFILE),
        context=8192,
        batch=8,
        k=16,
        heads_q=14,
        heads_kv=2,
        d=64,
        plan=mod.PLAN,
        selection=r["selection"],
        dtype=mod.DTYPE,
    )
    assert r["speedup"] == pytest.approx(float(sim.speedup), abs=1e-4)
    md = mod.markdown(rows, source="m.jsonl")
    assert "1.25x [1.12, 1.40] (m)" in md and "n/a" in md
    fig = tradeoff_figure(rows)  # batch 8 only
    assert len(fig.axes) == 2 * len(mod.TRADEOFF_CONTEXTS)  # two models with quality, three contexts
    fig.savefig(tmp_path / "f.png")


def test_bad_measured_rows_are_named(tmp_path):
    mod = _module()
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"heads_q": 9}) + "\n")
    with pytest.raises(ValueError, match="misses the columns"):
        mod.read_measured(path)
    assert mod.read_measured(tmp_path / "absent.jsonl") == []
    smol = mod.SHAPES[0]
    row = {
        "heads_q": smol["heads_q"],
        "heads_kv": smol["heads_kv"],
        "d": 64,
        "k": 16,
        "selection": "per-head",
        "batch": mod.BATCH,
        "context": 2048,
        "dtype": "bf16",
        "speedup": "fast",
    }
    with pytest.raises(ValueError, match="speedup must be a finite number"):
        mod.tradeoff_rows(_summary(mod), [row], source="m.jsonl")
    with pytest.raises(ValueError, match="expected one"):
        mod.tradeoff_rows(_summary(mod), [dict(row, speedup=1.0), dict(row, speedup=1.1)], source="m.jsonl")


def test_the_figure_is_registered_and_refuses_empty_input():
    assert "longctx_frontier" in load_figures()
    with pytest.raises(ValueError, match="at least one trade-off row"):
        tradeoff_figure([])
