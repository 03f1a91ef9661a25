"""Long texts that ship with every Python: the standard library's own source files and its licence.

They are read from the running interpreter's installation (``sysconfig``'s ``stdlib`` path),
never downloaded, and each is recorded by its path and SHA-256, so a result says exactly which
bytes it was computed on (another Python version has other files and other digests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sysconfig
from collections.abc import Sequence
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class SourceText:
    """One text: its file name relative to the stdlib folder, absolute path, SHA-256 and content."""

    name: str
    path: str
    sha256: str
    text: str

    def record(self) -> dict[str, str]:
        """Name, path and SHA-256 (no content), for a run record."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256}


def stdlib_dir() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def read_texts(names: Sequence[str], *, folder: Path | None = None) -> list[SourceText]:
    """Read ``names`` (paths relative to the stdlib folder, e.g. ``"typing.py"``, ``"LICENSE.txt"``)."""
    base = stdlib_dir() if folder is None else Path(folder)
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty sequence of file names, got {names!r}")
    out = []
    for name in names:
        path = base / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{name!r} is not in this interpreter's standard library folder {base}; choose files that exist there"
            )
        data = path.read_bytes()
        out.append(SourceText(name, str(path), hashlib.sha256(data).hexdigest(), data.decode("utf-8")))
    return out


def check_disjoint(calibration: Sequence[SourceText], evaluation: Sequence[SourceText]) -> None:
    """Raise if a file (by name or by content) is both calibration and evaluation text."""
    shared = {t.name for t in calibration} & {t.name for t in evaluation}
    shared |= {t.name for t in calibration if t.sha256 in {e.sha256 for e in evaluation}}
    if shared:
        raise ValueError(f"calibration and evaluation texts must be disjoint, both hold {sorted(shared)}")
