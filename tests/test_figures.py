"""Figures: each renders headless and non-empty, its data agree with the model, output is reproducible."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from aqua_model import breakeven as model_breakeven, kv_cache_bytes
from aqua_model.hardware import load as load_hardware
from aqua_model.models import load as load_model
from aqua_model.plots import (
    FIGURES,
    breakdown,
    breakeven,
    catalog,
    kv_memory,
    load_figures,
    parity,
    register,
    roofline_chart,
    speedup,
)
from aqua_model.plots.measured import NO_MEASUREMENTS, calibrated_profile, read_jsonl, validation_rows
from aqua_model.plots.style import savefig
from aqua_model.simulator import predict, simulate, time_breakeven

ROOT = Path(__file__).resolve().parents[1]
SHAPE = speedup.Shape()
SMALL_CONTEXTS = (512, 4096, 32768)


def _texts(fig: Figure) -> list[str]:
    out = [t.get_text() for t in fig.texts] + [leg.get_title().get_text() for leg in fig.legends]
    if fig._suptitle is not None:
        out.append(fig._suptitle.get_text())
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts] + [ax.get_title(loc) for loc in ("left", "center", "right")]
    return out


def _non_empty(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    assert fig.axes, "figure has no axes"
    assert any(ax.lines or ax.collections or ax.patches or ax.images for ax in fig.axes), (
        "figure draws nothing"
    )
    fig.canvas.draw()  # renders headless on Agg without error
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>" and ax.get_xlabel():
            assert "(" in ax.get_xlabel(), f"x label without unit: {ax.get_xlabel()!r}"


# -- measured-data fixture ---------------------------------------------------------------------


def _row(plan: str, context: int, k: int, measured_s: float, **extra) -> dict:
    shape = {"heads_q": SHAPE.heads_q, "heads_kv": SHAPE.heads_kv, "d": SHAPE.d, "batch": SHAPE.batch}
    pred = predict(plan=plan, phase="decode", context=context, k=k, gpu="h200", **shape)
    kernels = [
        {
            "name": kn["name"],
            "measured_s": kn["time_s"] * 1.05,
            "predicted_datasheet_s": kn["time_s"],
            "flops": kn["flops"],
            "bytes": kn["bytes"],
        }
        for kn in pred.kernels
    ]
    return {
        "case_id": f"decode/{plan}/N{context}/k{k}",
        "status": "ok",
        "phase": "decode",
        "plan": plan,
        "context": context,
        "prompt": None,
        "k": k,
        "dtype": "bf16",
        "measured_s": measured_s,
        "measured_iqr_s": measured_s * 0.01,
        "predicted_datasheet_s": pred.total_s,
        "predicted_calibrated_s": pred.total_s * 1.02,
        "kernels": kernels,
        **shape,
        **extra,
    }


@pytest.fixture(scope="module")
def measured_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    folder = root / "validation" / "results" / "h200"
    folder.mkdir(parents=True)
    rows = []
    for n in (2048, 32768):
        rows.append(_row("dense-fused", n, SHAPE.d, 1.0e-4 * n / 2048))
        rows.append(_row("aqua-fused", n, 96, 0.9e-4 * n / 2048))
        rows.append(_row("aqua-eager", n, 96, 8.0e-4 * n / 2048))
    rows.append({**_row("aqua-fused", 8192, 32, 1e-4), "status": "skipped", "measured_s": None})
    (folder / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    kern = [
        {
            "context": n,
            "k": 32,
            "batch": SHAPE.batch,
            "heads_q": SHAPE.heads_q,
            "heads_kv": SHAPE.heads_kv,
            "dense_sdpa_s": 1e-4,
            "aqua_fused_s": 0.8e-4,
            "dense_triton_s": 1.1e-4,
            "aqua_fused_group_s": None if n == 8192 else 0.5e-4,
        }
        for n in (8192, 65536)
    ]
    (folder / "decode_kernels.jsonl").write_text("\n".join(json.dumps(r) for r in kern) + "\n")
    toml = (ROOT / "aqua_model" / "hardware" / "data" / "h200-sxm.toml").read_text()
    toml = toml.replace('mode = "datasheet"', 'mode = "calibrated"')
    toml += (
        '\n[calibration]\ndevice = "test"\ndriver = "test"\ntorch = "test"\ntriton = "test"\ndate = "2026-01-01"\n'
        'method = "test fixture"\nidentity = "h200-calibrated"\nbase = "h200-sxm"\n'
    )
    (folder / "h200-calibrated.toml").write_text(toml)
    return root


# -- (a) break-even ----------------------------------------------------------------------------


def test_breakeven_data_and_paper_point() -> None:
    curves = breakeven.breakeven_data()
    assert {(c.d, c.phase) for c in curves} == {(d, p) for d in (64, 128, 256) for p in ("decode", "prefill")}
    for c in curves:
        for i in (0, len(c.k) // 2, len(c.k) - 1):
            assert c.n_star[i] == model_breakeven(c.d, int(c.k[i]), phase=c.phase).n_star
    fig = breakeven.breakeven_figure(curves)
    _non_empty(fig)
    ax = fig.axes[0]
    marked = [ln for ln in ax.lines if ln.get_marker() == "o" and len(ln.get_xdata()) == 1]
    for phase in ("decode", "prefill"):
        want = model_breakeven(128, 96, phase=phase).n_star
        assert any(ln.get_xdata()[0] == 96 and ln.get_ydata()[0] == want for ln in marked), phase
    assert breakeven.paper_point("decode")[1] == model_breakeven(128, 96).n_star


# -- (b) heatmap -------------------------------------------------------------------------------


def test_speedup_heatmap_matches_simulate() -> None:
    grid = speedup.speedup_grid_data(contexts=(256, 4096, 65536), ks=(32, 96, 128))
    for i, n in enumerate(grid.contexts):
        for j, k in enumerate(grid.ks):
            want = float(
                simulate(gpu="h200", context=int(n), k=int(k), plan=speedup.PLAN, **SHAPE.kwargs()).speedup
            )
            assert grid.speedup[i, j] == pytest.approx(want, rel=1e-12)
    fig = speedup.speedup_heatmap_figure(speedup.speedup_grid_data())
    _non_empty(fig)
    contour = [c for c in fig.axes[0].collections if type(c).__name__ in ("QuadContourSet", "ContourSet")]
    assert contour and 1.0 in list(contour[0].levels)


# -- (c) speedup lines -------------------------------------------------------------------------


def test_speedup_lines_breakevens_equal_model() -> None:
    data = speedup.speedup_lines_data(ks=(64, 96))
    for k in (64, 96):
        assert data.flop_breakeven[k] == model_breakeven(128, k, g=SHAPE.g).n_star
        assert data.time_breakeven[k] == time_breakeven(gpu="h200", k=k, plan=speedup.PLAN, **SHAPE.kwargs())
        want = simulate(gpu="h200", context=data.contexts, k=k, plan=speedup.PLAN, **SHAPE.kwargs()).speedup
        np.testing.assert_allclose(data.predicted[k], want, rtol=1e-12)
    fig = speedup.speedup_lines_figure(data)
    _non_empty(fig)
    points = {
        (float(ln.get_xdata()[0]), ln.get_marker()) for ln in fig.axes[0].lines if len(ln.get_xdata()) == 1
    }
    for k in (64, 96):
        assert (float(data.flop_breakeven[k]), "x") in points
        assert (float(data.time_breakeven[k]), "o") in points
    assert NO_MEASUREMENTS in _texts(fig)


def test_speedup_lines_with_measurements(measured_root: Path) -> None:
    meas = catalog.speedup_measurements(measured_root)
    val = sorted((m["context"], m["speedup"]) for m in meas if m["source"] == "validation")
    assert val == [(2048, pytest.approx(1 / 0.9)), (32768, pytest.approx(1 / 0.9))]
    # group-selection time when measured (the model's default selection), else the per-head kernel
    assert sorted((m["context"], m["speedup"]) for m in meas if m["source"] == "decode_kernels") == [
        (8192, pytest.approx(1.25)),
        (65536, pytest.approx(2.0)),
    ]
    data = speedup.speedup_lines_data(
        ks=(32, 96), calibrated=calibrated_profile(measured_root), measured=meas
    )
    assert data.calibrated is not None
    fig = speedup.speedup_lines_figure(data)
    _non_empty(fig)
    assert NO_MEASUREMENTS not in _texts(fig)


# -- (d) roofline ------------------------------------------------------------------------------


def test_roofline_points_and_roofs() -> None:
    prof = load_hardware("h200")
    pts = roofline_chart.predicted_points(gpu=prof)
    pred = predict(
        plan="dense-fused", phase="decode", context=roofline_chart.CONTEXT, k=128, gpu=prof, **SHAPE.kwargs()
    )
    att = next(p for p in pts if p.plan == "dense-fused" and p.kernel == "attention")
    assert att.intensity == pred.kernels[0]["flops"] / pred.kernels[0]["bytes"]
    assert att.flops_per_s == pred.kernels[0]["flops"] / pred.kernels[0]["time_s"]
    assert all(p.flops > 0 for p in pts)
    roof = roofline_chart.datasheet_roof(prof)
    assert roof.attainable(np.array([1e6]))[0] == prof.peak_flops("bf16")
    assert roof.attainable(np.array([1.0]))[0] == prof.bandwidth_bytes_per_s
    fig = roofline_chart.roofline_figure(pts, roofs=[roof, roofline_chart.efficiency_roof(prof)])
    _non_empty(fig)
    assert NO_MEASUREMENTS in " ".join(_texts(fig))


def test_roofline_measured(measured_root: Path) -> None:
    rows = validation_rows(measured_root)
    pts = roofline_chart.measured_points(rows)
    assert pts and all(p.measured for p in pts)
    first = next(k for k in rows[0]["kernels"] if k["flops"] > 0)
    assert any(p.flops_per_s == first["flops"] / first["measured_s"] for p in pts)
    _non_empty(
        roofline_chart.roofline_figure(pts, roofs=[roofline_chart.datasheet_roof(load_hardware("h200"))])
    )


# -- (e) parity --------------------------------------------------------------------------------


def test_parity_placeholder_and_data(measured_root: Path) -> None:
    empty = parity.parity_figure(parity.parity_data([]))
    _non_empty(empty)
    assert NO_MEASUREMENTS in _texts(empty)
    rows = validation_rows(measured_root)
    assert len(rows) == 6  # the skipped row is left out
    data = parity.parity_data(rows)
    assert set(data) == {"datasheet", "calibrated"}
    assert [p.predicted_s for p in data["datasheet"]] == [r["predicted_datasheet_s"] for r in rows]
    fig = parity.parity_figure(data)
    _non_empty(fig)
    assert len(fig.axes) == 2
    assert (
        parity.ParityPoint("p", "decode", 1.0, 1.09).within_band
        and not parity.ParityPoint("p", "decode", 1.0, 1.11).within_band
    )


# -- (f) KV memory -----------------------------------------------------------------------------


def test_kv_memory_matches_model() -> None:
    curves = kv_memory.kv_memory_data(contexts=(1024, 131072))
    for c, name in zip(curves, kv_memory.MODELS):
        cfg = load_model(name)
        np.testing.assert_array_equal(c.dense_bytes, cfg.kv_bytes_per_token() * c.contexts * kv_memory.BATCH)
        np.testing.assert_array_equal(c.aqua_bytes[cfg.head_dim], c.dense_bytes)
        want = (
            kv_cache_bytes(method="aqua", d=cfg.head_dim, context=1024, key_dims=32)
            * cfg.kv_heads
            * cfg.layers
            * kv_memory.BATCH
        )
        assert c.aqua_bytes[32][0] == want
    _non_empty(kv_memory.kv_memory_figure(kv_memory.kv_memory_data()))


# -- (g) breakdown -----------------------------------------------------------------------------


def test_breakdown_matches_predict(measured_root: Path) -> None:
    data = breakdown.breakdown_data()
    for plan, parts in data.predicted.items():
        k = 128 if plan.startswith("dense") else 96
        total = predict(plan=plan, phase="decode", context=32768, k=k, gpu="h200", **SHAPE.kwargs()).total_s
        assert sum(t for _, t in parts) == pytest.approx(total, rel=1e-12)
    fig = breakdown.breakdown_figure(data)
    _non_empty(fig)
    assert any(NO_MEASUREMENTS in t for t in _texts(fig))
    data_m = breakdown.breakdown_data(rows=validation_rows(measured_root))
    assert set(data_m.measured) == set(breakdown.PLANS)
    row = next(
        r for r in validation_rows(measured_root) if r["plan"] == "aqua-eager" and r["context"] == 32768
    )
    assert sum(t for _, t in data_m.measured["aqua-eager"]) == pytest.approx(row["measured_s"])
    _non_empty(breakdown.breakdown_figure(data_m))


# -- readers, registry, CLI, reproducibility ----------------------------------------------------


def test_readers_tolerate_absent_files(tmp_path: Path) -> None:
    assert read_jsonl(tmp_path / "nope.jsonl") == []
    assert validation_rows(tmp_path) == []
    assert calibrated_profile(tmp_path) is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_jsonl(bad)


def test_registry_and_plugins() -> None:
    figures = load_figures()
    assert {
        "breakeven",
        "speedup_heatmap",
        "speedup_lines",
        "roofline",
        "parity",
        "kv_memory",
        "breakdown",
    } <= set(figures)

    @register("test_extra", "a test figure", "nothing")
    def _extra(out_dir: Path, root: Path) -> list[Path]:
        return []

    try:
        assert FIGURES["test_extra"].build is _extra
        with pytest.raises(ValueError, match="already registered"):
            register("test_extra", "x", "y")(lambda out_dir, root: [])
    finally:
        FIGURES.pop("test_extra")


def _run_cli(*argv: str) -> int:
    from aqua_model.commands import figures_cmd

    parser = argparse.ArgumentParser()
    figures_cmd.add_parser(parser.add_subparsers(), "figures")
    args = parser.parse_args(["figures", *argv])
    return args.run(args)


def test_cli_all_figures_with_measurements(measured_root: Path, tmp_path: Path) -> None:
    assert _run_cli("--out", str(tmp_path), "--root", str(measured_root)) == 0
    for name in (
        "breakeven",
        "speedup_heatmap",
        "speedup_lines",
        "roofline",
        "parity",
        "kv_memory",
        "breakdown",
    ):
        assert (tmp_path / f"{name}.pdf").stat().st_size > 1000
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    readme = (tmp_path / "README.md").read_text()
    assert "`breakeven.pdf`" in readme and "`breakdown.pdf`" in readme
    assert _run_cli("--out", str(tmp_path), "--only", "no-such-figure") == 2


def test_savefig_reproducible(tmp_path: Path) -> None:
    data = breakdown.breakdown_data()
    first = savefig(breakdown.breakdown_figure(data), tmp_path / "a")
    second = savefig(breakdown.breakdown_figure(data), tmp_path / "b")
    for p, q in zip(first, second):
        assert p.read_bytes() == q.read_bytes(), p.name
    assert b"CreationDate" not in first[0].read_bytes()


def test_cli_reproducible_across_processes(tmp_path: Path) -> None:
    code = (
        "import sys; from aqua_model.commands import figures_cmd as f; import argparse; p = argparse.ArgumentParser(); "
        "f.add_parser(p.add_subparsers(), 'figures'); a = p.parse_args(['figures', '--out', sys.argv[1], '--only', 'parity', 'kv_memory']); "
        "sys.exit(a.run(a))"
    )
    for out in ("one", "two"):
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / out)], check=True, cwd=ROOT, capture_output=True
        )
    for name in ("parity.pdf", "parity.png", "kv_memory.pdf", "kv_memory.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
