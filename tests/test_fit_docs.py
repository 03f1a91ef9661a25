"""docs/validation.md's fit-protocol section quotes the committed summary of the run (issue 21)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = "2324754193"


def test_the_section_quotes_the_committed_summary():
    page = (ROOT / "docs" / "validation.md").read_text()
    summary = (ROOT / "validation" / "results" / "h200" / f"fit-{SEED}-summary.md").read_text()
    body = summary[summary.index("## Targets") :]
    for line in body.splitlines():
        if line.startswith("|"):
            assert line in page, line
    assert f"| {SEED}; 8a90ef11 |" in page


def test_the_figures_exist():
    for stem in ("fit_parity", "fit_speedup"):
        for ext in ("png", "pdf"):
            assert (ROOT / "figures" / f"{stem}_{SEED}.{ext}").is_file()
