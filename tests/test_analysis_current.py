"""The committed tables of the model-only analysis scripts are what the current model writes.

Each script is run from a scratch copy (it writes beside itself, under results/), and every file it
writes must equal the committed one byte for byte: a model change that moves a number cannot land
with a stale table (the tables on the README's pages under docs/ are checked against these files in test_readme.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Scripts that read only the model (no measurements, no torch); each writes analysis/results/<stem>*.
MODEL_ONLY_SCRIPTS = ("breakeven_table.py", "peers_compare.py", "peers_published.py")


@pytest.mark.parametrize("script", MODEL_ONLY_SCRIPTS)
def test_committed_tables_are_current(script: str, tmp_path: Path) -> None:
    work = tmp_path / "analysis"
    (work / "results").mkdir(parents=True)
    shutil.copy(ROOT / "analysis" / script, work / script)
    subprocess.run([sys.executable, str(work / script)], cwd=tmp_path, check=True, capture_output=True)
    written = sorted((work / "results").iterdir())
    assert written, f"{script} wrote nothing"
    for f in written:
        committed = ROOT / "analysis" / "results" / f.name
        assert committed.is_file(), f"{script} wrote {f.name}, which is not committed"
        assert f.read_bytes() == committed.read_bytes(), (
            f"analysis/results/{f.name} is stale: run python analysis/{script}"
        )
