"""The one kernel-time form (issue 21): parameters per timing key, as data in a calibrated profile.

Every kernel whose timing key has a form in ``[calibration] forms`` takes its device time from

    t = latency + (launches - 1) per_launch + (waves - 1) per_wave + max_q(F / (P eta_c), B / (W eta_m))

where max_q(a, b) = (a^q + b^q)^(1/q) (q = ``overlap_power``: large q is the roofline's max, q = 1
no overlap of compute and memory at all), with P the peak rate of the kernel's unit and dtype, W the datasheet bandwidth, waves =
ceil(programs / SMs) and

    eta_m = eta_m_max * sat(x / half_bytes_per_sm) * par(u) * (misaligned_factor if the key rows are misaligned)
    eta_c = eta_c_max * d / (d + half_d) * y / (y + half_flops_per_sm) * par(u)

and eta_m also falls as g^-gqa_power with the query heads g = H_q / H_kv one KV group's programs
serve (0: no effect); a kernel that merges its own splits (the one-launch decode: the last split
of each (batch, KV head) loads the group's partials from L2, on the critical path) adds
per_merge for each of its merge's round trips (``merge_rounds``: 0 for a one-split call and for
every other kernel; :func:`aqua_model.costs.split_rule.merge_rounds`),
where sat(u) = (1 + u^-p)^(-1/p) (p = ``sat_power``: 1 is u / (1 + u), larger p a sharper knee) and
x is the bytes each busy SM moves (B / min(programs, SMs)), y the FLOPs it does (a fixed cost
per tile amortised over its work), u = min(programs, SMs) / SMs the
fraction of SMs the launch occupies and par(u) = (1 + h) u / (u + h) (h = ``half_sm_fraction``;
par(1) = 1, h = 0 no effect): smooth, monotone, saturating efficiencies in physical features
(bytes per SM, the SMs a launch fills, the head dim d, which sets a tile's arithmetic intensity),
and the misalignment flag a factor. The programs a kernel runs come from its form's named launch
geometry (:data:`GEOMETRIES`), evaluated by the simulator from the launch rule of
:mod:`aqua_model.costs.split_rule`; the form names the rule, the simulator never tests a kernel's
name.

The parameters are fitted on a training sample of the usage distribution by
:mod:`aqua_model.validate.fit` (robust least squares on log time), and each form records its fit
(:class:`FitRecord`: seeds, sample size, the range of every feature it saw, the residual
quantiles). A prediction whose features leave that range is flagged (``extrapolates``) by the
simulator, never silently returned as if it had been checked.

This module holds the data and its evaluation only (numpy, no torch).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

#: Named launch geometries: how many programs a kernel runs. "device": as many as SMs (a library
#: kernel whose grid the model does not know); "split-n": the split rule of
#: :func:`aqua_model.costs.split_rule.split_programs` for the default (one-launch) decode,
#: "split-n-3launch" for its three-launch path; "per-kv-head": B H_kv; "per-q-head": B H_q.
GEOMETRIES: tuple[str, ...] = ("device", "split-n", "split-n-3launch", "per-kv-head", "per-q-head")
#: The form's parameters, in the order the fitting routine packs them.
FORM_PARAMS: tuple[str, ...] = (
    "latency_s",
    "per_launch_s",
    "per_wave_s",
    "eta_m_max",
    "eta_c_max",
    "half_bytes_per_sm",
    "sat_power",
    "half_d",
    "half_flops_per_sm",
    "half_sm_fraction",
    "overlap_power",
    "gqa_power",
    "per_merge_s",
    "misaligned_factor",
)
#: Parameters added after forms were first written, with the value that reproduces a form written
#: without them: ``gqa_power`` 0 (no group-size effect) is the model judged at seed 2324754193
#: (``validation/results/h200/h200-fit-2324754193.toml``, fitted before the parameter existed).
ABSENT_BEFORE_PARAM: Mapping[str, float] = MappingProxyType({"gqa_power": 0.0, "per_merge_s": 0.0})
#: The features whose fitted range a form records (and a prediction is checked against).
RANGE_FEATURES: tuple[str, ...] = ("bytes", "flops", "programs")
#: Allowed range of every parameter (a profile outside it is refused: no absurd constants).
PARAM_BOUNDS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "latency_s": (0.0, 1e-3),
        "per_launch_s": (0.0, 1e-3),
        "per_wave_s": (0.0, 1e-3),
        "eta_m_max": (1e-3, 1.0),
        "eta_c_max": (1e-3, 1.0),
        "half_bytes_per_sm": (0.0, 1e9),
        "sat_power": (0.25, 8.0),
        "half_d": (0.0, 1024.0),
        "half_flops_per_sm": (0.0, 1e12),
        "half_sm_fraction": (0.0, 100.0),
        "overlap_power": (1.0, 64.0),
        "gqa_power": (-1.0, 1.0),
        "per_merge_s": (0.0, 1e-4),
        "misaligned_factor": (1e-2, 1.0),
    }
)
#: Relative slack on a recorded feature range before a prediction counts as extrapolating (the
#: range is of sampled shapes; a point a hair outside it is not a different regime).
RANGE_SLACK = 0.05


@dataclass(frozen=True)
class FitRecord:
    """Where a form was fitted: sample seeds and size, each feature's [min, max], residual
    quantiles of ln(measured / fitted) on the training sample, and the routine's description."""

    seeds: tuple[int, ...]
    n: int
    ranges: Mapping[str, tuple[float, float]]
    residual_quantiles: Mapping[str, float]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeds": list(self.seeds),
            "n": self.n,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "residual_quantiles": dict(self.residual_quantiles),
            "source": self.source,
        }


@dataclass(frozen=True)
class KernelForm:
    """The fitted form of one timing key (see the module docstring)."""

    key: str
    geometry: str
    latency_s: float
    per_launch_s: float
    per_wave_s: float
    eta_m_max: float
    eta_c_max: float
    half_bytes_per_sm: float
    sat_power: float
    half_d: float
    half_flops_per_sm: float
    half_sm_fraction: float
    overlap_power: float
    gqa_power: float
    per_merge_s: float
    misaligned_factor: float
    fit: FitRecord | None = None

    def params(self) -> dict[str, float]:
        """The parameters by name (:data:`FORM_PARAMS`)."""
        return {p: float(getattr(self, p)) for p in FORM_PARAMS}

    def terms_s(
        self,
        *,
        flops: Any,
        nbytes: Any,
        launches: int,
        programs: Any,
        misaligned: Any,
        head_dim: Any,
        group: Any,
        merge_rounds: Any = 0.0,
        sm_count: int,
        peak_flops_per_s: float,
        bandwidth_bytes_per_s: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(device time, compute term, memory term) in seconds; arrays broadcast."""
        return form_terms_s(
            self.params(),
            flops=flops,
            nbytes=nbytes,
            launches=launches,
            programs=programs,
            misaligned=misaligned,
            head_dim=head_dim,
            group=group,
            merge_rounds=merge_rounds,
            sm_count=sm_count,
            peak_flops_per_s=peak_flops_per_s,
            bandwidth_bytes_per_s=bandwidth_bytes_per_s,
        )

    def outside(self, features: Mapping[str, Any]) -> list[str]:
        """Names of the recorded features some point of ``features`` leaves (beyond
        :data:`RANGE_SLACK`); [] when inside, or when the form records no fit."""
        if self.fit is None:
            return []
        out = []
        for name, (lo, hi) in self.fit.ranges.items():
            x = np.asarray(features[name], dtype=float)
            if np.any(x < lo * (1 - RANGE_SLACK)) or np.any(x > hi * (1 + RANGE_SLACK)):
                out.append(name)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The TOML form (one entry of ``[calibration] forms``)."""
        out: dict[str, Any] = {"key": self.key, "geometry": self.geometry, **self.params()}
        if self.fit is not None:
            out["fit"] = self.fit.to_dict()
        return out


def form_terms_s(
    params: Mapping[str, Any],
    *,
    flops: Any,
    nbytes: Any,
    launches: Any,
    programs: Any,
    misaligned: Any,
    head_dim: Any,
    group: Any,
    merge_rounds: Any = 0.0,
    sm_count: int,
    peak_flops_per_s: float,
    bandwidth_bytes_per_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The form of the module docstring for parameters ``params`` (floats or arrays, so the fitting
    routine evaluates it over a sample): (device time, compute term, memory term), seconds."""
    programs = np.maximum(np.asarray(programs, dtype=float), 1.0)
    waves = np.ceil(programs / sm_count)
    busy_sms = np.minimum(programs, float(sm_count))
    nbytes = np.asarray(nbytes, dtype=float)
    flag = np.where(np.asarray(misaligned, dtype=bool), params["misaligned_factor"], 1.0)
    # 1 / sat(x / h) = (1 + (h / x)^p)^(1/p); a kernel moving no bytes has no memory term
    safe_x = np.where(nbytes > 0, nbytes / busy_sms, 1.0)
    p = params["sat_power"]
    slow = (1.0 + (params["half_bytes_per_sm"] / safe_x) ** p) ** (1.0 / p)
    u = busy_sms / sm_count
    hs = params["half_sm_fraction"]
    par = (1.0 + hs) * u / (u + hs) if np.all(hs > 0) else np.ones(np.shape(u))
    # the query heads one KV group's programs serve (g = H_q / H_kv): eta_m scales as g^-gqa_power
    gqa = np.asarray(group, dtype=float) ** (-params["gqa_power"])
    memory_s = np.where(
        nbytes > 0, nbytes * slow / (bandwidth_bytes_per_s * params["eta_m_max"] * flag * par * gqa), 0.0
    )
    d = np.asarray(head_dim, dtype=float)
    eta_c = params["eta_c_max"] * d / (d + params["half_d"]) * par
    flops = np.asarray(flops, dtype=float)
    # F / (P eta_c y / (y + h_f)) with y = F / busy_sms is (F + h_f busy_sms) / (P eta_c); none without FLOPs
    compute_s = np.where(
        flops > 0, (flops + params["half_flops_per_sm"] * busy_sms) / (peak_flops_per_s * eta_c), 0.0
    )
    fixed = (
        params["latency_s"]
        + (np.asarray(launches, dtype=float) - 1) * params["per_launch_s"]
        + (waves - 1) * params["per_wave_s"]
        + np.asarray(merge_rounds, dtype=float) * params["per_merge_s"]
    )
    q = params["overlap_power"]
    top = np.maximum(compute_s, memory_s)
    low = np.minimum(compute_s, memory_s)
    # (c^q + m^q)^(1/q) written as top (1 + (low / top)^q)^(1/q): no overflow at large q
    ratio = np.where(top > 0, low / np.where(top > 0, top, 1.0), 0.0)
    return fixed + top * (1.0 + ratio**q) ** (1.0 / q), compute_s, memory_s


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


def _fit_record(raw: Any, name: str, where: str) -> FitRecord:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: {name} must be a table, got {raw!r:.60}")
    allowed = {"seeds", "n", "ranges", "residual_quantiles", "source"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{where}: {name} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(allowed - set(raw))
    if missing:
        raise ValueError(f"{where}: {name} is missing {missing}")
    seeds = raw["seeds"]
    if not (isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(f"{where}: {name}.seeds must be a list of integers, got {seeds!r:.60}")
    n = raw["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{where}: {name}.n must be an integer >= 1, got {n!r}")
    ranges_raw = raw["ranges"]
    if not isinstance(ranges_raw, dict) or set(ranges_raw) != set(RANGE_FEATURES):
        raise ValueError(f"{where}: {name}.ranges must give [min, max] of exactly {list(RANGE_FEATURES)}")
    ranges = {}
    for feat, pair in ranges_raw.items():
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ValueError(f"{where}: {name}.ranges.{feat} must be [min, max], got {pair!r}")
        lo, hi = (_number(v, f"{name}.ranges.{feat}", where) for v in pair)
        if not 0 <= lo <= hi:
            raise ValueError(f"{where}: {name}.ranges.{feat} must have 0 <= min <= max, got {pair!r}")
        ranges[feat] = (lo, hi)
    quant_raw = raw["residual_quantiles"]
    if not isinstance(quant_raw, dict):
        raise ValueError(f"{where}: {name}.residual_quantiles must be a table")
    quant = {str(k): _number(v, f"{name}.residual_quantiles.{k}", where) for k, v in quant_raw.items()}
    source = raw["source"]
    if not isinstance(source, str) or not source.startswith("fitted:"):
        raise ValueError(f"{where}: {name}.source must start with 'fitted:', got {source!r:.60}")
    return FitRecord(tuple(seeds), n, MappingProxyType(ranges), MappingProxyType(quant), source)


def parse_form(entry: Any, i: int, where: str) -> KernelForm:
    """One ``[calibration] forms`` entry, every parameter checked against :data:`PARAM_BOUNDS`."""
    name = f"calibration.forms[{i}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: {name} must be a table, got {entry!r:.60}")
    allowed = {"key", "geometry", "fit", *FORM_PARAMS}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where}: {name} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    entry = {**ABSENT_BEFORE_PARAM, **entry}
    missing = sorted({"key", "geometry", *FORM_PARAMS} - set(entry))
    if missing:
        raise ValueError(f"{where}: {name} is missing {missing}")
    key = entry["key"]
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: {name}.key must be a non-empty string, got {key!r}")
    if entry["geometry"] not in GEOMETRIES:
        raise ValueError(
            f"{where}: {name}.geometry is {entry['geometry']!r}; allowed: {', '.join(GEOMETRIES)}"
        )
    values = {}
    for p in FORM_PARAMS:
        v = _number(entry[p], f"{name}.{p}", where)
        lo, hi = PARAM_BOUNDS[p]
        if not lo <= v <= hi:
            raise ValueError(f"{where}: {name}.{p} is {v!r}; allowed range [{lo:g}, {hi:g}]")
        values[p] = v
    fit = _fit_record(entry["fit"], f"{name}.fit", where) if "fit" in entry else None
    return KernelForm(key, entry["geometry"], fit=fit, **values)


def parse_forms(raw: Any, where: str) -> Mapping[str, KernelForm]:
    """The ``[calibration] forms`` array as a mapping by timing key (a key given twice is refused)."""
    if not isinstance(raw, list):
        raise ValueError(f"{where}: field 'calibration.forms' must be an array of tables")
    out: dict[str, KernelForm] = {}
    for i, entry in enumerate(raw):
        form = parse_form(entry, i, where)
        if form.key in out:
            raise ValueError(f"{where}: calibration.forms[{i}].key {form.key!r} is given twice")
        out[form.key] = form
    return MappingProxyType(out)


__all__ = [
    "FORM_PARAMS",
    "GEOMETRIES",
    "PARAM_BOUNDS",
    "RANGE_FEATURES",
    "ABSENT_BEFORE_PARAM",
    "RANGE_SLACK",
    "FitRecord",
    "KernelForm",
    "form_terms_s",
    "parse_form",
    "parse_forms",
]
