"""docs/prefill.md (the README's prefill page): every number comes from the model or the committed accuracy study."""

from __future__ import annotations

import csv
from pathlib import Path

import aqua_model

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "validation" / "results" / "h200" / "h200-calibrated.toml"


def _section() -> str:
    return " ".join((ROOT / "docs" / "prefill.md").read_text().split())


def _accuracy() -> dict[tuple[int, int], dict[str, str]]:
    with (ROOT / "analysis" / "results" / "prefill_accuracy.csv").open() as fh:
        return {(int(r["k"]), int(r["tile M"])): r for r in csv.DictReader(fh)}


def test_break_even_and_predicted_speedups_come_from_the_model() -> None:
    text = _section()
    assert f"T* = {aqua_model.breakeven(d=128, k=96, phase='prefill').n_star:.0f} (per query)" in text
    assert (
        f"T* = {aqua_model.breakeven(d=128, k=96, phase='prefill', selection_tile=128).n_star:.6g} at M = 128"
        in text
    )
    shape = dict(
        phase="prefill", context=0, prompt=16384, batch=1, heads_q=32, heads_kv=8, d=128, gpu=str(PROFILE)
    )
    dense = aqua_model.predict(plan="dense-fused", k=128, **shape).total_s
    for k, where in ((32, "at k = 32"), (96, "at k = 96"), (128, "at k = d")):
        ratio = dense / aqua_model.predict(plan="aqua-tile-fused", k=k, **shape).total_s
        assert f"{ratio:.3f}x {where}" in text or f"{ratio:.3f}x over dense SDPA {where}" in text, (k, ratio)


def test_accuracy_numbers_are_the_committed_study() -> None:
    text = _section()
    acc = _accuracy()

    def inc(k: int, m: int, digits: int = 2) -> str:
        return f"+{float(acc[(k, m)]['ppl increase %']):.{digits}f}%"

    assert (
        f"+{float(acc[(48, 1)]['ppl increase %']):.2f}% (KL {float(acc[(48, 1)]['KL nats/token']):.4f}"
        in text
    )
    assert f"{inc(48, 16)}, {inc(48, 64)} and {inc(48, 128)}" in text
    kl = [float(acc[(48, m)]["KL nats/token"]) for m in (16, 64, 128)]
    assert "(KL " + ", ".join(f"{x:.3f}" for x in kl) + ";" in text
    assert f"{inc(32, 1)} per query against {inc(32, 16)} to {inc(32, 128)}" in text
    assert f"{inc(16, 1, 1)} against {inc(16, 16, 1)} to {inc(16, 128, 1)}" in text
    ratios = [x / float(acc[(48, 1)]["KL nats/token"]) for x in kl]
    assert f"{int(min(ratios))} to {int(max(ratios))} times the KL" in text
    assert f"{inc(48, 128)} (M = 128) to {inc(48, 64)} (M = 64)" in text


def test_measured_numbers_are_the_committed_h200_rows() -> None:
    """Every measured prefill number on the page is recomputed from analysis/results/prefill_kernels.csv
    (written by `python validation/bench_prefill.py --report` from the committed H200 rows)."""
    import statistics

    text = _section()
    with (ROOT / "analysis" / "results" / "prefill_kernels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) > 0 and f"over {len(rows)} rows" in text
    at_d = [float(r["aqua_TFLOP_s"]) / float(r["sdpa_TFLOP_s"]) for r in rows if r["k"] == r["d"]]
    assert f"median {statistics.median(at_d):.3f} of SDPA's achieved TFLOP/s (minimum {min(at_d):.3f}" in text
    long_rows = [r for r in rows if int(r["T"]) >= 16384 and r["d"] == "128"]
    for k in (32, 64, 96):
        med = statistics.median(float(r["speedup"]) for r in long_rows if int(r["k"]) == k)
        assert f"{med:.3f}x at k = {k}" in text or f"{med:.3f}x at k = {k}," in text, (k, med)
    best32 = max(float(r["speedup"]) for r in rows if r["k"] == "32")
    best96 = max(float(r["speedup"]) for r in rows if r["k"] == "96")
    assert f"best {best32:.3f}x" in text and f"best {best96:.3f}x" in text
    err = statistics.median(abs(float(r["aqua_error_pct"])) for r in rows)
    assert f"median error {err:.1f}%" in text
