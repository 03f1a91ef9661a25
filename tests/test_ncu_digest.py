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


def _case(order: int, kind: str, useful: int, expected: list[str] | None = None, **shape) -> dict:
    three = ["_prologue_kernel", "_split_kernel", "_combine_kernel"]
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
        "expected_kernels": None if kind == "sdpa" else (expected or three),
        "useful_bytes": useful,
        **shape,
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


def test_digest_reads_an_old_manifest_without_expected_kernels_as_three_launches(tmp_path):
    old = [{k: v for k, v in m.items() if k != "expected_kernels"} for m in _MANIFEST]
    old_csv, old_md = tmp_path / "old.csv", tmp_path / "old.md"
    new_csv, new_md = tmp_path / "new.csv", tmp_path / "new.md"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    nc, mf = _write(tmp_path / "a", _KERNELS, old)
    dg.main(["--ncu", str(nc), "--manifest", str(mf), "--out-csv", str(old_csv), "--out-md", str(old_md)])
    nc, mf = _write(tmp_path / "b", _KERNELS, _MANIFEST)
    dg.main(["--ncu", str(nc), "--manifest", str(mf), "--out-csv", str(new_csv), "--out-md", str(new_md)])
    assert old_csv.read_bytes() == new_csv.read_bytes() and old_md.read_bytes() == new_md.read_bytes()
    assert "the prologue's union count" in old_md.read_text()


# One-launch path: an SDPA case (two cuDNN launches) then two AQUA cases of one _fused_kernel each;
# a second SDPA shape (B 1) and its AQUA case. Useful bytes: 60 MB against the fused kernel's 75 MB.
_FUSED = ["_fused_kernel"]
_KERNELS_1 = [
    _kernel(0, "cudnn_generated_fort_native_sdpa_sm90", 40.0, 110.0, 90.0, 168),
    _kernel(1, "cudnn_reduction_kernel", 1.0, 0.2, 2.0, 32),
    _kernel(2, "_fused_kernel", 32.0, 75.0, 82.0, 160),
    _kernel(3, "_fused_kernel", 20.0, 50.0, 70.0, 160),
    _kernel(4, "cudnn_generated_fort_native_sdpa_sm90", 10.0, 30.0, 60.0, 168),
    _kernel(5, "_fused_kernel", 8.0, 20.0, 50.0, 160),
]
_MANIFEST_1 = [
    _case(0, "sdpa", 100_000_000),
    _case(1, "aqua", 60_000_000, _FUSED),
    _case(2, "aqua", 40_000_000, _FUSED),
    _case(3, "sdpa", 25_000_000, B=2),
    _case(4, "aqua", 16_000_000, _FUSED, B=2),
]


def test_digest_matches_one_launch_cases_after_sdpa(tmp_path):
    rows, totals = dg.digest(*_write(tmp_path, _KERNELS_1, _MANIFEST_1))
    assert [r["order"] for r in rows] == [0, 0, 1, 2, 3, 4]  # SDPA takes every launch up to _fused_kernel
    fused = rows[2]
    assert fused["kernel"] == "_fused_kernel" and fused["useful_bytes"] == 60_000_000
    assert fused["useful_over_dram_read"] == pytest.approx(60 / 75)  # from the fused row's DRAM read
    assert rows[3]["useful_over_dram_read"] == pytest.approx(40 / 50)
    assert rows[1]["useful_bytes"] is None  # SDPA: only its largest reader streams
    assert [t["stream_kernel"] for t in totals] == [
        "cudnn_generated_fort_native_sdpa_sm90",
        "_fused_kernel",
        "_fused_kernel",
        "cudnn_generated_fort_native_sdpa_sm90",
        "_fused_kernel",
    ]
    assert totals[0]["duration_ns"] == pytest.approx(41e3)  # both cuDNN launches
    assert totals[1]["duration_ns"] == totals[1]["stream_duration_ns"] == pytest.approx(32e3)
    assert totals[1]["sdpa_over_this_duration"] == pytest.approx(41 / 32)
    assert totals[4]["sdpa_over_this_duration"] == pytest.approx(10 / 8)  # against the B 2 SDPA case
    md = dg.render_md(rows, totals, source="ncu.csv")
    assert "one-launch decode kernel" in md and "`_fused_kernel`" in md
    assert "prologue" not in md
    assert "| aqua case | 32.0 | 32.0 | 82.0 | 0.800 |" in md


def test_digest_refuses_a_missing_fused_row(tmp_path):
    missing = [k for k in _KERNELS_1 if k[0] != "3"]  # the second AQUA case's _fused_kernel
    with pytest.raises(ValueError, match=r"case 2 \(aqua case\): expected kernels \['_fused_kernel'\]"):
        dg.digest(*_write(tmp_path, missing, _MANIFEST_1))
    # the first AQUA case's row missing: SDPA stops at the next _fused_kernel, then the cases shift
    with pytest.raises(ValueError, match="expected kernels"):
        dg.digest(*_write(tmp_path, [k for k in _KERNELS_1 if k[0] != "2"], _MANIFEST_1))


def test_digest_refuses_expected_kernels_without_a_streaming_kernel(tmp_path):
    odd = [_MANIFEST_1[0], _case(1, "aqua", 1, ["_other_kernel"])]
    with pytest.raises(ValueError, match="no streaming kernel"):
        dg.digest(*_write(tmp_path, _KERNELS_1[:3], odd))


def test_digest_refuses_an_unknown_unit(tmp_path):
    nc, mf = _write(tmp_path, _KERNELS, _MANIFEST)
    nc.write_text(nc.read_text().replace('"usecond"', '"fortnight"'))
    with pytest.raises(ValueError, match="fortnight"):
        dg.digest(nc, mf)


def _dry_run(tmp_path, *flags: str) -> list[dict]:
    nr = _load("ncu_decode_v2", "validation/ncu_decode_v2.py")
    path = tmp_path / "m.jsonl"
    assert nr.main(["--dry-run", "--manifest", str(path), "--dry-run-scale", "512", *flags]) == 0
    return [json.loads(ln) for ln in path.read_text().splitlines()]


# per (H_kv, N): SDPA, then k = 96 and 32 (MHA per-head; GQA group, then per-head at 32 and 96)
_V2_CASES = 2 * (1 + 2) + 2 * (1 + 2 + 2)


@pytest.mark.parametrize(
    ("flags", "n_cases", "kernels"),
    [
        (
            ("--launches", "3", "--shapes", "v2"),
            _V2_CASES,
            ["_prologue_kernel", "_split_kernel", "_combine_kernel"],
        ),
        (("--launches", "1", "--shapes", "v2"), _V2_CASES, ["_fused_kernel"]),
        (("--launches", "1", "--shapes", "v3"), _V2_CASES + 2 * (1 + 2), ["_fused_kernel"]),
        ((), _V2_CASES + 2 * (1 + 2), ["_fused_kernel"]),  # the defaults: one launch, v3 shapes
        (
            ("--launches", "3", "--shapes", "v3"),
            _V2_CASES + 2 * (1 + 2),
            ["_prologue_kernel", "_split_kernel", "_combine_kernel"],
        ),
    ],
)
def test_runner_dry_run_lists_the_cases_in_launch_order(tmp_path, flags, n_cases, kernels):
    rows = _dry_run(tmp_path, *flags)
    assert len(rows) == n_cases
    assert [r["order"] for r in rows] == list(range(n_cases))
    seen_sdpa: set[tuple[int, int, int]] = set()
    for r in rows:
        if r["kind"] == "sdpa":
            seen_sdpa.add((r["B"], r["hkv"], r["N"]))
            assert r["expected_kernels"] is None
            assert r["useful_bytes"] == r["B"] * r["hkv"] * r["N"] * 2 * r["d"] * 2  # K and V, bf16
        else:
            assert r["expected_kernels"] == kernels and r["launches"] == len(kernels)
            assert (r["B"], r["hkv"], r["N"]) in seen_sdpa  # its SDPA case came first
            if r["selection"] == "group" or r["g"] == 1:
                assert r["rows_read"] == r["B"] * r["hkv"] * r["k"]
            else:  # the union of g heads' k rows: at least k, at most min(d, g k) per group
                units = r["B"] * r["hkv"]
                assert units * r["k"] <= r["rows_read"] <= units * min(r["d"], r["g"] * r["k"])
            assert r["useful_bytes"] == (r["rows_read"] + r["B"] * r["hkv"] * r["d"]) * r["N"] * 2


def test_runner_v3_adds_batch_one_gqa_group_cases(tmp_path):
    v2 = _dry_run(tmp_path, "--launches", "1", "--shapes", "v2")
    v3 = _dry_run(tmp_path, "--launches", "1", "--shapes", "v3")
    shape = ("kind", "B", "hq", "hkv", "N", "d", "k", "selection")
    assert [[r[c] for c in shape] for r in v3[: len(v2)]] == [[r[c] for c in shape] for r in v2]
    extra = [(r["kind"], r["B"], r["hq"], r["hkv"], r["d"], r["k"], r["selection"]) for r in v3[len(v2) :]]
    sdpa, k32, k64 = (
        ("sdpa", 1, 32, 8, 128, None, None),
        ("aqua", 1, 32, 8, 128, 32, "group"),
        ("aqua", 1, 32, 8, 128, 64, "group"),
    )
    assert extra == [sdpa, k32, k64] * 2
    contexts = [r["N"] for r in v3[len(v2) :: 3]]
    assert contexts == [32768 // 512, 65536 // 512]  # N 32K and 64K, scaled down by --dry-run-scale
    assert all(r["rows_read"] == r["hkv"] * r["k"] for r in v3[len(v2) :] if r["kind"] == "aqua")


def test_a_dry_run_manifest_digests_against_synthetic_ncu_rows(tmp_path):
    # the runner's manifest and the digest agree on the launch walk: one row per expected kernel
    rows = _dry_run(tmp_path, "--launches", "1", "--shapes", "v3")
    kernels, i = [], 0
    for r in rows:
        for name in r["expected_kernels"] or ["cudnn_generated_fort_native_sdpa_sm90"]:
            kernels.append(_kernel(i, name, 10.0, 1.0, 50.0, 64))
            i += 1
    (tmp_path / "d").mkdir()
    got, totals = dg.digest(*_write(tmp_path / "d", kernels, rows))
    assert len(got) == len(rows) and len(totals) == len(rows)
    assert {t["stream_kernel"] for t in totals if t["kind"] == "aqua"} == {"_fused_kernel"}


def test_runner_refuses_a_bad_scale(tmp_path):
    nr = _load("ncu_decode_v2", "validation/ncu_decode_v2.py")
    with pytest.raises(ValueError, match="dry-run-scale"):
        nr.main(["--dry-run", "--manifest", str(tmp_path / "m.jsonl"), "--dry-run-scale", "0"])
