"""Shared plumbing of the TOML data files (hardware profiles, model configs): reading,
writing (the standard library reads TOML but does not write it) and alias maps."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def existing_file(path: Path, kind: str) -> Path:
    """``path`` expanded and resolved, or ValueError naming the ``kind`` of file missing."""
    path = path.expanduser()
    if path.is_dir():
        raise ValueError(f"{kind} file {str(path)!r} is a folder; give the path of a TOML file")
    if path.exists() and not path.is_file():
        raise ValueError(f"{kind} file {str(path)!r} is not a regular file (a device or a pipe?)")
    if not path.is_file():
        raise ValueError(f"{kind} file {str(path)!r} does not exist")
    return path.resolve()


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a ValueError naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # a binary file: name it, not the codec
        raise ValueError(
            f"{path}: not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def alias_map(
    keys: Iterable[str], aliases_of: Callable[[str], Iterable[str]], kind: str
) -> Mapping[str, str]:
    """Lower-case alias -> key, refusing an alias claimed twice or shadowing another key."""
    keys = list(keys)
    out: dict[str, str] = {}
    for key in keys:
        for alias in aliases_of(key):
            a = alias.lower()
            if a in out and out[a] != key:
                raise ValueError(f"alias {alias!r} is claimed by both {out[a]!r} and {key!r}")
            if a in keys and a != key:
                raise ValueError(f"alias {alias!r} of {key!r} is also a {kind} key")
            out[a] = key
    return MappingProxyType(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML: {v!r:.60}")


def _is_table(v: Any) -> bool:
    """A nested table gets its own [header]; a {value, unit, source} number stays inline."""
    return isinstance(v, dict) and "value" not in v and "points" not in v


def to_toml(doc: dict[str, Any], *, header: str = "") -> str:
    """Serialise ``doc`` (scalars, lists, inline number tables, nested tables) as TOML."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []

    def emit(table: dict[str, Any], prefix: str) -> None:
        plain = {
            k: v for k, v in table.items() if not _is_table(v) and not (isinstance(v, dict) and "points" in v)
        }
        nested = {k: v for k, v in table.items() if k not in plain}
        if prefix:
            lines.append("")
            lines.append(f"[{prefix}]")
        for k, v in plain.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in nested.items():
            emit(v, f"{prefix}.{k}" if prefix else k)

    emit(doc, "")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Committed results (read by `aqua-model report` and `aqua-model figures`)
# ---------------------------------------------------------------------------------------------

#: The list of result files a wheel ships (one source for setup.py and for the readers).
RESULTS_MANIFEST = Path(__file__).resolve().parent / "results_manifest.txt"
#: Where a wheel keeps them (setup.py copies them there when it builds).
SHIPPED_RESULTS_DIR = Path(__file__).resolve().parent / "_results"
#: The repository root of a checkout (the package's parent folder), where they are committed.
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def results_manifest() -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """(required, optional) entries of the manifest; each entry is a tuple of alternative paths
    (relative to a results root), the first present of which is read."""
    required: list[tuple[str, ...]] = []
    optional: list[tuple[str, ...]] = []
    for line in RESULTS_MANIFEST.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = tuple(part.strip() for part in line.lstrip("?").split("|"))
            (optional if line.startswith("?") else required).append(entry)
    return tuple(required), tuple(optional)


def _missing(root: Path) -> list[str]:
    """The required entries no file of which is under ``root``, as text."""
    return [
        " or ".join(entry)
        for entry in results_manifest()[0]
        if not any((root / rel).is_file() for rel in entry)
    ]


def results_root(explicit: str | Path | None = None, *, flag: str = "--results") -> Path:
    """The folder the committed results are read from: ``explicit`` (a folder laid out as the
    repository: validation/results/..., analysis/results/...), else the copy shipped inside
    the package (a wheel), else the checkout the package was imported from.

    Raises ValueError naming ``flag`` and every missing file, never falls back silently.
    """
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            wanted = ", ".join(" or ".join(entry) for entry in results_manifest()[0])
            raise ValueError(f"{flag} {str(explicit)!r} is not a folder; give a folder holding {wanted}")
        missing = _missing(root)
        if missing:
            raise ValueError(f"{flag} {str(explicit)!r} lacks {', '.join(missing)}")
        return root
    for root in (SHIPPED_RESULTS_DIR, CHECKOUT_ROOT):
        if not _missing(root):
            return root
    raise ValueError(
        f"the committed results are missing: neither {SHIPPED_RESULTS_DIR} (a wheel) nor the checkout "
        f"{CHECKOUT_ROOT} holds {', '.join(_missing(CHECKOUT_ROOT))}; pass {flag} ROOT (a checkout of aqua-model)"
    )


def results_file(rel: str, explicit: str | Path | None = None, *, flag: str = "--results") -> Path:
    """One manifest file under :func:`results_root`."""
    return results_root(explicit, flag=flag) / rel
