"""The rows of the standard tables (break-even, cost breakdown, predicted speedups), shared by
the CLI report and the analysis scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from ..costs import component_flops, decode_read_bytes
from ..costs.convention import Convention, resolve
from ..costs.flop_breakeven import breakeven
from ..costs.flops import COMPONENTS
from .parallel import one_gpu_fit
from .whole_model import end_to_end

#: Head dimensions of the report: 64 (GPT-2, MiniLM-scale), 128 (Llama, Mistral, Qwen), 256 (Gemma).
REPORT_HEAD_DIMS = (64, 128, 256)
#: Kept fractions k/d of the report; 3/4 is the paper's operating point (96 of 128).
REPORT_KEEP_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 0.875)
#: Table entry for a break-even that does not exist (AQUA never needs fewer FLOPs).
NEVER = "never"
#: The AQUA paper's operating point on Llama-3.1-8B.
PAPER_D, PAPER_K = 128, 96


def breakeven_rows(
    head_dims: Sequence[int] = REPORT_HEAD_DIMS,
    keep_fractions: Sequence[float] = REPORT_KEEP_FRACTIONS,
    *,
    g: int = 1,
    convention: Convention | None = None,
) -> list[dict[str, Any]]:
    """One row per (d, k) with the decode and prefill FLOP break-even."""
    conv = resolve(convention)
    rows = []
    for d in head_dims:
        for frac in keep_fractions:
            k = max(1, round(frac * d))
            dec = breakeven(d, k, g=g, phase="decode", convention=conv)
            pre = breakeven(d, k, g=g, phase="prefill", convention=conv)
            rows.append(
                {
                    "d": d,
                    "k": k,
                    "g": g,
                    "reduction": f"{dec.reduction:.1%}",
                    "decode_N_star": NEVER if dec.never else round(dec.n_star, 2),
                    "decode_N_min": dec.n_min or NEVER,
                    "prefill_T_star": NEVER if pre.never else round(pre.n_star, 2),
                    "prefill_T_min": pre.n_min or NEVER,
                    "convention": conv.label(),
                }
            )
    return rows


def breakdown_rows(
    *,
    d: int = PAPER_D,
    k: int = PAPER_K,
    context: int = 4096,
    g: int = 1,
    dtype_bytes: int = 2,
    convention: Convention | None = None,
) -> list[dict[str, Any]]:
    """Per-component decode FLOPs per query head and K+V bytes per KV head, dense vs AQUA."""
    dense = component_flops(
        method="dense", phase="decode", d=d, k=None, context=context, g=g, convention=convention
    )
    aqua = component_flops(
        method="aqua", phase="decode", d=d, k=k, context=context, g=g, convention=convention
    )
    rows = [
        {"quantity": f"{c} per query head", "unit": "FLOP", "dense": float(dense[c]), "aqua": float(aqua[c])}
        for c in (*COMPONENTS, "total")
    ]
    for layout in ("dim-major", "token-major"):
        rows.append(
            {
                "quantity": f"K+V read per step per KV head ({layout} keys)",
                "unit": "byte",
                "dense": float(
                    decode_read_bytes(method="dense", d=d, k=d, context=context, g=g, dtype_bytes=dtype_bytes)
                ),
                "aqua": float(
                    decode_read_bytes(
                        method="aqua", d=d, k=k, context=context, g=g, dtype_bytes=dtype_bytes, layout=layout
                    )
                ),
            }
        )
    return rows


#: Predicted-speedup table of the report: serving contexts and kept dims on Llama-3.1-8B.
REPORT_SPEEDUP_CONTEXTS = (4096, 16384, 65536, 131072)
REPORT_SPEEDUP_KS = (32, 64, 96)
REPORT_SPEEDUP_BATCH = 8


def speedup_rows(
    *,
    gpu: str = "h200",
    model: str = "llama-3.1-8b",
    contexts: Sequence[int] = REPORT_SPEEDUP_CONTEXTS,
    ks: Sequence[int] = REPORT_SPEEDUP_KS,
    batch: int = REPORT_SPEEDUP_BATCH,
    plan: str = "aqua-step-topk",
) -> list[dict[str, Any]]:
    """Predicted attention and end-to-end decode speedups of an AQUA plan over dense fused, each row
    with the weights + KV-cache bytes of one GPU and whether they fit it (else the smallest tensor-parallel
    degree that does: the end-to-end figure of such a row is for a configuration one GPU cannot hold)."""
    rows = []
    for k in ks:
        for ctx in contexts:
            e2e = end_to_end(gpu=gpu, model=model, context=ctx, k=k, batch=batch, plan=plan)
            sim = e2e.simulation
            fit = one_gpu_fit(gpu=gpu, model=model, context=ctx, batch=batch)
            fits = "yes" if fit["fits"] else f"no (t >= {fit['smallest_tensor_parallel']})"
            rows.append(
                {
                    "k": k,
                    "context": ctx,
                    "batch": batch,
                    "dense_us_per_layer": round(float(sim.dense.time_s) * 1e6, 1),
                    "aqua_us_per_layer": round(float(sim.aqua.time_s) * 1e6, 1),
                    "speedup": round(float(sim.speedup), 3),
                    "ceiling": round(float(cast(Any, sim.ceiling)), 3),  # set for decode simulations
                    "end_to_end_speedup": round(float(e2e.speedup), 3),
                    "memory_GB": round(fit["memory_bytes"] / 1e9, 1),
                    "fits_one_gpu": fits,
                    "mode": sim.mode,
                }
            )
    return rows
