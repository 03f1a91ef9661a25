"""Fit the kernel-time forms on a training sample: one routine for every timing key (issue 21).

``aqua-model validate fit --profile BASE.toml --train train.jsonl --out FITTED.toml``: every
measured training row (calibrated plans of :data:`FIT_PLANS`, status ok) is a plan time
measured as a CUDA-graph replay. Its prediction is

    graph_launch + sum over the plan's kernels of their form time + one gap per launch after the first

(:func:`aqua_model.simulator.roofline.contributions`), where each kernel's form
(:mod:`aqua_model.hardware.kernel_forms`) is that of its timing key. The parameters of every key
that occurs are fitted together by robust least squares on r = ln(predicted / measured)
(``scipy.optimize.least_squares``, ``loss="soft_l1"`` with scale ``LOSS_SCALE``, bounds
:data:`aqua_model.hardware.kernel_forms.PARAM_BOUNDS`), starting from the micro-benchmarks of the
base profile (:func:`starting_form`) and held near them by a weak prior (``PRIOR_WEIGHT`` per
parameter, in units of its scale), so that a parameter the sample cannot see keeps its measured
value. A parameter whose feature never varies in the sample (launches, waves, the misalignment
flag) is not fitted: it keeps its starting value, and the record says so.

The routine is deterministic (no random restarts): the fitted profile is a function of the base
profile, the training rows and this code. Each form records its fit (seeds, n, feature ranges,
residual quantiles), and the training predictions are written beside the profile for audit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aqua_model._datafiles import read_toml, to_toml
from aqua_model.hardware import HardwareProfile, load
from aqua_model.hardware.kernel_forms import FORM_PARAMS, PARAM_BOUNDS, RANGE_FEATURES, form_terms_s
from aqua_model.models import resolve_shape
from aqua_model.plans import build_plan
from aqua_model.simulator.roofline import (
    VECTOR_DTYPE,
    merge_round_trips,
    misaligned,
    plan_time,
    programs_of,
    timing_key,
)
from aqua_model.simulator.simulation import sizes_of

#: The plans whose kernels the forms are fitted on (the core plans of the held-out protocol).
FIT_PLANS: tuple[tuple[str, str], ...] = (
    ("decode", "dense-fused"),
    ("decode", "aqua-fused"),
    ("prefill", "dense-fused"),
)
#: Launch geometry of each timing key (data, the one place a key's grid rule is named): the
#: split pass follows the split rule; the split-N prologue runs one program per (batch, KV head),
#: the combine one per (batch, query head); library kernels (SDPA: cuDNN's split-KV grid is not
#: known; placing it per (batch, KV head) fitted the 2026-12-01 rows worse, 6.3% against 4.3%
#: median) and generic kernels "device".
GEOMETRY_OF: dict[str, str] = {
    "triton-split:_fused_kernel": "split-n",
    "triton-split:_split_kernel": "split-n-3launch",
    "triton-prologue:_prologue_kernel": "per-kv-head",
    "triton-combine:_combine_kernel": "per-q-head",
}
#: Scale of the soft-L1 loss on ln time (residuals beyond ~10% count linearly, not squared).
LOSS_SCALE = 0.1
#: Weight of the prior pulling each parameter toward its micro-benchmark start, per unit of its
#: scale (:data:`PARAM_SCALE`): weak against a few hundred rows.
PRIOR_WEIGHT = 0.05
#: The scale of each parameter (the step the optimiser and the prior measure it in).
PARAM_SCALE: dict[str, float] = {
    "latency_s": 1e-6,
    "per_launch_s": 1e-6,
    "per_wave_s": 1e-6,
    "eta_m_max": 0.1,
    "eta_c_max": 0.1,
    "half_bytes_per_sm": 16384.0,
    "sat_power": 0.5,
    "half_d": 16.0,
    "half_flops_per_sm": 1e6,
    "half_sm_fraction": 0.1,
    "overlap_power": 1.0,
    "gqa_power": 0.1,
    "per_merge_s": 1e-6,
    "misaligned_factor": 0.1,
}
#: Fewest training rows per parameter of one form (a fit on fewer is refused).
MIN_ROWS_PER_PARAM = 2
#: Starting value of the saturation half-point where no micro-benchmark gives one (bytes per SM).
START_HALF_BYTES_PER_SM = 32768.0
#: Starting sharpness of the bandwidth saturation (1: x / (x + h)).
START_SAT_POWER = 1.0
#: Starting half-point of the SM-occupancy factor (a small one: most launches fill the GPU).
START_HALF_SM_FRACTION = 0.05
#: Starting overlap of compute and memory (a near-max: the roofline's assumption).
START_OVERLAP_POWER = 8.0
#: Starting bandwidth efficiency where the base profile has no table for a key.
START_ETA_M = 0.9
#: Residual quantiles a fit record stores.
RECORD_QUANTILES = (0.1, 0.5, 0.9)
#: How far the fitted profile may disagree with the routine's own prediction (a consistency check).
CONSISTENCY_RTOL = 1e-6


@dataclass
class _Kern:
    key: str
    flops: float
    nbytes: float
    launches: int
    programs: float
    misaligned: bool
    peak: float
    d: float
    geometry: str
    group: float
    merge_rounds: float


@dataclass
class _Row:
    measured_s: float
    fixed_s: float  # graph launch + gaps: the plan time that no form's parameter changes
    kernels: list[_Kern]


def _geometry(key: str, kern: Any) -> str:
    """The launch geometry of ``key`` (:data:`GEOMETRY_OF`); a split-N kernel (one with tile
    rows) whose key the table does not name is refused rather than placed as a library kernel."""
    if key in GEOMETRY_OF:
        return GEOMETRY_OF[key]
    if kern.tile_rows != 0:
        raise ValueError(
            f"timing key {key!r} is a split-N kernel with no launch geometry in "
            f"aqua_model.validate.fit.GEOMETRY_OF (known: {', '.join(GEOMETRY_OF)})"
        )
    return "device"


def fit_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a fit uses: measured (status ok, a positive time) rows of :data:`FIT_PLANS`."""
    return [
        r
        for r in rows
        if (r.get("phase"), r.get("plan")) in FIT_PLANS
        and r.get("status") == "ok"
        and (r.get("measured_s") or 0) > 0
    ]


def _row(r: dict[str, Any], base: HardwareProfile) -> _Row:
    shape = resolve_shape(None, heads_q=r["heads_q"], heads_kv=r["heads_kv"], d=r["d"], dtype=r["dtype"])
    sizes = sizes_of(
        shape, phase=r["phase"], context=r["context"], batch=r["batch"], k=r["k"], prompt=r.get("prompt")
    )
    plan = build_plan(r["plan"], phase=r["phase"], selection=r["selection"])
    values = {"S": base.sector_bytes, **sizes.values()}
    from aqua_model.costs.numeric import evaluate  # the plan's symbolic counts at this shape

    sm_count, graph_launch_s, graph_gap_s = _launch_terms(base)
    kerns = []
    launches = 0
    for kern in plan.kernels:
        key = timing_key(kern)
        geometry = GEOMETRY_OF.get(key) or _geometry(key, kern)
        launches += kern.launches
        kerns.append(
            _Kern(
                key,
                float(evaluate(kern.flops, values)),
                float(evaluate(kern.bytes, values)),
                kern.launches,
                float(programs_of(geometry, kern, values, sm_count)),
                bool(misaligned(kern, values)),
                base.peak_flops(sizes.dtype if kern.unit == "matrix" else VECTOR_DTYPE),
                float(r["d"]),
                geometry,
                float(r["heads_q"]) / float(r["heads_kv"]),
                float(merge_round_trips(geometry, kern, values, sm_count)),
            )
        )
    fixed = graph_launch_s + (launches - 1) * graph_gap_s
    return _Row(float(r["measured_s"]), fixed, kerns)


def _launch_terms(base: HardwareProfile) -> tuple[int, float, float]:
    """(SM count, graph launch, graph gap) of ``base``; ValueError when it lacks them."""
    t = base.terms
    if t.sm_count is None or t.graph_launch_s is None or t.graph_gap_s is None or t.tiny_kernel_s is None:
        raise ValueError(
            f"--profile {base.name!r} must be a calibrated profile with sm_count and the CUDA-graph terms "
            "(graph_launch_s, graph_gap_s, tiny_kernel_s)"
        )
    return t.sm_count, t.graph_launch_s, t.graph_gap_s


def starting_form(key: str, base: HardwareProfile) -> dict[str, float]:
    """The micro-benchmark starting values of ``key``'s parameters from the base profile: the
    stream table's latency, best efficiency, misaligned factor and fill where it has one, else the
    pattern's small-transfer latency (or a tiny kernel's device time) and the datasheet-side
    defaults named in this module."""
    terms = base.terms
    stream = key.split(":", 1)[0]  # the micro-benchmarked implementation kernel of the key
    tables = [t for t in terms.streams if t.stream == stream]
    eff_tables = [t for t in tables if t.y == "efficiency"]
    latency = min((t.latency_s for t in tables), default=None)
    if latency is None:
        pattern = key.split("-", 1)[1] if key.startswith(("vector-", "matrix-")) else "contiguous"
        latency = terms.pattern_latency_s.get(pattern, terms.tiny_kernel_s or 0.0)
    eta_m = max((max(t.ys) for t in eff_tables if t.x != "flops"), default=START_ETA_M)
    eta_c = max(
        (max(t.ys) for t in eff_tables if t.x == "flops"),
        default=base.attention_compute_efficiency or base.compute_efficiency,
    )
    mis = min((t.misaligned_efficiency for t in tables if t.misaligned_efficiency), default=1.0)
    fill = max((t.fill_s for t in tables), default=0.0)
    return {
        "latency_s": float(latency),
        "per_launch_s": float(terms.tiny_kernel_s or 0.0),
        "per_wave_s": float(fill),
        "eta_m_max": float(min(eta_m, 1.0)),
        "eta_c_max": float(min(eta_c, 1.0)),
        "half_bytes_per_sm": START_HALF_BYTES_PER_SM,
        "sat_power": START_SAT_POWER,
        "half_d": 0.0,
        "half_flops_per_sm": 0.0,
        "half_sm_fraction": START_HALF_SM_FRACTION,
        "overlap_power": START_OVERLAP_POWER,
        "gqa_power": 0.0,
        "per_merge_s": 0.0,
        "misaligned_factor": float(mis),
    }


def _free_params(key: str, rows: list[_Row], sm_count: int) -> list[str]:
    """The parameters of ``key`` the sample can see (see the module docstring)."""
    ks = [k for r in rows for k in r.kernels if k.key == key]
    free = ["latency_s", "eta_m_max", "half_bytes_per_sm", "sat_power"]
    if any(k.flops > 0 for k in ks):
        free += ["eta_c_max", "overlap_power", "half_flops_per_sm"]
        if len({k.d for k in ks}) > 1:
            free.append("half_d")
    if len({k.launches for k in ks}) > 1:
        free.append("per_launch_s")
    if len({math.ceil(max(k.programs, 1.0) / sm_count) for k in ks}) > 1:
        free.append("per_wave_s")
    if any(k.programs < sm_count for k in ks) and any(k.programs >= sm_count for k in ks):
        free.append("half_sm_fraction")
    if len({k.group for k in ks}) > 1:
        free.append("gqa_power")
    if len({k.merge_rounds for k in ks}) > 1:
        free.append("per_merge_s")
    if len({k.misaligned for k in ks}) > 1:
        free.append("misaligned_factor")
    return [p for p in FORM_PARAMS if p in free]


def _predict(rows: list[_Row], params: dict[str, dict[str, float]], base: HardwareProfile) -> np.ndarray:
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        total = r.fixed_s
        for k in r.kernels:
            busy, _, _ = form_terms_s(
                params[k.key],
                flops=k.flops,
                nbytes=k.nbytes,
                launches=k.launches,
                programs=k.programs,
                misaligned=k.misaligned,
                head_dim=k.d,
                group=k.group,
                merge_rounds=k.merge_rounds,
                sm_count=_launch_terms(base)[0],
                peak_flops_per_s=k.peak,
                bandwidth_bytes_per_s=base.bandwidth_bytes_per_s,
            )
            total += float(busy)
        out[i] = total
    return out


def fit_forms(
    rows: list[dict[str, Any]], base: HardwareProfile, *, seeds: tuple[int, ...]
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Fit every timing key of ``rows`` (see the module docstring); returns the ``[calibration]
    forms`` entries and the fitted prediction of each row (in the order of :func:`fit_rows`)."""
    from scipy.optimize import least_squares

    sm_count, _, _ = _launch_terms(base)
    used = fit_rows(rows)
    need = MIN_ROWS_PER_PARAM * len(FORM_PARAMS)
    if len(used) < need:
        raise ValueError(
            f"the training rows hold {len(used)} measured rows of {FIT_PLANS}; need at least {need} "
            f"({MIN_ROWS_PER_PARAM} per form parameter)"
        )
    data = [_row(r, base) for r in used]
    keys = sorted({k.key for r in data for k in r.kernels})
    geometries = {k.key: k.geometry for r in data for k in r.kernels}
    start = {key: starting_form(key, base) for key in keys}
    free = {key: _free_params(key, data, sm_count) for key in keys}
    layout = [(key, p) for key in keys for p in free[key]]
    x0 = np.array([start[key][p] / PARAM_SCALE[p] for key, p in layout])
    lo = np.array([PARAM_BOUNDS[p][0] / PARAM_SCALE[p] for _, p in layout])
    hi = np.array([PARAM_BOUNDS[p][1] / PARAM_SCALE[p] for _, p in layout])
    x0 = np.clip(x0, lo, hi)
    measured = np.array([r.measured_s for r in data])

    def unpack(x: np.ndarray) -> dict[str, dict[str, float]]:
        params = {key: dict(start[key]) for key in keys}
        for (key, p), v in zip(layout, x):
            params[key][p] = float(v) * PARAM_SCALE[p]
        return params

    def residuals(x: np.ndarray) -> np.ndarray:
        pred = _predict(data, unpack(x), base)
        return np.concatenate([np.log(np.maximum(pred, 1e-12) / measured), PRIOR_WEIGHT * (x - x0)])

    sol = least_squares(residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=LOSS_SCALE, x_scale=1.0)
    params = unpack(sol.x)
    fitted = _predict(data, params, base)
    resid = np.log(measured / fitted)
    entries = []
    for key in keys:
        ks = [(i, k) for i, r in enumerate(data) for k in r.kernels if k.key == key]
        idx = sorted({i for i, _ in ks})
        feats = {
            "bytes": [k.nbytes for _, k in ks],
            "flops": [k.flops for _, k in ks],
            "programs": [k.programs for _, k in ks],
        }
        fixed = [p for p in FORM_PARAMS if p not in free[key]]
        entries.append(
            {
                "key": key,
                "geometry": geometries[key],
                **params[key],
                "fit": {
                    "seeds": list(seeds),
                    "n": len(idx),
                    "ranges": {f: [float(min(feats[f])), float(max(feats[f]))] for f in RANGE_FEATURES},
                    "residual_quantiles": {
                        f"q{round(q * 100)}": float(np.quantile(resid[idx], q)) for q in RECORD_QUANTILES
                    },
                    "source": (
                        f"fitted: aqua_model.validate.fit (soft-L1 least squares on ln time, scale {LOSS_SCALE}, "
                        f"prior weight {PRIOR_WEIGHT}) on {len(idx)} training rows of seeds {list(seeds)}; "
                        f"not fitted (micro-benchmark start kept): {', '.join(fixed) or 'none'}"
                    ),
                },
            }
        )
    return entries, fitted


def write_fitted_profile(
    *,
    profile: str | Path,
    rows: list[dict[str, Any]],
    out: str | Path,
    seeds: tuple[int, ...],
    name: str | None = None,
    audit_out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Write ``out``: the base ``profile`` with the forms fitted on the training ``rows`` (named
    identity ``name``, stored inside the file; default the base's identity + "-fitted"), and check that the
    written profile predicts every training row as the routine did; the training predictions go
    to ``audit_out`` (JSONL) when given. Returns the form entries."""
    import json

    base = load(Path(profile))
    entries, fitted = fit_forms(rows, base, seeds=seeds)
    doc = read_toml(Path(profile))
    doc["calibration"]["forms"] = entries
    doc["calibration"].pop("intervals", None)  # intervals belong to a fitted model's calibration sample
    doc["name"] = f"{base.name} (fitted forms)"
    doc["calibration"]["identity"] = name or f"{doc['calibration']['identity']}-fitted"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(
        to_toml(doc, header="Calibrated profile with fitted kernel-time forms (aqua-model validate fit)")
    )
    prof = load(Path(out))
    used = fit_rows(rows)
    for r, f in zip(used, fitted):
        shape = resolve_shape(None, heads_q=r["heads_q"], heads_kv=r["heads_kv"], d=r["d"], dtype=r["dtype"])
        sizes = sizes_of(
            shape, phase=r["phase"], context=r["context"], batch=r["batch"], k=r["k"], prompt=r.get("prompt")
        )
        total, _ = plan_time(build_plan(r["plan"], phase=r["phase"], selection=r["selection"]), prof, sizes)
        if not math.isclose(float(total), float(f), rel_tol=CONSISTENCY_RTOL):
            raise AssertionError(
                f"fitted profile predicts {float(total)!r} s for {r['case_id']} where the fit predicted {float(f)!r} s"
            )
    if audit_out is not None:
        with open(audit_out, "w") as fh:
            for r, f in zip(used, fitted):
                fh.write(
                    json.dumps({"case_id": r["case_id"], "measured_s": r["measured_s"], "fitted_s": float(f)})
                    + "\n"
                )
    return entries


__all__ = ["FIT_PLANS", "GEOMETRY_OF", "fit_forms", "fit_rows", "starting_form", "write_fitted_profile"]
