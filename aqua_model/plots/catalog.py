"""The paper figures (a)-(g) and the fidelity Pareto figure, registered for ``aqua-model figures``.

Each builder reads the committed measurements under ``<root>/validation/results/h200/`` when
they exist and otherwise draws the model alone, saying "no measurements committed".
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from aqua_model.hardware import load as load_hardware

from . import breakdown, breakeven, kv_memory, parity, register, roofline_chart, speedup
from .measured import (
    calibrated_profile,
    decode_kernel_rows,
    fused_kernel_time,
    matches,
    measured_speedups,
    validation_rows,
)
from .style import savefig

#: The device every GPU figure is drawn for (and whose measurements it reads).
GPU = "h200"
#: Decode shape of the GPU figures: a Llama-3.1-8B layer at batch 8 (a validation sweep shape).
SHAPE = speedup.Shape()
#: Committed fidelity tables, most specific first.
FIDELITY_TABLES: tuple[str, ...] = ("fidelity_pareto.csv", "fidelity_summary.csv", "fidelity_per_head.csv")
FIDELITY_DIR = Path("analysis") / "results"


@register(
    "breakeven",
    "(a) FLOP break-even context against k for d = 64, 128, 256, decode and prefill; paper point d = 128, k = 96",
    "aqua_model.breakeven() (closed form, g = 1)",
)
def build_breakeven(out_dir: Path, root: Path) -> Sequence[Path]:
    return savefig(breakeven.breakeven_figure(breakeven.breakeven_data()), out_dir / "breakeven")


@register(
    "speedup_heatmap",
    "(b) predicted speedup of AQUA fused decode over dense fused, context x k, with the 1.0 contour",
    "aqua_model.simulate() on the H200 datasheet profile, Llama-3.1-8B layer, batch 8",
)
def build_speedup_heatmap(out_dir: Path, root: Path) -> Sequence[Path]:
    return savefig(
        speedup.speedup_heatmap_figure(speedup.speedup_grid_data(gpu=GPU, shape=SHAPE)),
        out_dir / "speedup_heatmap",
    )


def speedup_measurements(root: Path, shape: speedup.Shape = SHAPE) -> list[dict[str, float]]:
    """Measured speedups at ``shape``: validation.jsonl (dense-fused / aqua-fused) and decode_kernels.jsonl (SDPA / fused)."""
    sel = {"batch": shape.batch, "heads_q": shape.heads_q, "heads_kv": shape.heads_kv}
    out = [
        {"context": r["context"], "k": r["k"], "speedup": r["speedup"], "source": "validation"}
        for r in measured_speedups(validation_rows(root, GPU))
        if matches(r, d=shape.d, **sel)
    ]
    out += [
        {
            "context": r["context"],
            "k": r["k"],
            "speedup": r["dense_sdpa_s"] / fused_kernel_time(r),
            "source": "decode_kernels",
        }
        for r in decode_kernel_rows(root, GPU)
        if matches(r, **sel) and r.get("d", shape.d) == shape.d
    ]
    return out


@register(
    "speedup_lines",
    "(c) speedup against context for k = 32, 64, 96, 112: predicted lines, measured points, FLOP and time break-even",
    "simulate(), breakeven(), time_breakeven(); measured: validation/results/h200/{validation,decode_kernels}.jsonl when committed",
)
def build_speedup_lines(out_dir: Path, root: Path) -> Sequence[Path]:
    data = speedup.speedup_lines_data(
        gpu=GPU, shape=SHAPE, calibrated=calibrated_profile(root, GPU), measured=speedup_measurements(root)
    )
    return savefig(speedup.speedup_lines_figure(data), out_dir / "speedup_lines")


@register(
    "roofline",
    "(d) H200 roofline (datasheet, model efficiencies, calibrated when committed) with each kernel as a point",
    "hardware profile h200; measured kernels from validation.jsonl, else kernels predicted by the plans at N = 32K, k = 96, batch 8",
)
def build_roofline(out_dir: Path, root: Path) -> Sequence[Path]:
    profile = load_hardware(GPU)
    roofs = [roofline_chart.datasheet_roof(profile), roofline_chart.efficiency_roof(profile)]
    cal = calibrated_profile(root, GPU)
    if cal is not None:
        roofs.append(roofline_chart.efficiency_roof(cal))
    points = roofline_chart.measured_points(
        r for r in validation_rows(root, GPU) if r.get("phase") == "decode"
    )
    if points:
        title = f"{profile.name.replace('NVIDIA ', '')}, measured decode kernels"
    else:
        points = roofline_chart.predicted_points(gpu=profile, shape=SHAPE)
        title = f"{profile.name.replace('NVIDIA ', '')}, decode N = {roofline_chart.CONTEXT:,}, k = {roofline_chart.K}, batch {SHAPE.batch}"
    return savefig(roofline_chart.roofline_figure(points, roofs=roofs, title=title), out_dir / "roofline")


@register(
    "parity",
    "(e) predicted against measured time per case, +-10 % band, per plan (datasheet and calibrated)",
    "validation/results/h200/validation.jsonl (placeholder until committed)",
)
def build_parity(out_dir: Path, root: Path) -> Sequence[Path]:
    return savefig(parity.parity_figure(parity.parity_data(validation_rows(root, GPU))), out_dir / "parity")


@register(
    "kv_memory",
    "(f) KV-cache memory against context for Llama-3.1-8B and 70B: dense and AQUA with m = 128, 96, 64, 32 stored key dims",
    "aqua_model.kv_cache_bytes() x KV heads x layers x batch 8; H200 memory from its profile",
)
def build_kv_memory(out_dir: Path, root: Path) -> Sequence[Path]:
    return savefig(kv_memory.kv_memory_figure(kv_memory.kv_memory_data(), gpu=GPU), out_dir / "kv_memory")


@register(
    "breakdown",
    "(g) per-kernel time of dense fused, AQUA fused and AQUA eager decode at N = 32K, k = 96, batch 8",
    "aqua_model.predict() on the H200 datasheet profile; measured per-kernel rows of validation.jsonl when committed",
)
def build_breakdown(out_dir: Path, root: Path) -> Sequence[Path]:
    data = breakdown.breakdown_data(gpu=GPU, shape=SHAPE, rows=validation_rows(root, GPU))
    return savefig(breakdown.breakdown_figure(data), out_dir / "breakdown")


def fidelity_table(root: Path) -> list[dict[str, str]] | None:
    """The committed fidelity summary rows (aggregated from the per-head table if that is all there is), or None."""
    for name in FIDELITY_TABLES:
        path = root / FIDELITY_DIR / name
        if path.is_file():
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            if name == "fidelity_per_head.csv":
                from aqua_model.fidelity.study import aggregate

                rows = aggregate(rows)
            return rows
    return None


@register(
    "fidelity_pareto",
    "attention output error against the decode byte ratio (k/d+1)/2, per method (AQUA, SparQ-, Loki-style, random)",
    "analysis/results/fidelity_pareto.csv (analysis/fidelity_study.py), drawn by aqua_model.plots.fidelity",
)
def build_fidelity(out_dir: Path, root: Path) -> Sequence[Path]:
    if importlib.util.find_spec("aqua_model.plots.fidelity") is None:
        return []
    rows = fidelity_table(root)
    if not rows:
        return []
    from .fidelity import fidelity_pareto_figure

    return savefig(fidelity_pareto_figure(rows), out_dir / "fidelity_pareto")
