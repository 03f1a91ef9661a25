"""Figure (g): per-kernel time of dense fused, AQUA fused and AQUA eager decode at one shape."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from aqua_model.hardware import HardwareProfile, resolve_profile
from aqua_model.simulator import predict

from .measured import NO_MEASUREMENTS, matches
from .speedup import Shape
from .style import GREY, OKABE_ITO, new_figure, styled

#: Plans compared, top to bottom.
PLANS: tuple[str, ...] = ("dense-fused", "aqua-step-topk", "aqua-eager")
CONTEXT = 32768
K = 96
#: Colour per kernel (Okabe-Ito; "other" is measured time no kernel row accounts for).
KERNEL_COLOURS: dict[str, str] = {
    "attention": OKABE_ITO["blue"],
    "q_proj": OKABE_ITO["orange"],
    "k_proj": OKABE_ITO["sky_blue"],
    "topk": OKABE_ITO["bluish_green"],
    "gather": OKABE_ITO["vermillion"],
    "scores": OKABE_ITO["reddish_purple"],
    "softmax": OKABE_ITO["yellow"],
    "value": "#999999",
    "other": "#DDDDDD",
}
SECONDS_TO_US = 1e6
#: Measured kernel sums below the case time by more than this fraction get an "other" segment.
OTHER_MIN_FRACTION = 0.02


@dataclass(frozen=True)
class Breakdown:
    """Per-kernel seconds per plan, predicted and (where committed) measured."""

    shape: Shape
    context: int
    k: int
    gpu: str
    mode: str
    predicted: dict[str, list[tuple[str, float]]]
    measured: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def _plan_k(plan: str, shape: Shape, k: int) -> int:
    return shape.d if plan.startswith("dense") else k


def measured_breakdown(
    rows: Iterable[Mapping], *, shape: Shape, context: int, k: int, plans: Sequence[str]
) -> dict[str, list[tuple[str, float]]]:
    """Measured per-kernel seconds of each plan's row at the shape (plus "other" for unattributed time)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for plan in plans:
        hit = [
            r
            for r in rows
            if matches(
                r,
                phase="decode",
                plan=plan,
                context=context,
                k=_plan_k(plan, shape, k),
                batch=shape.batch,
                heads_q=shape.heads_q,
                heads_kv=shape.heads_kv,
                d=shape.d,
            )
        ]
        if not hit:
            continue
        row = hit[0]
        parts = [
            (str(kn["name"]), float(kn["measured_s"]))
            for kn in row.get("kernels") or []
            if isinstance(kn.get("measured_s"), (int, float)) and kn["measured_s"] > 0
        ]
        rest = float(row["measured_s"]) - sum(t for _, t in parts)
        if not parts or rest > OTHER_MIN_FRACTION * float(row["measured_s"]):
            parts.append(("other", max(rest, 0.0) if parts else float(row["measured_s"])))
        out[plan] = parts
    return out


def breakdown_data(
    *,
    gpu: str | HardwareProfile = "h200",
    shape: Shape = Shape(),
    context: int = CONTEXT,
    k: int = K,
    plans: Sequence[str] = PLANS,
    rows: Iterable[Mapping] = (),
) -> Breakdown:
    """Predicted kernels from :func:`aqua_model.predict`; measured from validation rows at the same shape."""
    profile = resolve_profile(gpu)
    predicted = {}
    for plan in plans:
        pred = predict(
            plan=plan,
            phase="decode",
            context=context,
            k=_plan_k(plan, shape, k),
            gpu=profile,
            **shape.kwargs(),
        )
        predicted[plan] = [(str(kn["name"]), float(kn["share_s"])) for kn in pred.kernels]
    measured = measured_breakdown(list(rows), shape=shape, context=context, k=k, plans=plans)
    return Breakdown(shape, context, k, profile.name, profile.mode, predicted, measured)


@styled
def breakdown_figure(data: Breakdown) -> Figure:
    """Horizontal stacked bars (µs per layer): one bar per plan, predicted and measured side by side."""
    bars: list[tuple[str, list[tuple[str, float]]]] = []
    for plan in data.predicted:
        if data.measured:
            bars.append((f"{plan}, predicted", data.predicted[plan]))
            if plan in data.measured:
                bars.append(("measured", data.measured[plan]))
        else:
            bars.append((plan, data.predicted[plan]))
    fig, ax = new_figure(height_in=0.55 + 0.38 * len(bars))
    y = np.arange(len(bars))[::-1]
    seen: list[str] = []
    for yi, (_, parts) in zip(y, bars):
        left = 0.0
        for name, t in parts:
            w = t * SECONDS_TO_US
            ax.barh(
                yi,
                w,
                left=left,
                height=0.7,
                color=KERNEL_COLOURS.get(name, GREY),
                edgecolor="white",
                linewidth=0.4,
            )
            left += w
            if name not in seen:
                seen.append(name)
        ax.text(left, yi, f" {left:,.0f} µs", va="center", ha="left", fontsize=6)
    ax.set_yticks(y, [label for label, _ in bars])
    ax.set_xlabel("time per layer (µs)")
    xmax = max(sum(t for _, t in parts) for _, parts in bars) * SECONDS_TO_US
    ax.set_xlim(0, xmax * 1.3)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.grid(True, axis="x")
    ax.set_axisbelow(True)
    order = [n for n in KERNEL_COLOURS if n in seen] + [n for n in seen if n not in KERNEL_COLOURS]
    handles = [Patch(facecolor=KERNEL_COLOURS.get(n, GREY), label=n) for n in order]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 5),
        handlelength=1.0,
        columnspacing=0.9,
        title="kernel" + ("" if data.measured else f" ({NO_MEASUREMENTS})"),
    )
    fig.suptitle(
        f"{data.gpu.replace('NVIDIA ', '')} ({data.mode}), decode N = {data.context:,}, k = {data.k}\n"
        f"{data.shape.heads_q} q / {data.shape.heads_kv} kv heads, d = {data.shape.d}, batch {data.shape.batch}",
        x=0.01,
        ha="left",
        fontsize=6,
    )
    return fig
