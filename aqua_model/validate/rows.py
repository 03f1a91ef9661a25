"""The schema of a validation result row, and a reader that checks every line of a JSONL file.

A row (one JSON object per line, written by :mod:`aqua_model.validate.runner`) must carry:

===============================  ====================================================================
field                            allowed
===============================  ====================================================================
``schema_version``               one of :data:`SCHEMA_VERSIONS` (1: plan names before issue 11)
``case_id``                      a non-empty string (rows are merged and counted by it)
``phase``                        ``decode`` or ``prefill``
``plan``                         a non-empty string
``context``                      an integer >= 1 for decode, >= 0 for prefill (cached keys)
``batch``, ``heads_q``, ``heads_kv``, ``d``   integers >= 1; heads_q a multiple of heads_kv
``k``                            an integer, 1 <= k <= d
``dtype``                        a storage dtype (bf16, fp16, fp32)
``prompt``                       null for decode; an integer >= 1 for prefill
``selection``                    ``group`` or ``per-head``
``status``                       one of :data:`STATUSES`
``measured_s``                   a finite number > 0 when status is ``ok``; else a number > 0 or null
===============================  ====================================================================

Optional times (``measured_iqr_s``, ``measured_q25_s``, ``measured_q75_s``, ``measured_eager_s``,
``measured_eager_iqr_s``, ``predicted_datasheet_s``, ``predicted_calibrated_s``,
``roofline_floor_s``) are null or finite numbers >= 0; ``kernels`` is a list of objects. Other
fields are kept as they are.

:func:`read_results` reports every rejected line with its number and reason. A last line that is
cut short (no newline and not valid JSON: a run killed mid-write) is a *torn* line: it is noted,
never an error. Any other bad line is an error unless ``lenient``, which skips and counts it.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aqua_model.costs.dtypes import STORAGE_DTYPES
from aqua_model.costs.flops import PHASES
from aqua_model.costs.memory import GQA_SELECTIONS

#: Row schema versions a reader accepts: 1 (decode plans under their pre-issue-11 names, mapped
#: on reading by :func:`aqua_model.validate.runner.current_names`) and 2 (current).
SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)
#: Row statuses (the runner writes these and only these).
STATUSES: tuple[str, ...] = ("ok", "oom", "unsupported", "skipped", "error")
#: Optional time fields: null, or a finite number of seconds >= 0.
OPTIONAL_TIME_FIELDS: tuple[str, ...] = (
    "measured_iqr_s",
    "measured_q25_s",
    "measured_q75_s",
    "measured_eager_s",
    "measured_eager_iqr_s",
    "predicted_datasheet_s",
    "predicted_calibrated_s",
    "roofline_floor_s",
)
_POSITIVE_INT_FIELDS: tuple[str, ...] = ("batch", "heads_q", "heads_kv", "d")


@dataclass(frozen=True)
class Rejected:
    """One line a reader refused: its 1-based number and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class ReadResult:
    """What :func:`read_results` found in one file."""

    path: str
    rows: list[dict[str, Any]]
    rejected: list[Rejected] = field(default_factory=list)
    #: Line number of a torn last line (ignored), or None.
    torn_line: int | None = None

    def lines(self) -> list[str]:
        """``path:line: reason`` for every rejected line, then the torn line if any."""
        out = [f"{self.path}:{r.line}: {r.reason}" for r in self.rejected]
        if self.torn_line is not None:
            out.append(f"{self.path}:{self.torn_line}: torn last line ignored (a write cut short)")
        return out


class BadRowsError(ValueError):
    """A results file holds rejected lines; ``result`` lists them."""

    def __init__(self, result: ReadResult) -> None:
        self.result = result
        shown = "; ".join(f"line {r.line}: {r.reason}" for r in result.rejected[:3])
        more = f"; and {len(result.rejected) - 3} more" if len(result.rejected) > 3 else ""
        super().__init__(
            f"{result.path}: {len(result.rejected)} bad line(s) ({shown}{more}); "
            "fix them, or pass --lenient (lenient=True) to skip them"
        )


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _show(x: Any) -> str:
    text = json.dumps(x) if isinstance(x, (str, int, float, bool, type(None))) else type(x).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def check_row(row: Any) -> str | None:
    """Why ``row`` is not a valid result row, or None when it is (see the module docstring)."""
    if not isinstance(row, dict):
        kind = {
            type(None): "null",
            bool: "a boolean",
            int: "a number",
            float: "a number",
            str: "a string",
            list: "an array",
        }
        return f"not a JSON object (got {kind.get(type(row), type(row).__name__)}: {_show(row)})"
    version = row.get("schema_version")
    if "schema_version" not in row:
        return "missing field 'schema_version'"
    if not _is_int(version) or version not in SCHEMA_VERSIONS:
        return f"schema_version must be one of {', '.join(map(str, SCHEMA_VERSIONS))}, got {_show(version)}"
    for name in ("case_id", "plan"):
        if name not in row:
            return f"missing field {name!r}"
        if not isinstance(row[name], str) or not row[name].strip():
            return f"{name} must be a non-empty string, got {_show(row[name])}"
    choices = {"phase": PHASES, "status": STATUSES, "dtype": STORAGE_DTYPES, "selection": GQA_SELECTIONS}
    for name, allowed in choices.items():
        if name not in row:
            return f"missing field {name!r}"
        if row[name] not in allowed:
            return f"{name} must be one of {', '.join(allowed)}, got {_show(row[name])}"
    for name in _POSITIVE_INT_FIELDS + ("context", "k"):
        if name not in row:
            return f"missing field {name!r}"
        if not _is_int(row[name]):
            return f"{name} must be an integer, got {_show(row[name])}"
    for name in _POSITIVE_INT_FIELDS:
        if row[name] < 1:
            return f"{name} must be >= 1, got {row[name]}"
    decode = row["phase"] == "decode"
    if row["context"] < (1 if decode else 0):
        return f"context must be >= {1 if decode else 0} for {row['phase']}, got {row['context']}"
    if row["heads_q"] % row["heads_kv"]:
        return f"heads_q ({row['heads_q']}) must be a multiple of heads_kv ({row['heads_kv']})"
    if not 1 <= row["k"] <= row["d"]:
        return f"k must be in 1..d ({row['d']}), got {row['k']}"
    prompt = row.get("prompt")
    if decode and prompt is not None:
        return f"prompt must be null for decode, got {_show(prompt)}"
    if not decode and (not _is_int(prompt) or cast(int, prompt) < 1):
        return f"prompt must be an integer >= 1 for prefill, got {_show(prompt)}"
    measured = row.get("measured_s")
    if row["status"] == "ok":
        if not _is_number(measured) or cast(float, measured) <= 0:
            return f"status 'ok' needs measured_s, a finite number > 0, got {_show(measured)}"
    elif measured is not None and (not _is_number(measured) or cast(float, measured) <= 0):
        return f"measured_s must be null or a finite number > 0, got {_show(measured)}"
    for name in OPTIONAL_TIME_FIELDS:
        value = row.get(name)
        if value is not None and (not _is_number(value) or value < 0):
            return f"{name} must be null or a finite number >= 0, got {_show(value)}"
    kernels = row.get("kernels")
    if kernels is not None and (
        not isinstance(kernels, list) or not all(isinstance(k, dict) for k in kernels)
    ):
        return f"kernels must be a list of objects, got {_show(kernels)}"
    return None


def read_results(path: str | os.PathLike[str], *, lenient: bool = False) -> ReadResult:
    """Read and check every line of a results JSONL file (blank lines are skipped).

    Raises FileNotFoundError for a missing file, ValueError for a folder or an unreadable file,
    and :class:`BadRowsError` (a ValueError) listing the bad lines unless ``lenient``.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"results {str(p)!r} is a folder; give a results JSONL file")
    if not p.exists():
        raise FileNotFoundError(f"results file {str(p)!r} does not exist")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"results file {str(p)!r} cannot be read: {exc.strerror}") from None
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    ends_cleanly = text.endswith("\n") or not text
    rows: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    torn: int | None = None
    last = len(lines) if not ends_cleanly else len(lines) - 1
    for number, line in enumerate(lines[:last], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == last and not ends_cleanly:
                torn = number
                continue
            rejected.append(Rejected(number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        reason = check_row(row)
        if reason is None:
            rows.append(row)
        else:
            rejected.append(Rejected(number, reason))
    result = ReadResult(str(p), rows, rejected, torn)
    if rejected and not lenient:
        raise BadRowsError(result)
    return result
