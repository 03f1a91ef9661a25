"""Predicted latency and speedup of AQUA plans against dense attention on a hardware profile.

Everything is vectorised: ``context``, ``k`` and ``batch`` may be numpy arrays and broadcast.
Every prediction states its mode: ``"datasheet"`` or ``"calibrated:<profile>"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import check_choice, check_int
from ..costs import memory
from ..costs.breakeven_search import BREAKEVEN_SEARCH_LIMIT, smallest_winning_context
from ..costs.convention import Convention, resolve
from ..costs.dtypes import QUANTISED_KV_DTYPES
from ..costs.flop_breakeven import breakeven
from ..costs.flops import PHASES
from ..costs.memory import GQA_SELECTIONS
from ..costs.numeric import evaluate
from ..costs.sizes import Sizes, check_context
from ..hardware import HardwareProfile, resolve_profile
from ..models import ModelConfig
from ..models.shape import Shape, resolve_shape
from ..plans import build_plan, describe, plan_names
from ..plans.shape_limits import shape_limit
from .intervals import fmt_interval, speedup_bounds, time_bounds
from .plan_status import plan_status
from .roofline import KernelTime, contributions, plan_time

#: The dense baseline every AQUA plan is compared with: FlashAttention/SDPA-style decode.
BASELINE_PLAN = "dense-fused"
#: Short plan names accepted by simulate()/the CLI, mapped to plan names.
AQUA_PLAN_ALIASES = {
    "fused": "aqua-fused",
    "eager": "aqua-eager",
    "token-major": "aqua-token-major",
    "step": "aqua-step-topk",
}


@dataclass(frozen=True)
class PlanResult:
    """One plan evaluated: per-kernel roofline times and the per-layer total (seconds)."""

    plan: str
    kernels: list[KernelTime]
    time_s: np.ndarray
    #: What the plan is and what implements it, or "model-only" (:func:`aqua_model.plans.describe`).
    description: str = ""
    #: "model-only at d=...: <why>" when the plan's implementation cannot run the shape, else "".
    limit: str = ""

    @property
    def extrapolation(self) -> str:
        """ "extrapolates: <kernel> (<features>), ..." where a kernel's fitted form was evaluated
        outside the range it was fitted on (:mod:`aqua_model.hardware.kernel_forms`), else ""."""
        parts = [f"{kt.name} ({', '.join(kt.extrapolates)})" for kt in self.kernels if kt.extrapolates]
        return f"extrapolates: {', '.join(parts)} outside the fitted range" if parts else ""

    def table(self) -> list[dict[str, Any]]:
        """Per-kernel rows (scalars where the sweep is a single point). ``time_s`` is the
        kernel launched alone; ``share_s`` what it adds to the plan (its launch overhead
        partly hidden behind the previous kernel); the shares sum to the plan's time."""
        return [
            {
                "name": kt.name,
                "pattern": kt.pattern,
                "flops": _scalar(kt.flops),
                "bytes": _scalar(kt.bytes),
                "time_s": _scalar(kt.time_s),
                "share_s": _scalar(share),
                "bound": _scalar(kt.bound),
                "flops_utilisation": _scalar(kt.flops_utilisation),
                "bandwidth_utilisation": _scalar(kt.bandwidth_utilisation),
            }
            for kt, share in zip(self.kernels, contributions(self.kernels))
        ]


@dataclass(frozen=True)
class Prediction:
    """A single plan's predicted time at one shape (the validation suite's unit), with its 80%
    interval [``low_s``, ``high_s``] where the profile carries one (calibrated mode, a plan the
    in-sample grid measured: :mod:`aqua_model.simulator.intervals`), else None; ``status`` is
    "model-only at d=...: <why>" where the plan's implementation cannot run the shape
    (:mod:`aqua_model.plans.shape_limits`) and/or "unvalidated: <reason>" for a plan whose
    held-out p90 error exceeds 25% (:mod:`aqua_model.simulator.plan_status`), else ""."""

    plan: str
    mode: str
    total_s: float
    kernels: list[dict[str, Any]]
    low_s: float | None = None
    high_s: float | None = None
    status: str = ""

    def interval_text(self, *, scale: float = 1e6, unit: str = " us") -> str:
        """``"167.4 us [160.2, 175.1]"``."""
        bounds = None if self.low_s is None else (self.low_s, self.high_s)
        return fmt_interval(self.total_s, bounds, unit=unit, scale=scale, digits=1)


@dataclass(frozen=True)
class Simulation:
    """Dense baseline and AQUA plan side by side, per layer and for all layers."""

    gpu: str
    mode: str
    shape: Shape
    phase: str
    dense: PlanResult
    aqua: PlanResult
    ceiling: np.ndarray | None
    flop_breakeven: int | None
    convention: Convention
    inputs: dict[str, Any] = field(default_factory=dict)
    profile: HardwareProfile | None = None

    @property
    def speedup(self) -> np.ndarray:
        """Dense fused time over AQUA plan time."""
        return self.dense.time_s / self.aqua.time_s

    @property
    def speedup_interval(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The 80% interval of the speedup (calibrated profiles with a frozen interval), or None."""
        return (
            None
            if self.profile is None
            else speedup_bounds(self.profile, self.phase, self.aqua.plan, self.speedup)
        )

    def time_interval(self, which: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The 80% interval of the ``"dense"`` or ``"aqua"`` plan's time, or None."""
        check_choice("which", which, ("dense", "aqua"))
        res = self.dense if which == "dense" else self.aqua
        return None if self.profile is None else time_bounds(self.profile, self.phase, res.plan, res.time_s)

    @property
    def statuses(self) -> dict[str, str]:
        """Per plan of the two, "model-only at d=...: <why>" where its implementation cannot run
        the shape, "extrapolates: ..." where a fitted form left its range, and/or "unvalidated:
        <reason>" (:mod:`aqua_model.simulator.plan_status`), or ""."""
        return {
            res.plan: "; ".join(
                t for t in (res.limit, res.extrapolation, plan_status(self.phase, res.plan)) if t
            )
            for res in (self.dense, self.aqua)
        }

    def speedup_text(self) -> str:
        """``"1.31x [1.24, 1.38]"`` (a scalar simulation)."""
        return fmt_interval(float(np.asarray(self.speedup).reshape(-1)[0]), self.speedup_interval)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-layer times; all-layer times multiply by ``layers``)."""
        return {
            "gpu": self.gpu,
            "mode": self.mode,
            "phase": self.phase,
            "model": self.shape.name,
            "inputs": {k: _scalar(v) for k, v in self.inputs.items()},
            "layers": self.shape.layers,
            "dense_plan": self.dense.plan,
            "aqua_plan": self.aqua.plan,
            "dense_plan_description": self.dense.description,
            "aqua_plan_description": self.aqua.description,
            "dense_time_s": _scalar(self.dense.time_s),
            "aqua_time_s": _scalar(self.aqua.time_s),
            "dense_time_all_layers_s": _scalar(self.dense.time_s * self.shape.layers),
            "aqua_time_all_layers_s": _scalar(self.aqua.time_s * self.shape.layers),
            "speedup": _scalar(self.speedup),
            "ceiling": None if self.ceiling is None else _scalar(self.ceiling),
            "flop_breakeven_context": self.flop_breakeven,
            "convention": self.convention.to_dict(),
            "kernels": {"dense": self.dense.table(), "aqua": self.aqua.table()},
            "intervals": self._intervals_dict(),
            "plan_status": self.statuses,
        }

    def _intervals_dict(self) -> dict[str, Any]:
        """The 80% intervals (None where the profile has none) and where they come from."""
        out: dict[str, Any] = {"level": 0.8}
        for key, bounds in (
            ("dense_time_s", self.time_interval("dense")),
            ("aqua_time_s", self.time_interval("aqua")),
            ("speedup", self.speedup_interval),
        ):
            out[key] = None if bounds is None else [_scalar(bounds[0]), _scalar(bounds[1])]
        iv = None if self.profile is None else self.profile.terms.interval(self.phase, self.aqua.plan)
        out["source"] = (
            iv.source
            if iv is not None
            else (
                "none: datasheet mode (a lead, not a prediction)"
                if self.mode == "datasheet"
                else "none: this calibrated profile holds no interval for the plan"
            )
        )
        return out


def _scalar(x: Any) -> Any:
    arr = np.asarray(x)
    if arr.ndim == 0:
        return arr.item()
    return arr.tolist()


def sizes_of(shape: Shape, *, phase: str, context: Any, batch: Any, k: Any, prompt: Any) -> Sizes:
    """The validated :class:`Sizes` of one evaluation of ``shape``: the context checked against
    the model's maximum, and capped at its sliding window (a query attends to at most that)."""
    ctx, prompt_a = check_context(phase, context, prompt)
    if (
        shape.max_context is not None
        and int(ctx.max()) + (0 if prompt_a is None else int(np.max(prompt_a))) > shape.max_context
    ):
        worst = int(ctx.max()) + (0 if prompt_a is None else int(np.max(prompt_a)))
        raise ValueError(
            f"context {int(ctx.max())} exceeds the maximum context of {shape.name} ({shape.max_context} tokens)"
            if prompt_a is None
            else f"prompt + context = {worst} tokens (prompt up to {int(np.max(prompt_a))}, context up to "
            f"{int(ctx.max())}) exceeds the maximum context of {shape.name} ({shape.max_context} tokens)"
        )
    if shape.sliding_window > 0:  # a sliding-window model attends to at most the window
        ctx = np.minimum(ctx, shape.sliding_window)
    if k is None:
        raise ValueError("k (kept dims) is required")
    if phase == "prefill" and shape.cache_dtype in QUANTISED_KV_DTYPES:
        raise ValueError(
            f"kv_dtype {shape.cache_dtype!r} is modelled for decode only: the plans count every tensor at the KV "
            "element size, and prefill's score tensors dominate its bytes"
        )
    return Sizes(
        heads_q=shape.heads_q,
        heads_kv=shape.heads_kv,
        d=shape.d,
        context=ctx,
        batch=batch,
        k=k,
        dtype=shape.dtype,
        phase=phase,
        prompt=prompt_a,
        kv_dtype=shape.kv_dtype,
    )


def _kv_bytes_all_layers(shape: Shape, tokens: Any, batch: Any) -> np.ndarray:
    per_head = evaluate(
        memory.kv_cache_bytes("dense"), {"N": tokens, "d": shape.d, "s": shape.kv_element_bytes}
    )
    return per_head * shape.heads_kv * shape.layers * np.asarray(batch)


def max_fitting_context(shape: Shape, profile: HardwareProfile, batch: int) -> int:
    """Largest context whose dense KV cache (all layers, whole batch) fits the device memory."""
    per_token = float(_kv_bytes_all_layers(shape, 1, batch))
    return int(profile.memory_bytes // per_token)


def check_fits_memory(shape: Shape, profile: HardwareProfile, sizes: Sizes) -> None:
    """Raise if the dense KV cache of all layers does not fit the device memory."""
    tokens = np.asarray(sizes.context) + np.asarray(0 if sizes.prompt is None else sizes.prompt)
    worst = float(np.max(_kv_bytes_all_layers(shape, tokens, sizes.batch)))
    if worst > profile.memory_bytes:
        raise ValueError(
            f"the KV cache needs {worst / 1e9:.1f} GB (all {shape.layers} layers, batch and context as given) "
            f"but {profile.name} has {profile.memory_bytes / 1e9:.1f} GB"
        )


def simulate(
    *,
    gpu: str | HardwareProfile,
    context: Any,
    k: Any,
    batch: Any = 1,
    model: str | ModelConfig | None = None,
    heads_q: Any = None,
    heads_kv: Any = None,
    d: Any = None,
    layers: Any = None,
    phase: str = "decode",
    prompt: Any = None,
    plan: str = "fused",
    selection: str = "group",
    dtype: str | None = None,
    convention: Convention | None = None,
    kv_dtype: str | None = None,
) -> Simulation:
    """Predict the dense fused plan and an AQUA plan side by side (per layer).

    ``plan`` is an AQUA plan: ``fused``, ``eager``, ``token-major`` or a full plan name.
    ``kv_dtype`` stores the KV cache in ``fp8`` or ``int4`` (decode; see
    :mod:`aqua_model.costs.dtypes`) while attention computes in ``dtype``.
    ``context``, ``k`` and ``batch`` may be arrays (broadcast). Raises on a context beyond
    the model's maximum or a KV cache larger than the device memory.
    """
    check_choice("phase", phase, PHASES)
    check_choice("selection", selection, GQA_SELECTIONS)
    profile = resolve_profile(gpu)
    shape = resolve_shape(
        model, heads_q=heads_q, heads_kv=heads_kv, d=d, layers=layers, dtype=dtype, kv_dtype=kv_dtype
    )
    aqua_plans = [p for p in plan_names(phase) if p.startswith("aqua")]
    if not isinstance(plan, str):  # names the argument rather than failing on the alias lookup
        check_choice("plan", plan, (*AQUA_PLAN_ALIASES, *aqua_plans))
    aqua_name = AQUA_PLAN_ALIASES.get(plan, plan)
    check_choice("plan", aqua_name, aqua_plans)
    if shape.cache_dtype == "int4" and "token-major" in aqua_name:
        raise ValueError(
            f"plan {aqua_name!r} with kv_dtype 'int4' is not modelled: the sector model needs a whole number of "
            "elements per sector, and int4 group scales are stored apart"
        )
    sizes = sizes_of(shape, phase=phase, context=context, batch=batch, k=k, prompt=prompt)
    check_fits_memory(shape, profile, sizes)
    conv = resolve(convention)
    dense = _run(BASELINE_PLAN, phase, selection, conv, profile, sizes)
    aqua = _run(aqua_name, phase, selection, conv, profile, sizes)
    ceiling = None
    if phase == "decode":
        ceiling = evaluate(memory.byte_ceiling_speedup(), {"d": sizes.d, "k": sizes.k})
    k_scalar = np.asarray(sizes.k)
    flop_be = (
        breakeven(shape.d, int(k_scalar), g=shape.g, phase=phase, convention=conv).n_min
        if k_scalar.ndim == 0
        else None
    )
    inputs = {
        "context": sizes.context,
        "k": sizes.k,
        "batch": sizes.batch,
        "selection": selection,
        "dtype": shape.dtype,
        "kv_dtype": shape.cache_dtype,
    }
    if phase == "prefill":
        inputs["prompt"] = sizes.prompt
    return Simulation(
        profile.name, profile.mode, shape, phase, dense, aqua, ceiling, flop_be, conv, inputs, profile
    )


def _run(
    name: str, phase: str, selection: str, conv: Convention, profile: HardwareProfile, sizes: Sizes
) -> PlanResult:
    plan = build_plan(name, phase=phase, selection=selection, convention=conv)
    total, kernels = plan_time(plan, profile, sizes)
    return PlanResult(name, kernels, total, describe(plan), shape_limit(plan, d=int(sizes.d)))


def speedup(**kwargs: Any) -> np.ndarray:
    """Dense fused time over AQUA plan time; same keywords as :func:`simulate`."""
    return simulate(**kwargs).speedup


def predict(
    *,
    plan: str,
    phase: str,
    context: int,
    batch: int,
    heads_q: int,
    heads_kv: int,
    d: int,
    k: int,
    gpu: HardwareProfile | str,
    dtype: str = "bf16",
    prompt: int | None = None,
    selection: str = "group",
    convention: Convention | None = None,
) -> Prediction:
    """One plan's predicted per-layer time at one shape (any plan, dense or AQUA): the total
    and, in ``kernels``, each kernel's time alone and its share of the total. Raises when one
    layer's KV cache alone exceeds the device memory."""
    prof = resolve_profile(gpu)
    check_choice("phase", phase, PHASES)
    check_choice("plan", plan, plan_names(phase))
    for name, value in (("context", context), ("batch", batch), ("k", k)):  # one shape: scalars only
        check_int(name, value, minimum=0 if name == "context" else 1)
    if prompt is not None:
        check_int("prompt", prompt, minimum=1)
    shape = resolve_shape(None, heads_q=heads_q, heads_kv=heads_kv, d=d, dtype=dtype)
    sizes = sizes_of(shape, phase=phase, context=context, batch=batch, k=k, prompt=prompt)
    check_fits_memory(shape, prof, sizes)  # one layer's KV cache must fit the device, as in simulate
    result = _run(plan, phase, selection, resolve(convention), prof, sizes)
    total = float(result.time_s)
    bounds = time_bounds(prof, phase, plan, total)
    low, high = (None, None) if bounds is None else (float(bounds[0]), float(bounds[1]))
    status = "; ".join(t for t in (result.limit, result.extrapolation, plan_status(phase, plan)) if t)
    return Prediction(plan, prof.mode, total, result.table(), low, high, status)


def time_breakeven(*, limit: int = BREAKEVEN_SEARCH_LIMIT, **kwargs: Any) -> int | None:
    """Smallest context at which the AQUA plan is predicted faster than dense fused (decode).

    An exact search over every integer context 1..``limit`` (vectorised), capped at the
    model's maximum context and at the largest KV cache that fits the device; ``None`` if
    the AQUA plan never wins in that range. Takes :func:`simulate`'s keywords except ``context``.
    """
    if "context" in kwargs:
        raise ValueError("time_breakeven searches the context itself; do not pass context")
    if kwargs.get("phase", "decode") != "decode":
        raise ValueError(
            f"time_breakeven is decode only (the context of a decode step); got phase={kwargs['phase']!r}"
        )
    for name in ("k", "batch"):  # the search sweeps the context: every other size is one number
        if name in kwargs:
            check_int(name, kwargs[name], minimum=1)
    if "gpu" not in kwargs:
        raise TypeError(
            "time_breakeven needs gpu= (a device name, profile path or HardwareProfile), as simulate does"
        )
    cap = check_int(
        "limit", limit, minimum=1, maximum=BREAKEVEN_SEARCH_LIMIT
    )  # the search holds every context at once
    shape = resolve_shape(
        kwargs.get("model"),
        heads_q=kwargs.get("heads_q"),
        heads_kv=kwargs.get("heads_kv"),
        d=kwargs.get("d"),
        layers=kwargs.get("layers"),
        dtype=kwargs.get("dtype"),
        kv_dtype=kwargs.get("kv_dtype"),
    )
    cap = min(
        cap,
        shape.max_context or cap,
        max_fitting_context(
            shape, resolve_profile(kwargs["gpu"]), check_int("batch", kwargs.get("batch", 1), minimum=1)
        ),
    )
    return smallest_winning_context(
        lambda contexts: simulate(context=contexts, **kwargs).speedup > 1.0, lower=1, limit=cap
    )
