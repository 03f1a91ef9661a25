"""Shared plumbing of the TOML data files (hardware profiles, model configs)."""

from __future__ import annotations

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


def alias_map(keys: Iterable[str], aliases_of: Callable[[str], Iterable[str]], kind: str) -> Mapping[str, str]:
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
