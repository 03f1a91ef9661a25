"""The committed figures regenerate byte for byte (issue 23, item 13).

Reproducibility is by pinning (figures/README.md): the test extra of pyproject.toml fixes the
versions of what the figures' bytes depend on, the fonts are matplotlib's bundled DejaVu, and
saving writes no timestamp. A fresh process regenerates a figure into a temporary folder and its
PDF and PNG must equal the committed files."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
#: The figure the issue saw change by one byte on a fresh machine; it draws lines, text and a legend.
FIGURE = "kv_memory"


def pins() -> dict[str, str]:
    """name -> version of every exact (==) pin of the test extra."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    found = [re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", req.strip()) for req in extra]
    return {m.group(1).lower(): m.group(2) for m in found if m}


def test_the_figure_libraries_are_pinned_and_installed_at_the_pins() -> None:
    got = pins()
    assert {"matplotlib", "pillow", "fonttools", "kiwisolver", "contourpy", "numpy"} <= set(got)
    wrong = {
        name: (importlib.metadata.version(name), want)
        for name, want in got.items()
        if importlib.metadata.version(name) != want
    }
    assert not wrong, f"installed (got, pinned): {wrong}; install with pip install -e '.[test]'"


def test_every_figure_font_is_matplotlibs_bundled_one() -> None:
    import matplotlib
    from matplotlib import font_manager

    from aqua_model.plots.style import RC, style_context

    data = Path(matplotlib.get_data_path()).resolve()
    with style_context():
        for weight, style in (("normal", "normal"), ("bold", "normal"), ("normal", "italic")):
            props = font_manager.FontProperties(family=RC["font.family"], weight=weight, style=style)
            path = Path(font_manager.findfont(props, fallback_to_default=False)).resolve()
            assert data in path.parents, (weight, style, path)


def test_a_committed_figure_regenerates_byte_identically(tmp_path: Path) -> None:
    committed = [ROOT / "figures" / f"{FIGURE}.{ext}" for ext in ("pdf", "png")]
    if not all(p.is_file() for p in committed):
        pytest.fail(f"figures/{FIGURE}.pdf and .png must be committed (aqua-model figures --out figures/)")
    run = subprocess.run(
        [sys.executable, "-m", "aqua_model.cli", "figures", "--out", str(tmp_path), "--only", FIGURE],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    for path in committed:
        fresh = tmp_path / path.name
        assert fresh.read_bytes() == path.read_bytes(), (
            f"{path.name}: {fresh.stat().st_size} bytes regenerated against {path.stat().st_size} committed; "
            "with the pinned versions installed, run aqua-model figures --out figures/ and commit"
        )
