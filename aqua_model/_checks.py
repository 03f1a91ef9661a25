"""Argument validation shared by every public function.

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad
value) with a message that names the argument, the value it got and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the allowed range.

    Accepts Python and numpy integers and integral floats (``128.0``); rejects bools,
    non-integral or non-finite numbers and everything else.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {_fmt(value)} of type {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite integer, got {_fmt(value)}")
    if float(value) != int(value):
        raise ValueError(f"{name} must be an integer, got non-integral {_fmt(value)}")
    out = int(value)
    _check_range(name, out, minimum, maximum)
    return out


def check_real(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """Return ``value`` as a finite float in range, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_fmt(value)} of type {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {_fmt(value)}")
    if strict_minimum and minimum is not None and out <= minimum:
        raise ValueError(f"{name} must be > {minimum}, got {_fmt(value)}")
    _check_range(name, out, None if strict_minimum else minimum, maximum)
    return out


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, or raise listing the allowed values."""
    allowed = tuple(allowed)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {_fmt(value)}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {_fmt(value)}")
    return value


def check_int_array(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> np.ndarray:
    """Return ``value`` (scalar or array-like) as an int64 array, validated element-wise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer or an array of integers, got {_fmt(value)}")
    if isinstance(value, numbers.Real):
        return np.asarray(check_int(name, value, minimum=minimum, maximum=maximum), dtype=np.int64)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - numpy rarely fails here
        raise TypeError(f"{name} must be an integer or an array of integers, got {_fmt(value)}") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be an integer or an array of integers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {_fmt(value)}")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integers, got non-integral values in {_fmt(value)}")
    out = arr.astype(np.int64)
    if minimum is not None and out.min() < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(out.min())}")
    if maximum is not None and out.max() > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {int(out.max())}")
    return out


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
