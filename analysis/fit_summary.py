"""Score the fit protocol (issue 21) on CPU: fit, set intervals, judge on the test sample.

The frozen procedure, after the one device call of ``validation/run_h200_fit.sh``:

1. fit the kernel-time forms on the training rows (:func:`aqua_model.validate.fit.write_fitted_profile`)
   over the call's micro-benchmark profile (the starting values);
2. re-predict the calibration rows with the fitted profile and freeze split-conformal 80% intervals
   from them (``conformal=True``: per plan on ln(measured / predicted), the speedup from the paired
   residuals);
3. re-predict the test rows with that final profile and score them against issue 21's targets;
4. set the measured time break-even of each setting beside the predicted one (with the interval
   the speedup's interval implies) and the FLOP break-even.

    python analysis/fit_summary.py --run RUN_DIR --seed SEED [--out-dir validation/results/h200]

RUN_DIR holds what the device call wrote (h200-fit-base.toml, train.jsonl, calibration.jsonl,
test-SEED.jsonl, breakeven.jsonl). Writes, under --out-dir: h200-fit-SEED.toml (the final
profile), fit-SEED-train-audit.jsonl, fit-SEED-calibration.jsonl and fit-SEED-test.jsonl (the
re-predicted rows), fit-SEED-summary.md and fit-SEED-summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqua_model.hardware import load  # noqa: E402
from aqua_model.validate.fit import FIT_PLANS, write_fitted_profile  # noqa: E402
from aqua_model.validate.intervals import freeze_intervals  # noqa: E402
from aqua_model.validate.report import COVERAGE_GOAL, build_report, coverage, speedup_coverage  # noqa: E402
from aqua_model.validate.runner import read_rows, repredict_rows  # noqa: E402

#: Issue 21's targets on the test sample, calibrated mode: (name, stats table, plan key, statistic, limit).
TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("decode aqua-fused: median abs error", "time", "decode/aqua-fused", "median_abs", 0.05),
    ("decode aqua-fused: p90 abs error", "time", "decode/aqua-fused", "p90_abs", 0.12),
    ("decode aqua-fused: max abs error", "time", "decode/aqua-fused", "max_abs", 0.30),
    ("decode dense-fused (SDPA): median abs error", "time", "decode/dense-fused", "median_abs", 0.03),
    ("decode dense-fused (SDPA): p90 abs error", "time", "decode/dense-fused", "p90_abs", 0.08),
    ("AQUA/SDPA speedup: median abs error", "ratio", "decode/aqua-fused", "median_abs", 0.04),
    ("AQUA/SDPA speedup: p90 abs error", "ratio", "decode/aqua-fused", "p90_abs", 0.12),
    (
        "prefill dense-fused (SDPA causal): median abs error",
        "time",
        "prefill/dense-fused",
        "median_abs",
        0.05,
    ),
    ("prefill dense-fused (SDPA causal): p90 abs error", "time", "prefill/dense-fused", "p90_abs", 0.12),
)
COVERAGE_KEYS = ("decode/aqua-fused", "decode/dense-fused", "prefill/dense-fused", "all")
#: The measured time break-even must lie within this fraction of the predicted one (issue 21).
BREAKEVEN_TOLERANCE = 0.20
#: Contexts the predicted break-even is searched over: aligned (multiples of 16) up to the grid's end.
ALIGN_TOKENS = 16


def _datasheet(profile: Any) -> Any:
    return load(profile.calibration["base"])


def _core(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if (r.get("phase"), r.get("plan")) in FIT_PLANS]


def run_protocol(run: Path, seed: int, out_dir: Path) -> dict[str, Any]:
    """Steps 1-3 of the module docstring; returns the paths and the scored report."""
    base = run / "h200-fit-base.toml"
    train = read_rows(run / "train.jsonl")
    calib = read_rows(run / "calibration.jsonl")
    test = read_rows(run / f"test-{seed}.jsonl")
    train_seeds = sorted({int(r["heldout_seed"]) for r in train if r.get("heldout_seed") is not None})
    profile = out_dir / f"h200-fit-{seed}.toml"
    write_fitted_profile(
        profile=base,
        rows=train,
        out=profile,
        seeds=tuple(train_seeds),
        name=f"h200-fit-{seed}",
        audit_out=out_dir / f"fit-{seed}-train-audit.jsonl",
    )
    fitted = load(profile)
    calib_rows = repredict_rows(_core(calib), datasheet=_datasheet(fitted), calibrated=fitted)
    calib_path = out_dir / f"fit-{seed}-calibration.jsonl"
    _write_rows(calib_path, calib_rows)
    freeze_intervals(profile=profile, results=[calib_path], out=profile, conformal=True)
    final = load(profile)
    test_rows = repredict_rows(_core(test), datasheet=_datasheet(final), calibrated=final)
    test_path = out_dir / f"fit-{seed}-test.jsonl"
    _write_rows(test_path, test_rows)
    return {
        "profile": profile,
        "final": final,
        "train_n": len(_core(train)),
        "calibration_n": len(calib_rows),
        "test_rows": test_rows,
        "train_seeds": train_seeds,
        "calibration_seeds": sorted(
            {int(r["heldout_seed"]) for r in calib if r.get("heldout_seed") is not None}
        ),
    }


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def score(test_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 21's targets, the per-plan errors (signed median too) and the coverage on the test rows."""
    rep = build_report(test_rows)
    targets = []
    for name, kind, key, stat, limit in TARGETS:
        table = rep.stats if kind == "time" else rep.ratio_stats
        s = table.get((key, "calibrated"))
        value = getattr(s, stat) if s is not None and s.n else math.nan
        targets.append(
            {
                "target": name,
                "n": s.n if s is not None else 0,
                "value": value,
                "threshold": limit,
                "met": None if math.isnan(value) else bool(value <= limit),
            }
        )
    cov_t, cov_s = coverage(rep.rows), speedup_coverage(rep)
    for key in COVERAGE_KEYS:
        inside, n = cov_t.get(key, (0, 0))
        value = inside / n if n else math.nan
        targets.append(
            {
                "target": f"80% interval coverage of test times: {key}",
                "n": n,
                "value": value,
                "threshold": list(COVERAGE_GOAL),
                "met": None if math.isnan(value) else bool(COVERAGE_GOAL[0] <= value <= COVERAGE_GOAL[1]),
            }
        )
    inside, n = cov_s.get("decode/aqua-fused", (0, 0))
    targets.append(
        {
            "target": "80% interval coverage of test speedups: decode/aqua-fused (reported, no target)",
            "n": n,
            "value": inside / n if n else math.nan,
            "threshold": list(COVERAGE_GOAL),
            "met": None,
        }
    )
    plans = {}
    for (key, mode), s in sorted(rep.stats.items()):
        if mode == "calibrated" and key in COVERAGE_KEYS:
            plans[key] = {
                "n": s.n,
                "median_abs": s.median_abs,
                "p90_abs": s.p90_abs,
                "max_abs": s.max_abs,
                "median_signed": s.median_signed,
            }
    s = rep.ratio_stats.get(("decode/aqua-fused", "calibrated"))
    if s is not None:
        plans["speedup decode/aqua-fused"] = {
            "n": s.n,
            "median_abs": s.median_abs,
            "p90_abs": s.p90_abs,
            "max_abs": s.max_abs,
            "median_signed": s.median_signed,
        }
    extrapolated = sum(1 for r in test_rows if "extrapolates" in str(r.get("status_note", "")))
    return {"targets": targets, "plans": plans, "extrapolated_rows": extrapolated}


def predicted_breakeven(profile: Any, st: dict[str, Any], grid_max: int) -> dict[str, Any]:
    """The predicted time break-even of a setting (smallest aligned N where the AQUA plan is
    predicted faster), the interval its speedup interval implies (N where the high / low bound
    first exceeds 1), and the FLOP break-even."""
    from aqua_model.simulator import simulate

    contexts = np.arange(ALIGN_TOKENS, grid_max + 1, ALIGN_TOKENS)
    sim = simulate(
        gpu=profile,
        context=contexts,
        k=st["k"],
        batch=st["batch"],
        heads_q=st["heads_q"],
        heads_kv=st["heads_kv"],
        d=st["d"],
        plan="fused",
        selection=st.get("selection", "per-head"),
        dtype=st.get("dtype", "bf16"),
    )
    sp = np.asarray(sim.speedup)
    iv = sim.speedup_interval

    def first(mask: np.ndarray) -> int | None:
        idx = np.flatnonzero(mask)
        return int(contexts[idx[0]]) if idx.size else None

    n_pred = first(sp > 1.0)
    ext: list[str] = []
    if n_pred is not None:  # does the prediction at the break-even itself leave the fitted ranges?
        at = simulate(
            gpu=profile,
            context=n_pred,
            k=st["k"],
            batch=st["batch"],
            heads_q=st["heads_q"],
            heads_kv=st["heads_kv"],
            d=st["d"],
            plan="fused",
            selection=st.get("selection", "per-head"),
            dtype=st.get("dtype", "bf16"),
        )
        ext = sorted({name for kt in at.aqua.kernels + at.dense.kernels for name in kt.extrapolates})
    return {
        "predicted": n_pred,
        "predicted_low": None if iv is None else first(np.asarray(iv[1]) > 1.0),
        "predicted_high": None if iv is None else first(np.asarray(iv[0]) > 1.0),
        "flop_breakeven": sim.flop_breakeven,
        "extrapolates": ext,
    }


def breakeven_table(profile: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per measured setting: measured, predicted with its interval, FLOP break-even, and
    whether the measured one is within ``BREAKEVEN_TOLERANCE`` of the predicted one."""
    out = []
    for r in rows:
        if r.get("kind") != "result":
            continue
        pred = predicted_breakeven(profile, r, int(r["grid_max"]))
        m, p, top = r["breakeven_context"], pred["predicted"], int(r["grid_max"])
        if m is not None and p is not None:
            within: bool | None = bool(abs(m / p - 1) <= BREAKEVEN_TOLERANCE)
        elif m is None and p is None:
            within = True  # neither wins up to the grid's end: agreement (both > grid_max)
        elif m is None:  # measured > top: within needs m <= (1 + tol) p, so a miss once top >= that
            within = False if top >= p * (1 + BREAKEVEN_TOLERANCE) else None
        else:  # predicted > top: within needs p <= m / (1 - tol), so a miss once top >= that
            within = False if top >= m / (1 - BREAKEVEN_TOLERANCE) else None
        out.append(
            {
                **{
                    k: r[k] for k in ("model", "heads_q", "heads_kv", "d", "batch", "k", "selection", "dtype")
                },
                "measured": m,
                "bracket": r["bracket"],
                **pred,
                "within_20pct": within,
            }
        )
    return out


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def markdown(
    seed: int, info: dict[str, Any], scored: dict[str, Any], be: list[dict[str, Any]], meta: dict
) -> str:
    lines = [
        f"# Fit protocol, test seed {seed} (issue 21)",
        "",
        f"Model frozen at `{meta.get('model_commit')}`; samples: train seeds {info['train_seeds']} "
        f"({info['train_n']} measured core rows), calibration seeds {info['calibration_seeds']} "
        f"({info['calibration_n']} rows), test seed {seed} ({len(info['test_rows'])} rows). Calibrated mode, "
        "CUDA-graph device time, NVIDIA H200. Written by `analysis/fit_summary.py`.",
        "",
        "## Targets (test sample)",
        "",
        "| target | n | measured | threshold | met |",
        "|---|---:|---:|---:|---|",
    ]
    for t in scored["targets"]:
        thr = t["threshold"]
        thr_txt = f"{thr[0]:.0%}-{thr[1]:.0%}" if isinstance(thr, list) else f"<= {thr:.0%}"
        met = "reported" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {t['target']} | {t['n']} | {_pct(t['value'])} | {thr_txt} | {met} |")
    lines += [
        "",
        "## Errors per plan (test sample, |predicted / measured - 1|)",
        "",
        "| plan | n | median | p90 | max | signed median |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, s in scored["plans"].items():
        lines.append(
            f"| {key} | {s['n']} | {_pct(s['median_abs'])} | {_pct(s['p90_abs'])} | {_pct(s['max_abs'])} | "
            f"{100 * s['median_signed']:+.1f}% |"
        )
    lines += [
        "",
        "## Time break-even (default aqua_decode call, per-head selection, bf16)",
        "",
        "N: the smallest context (a multiple of 16) at which aqua_decode beats SDPA; '> 262144': not up to",
        "the grid's end. The predicted interval: where the speedup's 80% interval's high / low bound first",
        "exceeds 1.",
        "",
        "| model | B | k | measured N | bracket | predicted N [80% interval] | FLOP break-even | within 20% |",
        "|---|---:|---:|---:|---|---|---:|---|",
    ]

    def n_txt(n: Any) -> str:
        return "> 262144" if n is None else str(n)

    for b in be:
        pi = f"{n_txt(b['predicted'])} [{n_txt(b['predicted_low'])}, {n_txt(b['predicted_high'])}]"
        ext = f" (extrapolates: {', '.join(b['extrapolates'])})" if b["extrapolates"] else ""
        w = "–" if b["within_20pct"] is None else ("yes" if b["within_20pct"] else "no")
        lines.append(
            f"| {b['model']} {b['heads_q']}/{b['heads_kv']} d={b['d']} | {b['batch']} | {b['k']} | {n_txt(b['measured'])} | "
            f"{b['bracket']} | {pi}{ext} | {b['flop_breakeven']} | {w} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--seed", required=True, type=int)
    ap.add_argument("--out-dir", default=Path("validation/results/h200"), type=Path)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    info = run_protocol(args.run, args.seed, args.out_dir)
    scored = score(info["test_rows"])
    be_path = args.run / "breakeven.jsonl"
    be_rows = (
        [json.loads(line) for line in be_path.read_text().splitlines() if line.strip()]
        if be_path.exists()
        else []
    )
    be = breakeven_table(info["final"], be_rows)
    meta = {"model_commit": next((r.get("model_commit") for r in info["test_rows"]), None)}
    text = markdown(args.seed, info, scored, be, meta)
    (args.out_dir / f"fit-{args.seed}-summary.md").write_text(text)
    (args.out_dir / f"fit-{args.seed}-summary.json").write_text(
        json.dumps(
            {"seed": args.seed, "targets": scored["targets"], "plans": scored["plans"], "breakeven": be},
            indent=1,
        )
        + "\n"
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
