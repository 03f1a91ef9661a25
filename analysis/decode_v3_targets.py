"""Issue 22's targets table from the committed H200 results of the one-launch AQUA decode.

Reads ``decode_v3_targets.jsonl`` (and ``decode_v3_tables.jsonl`` for the random-shape bandwidth
row) of results directories, both written by ``validation/bench_decode_v3.py``: by default the
shipped kernel's (``validation/results/h200/kernels-v4-rule2``, rank selection and the shipped
split rule; the tables from ``kernels-v4-final``, the rule before), beside the
previous round's (``validation/results/h200``, the sort) as a "before" column; prints the Markdown
table that docs/kernels.md quotes (``tests/test_decode_v3_doc.py`` checks it is current). Every
figure is a CUDA-graph median time (do_bench, L2 flushed) or a ratio of two.

Usage: python analysis/decode_v3_targets.py [--results DIR] [--before DIR] [--tables DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BEFORE = Path(__file__).resolve().parents[1] / "validation" / "results" / "h200"
#: The shipped rule's target shapes (fd98d81) and the kernel tables measured at d717d5b (the same
#: kernel, the previous split rule: the tables were not re-measured after the rule changed).
RESULTS = BEFORE / "kernels-v4-rule2"
TABLES = BEFORE / "kernels-v4-final"
#: The issue's thresholds.
SHORT_MAX_RATIO = 1.1  # AQUA time / SDPA time at N <= 1024, B = 1
BREAKEVEN_MAX = {32: 1024, 64: 2048}  # batch 8: smallest aligned N with speedup > 1
CEILING_MIN = {"target-long-mha": 0.97, "target-long-gqa-group": 0.95, "target-long-gqa-head": 0.95}
B1_CEILING_MIN = 0.90
RANDOM_BW_MIN = 0.85  # AQUA useful bytes/s over SDPA's, random aligned shapes at N >= 4K
RANDOM_MIN_CONTEXT = 4096
EAGER_GAP_MAX_S = 15e-6


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def _target_rows(results: Path, tables_dir: Path | None = None) -> list[str]:
    """One Markdown row ``| target | threshold | measured | verdict |`` per target (the random
    shapes' row from ``tables_dir``, by default ``results``)."""
    rows = [r for r in _rows(results / "decode_v3_targets.jsonl") if "aqua_graph_s" in r]
    out: list[str] = []
    short = [r for r in rows if r["source"] == "target-short"]
    worst = max(short, key=lambda r: r["aqua_graph_s"] / r["sdpa_graph_s"])
    ratio = worst["aqua_graph_s"] / worst["sdpa_graph_s"]
    out.append(
        f"| B = 1, 32 / 8 heads, d = 128, k = 32, N <= 1024: AQUA time / SDPA time | <= {SHORT_MAX_RATIO} | "
        f"{ratio:.2f} at N = {worst['N']} ({worst['aqua_graph_s'] * 1e6:.1f} vs {worst['sdpa_graph_s'] * 1e6:.1f} us) "
        f"| {_verdict(ratio <= SHORT_MAX_RATIO)} |"
    )
    for k, limit in BREAKEVEN_MAX.items():
        grid = sorted(
            (r for r in rows if r["source"] == "target-breakeven-b8" and r["k"] == k), key=lambda r: r["N"]
        )
        wins = [r["N"] for r in grid if r["speedup_graph"] > 1]
        n = wins[0] if wins else None
        ns = ", ".join(str(r["N"]) for r in grid)
        got = f"{n} (grid {ns})" if n else f"none up to {grid[-1]['N']}"
        out.append(
            f"| time break-even, batch 8, 32 / 8 heads, d = 128, k = {k} (group) | <= {limit} tokens | {got} | "
            f"{_verdict(n is not None and n <= limit)} |"
        )
    for source, limit in CEILING_MIN.items():
        for r in sorted((r for r in rows if r["source"] == source), key=lambda r: r["k"]):
            ceiling = r.get("union_byte_ceiling", r["byte_ceiling"])
            frac = r["speedup_graph"] / ceiling
            what = {
                "target-long-mha": "MHA 32 / 32",
                "target-long-gqa-group": "GQA 32 / 8 group",
                "target-long-gqa-head": "GQA 32 / 8 per-head (union ceiling)",
            }[source]
            out.append(
                f"| N = {r['N']}, B = {r['B']}, {what}, k = {r['k']}: speedup / ceiling | >= {limit} | "
                f"{frac:.3f} ({r['speedup_graph']:.3f}x of {ceiling:.3f}x) | {_verdict(frac >= limit)} |"
            )
    for r in sorted((r for r in rows if r["source"] == "target-b1-long"), key=lambda r: (r["k"], r["N"])):
        frac = r["speedup_graph"] / r["byte_ceiling"]
        out.append(
            f"| B = 1, N = {r['N']}, 32 / 8 group, k = {r['k']}: speedup / ceiling | >= {B1_CEILING_MIN} | "
            f"{frac:.3f} ({r['speedup_graph']:.3f}x of {r['byte_ceiling']:.3f}x) | {_verdict(frac >= B1_CEILING_MIN)} |"
        )
    tables = [
        r
        for r in _rows((tables_dir or results) / "decode_v3_tables.jsonl")
        if "aqua_bandwidth_vs_sdpa" in r and r["source"] == "random" and r["N"] >= RANDOM_MIN_CONTEXT
    ]
    if tables:
        low = min(tables, key=lambda r: r["aqua_bandwidth_vs_sdpa"])
        out.append(
            f"| random aligned shapes at N >= {RANDOM_MIN_CONTEXT}: AQUA / SDPA useful bandwidth, lowest | "
            f">= {RANDOM_BW_MIN} | {low['aqua_bandwidth_vs_sdpa']:.3f} over {len(tables)} shapes | "
            f"{_verdict(low['aqua_bandwidth_vs_sdpa'] >= RANDOM_BW_MIN)} |"
        )
    else:
        out.append(
            f"| random aligned shapes at N >= {RANDOM_MIN_CONTEXT}: AQUA / SDPA useful bandwidth | "
            f">= {RANDOM_BW_MIN} | not measured (the run's budget ended in the grid part) | missed |"
        )
    gaps = sorted(r["aqua_eager_latency_s"] - r["aqua_graph_latency_s"] for r in rows)
    med = gaps[len(gaps) // 2]
    out.append(
        f"| eager call within 15 us of its graph replay (single-call latency) | <= {EAGER_GAP_MAX_S * 1e6:.0f} us | "
        f"median {med * 1e6:.1f} us, max {gaps[-1] * 1e6:.1f} us over {len(gaps)} shapes | "
        f"{_verdict(gaps[-1] <= EAGER_GAP_MAX_S)} |"
    )
    return out


def targets_table(results: Path = RESULTS, before: Path | None = BEFORE, tables: Path | None = TABLES) -> str:
    """The targets table of ``results`` (random shapes from ``tables``, None: ``results``), with
    the measured column of ``before`` (None: without)."""
    now = _target_rows(results, tables)
    if before is None:
        head = ["| target | threshold | measured | verdict |", "| --- | --- | --- | --- |"]
        return "\n".join(head + now) + "\n"
    old = _target_rows(before)
    if len(old) != len(now):
        raise ValueError(f"--before {before} has {len(old)} target rows, --results {results} has {len(now)}")
    head = ["| target | threshold | measured | verdict | before |", "| --- | --- | --- | --- | --- |"]
    body = []
    for row, prev in zip(now, old):
        pcells = prev.strip("|").split(" | ")
        body.append(row.rstrip() + f" {pcells[2].strip()} ({pcells[3].strip()}) |")
    return "\n".join(head + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument(
        "--before", type=Path, default=BEFORE, help="the previous round's results (the before column)"
    )
    args = ap.parse_args(argv)
    print(targets_table(args.results, args.before), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
