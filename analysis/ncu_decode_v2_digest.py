"""Digest of the Nsight Compute run of the decode kernels (issue 15 item 5; the one-launch kernel).

Reads ncu's raw-page CSV (``ncu --import REP --csv --page raw --print-units base``) of
``validation/ncu_decode_v2.py`` and that script's manifest (one JSON line per profiled case, in
launch order), matches ncu's rows to the cases by launch order (an AQUA case is exactly the
launches its ``expected_kernels`` names: the three of the prologue, split pass and combine, or the
one-launch kernel; a manifest row of an AQUA case without them is the three-launch path; an SDPA
case every launch up to the first launch of the next AQUA case's first expected kernel) and writes:

- ``validation/results/h200/decode_v2_ncu.csv``: one row per profiled kernel, the metrics asked
  for (``METRICS``) in base units, with its case;
- ``analysis/results/decode_kernels_v2_ncu.md``: per case and kernel the duration, DRAM bytes read,
  DRAM throughput as % of peak, achieved occupancy, registers per thread and active warps per SM;
  for the streaming kernel (the split pass, or the one-launch kernel; and SDPA) the useful bytes
  against the DRAM bytes read; per AQUA case the sum of its kernels' durations against SDPA's at
  the same (B, H_kv, N).

Usage: python analysis/ncu_decode_v2_digest.py [--ncu CSV] [--manifest JSONL] [--out-csv ...] [--out-md ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"
NCU_EXPORT = H200 / "decode_v2_ncu_export.csv"
MANIFEST = H200 / "decode_v2_ncu_manifest.jsonl"
OUT_CSV = H200 / "decode_v2_ncu.csv"
OUT_MD = ROOT / "analysis" / "results" / "decode_kernels_v2_ncu.md"

#: ncu metric -> column of the digest's CSV (the column's unit in its name).
METRICS: dict[str, str] = {
    "gpu__time_duration.sum": "duration_ns",
    "dram__bytes_read.sum": "dram_bytes_read",
    "dram__bytes_write.sum": "dram_bytes_write",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram_throughput_pct_of_peak",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "achieved_occupancy_pct",
    "sm__warps_active.avg.per_cycle_active": "warps_active_per_sm",
    "sm__maximum_warps_per_active_cycle_pct": "theoretical_occupancy_pct",
    "launch__registers_per_thread": "registers_per_thread",
    "launch__grid_size": "grid_blocks",
    "launch__block_size": "block_threads",
    "launch__waves_per_multiprocessor": "waves_per_sm",
    "launch__occupancy_limit_registers": "block_limit_registers",
    "launch__occupancy_limit_shared_mem": "block_limit_smem",
    "launch__shared_mem_per_block_dynamic": "dynamic_smem_per_block_bytes",
}
#: The three-launch path's kernels (prologue, split pass, combine): what an AQUA row of a manifest
#: without ``expected_kernels`` launched (``aqua_model.kernels.triton_decode.KERNELS``).
THREE_LAUNCH = ("_prologue_kernel", "_split_kernel", "_combine_kernel")
#: The one-launch path's kernel (``aqua_model.kernels.triton_decode.FUSED_KERNELS``).
ONE_LAUNCH = ("_fused_kernel",)
#: Kernel names that stream K and V in an AQUA case, in the order they are looked for among a
#: case's expected kernels: the split pass (three launches) or the one-launch kernel.
STREAMING_KERNELS = ("_split_kernel", "_fused_kernel")
#: Unit -> factor to the base unit (ns for time, bytes for sizes; ncu's prefixes are decimal).
_UNIT_FACTORS = {
    "": 1.0,
    "ns": 1.0,
    "nsecond": 1.0,
    "usecond": 1e3,
    "us": 1e3,
    "msecond": 1e6,
    "ms": 1e6,
    "second": 1e9,
    "s": 1e9,
    "byte": 1.0,
    "bytes": 1.0,
    "byte/block": 1.0,
    "kbyte": 1e3,
    "mbyte": 1e6,
    "gbyte": 1e9,
    "tbyte": 1e12,
    "%": 1.0,
    "register/thread": 1.0,
    "warp": 1.0,
    "block": 1.0,
    "thread": 1.0,
}
CASE_COLUMNS = ("order", "label", "kind", "B", "hq", "hkv", "N", "d", "k", "selection")


def _number(text: str, unit: str) -> float | None:
    s = text.strip().replace(",", "")
    if s in ("", "n/a", "N/A"):
        return None
    value = float(s)
    u = unit.strip()
    factor = _UNIT_FACTORS.get(u.lower(), _UNIT_FACTORS.get(u))
    if factor is None:
        raise ValueError(
            f"ncu unit {unit!r} is not one this digest converts (known: {sorted(_UNIT_FACTORS)})"
        )
    return value * factor


def read_ncu_csv(path: Path | str) -> list[dict[str, object]]:
    """ncu's raw-page CSV -> one dict per profiled kernel (launch order): id, kernel, the
    ``METRICS`` columns in base units (None where ncu gave none). A units row (ID empty) is used
    to convert; lines before the header (ncu's ==PROF== messages) are skipped."""
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"ID"')), None)
    if start is None:
        raise ValueError(f'ncu CSV {path}: no header line starting with "ID"')
    table = list(csv.reader(lines[start:]))
    header, body = table[0], table[1:]
    units: dict[str, str] = {}
    if body and not body[0][0].strip():
        units = dict(zip(header, body[0]))
        body = body[1:]
    name_col = next((c for c in ("Kernel Name", "Function Name", "Demangled Name") if c in header), None)
    if name_col is None or "gpu__time_duration.sum" not in header:
        raise ValueError(
            f"ncu CSV {path}: a kernel-name column or gpu__time_duration.sum missing (columns {header[:12]}...)"
        )
    out = []
    for cells in body:
        rec = dict(zip(header, cells))
        row: dict[str, object] = {"ncu_id": int(rec["ID"]), "kernel": rec[name_col]}
        for metric, col in METRICS.items():
            row[col] = _number(rec[metric], units.get(metric, "")) if metric in rec else None
        out.append(row)
    out.sort(key=lambda r: r["ncu_id"])
    return out


def read_manifest(path: Path | str) -> list[dict[str, object]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(ln) for ln in fh if ln.strip()]


def expected_kernels(case: dict[str, object]) -> list[str] | None:
    """The kernel names an AQUA case launched, in order (a manifest row without them: the
    three-launch path); None for an SDPA case (its launches are cuDNN's, not known ahead)."""
    expected = case.get("expected_kernels")
    if isinstance(expected, (list, tuple)) and expected:
        return [str(e) for e in expected]
    return list(THREE_LAUNCH) if case.get("kind") == "aqua" else None


def streaming_kernel(expected: list[str]) -> str:
    """The name, among an AQUA case's expected kernels, of the one that streams K and V."""
    name = next((s for s in STREAMING_KERNELS if s in expected), None)
    if name is None:
        raise ValueError(f"expected kernels {expected} name no streaming kernel (one of {STREAMING_KERNELS})")
    return name


def match(kernels: list[dict[str, object]], manifest: list[dict[str, object]]) -> list[dict[str, object]]:
    """ncu rows -> digest rows (each with its case's columns), matched by launch order: an AQUA
    case consumes exactly its expected kernels; an SDPA case every launch up to the first launch
    of the next AQUA case's first expected kernel (to the end when no AQUA case follows)."""
    out: list[dict[str, object]] = []
    i = 0
    plan = [expected_kernels(case) for case in manifest]
    for ci, case in enumerate(manifest):
        expected = plan[ci]
        stream_name = None
        if expected:
            stream_name = streaming_kernel(expected)
            got = kernels[i : i + len(expected)]
            names = [str(r["kernel"]) for r in got]
            if len(got) != len(expected) or any(e not in n for e, n in zip(expected, names)):
                raise ValueError(
                    f"case {case['order']} ({case['label']}): expected kernels {expected} at ncu rows "
                    f"{i}..{i + len(expected) - 1}, got {names}"
                )
            i += len(expected)
        else:
            stop = next((e[0] for e in plan[ci + 1 :] if e), None)  # the next AQUA case's first kernel
            j = i
            while j < len(kernels) and (stop is None or stop not in str(kernels[j]["kernel"])):
                j += 1
            got = kernels[i:j]
            if not got:
                raise ValueError(f"case {case['order']} ({case['label']}): no launches in ncu's rows at {i}")
            i = j
        main = max(got, key=lambda r: r["dram_bytes_read"] or 0.0)  # the one that streams K and V
        for r in got:
            row = {c: case.get(c) for c in CASE_COLUMNS}
            row.update(r)
            row["expected_kernels"] = tuple(expected) if expected else None  # not a CSV column
            streams = r is main if stream_name is None else stream_name in str(r["kernel"])
            row["useful_bytes"] = case["useful_bytes"] if streams else None
            rb = r["dram_bytes_read"]
            row["useful_over_dram_read"] = case["useful_bytes"] / rb if streams and rb else None
            dur = r["duration_ns"]
            row["dram_read_bytes_per_s"] = rb / (dur * 1e-9) if rb is not None and dur else None
            out.append(row)
    if i != len(kernels):
        raise ValueError(
            f"{len(kernels) - i} ncu rows left over after the {len(manifest)} cases (from row {i})"
        )
    return out


def case_totals(rows: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    """Per case: the summed duration of its kernels, the streaming kernel's figures, and (AQUA)
    the ratio SDPA duration / AQUA duration at the same (B, H_kv, N)."""
    by_case: dict[int, list[dict[str, object]]] = {}
    for r in rows:
        by_case.setdefault(int(r["order"]), []).append(r)
    totals = []
    for order in sorted(by_case):
        ks = by_case[order]
        stream = next(r for r in ks if r["useful_bytes"] is not None)
        t = {c: ks[0][c] for c in CASE_COLUMNS}
        t.update(
            expected_kernels=ks[0].get("expected_kernels"),
            duration_ns=sum(float(r["duration_ns"]) for r in ks),
            stream_kernel=stream["kernel"],
            stream_duration_ns=stream["duration_ns"],
            stream_dram_pct=stream["dram_throughput_pct_of_peak"],
            stream_dram_bytes_read=stream["dram_bytes_read"],
            useful_bytes=stream["useful_bytes"],
            useful_over_dram_read=stream["useful_over_dram_read"],
            stream_occupancy_pct=stream["achieved_occupancy_pct"],
            stream_registers=stream["registers_per_thread"],
        )
        totals.append(t)
    sdpa = {(t["B"], t["hkv"], t["N"]): t["duration_ns"] for t in totals if t["kind"] == "sdpa"}
    for t in totals:
        ref = sdpa.get((t["B"], t["hkv"], t["N"]))
        t["sdpa_over_this_duration"] = ref / t["duration_ns"] if t["kind"] == "aqua" and ref else None
    return totals


def _f(x: object, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _name(kernel: object) -> str:
    s = str(kernel)
    return s if len(s) <= 40 else s[:37] + "..."


def _paths_text(totals: list[dict[str, object]]) -> tuple[str, str]:
    """(title's kernel, the useful-bytes sentence's AQUA part) for the paths the AQUA cases ran:
    the committed v2 digest's words when every one ran the three launches (or there is none)."""
    paths = {t.get("expected_kernels") or THREE_LAUNCH for t in totals if t["kind"] == "aqua"}
    three = "the split pass the key rows it reads (the prologue's union count) x N x 2 bytes plus all of V"
    one = (
        "the one-launch kernel (`_fused_kernel`: selection, split pass and merge in one launch) the key "
        "rows it reads (its union count, `last_launcher().cnt`) x N x 2 bytes plus all of V"
    )
    if paths <= {THREE_LAUNCH}:
        return "second decode kernel", three
    if paths == {ONE_LAUNCH}:
        return "one-launch decode kernel", one
    return "decode kernels", f"{three}; {one}"


def render_md(rows: list[dict[str, object]], totals: list[dict[str, object]], *, source: str) -> str:
    title, useful = _paths_text(totals)
    lines = [
        f"# Nsight Compute digest of the {title} (H200)",
        "",
        f"From `{source}` (`validation/ncu_decode_v2.py` under ncu, `--clock-control none`, caches flushed "
        "before each replay: cold-L2 figures) by `analysis/ncu_decode_v2_digest.py`. bf16, random inputs, "
        f"one profiled launch per kernel. Useful bytes: SDPA all of K and V; {useful}. DRAM % is "
        "dram__throughput.avg.pct_of_peak_sustained_elapsed; occupancy is achieved "
        "(sm__warps_active.avg.pct_of_peak_sustained_active), warps/SM the achieved active warps per SM.",
        "",
        "## Per case",
        "",
        "| case | total us | streaming kernel us | DRAM % peak | useful / DRAM read | occupancy % | regs | SDPA us / this us |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in totals:
        lines.append(
            f"| {t['label']} | {_f(t['duration_ns'] / 1e3, '.1f')} | {_f(t['stream_duration_ns'] / 1e3, '.1f')} "
            f"| {_f(t['stream_dram_pct'], '.1f')} | {_f(t['useful_over_dram_read'], '.3f')} "
            f"| {_f(t['stream_occupancy_pct'], '.1f')} | {_f(t['stream_registers'], '.0f')} "
            f"| {_f(t['sdpa_over_this_duration'], '.3f')} |"
        )
    lines += [
        "",
        "## Per kernel",
        "",
        "| case | kernel | grid | us | DRAM read MB | DRAM read TB/s | DRAM % peak | occupancy % | warps/SM | regs "
        "| useful MB | useful / DRAM read |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        dr = r["dram_bytes_read"]
        lines.append(
            f"| {r['label']} | {_name(r['kernel'])} | {_f(r['grid_blocks'], '.0f')} | {_f(r['duration_ns'] / 1e3, '.1f')} "
            f"| {_f(None if dr is None else dr / 1e6, '.1f')} "
            f"| {_f(None if r['dram_read_bytes_per_s'] is None else r['dram_read_bytes_per_s'] / 1e12, '.2f')} "
            f"| {_f(r['dram_throughput_pct_of_peak'], '.1f')} | {_f(r['achieved_occupancy_pct'], '.1f')} "
            f"| {_f(r['warps_active_per_sm'], '.1f')} | {_f(r['registers_per_thread'], '.0f')} "
            f"| {_f(None if r['useful_bytes'] is None else r['useful_bytes'] / 1e6, '.1f')} "
            f"| {_f(r['useful_over_dram_read'], '.3f')} |"
        )
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, object]], path: Path | str) -> None:
    cols = [
        *CASE_COLUMNS,
        "ncu_id",
        "kernel",
        *METRICS.values(),
        "dram_read_bytes_per_s",
        "useful_bytes",
        "useful_over_dram_read",
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})


def digest(
    ncu_csv: Path | str, manifest: Path | str
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(per-kernel rows, per-case totals) of one ncu CSV and its manifest."""
    rows = match(read_ncu_csv(ncu_csv), read_manifest(manifest))
    return rows, case_totals(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ncu", default=str(NCU_EXPORT))
    ap.add_argument("--manifest", default=str(MANIFEST))
    ap.add_argument("--out-csv", default=str(OUT_CSV))
    ap.add_argument("--out-md", default=str(OUT_MD))
    ap.add_argument(
        "--print-metrics", action="store_true", help="print METRICS comma-separated (for ncu --metrics)"
    )
    args = ap.parse_args(argv)
    if args.print_metrics:
        print(",".join(METRICS))
        return 0
    rows, totals = digest(args.ncu, args.manifest)
    write_csv(rows, args.out_csv)
    try:
        source = str(Path(args.ncu).resolve().relative_to(ROOT))
    except ValueError:
        source = Path(args.ncu).name
    Path(args.out_md).write_text(render_md(rows, totals, source=source), encoding="utf-8")
    print(f"{len(rows)} kernels of {len(totals)} cases -> {args.out_csv}, {args.out_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
