"""Issue 12, second round: the split pass's per-program fill (pipeline fill and drain) as a
calibrated term: it vanishes at fill 0, grows with the splits, and its micro-benchmark fit
recovers a known synthetic fill."""

import math
from pathlib import Path

import numpy as np
import pytest

from aqua_model._datafiles import to_toml
from aqua_model.costs import Sizes
from aqua_model.costs.split_rule import launch_rule, split_count, split_programs
from aqua_model.hardware import load
from aqua_model.hardware.calibrated_terms import split_fill_s
from aqua_model.plans import build_plan
from aqua_model.simulator.roofline import kernel_time
from aqua_model.validate.streams import fit_split_fill

ROOT = Path(__file__).resolve().parents[1]
SM = 132


def _profile(tmp_path, fill_s):
    """A calibrated H200 profile with one triton-split table (efficiency 0.5 at 1 program per SM,
    0.8 at 8; latency 3 us) and the given fill."""
    from aqua_model._datafiles import read_toml

    doc = read_toml(ROOT / "aqua_model" / "hardware" / "data" / "h200-sxm.toml")
    doc["mode"] = "calibrated"
    table = {
        "stream": "triton-split",
        "d": 128,
        "gqa": True,
        "rows": 32,
        "x": "programs_per_sm",
        "y": "efficiency",
        "latency_s": 3e-6,
        "points": [[1.0, 0.5], [8.0, 0.8]],
        "source": "measured: test",
    }
    if fill_s:
        table.update(fill_s=fill_s, fill_source="measured: test")
    doc["calibration"] = {
        "device": "test",
        "driver": "x",
        "torch": "x",
        "triton": "x",
        "date": "2026-12-01",
        "method": "test",
        "identity": "test",
        "base": "h200-sxm",
        "graph_launch_s": 4e-6,
        "graph_gap_s": 0.5e-6,
        "tiny_kernel_s": 1e-6,
        "sm_count": SM,
        "stream": [table],
    }
    path = tmp_path / f"cal-{fill_s}.toml"
    path.write_text(to_toml(doc))
    return load(path)


def _attention_s(prof, **shape):
    attention = next(k for k in build_plan("aqua-fused").kernels if k.name == "attention")
    return float(kernel_time(attention, prof, Sizes(heads_q=16, heads_kv=4, d=128, k=32, **shape)).time_s)


def test_split_fill_vanishes_at_zero_and_counts_programs_after_each_sms_first():
    assert np.all(split_fill_s(np.array([1, 132, 133, 1056]), SM, 0.0) == 0.0)
    # ceil(p / 132) - 1 programs after each SM's first: 0, 0, 1 (133 needs a second), 7 (1056 = 8 x 132)
    assert split_fill_s(np.array([1, 132, 133, 1056]), SM, 2e-6) == pytest.approx([0.0, 0.0, 2e-6, 14e-6])
    for bad in (-1e-6, math.nan):
        with pytest.raises(ValueError, match="fill_s"):
            split_fill_s(10, SM, bad)
    with pytest.raises(ValueError, match="sm_count"):
        split_fill_s(10, 0, 1e-6)


def test_fill_adds_one_fill_per_program_after_each_sms_first(tmp_path):
    none, fill = _profile(tmp_path, 0.0), _profile(tmp_path, 1.5e-6)
    # the one-launch rule (issue 22): B=1024, H_kv=4, N=65536: 64-token blocks, 1024 blocks; splits =
    # max(1, min(floor(1.5 * 132 / 4096) = 0, 512)) = 1: 4096 programs, ceil(4096 / 132) = 32 per SM,
    # 31 after each SM's first
    assert launch_rule(32)[0] == 64
    progs = int(split_programs(batch=1024, heads_kv=4, context=65536, rows=32, d=128, sm_count=SM))
    assert progs == 4096 * int(split_count(programs=4096, context=65536, block_n=64, sm_count=SM)[0]) == 4096
    base = _attention_s(none, context=65536, batch=1024)
    assert _attention_s(fill, context=65536, batch=1024) == pytest.approx(base + 31 * 1.5e-6)
    # the datasheet profile has no calibrated terms: unchanged by construction
    ds = load("h200-sxm")
    assert ds.terms.streams == ()


def test_split_fill_grows_with_the_splits(tmp_path):
    fill, nofill = _profile(tmp_path, 1.5e-6), _profile(tmp_path, 0.0)
    # the same N = 65536 (1024 blocks of 64) over more KV units: B = 1, 64, 128 of 4 KV heads. Splits
    # max(1, floor(1.5 * 132 / units)): 49 (chunk ceil(1024 / 49) = 21 blocks -> 49 splits, 196 programs,
    # 2 per SM), 1 (256 programs, 2 per SM), 1 (512, 4 per SM): 1, 1 and 3 fills
    added = [
        _attention_s(fill, context=65536, batch=b) - _attention_s(nofill, context=65536, batch=b)
        for b in (1, 64, 128)
    ]
    assert added == pytest.approx([1 * 1.5e-6, 1 * 1.5e-6, 3 * 1.5e-6])


def test_fit_recovers_a_known_synthetic_fill():
    rng = np.random.default_rng(3)
    bw_bytes_per_s, latency_s, fill_s = 4.8e12, 3e-6, 0.8e-6
    eff = {0.5: 0.3, 1: 0.55, 2: 0.7, 4: 0.8, 8: 0.78, 16: 0.74}  # occupancy: one rate per program count
    points, exact = [], []
    for n in (16384, 65536, 262144):
        nbytes = 4 * n * 2 * (32 + 128)  # 4 KV heads, bf16, 32 key rows + 128 value coordinates per token
        for x, e in eff.items():
            programs = int(x * SM)
            t = latency_s + nbytes / (bw_bytes_per_s * e) + (math.ceil(programs / SM) - 1) * fill_s
            exact.append((float(nbytes), float(programs), t))
            points.append((float(nbytes), float(programs), t * (1 + 0.002 * rng.standard_normal())))
    assert fit_split_fill(points, latency_s=latency_s, sm_count=SM) == pytest.approx(fill_s, rel=0.1)
    # without noise: exact; with one size per program count fill and rate cannot be told apart: 0
    assert fit_split_fill(exact, latency_s=latency_s, sm_count=SM) == pytest.approx(fill_s, rel=1e-6)
    assert fit_split_fill([p for p in exact if p[0] == exact[0][0]], latency_s=latency_s, sm_count=SM) == 0.0
    with pytest.raises(ValueError, match="points"):
        fit_split_fill([(0.0, 132.0, 1e-6)], latency_s=0.0, sm_count=SM)


def test_profile_rejects_a_fill_on_another_table_or_without_its_source(tmp_path):
    from aqua_model.hardware.calibrated_terms import parse

    base = {
        "stream": "triton-split",
        "d": 128,
        "rows": 32,
        "x": "programs_per_sm",
        "y": "efficiency",
        "latency_s": 0.0,
        "points": [[1.0, 0.5]],
        "source": "measured: test",
    }
    assert (
        parse({"sm_count": SM, "stream": [dict(base, fill_s=1e-6, fill_source="measured: x")]}, "t")
        .streams[0]
        .fill_s
        == 1e-6
    )
    with pytest.raises(ValueError, match="fill_s"):
        parse(
            {
                "sm_count": SM,
                "stream": [
                    dict(base, stream="triton-combine", y="s", fill_s=1e-6, fill_source="measured: x")
                ],
            },
            "t",
        )
    with pytest.raises(ValueError, match="fill_source"):
        parse({"sm_count": SM, "stream": [dict(base, fill_s=1e-6)]}, "t")
