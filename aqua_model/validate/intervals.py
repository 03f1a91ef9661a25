"""Freeze the prediction intervals: from an in-sample run into the calibrated profile.

``aqua-model validate intervals --profile P.toml --results insample.jsonl --out P2.toml``: per
(phase, plan) with measured in-sample rows, the residuals r = ln(measured / predicted) of the
calibrated time and, for AQUA plans, of the speedup over dense-fused at the same shape, turned
into an 80% interval by :func:`aqua_model.simulator.intervals.interval_from_residuals` with the
profile's calibration spread (``[calibration] calibration_spread``, the median relative IQR of
the stream micro-benchmarks' repeated calls). The intervals are written into the profile's
``[calibration] intervals`` array; the profile, so extended, is the frozen model's profile of a
held-out run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from aqua_model._datafiles import read_toml, to_toml
from aqua_model.hardware import load
from aqua_model.hardware.calibrated_terms import INTERVAL_LEVEL
from aqua_model.simulator.intervals import interval_from_residuals
from aqua_model.validate.report import BASELINE_PLAN, pairing_key
from aqua_model.validate.runner import read_rows


def residuals(
    rows: list[dict[str, Any]],
) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], list[float]]]:
    """(time residuals, speedup residuals) per (phase, plan): ln(measured / predicted), calibrated mode."""
    ok = [
        r
        for r in rows
        if r.get("status") == "ok"
        and (r.get("measured_s") or 0) > 0
        and (r.get("predicted_calibrated_s") or 0) > 0
    ]
    time_r: dict[tuple[str, str], list[float]] = {}
    for r in ok:
        time_r.setdefault((r["phase"], r["plan"]), []).append(
            math.log(r["measured_s"] / r["predicted_calibrated_s"])
        )
    base = {pairing_key(r): r for r in ok if r["plan"] == BASELINE_PLAN}
    speed_r: dict[tuple[str, str], list[float]] = {}
    for r in ok:
        b = base.get(pairing_key(r))
        if not r["plan"].startswith("aqua") or b is None:
            continue
        measured = b["measured_s"] / r["measured_s"]
        predicted = b["predicted_calibrated_s"] / r["predicted_calibrated_s"]
        speed_r.setdefault((r["phase"], r["plan"]), []).append(math.log(measured / predicted))
    return time_r, speed_r


def interval_entries(rows: list[dict[str, Any]], *, spread: float, source: str) -> list[dict[str, Any]]:
    """The ``[calibration] intervals`` entries for ``rows`` (plans with too few residuals are left out)."""
    time_r, speed_r = residuals(rows)
    out = []
    for (phase, plan), rs in sorted(time_r.items()):
        t = interval_from_residuals(rs, spread=spread)
        if t is None:
            continue
        entry: dict[str, Any] = {
            "phase": phase,
            "plan": plan,
            "level": INTERVAL_LEVEL,
            "time": list(t),
            "n_time": len(rs),
            "source": source,
        }
        sp = interval_from_residuals(speed_r.get((phase, plan), []), spread=spread)
        if sp is not None:
            entry["speedup"] = list(sp)
        entry["n_speedup"] = len(speed_r.get((phase, plan), []))
        out.append(entry)
    return out


def freeze_intervals(
    *,
    profile: str | os.PathLike[str],
    results: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    conformal: bool = False,
) -> list[dict[str, Any]]:
    """Write ``out``: ``profile`` with the intervals of the ``results``; returns them. With
    ``conformal`` the results are the protocol's calibration sample (issue 21: drawn from the usage
    distribution, never used by the fit) and the interval is the plain split-conformal one, not
    widened by the micro-benchmark spread."""
    prof = load(Path(profile))
    if prof.calibration is None:
        raise ValueError(
            f"--profile must be a calibrated profile, got {str(profile)!r} in mode {prof.mode!r}"
        )
    doc = read_toml(Path(profile))
    cal = doc["calibration"]
    spread = 0.0 if conformal else float(cal.get("calibration_spread", 0.0))
    rows = [r for path in results for r in read_rows(path)]
    if prof.mode not in {r.get("calibrated_mode") for r in rows}:
        raise ValueError(
            f"the results were predicted with {sorted({str(r.get('calibrated_mode')) for r in rows})}, not with "
            f"this profile ({prof.mode}); re-predict them first (validate report --repredict)"
        )
    names = ", ".join(str(Path(p).name) for p in results)
    source = (
        f"derived: calibration-sample residuals ln(measured / predicted) of {names} (calibrated mode, {prof.mode}), "
        f"split-conformal order statistics at {INTERVAL_LEVEL:.0%} (aqua_model.simulator.intervals), not widened"
        if conformal
        else f"derived: in-sample residuals ln(measured / predicted) of {names} (calibrated mode, {prof.mode}), split-conformal "
        f"order statistics at {INTERVAL_LEVEL:.0%}, widened in quadrature by the calibration spread {spread:.4f} "
        "(aqua_model.simulator.intervals)"
    )
    entries = interval_entries(rows, spread=spread, source=source)
    cal["intervals"] = entries
    header = "Calibrated profile with frozen prediction intervals (aqua-model validate intervals)"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(to_toml(doc, header=header))
    load(Path(out))  # validated
    return entries
