"""AQUA beside its peers at matched settings: bytes, KV memory, ceilings, predicted speedups
and FLOP break-evens of every method against the dense baseline on one hardware profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from .._checks import check_choice, check_int
from ..costs import peers
from ..costs.convention import Convention, resolve
from ..costs.memory import GQA_SELECTIONS
from ..costs.numeric import evaluate
from ..costs.sizes import Sizes
from ..hardware import HardwareProfile, resolve_profile
from ..models.shape import resolve_shape
from ..plans import build_peer_plan, build_plan
from .roofline import plan_time
from .simulation import check_fits_memory

SCHEMA_VERSION = 1
#: Baseline plans a comparison may be made against.
BASELINES = ("dense-fused", "dense-eager")
#: Default approximate dims as a fraction of d: SparQ's 1/8-transfer setting uses r = d/8
#: with k_t = N/16 (their Table; quoted from memory, see analysis/peers_published.py).
DEFAULT_DIMS_FRACTION = sp.Rational(1, 8)
#: Default tokens kept as a fraction of N: 2048 of 32768, Quest's budget at 32K.
DEFAULT_TOKENS_FRACTION = sp.Rational(1, 16)
#: Default AQUA kept dims as a fraction of d: k = 96 of 128, a 25% reduction.
DEFAULT_AQUA_FRACTION = sp.Rational(3, 4)
#: Quest's default page size in tokens (Quest's released code uses 16; from memory).
DEFAULT_PAGE_TOKENS = 16
#: H2O splits its budget evenly between heavy hitters and the recent window.
DEFAULT_WINDOW_FRACTION = sp.Rational(1, 2)


# -- comparison at matched settings -----------------------------------------------------------


@dataclass(frozen=True)
class MethodRow:
    """One method at the compared setting; ratios are relative to dense attention."""

    method: str
    settings: dict[str, int]
    bytes_per_step: float
    bytes_ratio: float
    kv_memory_ratio: float
    ceiling: float
    predicted_speedup: float
    time_s: float
    flop_breakeven_closed_form: str | None
    flop_breakeven_context: int | None
    closed_forms: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "settings": self.settings,
            "bytes_per_step_per_kv_head": self.bytes_per_step,
            "bytes_ratio": self.bytes_ratio,
            "kv_memory_ratio": self.kv_memory_ratio,
            "ceiling": self.ceiling,
            "predicted_speedup": self.predicted_speedup,
            "time_s": self.time_s,
            "flop_breakeven_closed_form": self.flop_breakeven_closed_form,
            "flop_breakeven_context": self.flop_breakeven_context,
            "closed_forms": self.closed_forms,
        }


@dataclass(frozen=True)
class Comparison:
    """Every method against the dense baseline at one shape, on one hardware profile."""

    gpu: str
    mode: str
    baseline: str
    baseline_time_s: float
    inputs: dict[str, Any]
    convention: Convention
    rows: list[MethodRow]

    def row(self, method: str) -> MethodRow:
        for row in self.rows:
            if row.method == method:
                return row
        raise KeyError(f"no row for method {method!r}; have {[r.method for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "gpu": self.gpu,
            "mode": self.mode,
            "baseline": self.baseline,
            "baseline_time_s": self.baseline_time_s,
            "inputs": self.inputs,
            "convention": self.convention.to_dict(),
            "units": {
                "bytes_per_step_per_kv_head": "bytes",
                "time_s": "s per layer",
                "ratios": "method / dense",
            },
            "methods": [row.to_dict() for row in self.rows],
        }


def default_settings(*, d: int, context: int) -> dict[str, int]:
    """Matched defaults: r = d/8, k_t = b = N/16, p = min(16, N), w = b/2, AQUA k = 3d/4 (each >= 1)."""
    tokens = max(1, int(context * DEFAULT_TOKENS_FRACTION))
    return {
        "r": max(1, int(d * DEFAULT_DIMS_FRACTION)),
        "k_t": tokens,
        "p": min(DEFAULT_PAGE_TOKENS, max(1, context)),  # a page no longer than the context
        "b": tokens,
        "w": int(tokens * DEFAULT_WINDOW_FRACTION),
        "k": max(1, int(d * DEFAULT_AQUA_FRACTION)),
    }


def _closed_forms(method: str, selection: str, layout: str | None, conv: Convention) -> dict[str, str]:
    return {
        "bytes_per_kv_head": str(
            peers.tidy(peers.decode_read_bytes(method, selection=selection, layout=layout))
        ),
        "bytes_ratio": str(peers.tidy(peers.byte_ratio(method, selection=selection, layout=layout))),
        "kv_memory_ratio": str(peers.tidy(peers.memory_ratio(method, layout=layout))),
        "flops_per_query_head": str(sp.simplify(peers.total(peers.flop_terms(method, conv)))),
    }


def compare(
    *,
    d: int,
    context: int,
    gpu: str | HardwareProfile = "h200",
    batch: int = 8,
    heads_q: int = 32,
    heads_kv: int = 8,
    methods: tuple[str, ...] = peers.METHODS,
    r: int | None = None,
    k_t: int | None = None,
    page: int | None = None,
    budget: int | None = None,
    window: int | None = None,
    aqua_k: int | None = None,
    selection: str = "group",
    layouts: dict[str, str] | None = None,
    dtype: str = "bf16",
    baseline: str = "dense-fused",
    convention: Convention | None = None,
) -> Comparison:
    """Every method at matched settings against the dense baseline plan on ``gpu``.

    Settings left ``None`` take :func:`default_settings`; AQUA+top-k's approximate stage uses
    k = r dims, matched to SparQ's and Loki's. Per method: bytes per decode step
    and KV memory relative to dense, the FLOP break-even context (closed form where one
    exists, else the exact integer found by search), the memory-bound ceiling (dense bytes
    over the method's bytes) and the roofline-predicted speedup over ``baseline``.
    """
    check_choice("baseline", baseline, BASELINES)
    check_choice("selection", selection, GQA_SELECTIONS)
    if isinstance(methods, (str, bytes)) or not isinstance(methods, (list, tuple)) or not methods:
        raise TypeError(
            f"methods must be a non-empty list or tuple of method names, e.g. ('aqua',), got {methods!r:.60}"
        )
    for method in methods:
        peers.check_method(method)
    if layouts is not None:
        if not isinstance(layouts, dict):
            raise TypeError(
                f"layouts must be a dict of method -> layout, e.g. {{'aqua': 'dim-major'}}, got {layouts!r:.60}"
            )
        for method in layouts:
            if method not in methods:
                raise ValueError(
                    f"layouts names {method!r}, which is not one of the methods compared ({', '.join(methods)})"
                )
    profile = resolve_profile(gpu)
    shape = resolve_shape(None, heads_q=heads_q, heads_kv=heads_kv, d=d, dtype=dtype)
    n_ctx = check_int("context", context, minimum=1)
    defaults = default_settings(d=shape.d, context=n_ctx)
    given = {"r": r, "k_t": k_t, "p": page, "b": budget, "w": window, "k": aqua_k}
    settings = {
        name: (defaults[name] if value is None else check_int(name, value, minimum=0 if name == "w" else 1))
        for name, value in given.items()
    }
    if budget is not None and window is None:
        settings["w"] = int(settings["b"] * DEFAULT_WINDOW_FRACTION)
    conv = resolve(convention)
    layouts = dict(layouts or {})
    sizes = Sizes(
        heads_q=shape.heads_q,
        heads_kv=shape.heads_kv,
        d=shape.d,
        context=n_ctx,
        batch=check_int("batch", batch, minimum=1),
        k=settings["k"],
        dtype=dtype,
        approx_dims=settings["r"],
        kept_tokens=settings["k_t"],
        page_tokens=settings["p"],
        budget_tokens=settings["b"],
        window_tokens=settings["w"],
    )
    check_fits_memory(shape, profile, sizes)
    base_time, _ = plan_time(
        build_plan(baseline, phase="decode", selection=selection, convention=conv), profile, sizes
    )
    sector = {"S": profile.sector_bytes}  # token-major byte counts are in whole sectors of the device
    dense_bytes = float(evaluate(peers.decode_read_bytes("dense"), {**sizes.values(), **sector}))
    rows = []
    for method in methods:
        layout = layouts.get(method)
        own = {name: settings[name] for name in peers.PARAMETERS[method]}
        if method == "aqua-topk":  # its approximate stage is matched to SparQ's and Loki's r dims
            own["k"] = settings["r"]
        peers.check_params(method, d=shape.d, context=n_ctx, params=own)
        msizes = sizes.with_(k=own["k"]) if "k" in own else sizes
        mvalues = {**msizes.values(), **sector}
        method_bytes = float(
            evaluate(peers.decode_read_bytes(method, selection=selection, layout=layout), mvalues)
        )
        time_s, _ = plan_time(
            build_peer_plan(method, selection=selection, layout=layout, convention=conv), profile, msizes
        )
        closed = peers.breakeven_closed_form(method, conv)
        rows.append(
            MethodRow(
                method=method,
                settings=own,
                bytes_per_step=method_bytes,
                bytes_ratio=method_bytes / dense_bytes,
                kv_memory_ratio=float(evaluate(peers.memory_ratio(method, layout=layout), mvalues)),
                ceiling=dense_bytes / method_bytes,
                predicted_speedup=float(base_time / time_s),
                time_s=float(time_s),
                flop_breakeven_closed_form=None if closed is None else str(closed),
                flop_breakeven_context=peers.breakeven_exact(
                    method, d=shape.d, g=shape.g, convention=conv, **own
                ),
                closed_forms=_closed_forms(method, selection, layout, conv),
            )
        )
    inputs = {
        "d": shape.d,
        "context": n_ctx,
        "batch": int(sizes.batch),
        "heads_q": shape.heads_q,
        "heads_kv": shape.heads_kv,
        "dtype": dtype,
        "selection": selection,
        "layouts": layouts,
    }
    return Comparison(profile.name, profile.mode, baseline, float(base_time), inputs, conv, rows)


__all__ = ["compare", "default_settings", "Comparison", "MethodRow", "BASELINES"]
