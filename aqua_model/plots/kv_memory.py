"""Figure (f): KV-cache memory against context, dense and AQUA with m stored key dims."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from aqua_model.costs import kv_cache_bytes
from aqua_model.costs.dtypes import dtype_bytes
from aqua_model.hardware import HardwareProfile, resolve_profile
from aqua_model.models import ModelConfig, load as load_model

from .style import CYCLE, GREY, new_figure, styled

#: Models shown, one panel each.
MODELS: tuple[str, ...] = ("llama-3.1-8b", "llama-3.1-70b")
#: Stored key dims m of AQUA (m = d is the full key, as dense).
STORED_KEY_DIMS: tuple[int, ...] = (128, 96, 64, 32)
#: Sequences held at once.
BATCH = 8
#: Context range (tokens).
CONTEXT_RANGE: tuple[int, int] = (1024, 131072)
CONTEXT_POINTS = 48
BYTES_PER_GB = 1e9


@dataclass(frozen=True)
class MemoryCurves:
    """KV-cache bytes of one model (all layers, whole batch) for dense and each m."""

    model: str
    d: int
    contexts: np.ndarray
    batch: int
    dense_bytes: np.ndarray
    aqua_bytes: dict[int, np.ndarray]


def kv_memory_data(
    *,
    models: Sequence[str | ModelConfig] = MODELS,
    stored_key_dims: Sequence[int] = STORED_KEY_DIMS,
    batch: int = BATCH,
    contexts: Sequence[int] | None = None,
) -> list[MemoryCurves]:
    """KV-cache sizes from :func:`aqua_model.kv_cache_bytes` x KV heads x layers x batch."""
    ctx = (
        np.asarray(contexts)
        if contexts is not None
        else np.unique(np.round(np.geomspace(*CONTEXT_RANGE, CONTEXT_POINTS)).astype(int))
    )
    out = []
    for model in models:
        cfg = model if isinstance(model, ModelConfig) else load_model(model)
        scale = cfg.kv_heads * cfg.layers * batch
        s = dtype_bytes(cfg.dtype)
        dense = (
            np.asarray(
                kv_cache_bytes(method="dense", d=cfg.head_dim, context=ctx, dtype_bytes=s), dtype=float
            )
            * scale
        )
        aqua = {
            int(m): np.asarray(
                kv_cache_bytes(method="aqua", d=cfg.head_dim, context=ctx, dtype_bytes=s, key_dims=int(m)),
                dtype=float,
            )
            * scale
            for m in stored_key_dims
            if m <= cfg.head_dim
        }
        out.append(MemoryCurves(cfg.name, cfg.head_dim, ctx, batch, dense, aqua))
    return out


@styled
def kv_memory_figure(curves: Sequence[MemoryCurves], *, gpu: str | HardwareProfile = "h200") -> Figure:
    """Log-log KV-cache GB against context, one panel per model, device memory as a line."""
    if not curves:
        raise ValueError("curves must hold at least one model, got none")
    profile = resolve_profile(gpu)
    fig, axes = new_figure(width="double", height_in=2.4, ncols=len(curves), sharey=True)
    axes = np.atleast_1d(axes)
    ms = sorted({m for c in curves for m in c.aqua_bytes}, reverse=True)
    colour = {m: CYCLE[i + 1] for i, m in enumerate(m for m in ms)}
    cap_gb = profile.memory_bytes / BYTES_PER_GB
    for ax, c in zip(axes, curves):
        ax.plot(c.contexts, c.dense_bytes / BYTES_PER_GB, color="black", linewidth=1.6, zorder=3)
        for m in ms:
            if m in c.aqua_bytes:
                ls = ":" if m == c.d else "-"
                ax.plot(c.contexts, c.aqua_bytes[m] / BYTES_PER_GB, color=colour[m], linestyle=ls, zorder=4)
        ax.axhline(cap_gb, color=GREY, linestyle="--", linewidth=0.9)
        ax.text(
            c.contexts[0] * 1.1,
            cap_gb * 1.12,
            f"{profile.name.replace('NVIDIA ', '')} memory {cap_gb:.0f} GB",
            fontsize=6,
            color=GREY,
            va="bottom",
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlim(c.contexts[0], c.contexts[-1])
        ax.set_xlabel("context N (tokens, log scale)")
        ax.set_title(f"{c.model}, batch {c.batch}, bf16, d = {c.d}", loc="left")
        ax.grid(True, which="major")
    axes[0].set_ylabel("KV cache, all layers (GB)")
    top = max(float(c.dense_bytes.max()) for c in curves) / BYTES_PER_GB
    axes[0].set_ylim(top=max(top, cap_gb) * 2.5)
    handles = [Line2D([], [], color="black", linewidth=1.6, label="dense (K and V)")]
    handles += [
        Line2D(
            [],
            [],
            color=colour[m],
            linestyle=":" if m == max(ms) else "-",
            label=f"AQUA, m = {m} key dims" + (" (= dense)" if m == max(ms) else ""),
        )
        for m in ms
    ]
    axes[-1].legend(handles=handles, loc="lower right")
    return fig
