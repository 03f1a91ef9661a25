"""docs/kernels.md's Nsight Compute paragraph quotes the committed digest, and the digest is current."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "ncu_decode_v2_digest_readme", ROOT / "analysis" / "ncu_decode_v2_digest.py"
)
dg = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = dg
_spec.loader.exec_module(dg)


def _readme() -> str:
    return " ".join((ROOT / "docs" / "kernels.md").read_text(encoding="utf-8").split())


def _digest():
    return dg.digest(dg.NCU_EXPORT, dg.MANIFEST)


def _case(totals, kind: str, hkv: int, N: int, k: int | None = None, selection: str | None = None) -> dict:
    (t,) = [
        t
        for t in totals
        if t["kind"] == kind
        and t["hkv"] == hkv
        and t["N"] == N
        and (kind == "sdpa" or (t["k"] == k and t["selection"] == selection))
    ]
    return t


def _pct(t: dict) -> str:
    return f"{t['stream_dram_pct']:.1f}%"


def _fixed_us(t: dict) -> str:  # prologue + combine: the case's time outside the split pass
    return f"{(t['duration_ns'] - t['stream_duration_ns']) / 1e3:.1f}"


def test_committed_digest_files_are_what_the_digest_writes(tmp_path):
    out_csv, out_md = tmp_path / "d.csv", tmp_path / "d.md"
    dg.main(["--out-csv", str(out_csv), "--out-md", str(out_md)])
    assert out_csv.read_bytes() == dg.OUT_CSV.read_bytes(), "run python analysis/ncu_decode_v2_digest.py"
    assert out_md.read_bytes() == dg.OUT_MD.read_bytes(), "run python analysis/ncu_decode_v2_digest.py"


def test_readme_quotes_the_useful_over_read_range():
    rows, _ = _digest()
    ratios = [r["useful_over_dram_read"] for r in rows if "_split_kernel" in str(r["kernel"])]
    assert len(ratios) == 12  # one split pass per AQUA case
    assert f"(useful / read {min(ratios):.3f}–{max(ratios):.3f} on every row)" in _readme()


def test_readme_quotes_the_mha_k96_rows():
    _, tot = _digest()
    text = _readme()
    a16, a64 = _case(tot, "aqua", 32, 16384, 96, "per-head"), _case(tot, "aqua", 32, 65536, 96, "per-head")
    s16, s64 = _case(tot, "sdpa", 32, 16384), _case(tot, "sdpa", 32, 65536)
    assert (
        f"its split pass streams at {_pct(a16)} and {_pct(a64)} of peak DRAM throughput at N = 16K and 64K "
        f"(SDPA: {_pct(s16)} and {_pct(s64)})"
    ) in text
    assert (
        f"with {a16['stream_registers']:.0f} registers per thread and {a16['stream_occupancy_pct']:.1f}% achieved "
        f"occupancy (SDPA: {s16['stream_registers']:.0f}, {s16['stream_occupancy_pct']:.1f}%)"
    ) in text
    assert a64["stream_registers"] == a16["stream_registers"]  # one compiled split kernel for both contexts
    assert (
        f"the prologue and combine add {_fixed_us(a16)} µs, so SDPA's time over the three kernels' is "
        f"{a16['sdpa_over_this_duration']:.3f}x and {a64['sdpa_over_this_duration']:.3f}x (ceiling 1.143)"
    ) in text


def test_readme_quotes_the_gqa_rows():
    _, tot = _digest()
    text = _readme()
    g96, g32 = _case(tot, "aqua", 8, 16384, 96, "group"), _case(tot, "aqua", 8, 16384, 32, "group")
    s16 = _case(tot, "sdpa", 8, 16384)
    h96, h32 = _case(tot, "aqua", 8, 65536, 96, "group"), _case(tot, "aqua", 8, 65536, 32, "group")
    assert (
        f"split pass reaches only {_pct(g96)} (k = 96) and {_pct(g32)} (k = 32) of peak against SDPA's "
        f"{_pct(s16)}"
    ) in text
    assert (
        f"prologue and combine add {_fixed_us(g96)} and {_fixed_us(g32)} µs to calls of "
        f"{g96['duration_ns'] / 1e3:.1f} and {g32['duration_ns'] / 1e3:.1f} µs (SDPA's time over theirs: "
        f"{g96['sdpa_over_this_duration']:.3f}x and {g32['sdpa_over_this_duration']:.3f}x)"
    ) in text
    assert f"at 64K the split pass streams at {_pct(h96)} and {_pct(h32)}" in text
    # the claim "16K shortfall": both group rows stream below SDPA at 16K and closer to it at 64K
    assert g96["stream_dram_pct"] < s16["stream_dram_pct"] and g32["stream_dram_pct"] < s16["stream_dram_pct"]
    assert h96["stream_dram_pct"] > g96["stream_dram_pct"] and h32["stream_dram_pct"] > g32["stream_dram_pct"]
