"""Report statistics on synthetic rows with known answers."""

import math

import pytest

from aqua_model.validate.report import build_report, error_stats, render_markdown, render_text

SHAPES = [(512, 1), (2048, 8), (8192, 8), (32768, 1), (131072, 8)]


def _row(plan, context, batch, measured, predicted, k=128, status="ok", floor=None):
    return {
        "case_id": f"decode/{plan}/N{context}/B{batch}/k{k}",
        "status": status,
        "phase": "decode",
        "plan": plan,
        "context": context,
        "prompt": None,
        "batch": batch,
        "heads_q": 32,
        "heads_kv": 8,
        "d": 128,
        "k": k,
        "dtype": "bf16",
        "selection": "group",
        "measured_s": measured,
        "measured_iqr_s": None if measured is None else measured * 0.01,
        "predicted_datasheet_s": predicted,
        "predicted_calibrated_s": predicted,
        "datasheet_mode": "datasheet",
        "calibrated_mode": "calibrated:test",
        "roofline_floor_s": floor,
        "kernels": [
            {
                "name": "attention",
                "measured_s": measured,
                "predicted_datasheet_s": predicted,
                "predicted_calibrated_s": predicted,
                "flops": 1.0,
                "bytes": 1.0,
                "roofline_floor_s": floor,
            }
        ],
        "env": {"device": "cpu", "torch": "x"},
    }


def _rows(over=1.10):
    rows = []
    for i, (n, b) in enumerate(SHAPES):
        t_dense = 1e-4 * (i + 1)
        rows.append(_row("dense-fused", n, b, t_dense, over * t_dense))
        rows.append(_row("aqua-fused", n, b, 0.7 * t_dense, over * 0.7 * t_dense, k=32))
    return rows


def test_uniform_overprediction_gives_its_error_and_zero_ratio_error():
    rep = build_report(_rows(1.10))
    for mode in ("datasheet", "calibrated"):
        s = rep.stats[("all", mode)]
        assert s.n == 10
        assert s.median_abs == pytest.approx(0.10)
        assert s.mean_abs == pytest.approx(0.10)
        assert s.p90_abs == pytest.approx(0.10)
        assert s.max_abs == pytest.approx(0.10)
        assert s.geomean == pytest.approx(0.10)
        assert s.median_signed == pytest.approx(0.10)
        assert s.spearman == pytest.approx(1.0)
        r = rep.ratio_stats[("all", mode)]
        assert r.n == 5 and r.median_abs == pytest.approx(0.0, abs=1e-12)
    t = rep.targets
    assert t["median_abs_error"]["met"] is False and t["p90_abs_error"]["met"] is False
    assert t["median_speedup_ratio_error"]["met"] is True and t["all_met"] is False


def test_exact_predictions_meet_targets_and_ratio_is_measured_speedup():
    rep = build_report(_rows(1.0))
    assert rep.targets["all_met"] is True
    assert all(x["measured_speedup"] == pytest.approx(1 / 0.7) for x in rep.ratio_rows)


def test_known_mixed_errors():
    # errors +10%, -20%, +30%: median |e| 20%, mean 20%, max 30%, signed median +10%
    rows = [_row("dense-fused", n, 1, 1.0, p) for n, p in zip((1, 2, 3), (1.1, 0.8, 1.3))]
    s = build_report(rows).stats[("all", "calibrated")]
    assert s.median_abs == pytest.approx(0.2)
    assert s.mean_abs == pytest.approx(0.2)
    assert s.max_abs == pytest.approx(0.3)
    assert s.median_signed == pytest.approx(0.1)
    geo = math.exp((abs(math.log(1.1)) + abs(math.log(0.8)) + abs(math.log(1.3))) / 3) - 1
    assert s.geomean == pytest.approx(geo)


def test_speedup_error_when_only_aqua_is_mispredicted():
    rows = []
    for n, b in SHAPES:
        rows.append(_row("dense-fused", n, b, 1.0, 1.0))
        rows.append(_row("aqua-fused", n, b, 0.5, 0.5 * 1.25, k=32))  # predicted 25% slow -> speedup 20% low
    r = build_report(rows).ratio_stats[("all", "calibrated")]
    assert r.median_abs == pytest.approx(0.2)
    assert r.median_signed == pytest.approx(-0.2)


def test_non_ok_rows_are_counted_not_scored_and_roofline_violation_flagged():
    rows = _rows(1.0)
    rows.append(_row("aqua-eager", 512, 1, None, 1e-4, status="oom"))
    rows.append(_row("aqua-token-major", 512, 1, None, 1e-4, status="unsupported"))
    rows.append(_row("dense-eager", 512, 1, 1e-6, 1e-6, floor=1e-5))  # faster than the roofline
    rep = build_report(rows)
    assert rep.status_counts == {"ok": 11, "oom": 1, "unsupported": 1}
    assert rep.stats[("all", "calibrated")].n == 11
    assert {f["kind"] for f in rep.roofline_flags} == {"plan", "kernel"}
    text = render_text(rep)
    assert "oom 1" in text and "unsupported 1" in text
    md = render_markdown(rep)
    assert "faster than the datasheet roofline" in md and "| decode/aqua-eager/N512/B1/k128 | oom |" in md


def test_error_stats_rejects_bad_input():
    with pytest.raises(ValueError, match="pair up"):
        error_stats([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        error_stats([0.0], [1.0])
    assert error_stats([], []).n == 0
