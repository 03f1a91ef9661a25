"""docs/validation.md's summary of all held-out runs quotes each run's committed summary file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = (("173469101", "0a56edad"), ("2599853000", "9af69bc8"), ("898775459", "359239a3"))
TARGETS = (
    "decode aqua-fused: median abs error",
    "decode dense-fused (SDPA): median abs error",
    "decode aqua-fused / SDPA speedup: median error",
    "80% interval coverage of held-out times",
)


def _measured(seed: str, target: str) -> str:
    text = (ROOT / "validation" / "results" / "h200" / f"heldout-{seed}-summary.md").read_text()
    m = re.search(r"^\| " + re.escape(target) + r" \| \d+ \| ([0-9.]+%) \|", text, re.M)
    assert m, (seed, target)
    return m.group(1)


def test_summary_rows_are_the_committed_runs() -> None:
    readme = (ROOT / "docs" / "validation.md").read_text()
    for seed, commit in RUNS:
        row = next(line for line in readme.splitlines() if line.startswith(f"| {seed}; {commit} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:] == [_measured(seed, t) for t in TARGETS], (seed, cells)
