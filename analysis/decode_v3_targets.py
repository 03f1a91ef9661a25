"""Issue 22's targets table from the committed H200 results of the one-launch AQUA decode.

Reads ``decode_v3_targets.jsonl`` (and ``decode_v3_tables.jsonl`` for the random-shape bandwidth
row) of results directories, both written by ``validation/bench_decode_v3.py``: by default the
shipped kernel's (``validation/results/h200/kernels-v5-sort``: group selection by rank, per-head
selection by the tile sort, the shipped split rule and merge tile, one V block prefetched;
targets and the bf16 tables from one call), beside two earlier rounds as "before" columns (:data:`ROUNDS`: the fourth, ``kernels-v4-rule2``
with the tables of ``kernels-v4-final``, and the first, ``validation/results/h200``, the sort);
prints the Markdown table that docs/kernels.md quotes (``tests/test_decode_v3_doc.py`` checks it
is current). Every figure is a CUDA-graph median time (do_bench, L2 flushed) or a ratio of two,
except the eager row (single-call latencies).

Usage: python analysis/decode_v3_targets.py [--results DIR] [--no-before]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sdpa_baseline import SDPA_BACKEND_SLACK, fastest_sdpa_baseline  # noqa: E402

H200 = Path(__file__).resolve().parents[1] / "validation" / "results" / "h200"
#: The shipped kernel's target shapes and bf16 kernel tables (one call, at a244945 with
#: HEAD_RANK_MAX_GROUP = 0, the value then shipped).
RESULTS = H200 / "kernels-v5-sort"
TABLES = RESULTS
#: Calls of the same round whose SDPA rows can stand in for a RESULTS row's baseline
#: (:func:`sdpa_baseline.fastest_sdpa_baseline`: only where another call ran a different backend at
#: the same shape more than SDPA_BACKEND_SLACK faster).
SDPA_ALSO = (H200 / "kernels-v5-shipped",)
#: Earlier rounds shown beside it: (column label, targets directory, tables directory).
ROUNDS = (
    ("round 4", H200 / "kernels-v4-rule2", H200 / "kernels-v4-final"),
    ("round 1", H200, H200),
)
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


def _baseline_note(r: dict) -> str:
    """Where a replaced SDPA baseline came from (:func:`fastest_sdpa_baseline`), else nothing."""
    if "sdpa_this_call_s" not in r:
        return ""
    return (
        f"; SDPA {r['sdpa_backend']} {r['sdpa_graph_s'] * 1e6:.1f} us from another call, "
        f"this call's trial picked {r['sdpa_this_call_backend']} at {r['sdpa_this_call_s'] * 1e6:.1f} us"
    )


def _target_rows(
    results: Path, tables_dir: Path | None = None, sdpa_also: tuple[Path, ...] = ()
) -> list[str]:
    """One Markdown row ``| target | threshold | measured | verdict |`` per target (the random
    shapes' row from ``tables_dir``, by default ``results``); SDPA baselines from ``results`` and
    ``sdpa_also`` (:func:`fastest_sdpa_baseline`)."""
    rows = [r for r in _rows(results / "decode_v3_targets.jsonl") if "aqua_graph_s" in r]
    rows = fastest_sdpa_baseline(rows, [_rows(p / "decode_v3_targets.jsonl") for p in sdpa_also])
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
            f"{frac:.3f} ({r['speedup_graph']:.3f}x of {r['byte_ceiling']:.3f}x{_baseline_note(r)}) | "
            f"{_verdict(frac >= B1_CEILING_MIN)} |"
        )
    table_rows = fastest_sdpa_baseline(
        _rows((tables_dir or results) / "decode_v3_tables.jsonl"),
        [_rows(p / "decode_v3_tables.jsonl") for p in sdpa_also],
    )
    tables = [
        r
        for r in table_rows
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


def targets_table(
    results: Path = RESULTS,
    rounds: tuple[tuple[str, Path, Path], ...] = ROUNDS,
    tables: Path | None = TABLES,
) -> str:
    """The targets table of ``results`` (random shapes from ``tables``, None: ``results``), with
    a measured (verdict) column per earlier round of ``rounds``."""
    now = _target_rows(results, tables, SDPA_ALSO if results == RESULTS else ())
    cols = []
    for label, res, tab in rounds:
        old = _target_rows(res, tab)
        if len(old) != len(now):
            raise ValueError(f"{label} ({res}) has {len(old)} target rows, {results} has {len(now)}")
        cols.append(old)
    head = "| target | threshold | measured | verdict |" + "".join(f" {label} |" for label, _, _ in rounds)
    rule = "| --- | --- | --- | --- |" + " --- |" * len(rounds)
    body = []
    for i, row in enumerate(now):
        cells = ""
        for old in cols:
            pcells = old[i].strip("|").split(" | ")
            cells += f" {pcells[2].strip()} ({pcells[3].strip()}) |"
        body.append(row.rstrip() + cells)
    return "\n".join([head, rule, *body]) + "\n" + baseline_footnote(results, tables)


def baseline_footnote(results: Path = RESULTS, tables: Path | None = TABLES) -> str:
    """One line naming every shape of ``results`` whose SDPA baseline came from another call
    (:func:`fastest_sdpa_baseline`; none when ``results`` is not :data:`RESULTS`)."""
    if results != RESULTS:
        return ""
    notes = []
    for name, where in (("targets", results), ("tables", tables or results)):
        rows = _rows(where / f"decode_v3_{name}.jsonl")
        others = [_rows(p / f"decode_v3_{name}.jsonl") for p in SDPA_ALSO]
        for r in fastest_sdpa_baseline(rows, others):
            if "sdpa_this_call_s" in r:
                notes.append(
                    f"{name} B = {r['B']}, {r['hq']} / {r['hkv']} heads, N = {r['N']}, d = {r['d']}, k = {r['k']} "
                    f"{r['selection']}: {r['sdpa_this_call_backend']} {r['sdpa_this_call_s'] * 1e6:.1f} -> "
                    f"{r['sdpa_backend']} {r['sdpa_graph_s'] * 1e6:.1f} us"
                )
    if not notes:
        return ""
    calls = ", ".join(p.name for p in SDPA_ALSO)
    return (
        f"\nSDPA baselines taken from {calls} (a different backend more than "
        f"{SDPA_BACKEND_SLACK:.0%} faster at the same shape): " + "; ".join(notes) + ".\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="targets and tables of one call")
    ap.add_argument("--no-before", action="store_true", help="without the earlier rounds' columns")
    args = ap.parse_args(argv)
    print(targets_table(args.results, () if args.no_before else ROUNDS, args.results), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
