"""Build hook: a wheel ships the committed results that `aqua-model report` and `figures` read.

Everything else is declared in pyproject.toml. The files are listed once, in
aqua_model/results_manifest.txt; they are copied into the built package under aqua_model/_results/
(an editable install reads them from the checkout instead).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "aqua_model" / "results_manifest.txt"


def manifest_entries() -> list[tuple[tuple[str, ...], bool]]:
    """(alternative paths relative to the repository root, required) for every manifest line."""
    out = []
    for line in MANIFEST.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            optional = line.startswith("?")
            out.append((tuple(part.strip() for part in line.lstrip("?").split("|")), not optional))
    return out


class BuildPyWithResults(build_py):
    """build_py that also copies the manifest's results into the package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "aqua_model" / "_results"
        for alternatives, required in manifest_entries():
            present = [rel for rel in alternatives if (HERE / rel).is_file()]
            if not present:
                if required:
                    raise SystemExit(
                        f"results file {' or '.join(alternatives)} listed in {MANIFEST.name} is missing; "
                        "cannot build the package"
                    )
                continue
            dest = target / present[0]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / present[0], dest)


setup(cmdclass={"build_py": BuildPyWithResults})
