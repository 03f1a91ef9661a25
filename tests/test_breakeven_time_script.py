"""Issue 21 item 5: the measured time break-even's search (validation/breakeven_time.py): the
grid then bisection on aligned contexts finds the smallest winning aligned N of a monotone test."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("breakeven_time", ROOT / "validation" / "breakeven_time.py")
be = importlib.util.module_from_spec(spec)
spec.loader.exec_module(be)


@pytest.mark.parametrize("threshold", [1, 16, 17, 250, 256, 257, 1000, 4097, 100000, 262144])
def test_bisection_finds_the_smallest_aligned_winner(threshold):
    calls = []

    def wins(n):
        calls.append(n)
        return n >= threshold

    n, bracket = be.bisect_breakeven(wins, be.GRID_CONTEXTS)
    want = -(-threshold // be.ALIGN_TOKENS) * be.ALIGN_TOKENS  # the smallest multiple of 16 >= threshold
    assert n == want and n % be.ALIGN_TOKENS == 0
    assert bracket[0] < n <= bracket[1] and bracket[1] in be.GRID_CONTEXTS
    assert all(c % be.ALIGN_TOKENS == 0 for c in calls)
    assert len(calls) <= len(be.GRID_CONTEXTS) + 15  # grid plus a bisection of at most 2^14 steps


def test_no_winner_on_the_grid():
    assert be.bisect_breakeven(lambda n: False, be.GRID_CONTEXTS) == (None, None)


def test_the_issue_settings():
    st = be.settings("issue")
    assert len(st) == 12
    assert {(s["heads_q"], s["heads_kv"], s["d"]) for s in st} == {(32, 8, 128), (9, 3, 64)}
    assert {s["k"] for s in st if s["d"] == 128} == {32, 64, 96} and {s["batch"] for s in st} == {1, 8}
