"""Argument validation shared by every public function.

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad
value) with a message that names the argument, the value it got and what is allowed.

Integers are checked exactly (a Python int of any size is compared as an int, never through a
float), and every integer must fit numpy's int64, the type sizes are held in
(:data:`INT64_MAX`); so no check lets an ``OverflowError`` or a wrapped-around cast through.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

#: Largest integer any size may take: sizes are numpy int64 arrays downstream.
INT64_MAX = int(np.iinfo(np.int64).max)
#: Smallest such integer.
INT64_MIN = int(np.iinfo(np.int64).min)
#: 2**63 as a float: the first float that no longer fits int64 (float(INT64_MAX) rounds up to it).
_INT64_FLOAT_END = 2.0**63


def _fmt(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still named by its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _as_float(name: str, value: Any) -> float:
    """``float(value)``, with an overflow (an int or Fraction beyond a float) as ValueError."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} must be a finite number, got {_fmt(value)} (beyond the float range)"
        ) from None


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the allowed range.

    Accepts Python and numpy integers and integral floats (``128.0``); rejects bools,
    non-integral or non-finite numbers, integers outside the int64 range and everything else.
    """
    if isinstance(value, bool) or isinstance(value, np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {_fmt(value)} of type {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    else:
        as_float = _as_float(name, value)
        if not math.isfinite(as_float):
            raise ValueError(f"{name} must be a finite integer, got {_fmt(value)}")
        if not as_float.is_integer():
            raise ValueError(f"{name} must be an integer, got non-integral {_fmt(value)}")
        out = int(as_float)
    _check_range(name, out, minimum, maximum)
    _check_range(name, out, INT64_MIN, INT64_MAX, why=" (the int64 range)")
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
    if isinstance(value, bool) or isinstance(value, np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_fmt(value)} of type {type(value).__name__}")
    out = _as_float(name, value)
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
        raise TypeError(
            f"{name} must be one of {', '.join(map(repr, allowed))}; got {_fmt(value)} of type {type(value).__name__}"
        )
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {_fmt(value)}")
    return value


def check_int_array(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> np.ndarray:
    """Return ``value`` (scalar or array-like) as an int64 array, validated element-wise.

    Every element must be an integer (or an integral float) within the int64 range and
    ``minimum``..``maximum``; nothing is cast before it is checked, so ``1e30`` is refused,
    never wrapped around to a negative int64.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer or an array of integers, got {_fmt(value)}")
    if isinstance(value, numbers.Real):
        return np.asarray(check_int(name, value, minimum=minimum, maximum=maximum), dtype=np.int64)
    if isinstance(value, (str, bytes, dict, set, frozenset)) or value is None:
        raise TypeError(
            f"{name} must be an integer or an array of integers, got {_fmt(value)} of type {type(value).__name__}"
        )
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged or unconvertible sequences
        raise TypeError(f"{name} must be an integer or an array of integers, got {_fmt(value)}") from exc
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if arr.dtype == object:  # e.g. Python ints beyond int64, or mixed types: check each element
        flat = [check_int(name, v, minimum=minimum, maximum=maximum) for v in arr.ravel()]
        return np.asarray(flat, dtype=np.int64).reshape(arr.shape)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"{name} must be an integer or an array of integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {_fmt(value)}")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integers, got non-integral values in {_fmt(value)}")
        lo, hi = float(arr.min()), float(arr.max())
        if hi >= _INT64_FLOAT_END or lo < -_INT64_FLOAT_END:
            bad = hi if hi >= _INT64_FLOAT_END else lo
            raise ValueError(
                f"{name} must be <= {INT64_MAX} and >= {INT64_MIN} (the int64 range), got {bad!r}"
            )
    elif arr.dtype == np.uint64 and int(arr.max()) > INT64_MAX:
        raise ValueError(f"{name} must be <= {INT64_MAX} (the int64 range), got {int(arr.max())}")
    out = arr.astype(np.int64)
    if minimum is not None and out.min() < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(out.min())}")
    if maximum is not None and out.max() > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {int(out.max())}")
    return out


def _check_range(
    name: str, value: float, minimum: float | None, maximum: float | None, why: str = ""
) -> None:
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{why}, got {_fmt(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}{why}, got {_fmt(value)}")
