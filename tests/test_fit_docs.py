"""docs/validation.md's fit-protocol section quotes the committed summary of the run (issue 21)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: every run of the fit protocol: (test seed, the frozen commit's first 8 hex digits)
RUNS = [("2324754193", "8a90ef11"), ("1675854939", "63e3845b")]


@pytest.mark.parametrize("seed,commit", RUNS)
def test_the_section_quotes_the_committed_summary(seed, commit):
    page = (ROOT / "docs" / "validation.md").read_text()
    summary = (ROOT / "validation" / "results" / "h200" / f"fit-{seed}-summary.md").read_text()
    body = summary[summary.index("## Targets") :]
    for line in body.splitlines():
        if line.startswith("|"):
            assert line in page, line
    assert f"| {seed}; {commit} |" in page
    assert int(commit, 16) == int(seed)  # the test seed is the frozen commit's first 8 hex digits


@pytest.mark.parametrize("seed", [s for s, _ in RUNS])
def test_the_figures_exist(seed):
    for stem in ("fit_parity", "fit_speedup"):
        for ext in ("png", "pdf"):
            assert (ROOT / "figures" / f"{stem}_{seed}.{ext}").is_file()
