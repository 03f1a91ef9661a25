"""The warning category of the kernels' slow paths (a call that is correct but runs far below
the speed its layout allows)."""

from __future__ import annotations


class PerformanceWarning(UserWarning):
    """A kernel call takes a slow path the caller can avoid (the message names the fix)."""


__all__ = ["PerformanceWarning"]
