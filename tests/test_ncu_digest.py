"""The Nsight Compute digest on a small synthetic ncu CSV, and the ncu runner's CPU path."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, rel: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


dg = _load("ncu_decode_v2_digest", "analysis/ncu_decode_v2_digest.py")

# Synthetic ncu raw page: one SDPA launch, then the three AQUA launches. Units row in scaled units
# (usecond, Mbyte) to check the conversion to ns and bytes.
_HEADER = ["ID", "Process ID", "Kernel Name", *dg.METRICS]
_UNITS = [
    "",
    "",
    "",
    "usecond",
    "Mbyte",
    "Mbyte",
    "%",
    "%",
    "warp",
    "%",
    "register/thread",
    "",
    "",
    "",
    "block",
    "block",
    "byte",
]


def _kernel(i: int, name: str, us: float, read_mb: float, pct: float, regs: int) -> list[str]:
    return [
        str(i),
        "1",
        name,
        f"{us}",
        f"{read_mb:,}",
        "1",
        f"{pct}",
        "20",
        "12.5",
        "25",
        str(regs),
        "256",
        "128",
        "1.9",
        "3",
        "2",
        "65,536",
    ]


def _write(tmp: Path, kernels: list[list[str]], manifest: list[dict]) -> tuple[Path, Path]:
    nc, mf = tmp / "ncu.csv", tmp / "m.jsonl"
    with nc.open("w", newline="") as fh:
        fh.write("==PROF== Connected to process 1\n")
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        w.writerow(_HEADER)
        w.writerow(_UNITS)
        for k in kernels:
            w.writerow(k)
    mf.write_text("".join(json.dumps(m) + "\n" for m in manifest))
    return nc, mf


def _case(order: int, kind: str, useful: int) -> dict:
    return {
        "order": order,
        "label": f"{kind} case",
        "kind": kind,
        "B": 1,
        "hq": 4,
        "hkv": 2,
        "N": 1024,
        "d": 128,
        "k": None if kind == "sdpa" else 32,
        "selection": None if kind == "sdpa" else "group",
        "expected_kernels": None
        if kind == "sdpa"
        else ["_prologue_kernel", "_split_kernel", "_combine_kernel"],
        "useful_bytes": useful,
    }


# useful bytes: SDPA 100 MB (read 110 MB: ratio 100/110); AQUA 60 MB against the split's 75 MB.
_KERNELS = [
    _kernel(0, "cudnn_generated_fort_native_sdpa_sm90", 40.0, 110.0, 90.0, 168),
    _kernel(1, "_prologue_kernel", 2.0, 0.5, 1.0, 40),
    _kernel(2, "_split_kernel", 30.0, 75.0, 80.0, 128),
    _kernel(3, "_combine_kernel", 3.0, 1.0, 5.0, 32),
]
_MANIFEST = [_case(0, "sdpa", 100_000_000), _case(1, "aqua", 60_000_000)]


def test_digest_matches_launches_and_converts_units(tmp_path):
    rows, totals = dg.digest(*_write(tmp_path, _KERNELS, _MANIFEST))
    assert [r["kernel"] for r in rows][1:] == ["_prologue_kernel", "_split_kernel", "_combine_kernel"]
    split = rows[2]
    assert split["duration_ns"] == pytest.approx(30_000.0)  # 30 usecond
    assert split["dram_bytes_read"] == pytest.approx(75e6)  # 75 Mbyte, decimal
    assert split["useful_over_dram_read"] == pytest.approx(60 / 75)
    assert split["dram_read_bytes_per_s"] == pytest.approx(75e6 / 30e-6)
    assert split["dynamic_smem_per_block_bytes"] == 65536  # thousands separator stripped
    assert rows[1]["useful_bytes"] is None and rows[3]["useful_bytes"] is None  # only the split pass streams
    assert rows[0]["useful_over_dram_read"] == pytest.approx(100 / 110)
    aqua = totals[1]
    assert aqua["duration_ns"] == pytest.approx((2 + 30 + 3) * 1e3)
    assert aqua["sdpa_over_this_duration"] == pytest.approx(40 / 35)
    assert totals[0]["sdpa_over_this_duration"] is None


def test_digest_writes_csv_and_markdown(tmp_path):
    nc, mf = _write(tmp_path, _KERNELS, _MANIFEST)
    out_csv, out_md = tmp_path / "d.csv", tmp_path / "d.md"
    assert (
        dg.main(["--ncu", str(nc), "--manifest", str(mf), "--out-csv", str(out_csv), "--out-md", str(out_md)])
        == 0
    )
    with out_csv.open(newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == 4 and float(got[2]["useful_over_dram_read"]) == pytest.approx(0.8)
    md = out_md.read_text()
    assert "| aqua case | 35.0 | 30.0 | 80.0 | 0.800 |" in md  # total us, split us, DRAM %, useful / read


def test_digest_refuses_a_launch_order_that_does_not_match(tmp_path):
    swapped = [list(k) for k in _KERNELS]
    swapped[1][2], swapped[2][2] = swapped[2][2], swapped[1][2]  # split launched before the prologue
    with pytest.raises(ValueError, match="expected kernels"):
        dg.digest(*_write(tmp_path, swapped, _MANIFEST))
    with pytest.raises(ValueError, match="left over"):
        dg.digest(*_write(tmp_path, [*_KERNELS, _kernel(4, "_split_kernel", 1.0, 1.0, 1.0, 1)], _MANIFEST))


def test_digest_refuses_an_unknown_unit(tmp_path):
    nc, mf = _write(tmp_path, _KERNELS, _MANIFEST)
    nc.write_text(nc.read_text().replace('"usecond"', '"fortnight"'))
    with pytest.raises(ValueError, match="fortnight"):
        dg.digest(nc, mf)


def test_runner_dry_run_lists_the_cases_in_launch_order(tmp_path):
    nr = _load("ncu_decode_v2", "validation/ncu_decode_v2.py")
    path = tmp_path / "m.jsonl"
    assert nr.main(["--dry-run", "--manifest", str(path), "--dry-run-scale", "512"]) == 0
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    # per (H_kv, N): SDPA, then k = 96 and 32 (MHA per-head; GQA group, then per-head at 32 and 96)
    assert len(rows) == 2 * (1 + 2) + 2 * (1 + 2 + 2)
    seen_sdpa: set[tuple[int, int]] = set()
    for r in rows:
        if r["kind"] == "sdpa":
            seen_sdpa.add((r["hkv"], r["N"]))
            assert r["useful_bytes"] == r["B"] * r["hkv"] * r["N"] * 2 * r["d"] * 2  # K and V, bf16
        else:
            assert (r["hkv"], r["N"]) in seen_sdpa  # its SDPA case came first
            if r["selection"] == "group" or r["g"] == 1:
                assert r["rows_read"] == r["B"] * r["hkv"] * r["k"]
            else:  # the union of g heads' k rows: at least k, at most min(d, g k) per group
                units = r["B"] * r["hkv"]
                assert units * r["k"] <= r["rows_read"] <= units * min(r["d"], r["g"] * r["k"])
            assert r["useful_bytes"] == (r["rows_read"] + r["B"] * r["hkv"] * r["d"]) * r["N"] * 2


def test_runner_refuses_a_bad_scale(tmp_path):
    nr = _load("ncu_decode_v2", "validation/ncu_decode_v2.py")
    with pytest.raises(ValueError, match="dry-run-scale"):
        nr.main(["--dry-run", "--manifest", str(tmp_path / "m.jsonl"), "--dry-run-scale", "0"])
