"""Figure (d): roofline of a GPU with each kernel as a point (measured when committed, else predicted)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from aqua_model.hardware import HardwareProfile, resolve_profile
from aqua_model.simulator import predict

from .measured import NO_MEASUREMENTS
from .speedup import Shape
from .style import GREY, OKABE_ITO, PLAN_COLOURS, new_figure, note, styled

#: Plans whose kernels are placed on the chart when predicting.
PLANS: tuple[str, ...] = (
    "dense-fused",
    "dense-eager",
    "aqua-step-topk",
    "aqua-eager",
    "aqua-step-topk-token-major",
)
#: Context and k of the predicted points.
CONTEXT = 32768
K = 96
#: Marker per kernel name.
KERNEL_MARKERS: dict[str, str] = {
    "attention": "o",
    "q_proj": "^",
    "k_proj": "v",
    "topk": "D",
    "scores": "s",
    "softmax": "P",
    "value": "X",
    "gather": "*",
}
#: Line style per roof, in the order given: datasheet, model (datasheet x efficiencies), calibrated.
ROOF_STYLES: tuple[dict[str, Any], ...] = (
    {"color": "black", "linestyle": "-", "linewidth": 1.0},
    {"color": OKABE_ITO["sky_blue"], "linestyle": "--", "linewidth": 0.9},
    {"color": OKABE_ITO["vermillion"], "linestyle": "-.", "linewidth": 0.9},
)
#: Marker sizes (points): dense kernels drawn larger so an AQUA kernel on top leaves a visible ring.
MARKER_SIZE = 4.0
DENSE_MARKER_SIZE = 6.5
#: Arithmetic-intensity range of the chart (FLOP/byte).
INTENSITY_RANGE: tuple[float, float] = (0.1, 3000.0)


@dataclass(frozen=True)
class KernelPoint:
    """One kernel on the roofline: FLOPs, bytes and its time (measured or predicted)."""

    plan: str
    kernel: str
    flops: float
    bytes: float
    time_s: float
    measured: bool

    @property
    def intensity(self) -> float:
        """Arithmetic intensity (FLOP/byte)."""
        return self.flops / self.bytes

    @property
    def flops_per_s(self) -> float:
        """Achieved FLOP rate (FLOP/s)."""
        return self.flops / self.time_s


@dataclass(frozen=True)
class Roof:
    """A roof: peak rates (FLOP/s) of the matrix and vector units and a bandwidth (bytes/s)."""

    label: str
    matrix_flops_per_s: float
    vector_flops_per_s: float
    bandwidth_bytes_per_s: float

    def attainable(self, intensity: np.ndarray, *, unit: str = "matrix") -> np.ndarray:
        """min(peak, bandwidth x intensity)."""
        peak = self.matrix_flops_per_s if unit == "matrix" else self.vector_flops_per_s
        return np.minimum(peak, self.bandwidth_bytes_per_s * np.asarray(intensity, dtype=float))


#: Transfer size used to read a calibrated profile's bandwidth efficiency (bytes): a large read.
LARGE_READ_BYTES = 1e9


def datasheet_roof(profile: HardwareProfile, dtype: str = "bf16") -> Roof:
    """The datasheet peaks and bandwidth of ``profile``."""
    return Roof(
        f"datasheet: {profile.peak_flops(dtype) / 1e12:.0f} TFLOP/s {dtype}, {profile.bandwidth_bytes_per_s / 1e12:.1f} TB/s",
        profile.peak_flops(dtype),
        profile.peak_flops("fp32"),
        profile.bandwidth_bytes_per_s,
    )


def efficiency_roof(profile: HardwareProfile, dtype: str = "bf16") -> Roof:
    """Peaks x compute efficiency and bandwidth x contiguous efficiency (large reads) of ``profile``:
    the roof the model times kernels against (datasheet efficiencies, or a calibrated profile's)."""
    eff = profile.compute_efficiency
    bw = profile.bandwidth_bytes_per_s * float(profile.memory_efficiency("contiguous", LARGE_READ_BYTES))
    what = "model (datasheet x efficiencies)" if profile.mode == "datasheet" else profile.mode
    return Roof(
        f"{what}: {profile.peak_flops(dtype) * eff / 1e12:.0f} TFLOP/s, {bw / 1e12:.2f} TB/s",
        profile.peak_flops(dtype) * eff,
        profile.peak_flops("fp32") * eff,
        bw,
    )


def predicted_points(
    *,
    gpu: str | HardwareProfile = "h200",
    shape: Shape = Shape(),
    context: int = CONTEXT,
    k: int = K,
    plans: Sequence[str] = PLANS,
) -> list[KernelPoint]:
    """Each kernel of each plan at one decode shape, timed by the roofline (kernels with FLOPs only)."""
    out = []
    for plan in plans:
        pred = predict(
            plan=plan,
            phase="decode",
            context=context,
            k=shape.d if plan.startswith("dense") else k,
            gpu=resolve_profile(gpu),
            **shape.kwargs(),
        )
        out += [
            KernelPoint(
                plan, kern["name"], float(kern["flops"]), float(kern["bytes"]), float(kern["time_s"]), False
            )
            for kern in pred.kernels
            if kern["flops"] > 0 and kern["bytes"] > 0
        ]
    return out


def measured_points(rows: Iterable[Mapping]) -> list[KernelPoint]:
    """Each measured kernel of the validation rows with FLOPs, bytes and a measured time > 0."""
    out = []
    for row in rows:
        for kern in row.get("kernels") or []:
            vals = [kern.get(f) for f in ("flops", "bytes", "measured_s")]
            if all(isinstance(v, (int, float)) and v > 0 for v in vals):
                out.append(
                    KernelPoint(
                        str(row.get("plan")),
                        str(kern.get("name")),
                        float(vals[0]),
                        float(vals[1]),
                        float(vals[2]),
                        True,
                    )
                )
    return out


@styled
def roofline_figure(points: Sequence[KernelPoint], *, roofs: Sequence[Roof], title: str = "") -> Figure:
    """Log-log roofline: solid datasheet roof, dashed further roofs; kernels coloured by plan, marked by kernel."""
    if not roofs:
        raise ValueError("roofs must hold at least one Roof, got none")
    fig, ax = new_figure(width="single", height_in=3.5)
    x = np.geomspace(*INTENSITY_RANGE, 200)
    for i, roof in enumerate(roofs):
        style = ROOF_STYLES[i % len(ROOF_STYLES)]
        ax.plot(x, roof.attainable(x), **style)
        ax.plot(x, roof.attainable(x, unit="vector"), **{**style, "linewidth": 0.6})
    base = roofs[0]
    lowest = min(r.matrix_flops_per_s for r in roofs), min(r.vector_flops_per_s for r in roofs)
    ax.text(INTENSITY_RANGE[1] / 1.2, lowest[0] / 1.3, "bf16 tensor cores", ha="right", va="top", fontsize=6)
    ax.text(INTENSITY_RANGE[1] / 1.2, lowest[1] / 1.3, "fp32 vector units", ha="right", va="top", fontsize=6)
    ridge = base.vector_flops_per_s / base.bandwidth_bytes_per_s
    ax.text(
        ridge / 2.5,
        base.bandwidth_bytes_per_s * ridge / 2.5 * 1.6,
        "HBM bandwidth",
        ha="right",
        va="bottom",
        fontsize=6,
    )
    measured = any(p.measured for p in points)
    for p in points:
        filled = p.measured
        c = PLAN_COLOURS.get(p.plan, GREY)
        size = DENSE_MARKER_SIZE if p.plan.startswith("dense") else MARKER_SIZE
        ax.plot(
            [p.intensity],
            [p.flops_per_s],
            marker=KERNEL_MARKERS.get(p.kernel, "o"),
            linestyle="none",
            markersize=size,
            markerfacecolor=c if filled else "white",
            markeredgecolor=c,
            markeredgewidth=0.9,
            alpha=0.85 if filled else 1.0,
            zorder=4,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*INTENSITY_RANGE)
    ax.set_ylim(1e10, base.matrix_flops_per_s * 12)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("FLOP rate (FLOP/s)")
    ax.grid(True, which="major")
    plans = [pl for pl in PLAN_COLOURS if any(p.plan == pl for p in points)]
    kernels = [kn for kn in KERNEL_MARKERS if any(p.kernel == kn for p in points)]
    plan_handles = [Patch(facecolor=PLAN_COLOURS[pl], edgecolor="none", label=pl) for pl in plans]
    kern_handles = [
        Line2D(
            [],
            [],
            color="black",
            linestyle="none",
            marker=KERNEL_MARKERS[kn],
            markersize=4,
            markeredgewidth=0.7,
            markerfacecolor="white" if not measured else "black",
            label=kn,
        )
        for kn in kernels
    ]
    roof_handles = [
        Line2D([], [], **ROOF_STYLES[i % len(ROOF_STYLES)], label=r.label) for i, r in enumerate(roofs)
    ]
    leg1 = ax.legend(handles=roof_handles, loc="upper left", fontsize=5.5)
    ax.add_artist(leg1)
    fig.legend(
        handles=plan_handles + kern_handles,
        loc="outside lower center",
        ncol=4,
        fontsize=5.5,
        columnspacing=0.8,
        title="colour: plan, marker: kernel; "
        + ("filled: measured" if measured else "open: predicted by the model"),
        handletextpad=0.3,
    )
    if title:
        ax.set_title(title, loc="left")
    if not measured:
        note(fig, f"{NO_MEASUREMENTS}; model-predicted kernels")
    return fig
