"""Collectives (ring and tree all-reduce, point-to-point) and the interconnect tables of the
hardware files: the closed forms against brute-force simulations of the algorithms, and the
data against its sources and its parser's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from aqua_model import hardware
from aqua_model._datafiles import read_toml, to_toml
from aqua_model.costs import collectives as coll
from aqua_model.costs.symbols import M, alpha, alpha_0, beta, t
from aqua_model.hardware.profile import DATA_DIR


def _ring_all_reduce(values: list[np.ndarray]) -> tuple[list[np.ndarray], int, list[float]]:
    """Run a ring all-reduce (reduce-scatter, then all-gather) on t lists of t chunks; return the
    results, the steps taken and the elements each device sent."""
    n = len(values)
    chunks = [np.array_split(v.astype(float), n) for v in values]
    sent = [0.0] * n
    steps = 0
    for step in range(n - 1):  # reduce-scatter: device i sends chunk (i - step) to device i + 1
        outgoing = [(i, (i - step) % n, chunks[i][(i - step) % n].copy()) for i in range(n)]
        for i, c, data in outgoing:
            chunks[(i + 1) % n][c] = chunks[(i + 1) % n][c] + data
            sent[i] += data.size
        steps += 1
    for step in range(n - 1):  # all-gather: device i forwards its finished chunk (i + 1 - step)
        outgoing = [(i, (i + 1 - step) % n, chunks[i][(i + 1 - step) % n].copy()) for i in range(n)]
        for i, c, data in outgoing:
            chunks[(i + 1) % n][c] = data
            sent[i] += data.size
        steps += 1
    return [np.concatenate(c) for c in chunks], steps, sent


@pytest.mark.parametrize("devices", [2, 3, 4, 8])
def test_ring_closed_form_matches_a_simulated_ring(devices: int) -> None:
    elements = 8 * devices * 5  # divisible by t, so every chunk has M/t elements
    rng = np.random.default_rng(devices)
    values = [rng.standard_normal(elements) for _ in range(devices)]
    out, steps, sent = _ring_all_reduce(values)
    for o in out:  # it is an all-reduce: every device ends with the sum
        np.testing.assert_allclose(o, np.sum(values, axis=0))
    assert steps == int(coll.all_reduce_steps("ring").subs(t, devices))
    per_device = float(coll.all_reduce_sent_bytes("ring").subs({t: devices, M: elements}))
    assert sent == [pytest.approx(per_device)] * devices


def _heap_depth(devices: int) -> int:
    """Links from the root to the deepest node of a complete binary tree of ``devices`` nodes
    (node i's parent is (i - 1) // 2), counted by walking every node up to the root."""
    depth = 0
    for node in range(devices):
        hops = 0
        while node:
            node = (node - 1) // 2
            hops += 1
        depth = max(depth, hops)
    return depth


@pytest.mark.parametrize("devices", [2, 3, 4, 5, 6, 7, 8, 16])
def test_tree_steps_are_twice_the_depth_of_a_complete_binary_tree(devices: int) -> None:
    # reduce up the tree, then broadcast down it: each phase crosses every level once
    assert int(coll.all_reduce_steps("tree").subs(t, devices)) == 2 * _heap_depth(devices)


def test_terms_sum_to_the_time_and_use_only_named_symbols() -> None:
    for algorithm in coll.ALGORITHMS:
        terms = coll.all_reduce_terms(algorithm)
        assert tuple(terms) == coll.TERMS
        assert sp.simplify(sp.Add(*terms.values()) - coll.all_reduce_time(algorithm)) == 0
        assert coll.all_reduce_time(algorithm).free_symbols <= {t, M, alpha, alpha_0, beta}
    assert coll.point_to_point_time() == alpha_0 + alpha + M / beta


def test_numeric_all_reduce_is_zero_on_one_device_and_matches_the_closed_form() -> None:
    kw = dict(message_bytes=2.0**20, bandwidth_bytes_per_s=360e9, step_latency_s=0.5e-6, fixed_latency_s=4e-6)
    got = coll.all_reduce_s(algorithm="ring", devices=np.array([1, 2, 8]), **kw)
    assert got[0] == 0.0
    # t = 8 by hand: 4 us + 2*7*0.5 us + 2*7/8 * 2^20 B / 360e9 B/s
    assert got[2] == pytest.approx(4e-6 + 7e-6 + 1.75 * 2.0**20 / 360e9)
    # t = 8 tree: 4 us + 2*3*0.5 us + 2 * 2^20 B / 360e9 B/s
    assert float(coll.all_reduce_s(algorithm="tree", devices=8, **kw)) == pytest.approx(
        4e-6 + 3e-6 + 2 * 2.0**20 / 360e9
    )
    p2p = float(coll.point_to_point_s(**kw))
    assert p2p == pytest.approx(4e-6 + 0.5e-6 + 2.0**20 / 360e9)


def test_tree_wins_small_messages_and_ring_wins_large_ones() -> None:
    # t = 8: ring - tree = (14 - 6) alpha - (2 - 1.75) M / beta, zero at M* = 32 alpha beta
    kw = dict(devices=8, bandwidth_bytes_per_s=400e9, step_latency_s=1e-6, fixed_latency_s=0.0)
    crossover = 32 * 1e-6 * 400e9
    small = dict(kw, message_bytes=crossover / 4)
    large = dict(kw, message_bytes=crossover * 4)
    assert float(coll.all_reduce_s(algorithm="tree", **small)) < float(
        coll.all_reduce_s(algorithm="ring", **small)
    )
    assert float(coll.all_reduce_s(algorithm="ring", **large)) < float(
        coll.all_reduce_s(algorithm="tree", **large)
    )


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ({"algorithm": "butterfly"}, "algorithm must be one of"),
        ({"devices": 0}, "devices must be >= 1"),
        ({"message_bytes": -1.0}, "message_bytes must be finite and >= 0"),
        ({"bandwidth_bytes_per_s": 0.0}, "bandwidth_bytes_per_s must be finite and > 0"),
        ({"step_latency_s": float("nan")}, "step_latency_s must be finite"),
    ],
)
def test_bad_collective_input_is_named(bad: dict, fragment: str) -> None:
    kw = dict(
        algorithm="ring",
        devices=2,
        message_bytes=1.0,
        bandwidth_bytes_per_s=1e9,
        step_latency_s=0.0,
        fixed_latency_s=0.0,
    )
    with pytest.raises(ValueError, match=fragment):
        coll.all_reduce_s(**{**kw, **bad})


# -- the interconnect as data -------------------------------------------------------------------


@pytest.mark.parametrize("key", hardware.list_devices())
def test_every_shipped_device_has_a_sourced_interconnect(key: str) -> None:
    ic = hardware.load(key).interconnect
    assert ic is not None and ic.kind in ("nvlink", "infinity-fabric", "pcie", "shared-memory")
    assert ic.devices_per_node >= 1 and 0 < ic.efficiency <= 1
    for q in ic.quantities.values():
        assert q.source.startswith(("https://", "assumption:", "derived:", "measured:"))
    assert ic.achieved_bandwidth_bytes_per_s == pytest.approx(ic.link_bandwidth_bytes_per_s * ic.efficiency)


def test_parts_without_nvlink_use_pcie_at_its_per_direction_rate() -> None:
    for key in ("l40s", "rtx-4090"):
        ic = hardware.load(key).interconnect
        # PCIe Gen4 x16: 64 GB/s both directions together, 32 GB/s each way
        assert ic.kind == "pcie" and ic.link_bandwidth_bytes_per_s == 32e9
    # NVLink 4: 900 GB/s per GPU both ways together (NVIDIA's H100/H200 pages): 450 each way
    assert hardware.load("h200").interconnect.link_bandwidth_bytes_per_s == 450e9
    assert hardware.load("h200").interconnect.kind == "nvlink"


def _with_interconnect(tmp_path: Path, table: dict) -> Path:
    raw = read_toml(DATA_DIR / "h200-sxm.toml")
    raw["interconnect"] = table
    path = tmp_path / "device.toml"
    path.write_text(to_toml(raw))
    return path


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"kind": "infiniband"}, "interconnect.kind' must be one of"),
        ({"extra": 1}, "unknown field"),
        (
            {"efficiency": {"value": 1.5, "unit": "fraction", "source": "assumption: x"}},
            "efficiency' must be in",
        ),
        ({"devices_per_node": {"value": 2.5, "unit": "count", "source": "assumption: x"}}, "whole number"),
        ({"step_latency_s": {"value": 1, "unit": "GB/s", "source": "assumption: x"}}, "has unit 'GB/s'"),
        ({"fixed_latency_s": {"value": 1, "unit": "us", "source": "a blog"}}, "a source must start with"),
    ],
)
def test_bad_interconnect_table_is_reported(tmp_path: Path, change: dict, fragment: str) -> None:
    table = dict(read_toml(DATA_DIR / "h200-sxm.toml")["interconnect"])
    table.update(change)
    with pytest.raises(ValueError, match=fragment):
        hardware.load(_with_interconnect(tmp_path, table))


def test_missing_interconnect_field_is_named(tmp_path: Path) -> None:
    table = dict(read_toml(DATA_DIR / "h200-sxm.toml")["interconnect"])
    del table["step_latency_s"]
    with pytest.raises(ValueError, match="interconnect.step_latency_s"):
        hardware.load(_with_interconnect(tmp_path, table))


def test_profile_without_interconnect_still_loads(tmp_path: Path) -> None:
    raw = read_toml(DATA_DIR / "h200-sxm.toml")
    del raw["interconnect"]
    path = tmp_path / "bare.toml"
    path.write_text(to_toml(raw))
    assert hardware.load(path).interconnect is None


def test_interconnect_is_shown_and_serialised() -> None:
    gpu = hardware.load("h200")
    assert "interconnect.link_bandwidth_bytes_per_s" in gpu.describe()
    assert gpu.to_dict()["interconnect"]["fields"]["devices_per_node"]["value"] == 8
