"""An interval on every calibrated prediction: the rule, and reading a profile's frozen intervals.

A calibrated profile carries, per (phase, plan), quantiles of r = ln(measured / predicted) for the
plan's time and for its speedup over dense-fused (``[calibration] intervals``,
:class:`aqua_model.hardware.calibrated_terms.PlanInterval`), derived by :func:`interval_from_residuals`
from the plan's in-sample residuals and the calibration spread, and frozen with the model before
any held-out run. A prediction p then reads [p e^lo, p e^hi]: the 80% interval of what the GPU will
measure. The held-out run measures how often it does (the coverage, goal 75-85%).

The rule (:func:`interval_from_residuals`), for n >= ``MIN_RESIDUALS`` residuals r_1 <= ... <= r_n:

* centre c = median(r); lower and upper order statistics r_(a), r_(b) with a = floor((n + 1) q_lo)
  and b = ceil((n + 1) q_hi), clamped to 1..n, q_lo = (1 - level) / 2, q_hi = (1 + level) / 2 (the
  split-conformal finite-sample rule: with exchangeable residuals a new one falls in [r_(a),
  r_(b)] with probability >= level up to the clamping);
* each half-width h (c - r_(a), r_(b) - c) is widened in quadrature by the calibration spread:
  h' = sqrt(h^2 + (z sigma)^2), sigma = spread / 1.349 (an interquartile range of repeated
  micro-benchmark calls, as a normal sigma) and z = 1.2816 (the normal 90% quantile), so that a
  plan measured at few in-sample shapes still carries the measurement noise of its constants;
* the interval is [c - h'_lo, c + h'_hi].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..hardware import HardwareProfile
from ..hardware.calibrated_terms import INTERVAL_LEVEL, PlanInterval

#: Fewest in-sample residuals a plan needs for an interval.
MIN_RESIDUALS = 5
#: An interquartile range over a normal sigma.
IQR_PER_SIGMA = 1.349


def _z(level: float) -> float:
    """The normal quantile at (1 + level) / 2 (1.2816 at level 0.8), by bisection on erf."""
    target = (1 + level) / 2
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interval_from_residuals(
    log_residuals: Any, *, spread: float = 0.0, level: float = INTERVAL_LEVEL
) -> tuple[float, float] | None:
    """(low, high) of ln(measured / predicted) by the rule of the module docstring; None for fewer
    than ``MIN_RESIDUALS`` finite residuals."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not (isinstance(spread, (int, float)) and math.isfinite(spread) and spread >= 0):
        raise ValueError(f"spread must be a finite number >= 0, got {spread!r}")
    r = np.sort(
        np.asarray([x for x in np.asarray(log_residuals, dtype=float).reshape(-1) if math.isfinite(x)])
    )
    n = r.size
    if n < MIN_RESIDUALS:
        return None
    c = float(np.median(r))
    a = min(n, max(1, math.floor((n + 1) * (1 - level) / 2)))
    b = min(n, max(1, math.ceil((n + 1) * (1 + level) / 2)))
    extra = (_z(level) * spread / IQR_PER_SIGMA) ** 2
    h_lo = math.sqrt((c - float(r[a - 1])) ** 2 + extra)
    h_hi = math.sqrt((float(r[b - 1]) - c) ** 2 + extra)
    return c - h_lo, c + h_hi


def plan_interval(profile: HardwareProfile, phase: str, plan: str) -> PlanInterval | None:
    """The frozen interval of ``phase``/``plan`` on ``profile`` (None: datasheet mode, or a plan the
    in-sample grid did not measure)."""
    return profile.terms.interval(phase, plan)


def time_bounds(
    profile: HardwareProfile, phase: str, plan: str, predicted_s: Any
) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) seconds of the 80% interval of a predicted time, or None."""
    iv = plan_interval(profile, phase, plan)
    return None if iv is None else iv.time_bounds(predicted_s)


def speedup_bounds(
    profile: HardwareProfile, phase: str, plan: str, predicted: Any
) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) of the 80% interval of a predicted speedup over dense-fused, or None."""
    iv = plan_interval(profile, phase, plan)
    return None if iv is None else iv.speedup_bounds(predicted)


def fmt_interval(
    value: float, bounds: tuple[Any, Any] | None, *, unit: str = "x", scale: float = 1.0, digits: int = 2
) -> str:
    """``"1.31x [1.24, 1.38]"`` (or ``"1.31x [no interval]"``); ``scale`` multiplies every number."""
    v = f"{float(value) * scale:.{digits}f}{unit}"
    if bounds is None:
        return f"{v} [no interval]"
    lo, hi = (float(np.asarray(b).reshape(-1)[0]) * scale for b in bounds)
    return f"{v} [{lo:.{digits}f}, {hi:.{digits}f}]"


__all__ = [
    "MIN_RESIDUALS",
    "fmt_interval",
    "interval_from_residuals",
    "plan_interval",
    "speedup_bounds",
    "time_bounds",
]
