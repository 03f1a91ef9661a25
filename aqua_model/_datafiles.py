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
        plain = {k: v for k, v in table.items() if not _is_table(v) and not (isinstance(v, dict) and "points" in v)}
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
