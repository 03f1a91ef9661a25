"""Diagnostics of the committed H200 validation results, behind the numbers quoted in the
docs/validation.md and in validation/results/h200/NOTES.md: per-kernel predicted/measured ratios (as run
and with the current model), how a plan's time compares with the sum of its kernels' stand-alone
times, the K+V bandwidth SDPA and the token-major plan reach, and measured speedups.
Writes analysis/results/validation_diagnostics.md.

Usage: python analysis/validation_diagnostics.py
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from aqua_model.table_render import to_markdown
from aqua_model.validate.runner import merge_runs, read_rows

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"
#: Runs in the order the report merges them (a later measured row replaces an earlier one).
RUNS = ("validation.jsonl", "validation_token_major.jsonl", "validation_prefill_eager.jsonl")
#: The datasheet HBM bandwidth of the H200 the efficiencies below are fractions of (bytes/s).
H200_BANDWIDTH_BYTES_PER_S = 4.8e12
#: Shapes of the bandwidth rows: batch 8, long contexts (working sets far beyond the L2).
LONG_CONTEXTS = (32768, 131072)


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok"]


def kernel_ratios(rows: list[dict]) -> list[dict]:
    """Median calibrated predicted/measured per (phase, plan, kernel)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in _ok(rows):
        for k in r.get("kernels", []):
            if k.get("measured_s") and k.get("predicted_calibrated_s"):
                groups[(r["phase"], r["plan"], k["name"])].append(
                    k["predicted_calibrated_s"] / k["measured_s"]
                )
    return [
        {
            "phase": p,
            "plan": pl,
            "kernel": kn,
            "n": len(v),
            "median_pred_over_meas": round(statistics.median(v), 2),
        }
        for (p, pl, kn), v in sorted(groups.items())
    ]


def plan_vs_kernel_sum(rows: list[dict]) -> list[dict]:
    """Measured plan time over the sum of its kernels' stand-alone measured times."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in _ok(rows):
        parts = [k["measured_s"] for k in r.get("kernels", []) if k.get("measured_s")]
        if parts:
            groups[(r["phase"], r["plan"])].append(r["measured_s"] / sum(parts))
    return [
        {"phase": p, "plan": pl, "n": len(v), "median_plan_over_kernel_sum": round(statistics.median(v), 3)}
        for (p, pl), v in sorted(groups.items())
    ]


def bandwidth_rows(rows: list[dict]) -> list[dict]:
    """Bytes of the attention kernel over its measured time, batch 8, long contexts."""
    out = []
    for r in _ok(rows):
        if r["phase"] != "decode" or r["batch"] != 8 or r["context"] not in LONG_CONTEXTS:
            continue
        if r["plan"] not in ("dense-fused", "aqua-step-topk-token-major"):
            continue
        att = next(k for k in r["kernels"] if k["name"] == "attention")
        if not att.get("measured_s"):
            continue
        rate = att["bytes"] / att["measured_s"]
        out.append(
            {
                "plan": r["plan"],
                "context": r["context"],
                "heads_kv": r["heads_kv"],
                "k": r["k"],
                "TB_per_s": round(rate / 1e12, 2),
                "fraction_of_4.8TB/s": round(rate / H200_BANDWIDTH_BYTES_PER_S, 3),
            }
        )
    return sorted(out, key=lambda x: (x["plan"], x["k"], x["context"], x["heads_kv"]))


def token_major_speedups(rows: list[dict]) -> dict[str, float]:
    """Measured dense-fused / token-major AQUA over every shape measured for both."""
    dense = {
        (r["context"], r["batch"], r["heads_kv"]): r["measured_s"]
        for r in _ok(rows)
        if r["phase"] == "decode" and r["plan"] == "dense-fused"
    }
    ratios = [
        dense[key] / r["measured_s"]
        for r in _ok(rows)
        if r["phase"] == "decode"
        and r["plan"] == "aqua-step-topk-token-major"
        and (key := (r["context"], r["batch"], r["heads_kv"])) in dense
    ]
    return {"n": len(ratios), "min": round(min(ratios), 2), "max": round(max(ratios), 2)}


def rerun_agreement(first: list[dict], rerun: list[dict]) -> dict[str, float]:
    """Measured plan time of a rerun over the first run, for the cases measured in both."""
    before = {r["case_id"]: r["measured_s"] for r in _ok(first)}
    ratios = [r["measured_s"] / before[r["case_id"]] for r in _ok(rerun) if r["case_id"] in before]
    return {"n": len(ratios), "min": round(min(ratios), 3), "max": round(max(ratios), 3)}


def main() -> None:
    as_run = read_rows(H200 / RUNS[0])
    current = read_rows(H200 / "validation_current_model.jsonl")
    merged = merge_runs([read_rows(H200 / name) for name in RUNS])
    tm = token_major_speedups(merged)
    again = rerun_agreement(as_run, read_rows(H200 / RUNS[2]))
    text = [
        "# Diagnostics of the H200 validation results",
        "",
        "Generated by `analysis/validation_diagnostics.py` from `validation/results/h200/`.",
        "",
        "## Per-kernel predicted / measured, calibrated mode, as run (`validation.jsonl`)",
        "",
        to_markdown(kernel_ratios(as_run)),
        "## Per-kernel predicted / measured, calibrated mode, current model (`validation_current_model.jsonl`)",
        "",
        to_markdown(kernel_ratios(current)),
        "## Measured plan time over the sum of its kernels' stand-alone times",
        "",
        to_markdown(plan_vs_kernel_sum(merged)),
        "## K+V (or sector) bytes of the attention kernel over its measured time, batch 8",
        "",
        to_markdown(bandwidth_rows(merged)),
        f"## Token-major AQUA: measured speedup over SDPA\n\nOver {tm['n']} shapes: {tm['min']}x to {tm['max']}x.\n",
        f"## Eager prefill rerun against the first run\n\nMeasured plan time, rerun / first run, over {again['n']} "
        f"cases: {again['min']} to {again['max']}.\n",
    ]
    out = ROOT / "analysis" / "results" / "validation_diagnostics.md"
    out.write_text("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
