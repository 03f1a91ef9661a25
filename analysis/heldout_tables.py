"""The held-out validation tables of docs/validation.md (issue 12), from the committed H200 files.

Reads ``validation/results/h200/heldout-<seed>-insample.jsonl`` (the reduced grid, in-sample) and
``heldout-<seed>.jsonl`` (the held-out cases), both measured in one call with the model frozen at
the commit their rows record, and writes ``analysis/results/heldout_validation.md``: the errors of
the calibrated predictions per plan side by side, the speedup-ratio errors, the issue's targets,
the 80%-interval coverage, and two diagnostics of the fused AQUA decode's misses (its error against
the split pass's blocks per split and programs per SM, by the launch rule of
:mod:`aqua_model.costs.split_rule`): diagnostics only, never inputs of the model.

    python analysis/heldout_tables.py [--seed 173469101]    (the first run: heldout_validation.md)
    python analysis/heldout_tables.py --seed 2599853000     (the second: heldout_validation-2599853000.md)
    python analysis/heldout_tables.py --seed 898775459      (the third: heldout_validation-898775459.md)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aqua_model.costs.split_rule import launch_rule, padded_tile_rows, split_count, tile_rows  # noqa: E402
from aqua_model.validate.report import build_report, side_by_side, targets_table  # noqa: E402
from aqua_model.validate.runner import read_rows  # noqa: E402

RESULTS = ROOT / "validation" / "results" / "h200"
OUT = ROOT / "analysis" / "results" / "heldout_validation.md"
SEED = 173469101
#: Each run's calibrated profile (the first run's keeps its original name).
PROFILES = {
    173469101: "h200-heldout.toml",
    2599853000: "h200-heldout-2599853000.toml",
    898775459: "h200-heldout-898775459.toml",
}
#: SMs of the H200 the held-out run measured (its rows' env.sm_count).
SM_COUNT = 132
#: The held-out runs 1-3 (2026-11-28 to 2026-12-02) measured the three-launch aqua_decode.
MEASURED_LAUNCHES = 3
#: Bins of the diagnostics: blocks of N per split, and split programs per SM.
BLOCK_BINS = ((1, 4), (5, 8), (9, 32), (33, 10**9))
PROGRAM_BINS = ((0.0, 1.0), (1.0, 4.0), (4.0, 9.0), (9.0, float("inf")))


def split_geometry(row: dict) -> tuple[int, float]:
    """(blocks per split, split programs per SM) of an aqua-fused row of the first three runs, by the
    launch rule of the kernel they measured: the three-launch path (``launches=3``), not today's
    one-launch default (issue 22)."""
    g = row["heads_q"] // row["heads_kv"]
    rows = tile_rows(d=row["d"], k=row["k"], g=g, selection=row["selection"])
    block_n = launch_rule(padded_tile_rows(rows, row["d"]), launches=MEASURED_LAUNCHES)[0]
    units = row["batch"] * row["heads_kv"]
    splits, chunk = split_count(
        programs=units, context=row["context"], block_n=block_n, sm_count=SM_COUNT, launches=MEASURED_LAUNCHES
    )
    return int(chunk) // block_n, units * int(splits) / SM_COUNT


def diagnostics(rows: list[dict]) -> list[str]:
    fused = [
        r for r in rows if r.get("status") == "ok" and r["plan"] == "aqua-fused" and r["phase"] == "decode"
    ]
    pts = [(*split_geometry(r), r["predicted_calibrated_s"] / r["measured_s"] - 1) for r in fused]
    lines = ["| blocks of N per split | cases | median signed error |", "|---|---:|---:|"]
    for lo, hi in BLOCK_BINS:
        sel = [e for b, _, e in pts if lo <= b <= hi]
        if sel:
            lines.append(
                f"| {lo}-{hi if hi < 10**9 else 'more'} | {len(sel)} | {statistics.median(sel):+.1%} |"
            )
    lines += ["", "| split programs per SM | cases | median signed error |", "|---|---:|---:|"]
    for lo, hi in PROGRAM_BINS:
        sel = [e for _, p, e in pts if lo <= p < hi]
        if sel:
            lines.append(f"| {lo:g}-{hi:g} | {len(sel)} | {statistics.median(sel):+.1%} |")
    return lines


def deficits(rows: list[dict]) -> list[str]:
    """The fused AQUA decode's absolute miss (measured - predicted, microseconds) at short chunks
    (at most 8 blocks per split), against split programs per SM (added with the second run)."""
    fused = [
        r for r in rows if r.get("status") == "ok" and r["plan"] == "aqua-fused" and r["phase"] == "decode"
    ]
    pts = [(*split_geometry(r), r) for r in fused]
    lines = [
        "| split programs per SM (at most 8 blocks per split) | cases | median measured - predicted (us) "
        "| median signed error |",
        "|---|---:|---:|---:|",
    ]
    for lo, hi in PROGRAM_BINS:
        sel = [r for b, p, r in pts if b <= 8 and lo <= p < hi]
        if sel:
            gap_us = statistics.median((r["measured_s"] - r["predicted_calibrated_s"]) * 1e6 for r in sel)
            err = statistics.median(r["predicted_calibrated_s"] / r["measured_s"] - 1 for r in sel)
            lines.append(f"| {lo:g}-{hi:g} | {len(sel)} | {gap_us:.1f} | {err:+.1%} |")
    return lines


def fills(seed: int) -> list[str]:
    """The split pass's measured per-program fill of each table of the run's profile."""
    import tomllib

    doc = tomllib.loads((RESULTS / PROFILES[seed]).read_text())
    lines = [
        "| split table (d, tile rows) | latency (us) | fill per program after each SM's first (us) |",
        "|---|---:|---:|",
    ]
    for t in doc["calibration"].get("stream", []):
        if t["stream"] == "triton-split":
            lines.append(
                f"| d={t['d']}, {t['rows']} rows | {t['latency_s'] * 1e6:.2f} | {t.get('fill_s', 0.0) * 1e6:.2f} |"
            )
    return lines


def small_kernels(seed: int) -> list[str]:
    """The measured prologue/combine table of the run's profile (``prologue_combine_s``, added with
    the third run): microseconds per launch at each measured units, per kernel, selection, g and d."""
    import tomllib

    doc = tomllib.loads((RESULTS / PROFILES[seed]).read_text())
    table = doc["calibration"].get("prologue_combine_s")
    if not table:
        return []
    curves: dict[tuple, list[tuple[float, float]]] = {}
    for kernel, sel, g, d, units, sec in table["points"]:
        curves.setdefault((kernel, sel, int(g), int(d)), []).append((units, sec))
    lines = ["| kernel (units) | selection | g | d | us at units (units: us) |", "|---|---|---:|---:|---|"]
    for (kernel, sel, g, d), pts in sorted(curves.items()):
        unit = "B H_kv" if kernel == "prologue" else "B H_q"
        cells = ", ".join(f"{int(u)}: {t * 1e6:.1f}" for u, t in sorted(pts))
        lines.append(f"| {kernel} ({unit}) | {sel} | {g} | {d} | {cells} |")
    return lines


def tables(seed: int) -> str:
    insample_rows = read_rows(RESULTS / f"heldout-{seed}-insample.jsonl")
    heldout_rows = read_rows(RESULTS / f"heldout-{seed}.jsonl")
    ins, held = build_report(insample_rows), build_report(heldout_rows)
    commit = next(r["model_commit"] for r in heldout_rows if r.get("model_commit"))
    lines = [
        "# Held-out validation on the H200 (issue 12)",
        "",
        f"Model frozen at commit `{commit}`; held-out seed {seed} (the integer value of the commit's first 8 hex digits); "
        f"{len(insample_rows)} in-sample cases (the reduced grid) and {len(heldout_rows)} held-out cases, one call; "
        f"calibrated mode (`validation/results/h200/{PROFILES.get(seed, 'h200-heldout.toml')}`), CUDA-graph device time. Error = predicted / "
        "measured - 1; median, p90 and max of its absolute value.",
        "",
    ]
    side = side_by_side(ins, held)
    split = side.index("")
    lines += side[:split] + ["", "Speedup over SDPA at the same shape:", ""] + side[split + 1 :] + [""]
    lines += targets_table(held, title="target (held-out, calibrated)")
    lines += [
        "",
        "Diagnostics of the fused AQUA decode (held-out): its error against the split pass's geometry.",
        "",
    ]
    lines += diagnostics(heldout_rows)
    if (
        seed != SEED
    ):  # the runs after the first: the per-program fill they measured, and the miss left at short chunks
        lines += ["", "The split pass's per-program fill (the calibration's micro-benchmark):", ""] + fills(
            seed
        )
        lines += ["", "The fused AQUA decode's absolute miss at short chunks:", ""] + deficits(heldout_rows)
        small = small_kernels(seed)
        if small:
            lines += [
                "",
                "The prologue and combine, timed alone (the calibration's micro-benchmark, `prologue_combine_s`):",
                "",
            ] + small
    return "\n".join(lines) + "\n"


def out_path(seed: int) -> Path:
    """The tables file of a run: the first run's ``heldout_validation.md``, later ones by seed."""
    return OUT if seed == SEED else OUT.with_name(f"heldout_validation-{seed}.md")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    out = out_path(args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tables(args.seed))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
