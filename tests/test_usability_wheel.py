"""Outside the checkout: a wheel carries the calibrated H200 profile and the results that
`aqua-model report` and `aqua-model figures` read, so an installed package prints the same
report and draws the same figures as the repository; a missing data file is an error naming it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from aqua_model._datafiles import RESULTS_MANIFEST, results_manifest, results_root
from aqua_model.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _manifest_files() -> list[str]:
    required, optional = results_manifest()
    return [next(rel for rel in entry if (ROOT / rel).is_file()) for entry in required] + [
        rel for entry in optional for rel in entry if (ROOT / rel).is_file()
    ]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built as a wheel from a copy of the sources and unpacked into a fresh
    folder: what `pip install aqua-model` puts in site-packages (no checkout beside it)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "aqua_model", src / "aqua_model", ignore=shutil.ignore_patterns("__pycache__", "_results")
    )
    for rel in _manifest_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, src / rel)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
        cwd=src,
    )
    site = tmp_path_factory.mktemp("site")
    (wheel,) = dist.glob("aqua_model-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def _run(site: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-m", "aqua_model.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_the_wheel_ships_every_manifest_file(installed):
    shipped = installed / "aqua_model" / "_results"
    for rel in _manifest_files():
        assert (shipped / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    assert (installed / "aqua_model" / RESULTS_MANIFEST.name).is_file()


def test_installed_package_is_imported_from_the_wheel(installed, tmp_path):
    code = "import aqua_model; print(aqua_model.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().startswith(str(installed))


def test_report_outside_the_checkout_matches_the_repository(installed, tmp_path, capsys):
    # before: outside the checkout the calibrated table was dropped (the profile was looked up beside the package)
    outside = _run(installed, tmp_path, "report")
    assert outside.returncode == 0, outside.stderr
    assert main(["report"]) == 0
    inside = capsys.readouterr().out
    assert outside.stdout == inside
    assert "calibrated:h200-calibrated" in outside.stdout


def test_figures_outside_the_checkout_match_the_repository(installed, tmp_path):
    # before: outside the checkout the figures silently drew "no measurements committed"
    for where, env_site in (("wheel", installed), ("repo", None)):
        out = tmp_path / where
        if env_site is None:
            proc = subprocess.run(
                [sys.executable, "-m", "aqua_model.cli", "figures", "--out", str(out), "--only", "parity"],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
        else:
            proc = _run(env_site, tmp_path, "figures", "--out", str(out), "--only", "parity")
        assert proc.returncode == 0, proc.stderr
    for name in (
        "parity.png",
        "parity.pdf",
    ):  # predicted against measured: drawn from the shipped validation rows
        assert (tmp_path / "wheel" / name).read_bytes() == (tmp_path / "repo" / name).read_bytes(), name


def test_a_missing_data_file_is_an_error_naming_it(tmp_path, capsys):
    root = tmp_path / "results"
    for rel in _manifest_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    assert results_root(root) == root
    (root / "validation/results/h200/decode_kernels.jsonl").unlink()
    for argv in (
        ["figures", "--out", str(tmp_path / "f"), "--results", str(root), "--only", "parity"],
        ["report", "--results", str(root)],
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert not captured.out
        assert (
            "lacks validation/results/h200/decode_kernels.jsonl" in captured.err
            and captured.err.count("\n") == 1
        )
    assert not (tmp_path / "f").exists()


def test_no_results_anywhere_is_an_error(installed, tmp_path):
    shutil.rmtree(installed / "aqua_model" / "_results")  # a wheel without its data, and no checkout around
    proc = _run(installed, tmp_path, "report")
    assert proc.returncode == 2 and "the committed results are missing" in proc.stderr
    assert "validation/results/h200/h200-calibrated.toml" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _run(installed, tmp_path, "report", "--results", str(ROOT))
    assert proc.returncode == 0 and "calibrated:h200-calibrated" in proc.stdout


def test_manifest_and_sdist_list_the_same_files():
    manifest_in = (ROOT / "MANIFEST.in").read_text().split()
    required, optional = results_manifest()
    for entry in required + optional:
        for rel in entry:
            assert rel in manifest_in, rel
