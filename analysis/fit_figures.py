"""Figures of the fit protocol (issue 21 item 6), from what was measured:

* ``figures/fit_parity_<seed>``: predicted against measured time of every test-sample case (the
  fitted model, calibrated mode), each with its split-conformal 80% interval, per core plan;
* ``figures/fit_speedup_<seed>``: the default aqua_decode call's speedup over SDPA against context
  for the break-even settings: the measured points of the bisection, the predicted speedup with its
  80% band, the measured time break-even (solid) and the predicted one (dashed).

    python analysis/fit_figures.py --seed SEED [--results validation/results/h200] [--out figures]

Reads ``fit-SEED-test.jsonl``, ``h200-fit-SEED.toml`` and the break-even rows
``fit-SEED-run/breakeven.jsonl`` under --results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqua_model.hardware import load  # noqa: E402
from aqua_model.plots.style import GREY, new_figure, note, savefig, styled  # noqa: E402

US = 1e6
PLANS = (("decode", "dense-fused"), ("decode", "aqua-fused"), ("prefill", "dense-fused"))
COLOURS = {"decode/dense-fused": "#4c72b0", "decode/aqua-fused": "#dd8452", "prefill/dense-fused": "#55a868"}
K_COLOURS = ("#4c72b0", "#dd8452", "#55a868")


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@styled
def parity_figure(rows: list[dict[str, Any]], seed: int):
    fig, ax = new_figure(width="single", height_in=3.2)
    lo_all, hi_all = np.inf, 0.0
    for phase, plan in PLANS:
        rs = [
            r
            for r in rows
            if r["phase"] == phase and r["plan"] == plan and r.get("status") == "ok" and r.get("measured_s")
        ]
        if not rs:
            continue
        m = np.array([r["measured_s"] for r in rs]) * US
        p = np.array([r["predicted_calibrated_s"] for r in rs]) * US
        lo = np.array([r.get("predicted_calibrated_low_s") or np.nan for r in rs]) * US
        hi = np.array([r.get("predicted_calibrated_high_s") or np.nan for r in rs]) * US
        inside = (lo <= m) & (m <= hi)
        key = f"{phase}/{plan}"
        ax.errorbar(
            m,
            p,
            yerr=np.vstack([p - lo, hi - p]),
            fmt="o",
            ms=2.5,
            lw=0.5,
            color=COLOURS[key],
            alpha=0.8,
            label=f"{key} ({inside.mean():.0%} of {len(rs)} inside 80%)",
        )
        lo_all, hi_all = min(lo_all, np.nanmin(lo), m.min()), max(hi_all, np.nanmax(hi), m.max())
    xs = np.array([lo_all * 0.8, hi_all * 1.25])
    ax.plot(xs, xs, color=GREY, lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured (us, CUDA-graph replay)")
    ax.set_ylabel("predicted (us) with 80% interval")
    ax.legend(fontsize=6, loc="upper left")
    note(fig, f"H200, test seed {seed}: fit on train, intervals on calibration")
    return fig


@styled
def speedup_figure(profile: Any, be_rows: list[dict[str, Any]], seed: int):
    from aqua_model.simulator import simulate

    results = [r for r in be_rows if r.get("kind") == "result"]
    panels = sorted({(r["model"], r["heads_q"], r["heads_kv"], r["d"], r["batch"]) for r in results})
    ncols = 2
    nrows = max(1, -(-len(panels) // ncols))
    fig, axes = new_figure(width="double", height_in=2.2 * nrows, nrows=nrows, ncols=ncols)
    axes = np.atleast_1d(axes).reshape(-1)
    for ax, (model, hq, hkv, d, batch) in zip(axes, panels):
        mine = [
            r
            for r in results
            if (r["model"], r["heads_q"], r["heads_kv"], r["d"], r["batch"]) == (model, hq, hkv, d, batch)
        ]
        for colour, r in zip(K_COLOURS, sorted(mine, key=lambda r: r["k"])):
            pts = sorted(
                (
                    p
                    for p in be_rows
                    if p.get("kind") == "point" and all(p[f] == r[f] for f in ("model", "batch", "k"))
                ),
                key=lambda p: p["context"],
            )
            grid = np.unique(np.geomspace(16, r["grid_max"], 200).astype(int) // 16 * 16)
            grid = grid[grid > 0]
            sim = simulate(
                gpu=profile,
                context=grid,
                k=r["k"],
                batch=batch,
                heads_q=hq,
                heads_kv=hkv,
                d=d,
                plan="fused",
                selection=r["selection"],
            )
            ax.plot(grid, sim.speedup, color=colour, lw=1.0, label=f"k={r['k']} predicted")
            band = sim.speedup_interval
            if band is not None:
                ax.fill_between(grid, band[0], band[1], color=colour, alpha=0.15, lw=0)
            ax.plot([p["context"] for p in pts], [p["speedup"] for p in pts], "o", ms=2.5, color=colour)
            if r["breakeven_context"]:
                ax.axvline(r["breakeven_context"], color=colour, lw=0.8)
            pred = np.flatnonzero(np.asarray(sim.speedup) > 1.0)
            if pred.size:
                ax.axvline(grid[pred[0]], color=colour, lw=0.8, ls="--")
        ax.axhline(1.0, color=GREY, lw=0.6)
        ax.set_xscale("log")
        ax.set_title(f"{model} ({hq}/{hkv}, d={d}), batch {batch}", fontsize=7)
        ax.set_xlabel("context N")
        ax.set_ylabel("SDPA / aqua_decode time")
        ax.legend(fontsize=5)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    note(
        fig,
        f"H200, seed {seed}: points measured, lines predicted (80% band); solid: measured break-even, dashed: predicted",
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", required=True, type=int)
    ap.add_argument("--results", default=Path("validation/results/h200"), type=Path)
    ap.add_argument("--out", default=Path("figures"), type=Path)
    args = ap.parse_args(argv)
    rows = _rows(args.results / f"fit-{args.seed}-test.jsonl")
    written = savefig(parity_figure(rows, args.seed), args.out / f"fit_parity_{args.seed}")
    be_path = args.results / f"fit-{args.seed}-run" / "breakeven.jsonl"
    if be_path.exists():
        prof = load(args.results / f"h200-fit-{args.seed}.toml")
        written += savefig(
            speedup_figure(prof, _rows(be_path), args.seed), args.out / f"fit_speedup_{args.seed}"
        )
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
