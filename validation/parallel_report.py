#!/usr/bin/env python3
"""Predicted against measured for ``validation/parallel_decode_layer.py``: the all-reduce sweep
fitted to the ring model (the interconnect calibrated), and every timed layer beside the
simulator's layer (``aqua_model.simulator.parallel.layer_step``) on the datasheet interconnect
and on the fitted one.

The fit: a ring all-reduce of M bytes on t devices takes alpha_0 + 2(t-1) alpha + 2(t-1)/t M / beta
(:mod:`aqua_model.costs.collectives`). Over every measured (t, M) point, least squares on the
relative error solves for alpha_0, alpha and 1/beta; with a single t the two latencies cannot be
told apart, so alpha keeps the profile's value and alpha_0 absorbs the rest (said in the output).

Usage: python validation/parallel_report.py RUN.jsonl [RUN.jsonl ...] [--profile h200]
       [--markdown report.md] [--interconnect-out fitted.toml]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from aqua_model import hardware, models
from aqua_model._datafiles import to_toml
from aqua_model.hardware.interconnect import Interconnect
from aqua_model.hardware.profile import Quantity
from aqua_model.simulator.parallel import layer_step

SCHEMA_VERSION = 1


def read_rows(paths: list[str]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if row.get("schema_version") != SCHEMA_VERSION:
                    raise ValueError(
                        f"{path}:{n}: schema_version must be {SCHEMA_VERSION}, got {row.get('schema_version')!r}"
                    )
                rows.append(row)
    return rows


@dataclasses.dataclass(frozen=True)
class Fit:
    """alpha_0, alpha (s) and beta (bytes/s) of the ring model, and how they were found."""

    fixed_latency_s: float
    step_latency_s: float
    bandwidth_bytes_per_s: float
    world_sizes: tuple[int, ...]
    points: int
    median_abs_rel_err: float
    note: str


def fit_ring(points: list[tuple[int, float, float]], *, step_latency_s: float) -> Fit:
    """Fit (t, message bytes, seconds) points to the ring model; ``step_latency_s`` is used when
    only one t was measured (alpha_0 and alpha are then one constant)."""
    pts = [(t, m, s) for t, m, s in points if t > 1 and s > 0]
    if len(pts) < 2:
        raise ValueError(f"need at least two all-reduce points with t > 1 to fit, got {len(pts)}")
    t = np.array([p[0] for p in pts], dtype=float)
    m = np.array([p[1] for p in pts], dtype=float)
    y = np.array([p[2] for p in pts], dtype=float)
    steps, sent = 2 * (t - 1), 2 * (t - 1) / t * m
    several = len(set(t.tolist())) > 1
    if several:
        design = np.stack([np.ones_like(t), steps, sent], axis=1)
        coef, *_ = np.linalg.lstsq(design / y[:, None], np.ones_like(y), rcond=None)
        a0, a, inv_b = coef
        note = "alpha_0, alpha and beta fitted together over every world size"
    else:
        design = np.stack([np.ones_like(t), sent], axis=1)
        target = y - steps * step_latency_s
        coef, *_ = np.linalg.lstsq(design / y[:, None], target / y, rcond=None)
        a0, inv_b = coef
        a = step_latency_s
        note = f"one world size: alpha kept at the profile's {step_latency_s * 1e6:.2f} us, alpha_0 and beta fitted"
    if inv_b <= 0:
        raise ValueError(
            f"the fitted bandwidth term is not positive (1/beta = {inv_b:g}); the sweep needs larger messages"
        )
    pred = a0 + steps * a + sent * inv_b
    err = float(np.median(np.abs(pred / y - 1)))
    return Fit(float(a0), float(a), float(1 / inv_b), tuple(sorted({int(x) for x in t})), len(pts), err, note)


def fitted_interconnect(base: Interconnect, fit: Fit, where: str) -> Interconnect:
    """``base`` with the fitted latencies and bandwidth (efficiency 1: beta is what was reached)."""

    def q(value: float, unit: str, source: str) -> Quantity:
        return Quantity(value, unit, source, value, unit, None, None)

    src = f"measured: {where}; ring fit over t = {list(fit.world_sizes)}, {fit.points} points ({fit.note})"
    quantities = dict(base.quantities)
    quantities.update(
        link_bandwidth_bytes_per_s=q(fit.bandwidth_bytes_per_s, "bytes/s", src),
        step_latency_s=q(max(fit.step_latency_s, 1e-12), "s", src),
        fixed_latency_s=q(max(fit.fixed_latency_s, 1e-12), "s", src),
        efficiency=q(1.0, "fraction", "derived: the fitted bandwidth is the achieved one"),
    )
    return Interconnect(base.kind, f"fitted: {fit.note}", quantities)


def interconnect_toml(ic: Interconnect) -> str:
    """The fitted table as TOML, to paste into a profile."""
    fields = {k: {"value": v.value, "unit": v.unit, "source": v.source} for k, v in ic.quantities.items()}
    return to_toml({"interconnect": {"kind": ic.kind, "note": ic.note, **fields}})


def _config(row: dict[str, Any]) -> models.ModelConfig:
    shape = row["shape"]
    base = models.load(row["model"]) if row["model"] in models.list_models() else models.load("llama-3.1-8b")
    dtype = row.get("dtype", base.dtype)
    return dataclasses.replace(
        base,
        hidden_size=shape["hidden"],
        heads=shape["heads_q"],
        kv_heads=shape["heads_kv"],
        head_dim=shape["head_dim"],
        intermediate_size=shape["intermediate"],
        dtype=dtype,
        name=row["model"],
    )


def _interp_all_reduce(rows: list[dict[str, Any]], t: int, message: float) -> float | None:
    pts = sorted(
        (r["message_bytes"], r["median_s"])
        for r in rows
        if r["kind"] == "all_reduce" and r["world_size"] == t
    )
    if not pts:
        return None
    xs, ys = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.exp(np.interp(np.log(message), xs, ys)))


def layer_table(
    rows: list[dict[str, Any]], profiles: dict[str, hardware.HardwareProfile]
) -> list[dict[str, Any]]:
    """One line per measured layer: measured parts beside each profile's prediction."""
    out = []
    layers = [r for r in rows if r["kind"] == "layer"]
    for r in layers:
        cfg = _config(r)
        line: dict[str, Any] = {
            "plan": r["plan"],
            "t": r["tensor_parallel"],
            "context": r["context"],
            "batch": r["batch"],
            "k": r["k"],
            "measured_us": r["layer_median_s"] * 1e6,
            "attention_us": r["attention_s"] * 1e6,
            "matmuls_us": r["matmuls_s"] * 1e6,
            "all_reduce_us": (_interp_all_reduce(rows, r["world_size"], r["message_bytes"]) or float("nan"))
            * 1e6,
            "correct": r.get("correct"),
        }
        for label, prof in profiles.items():
            pred = layer_step(
                gpu=prof,
                model=cfg,
                context=r["context"],
                k=r["k"],
                batch=r["batch"],
                tensor_parallel=r["tensor_parallel"],
            )
            key = "dense" if r["plan"] == "dense-fused" else "aqua"
            total = float(pred[f"{key}_layer_s"]) * 1e6
            line[f"{label}_us"] = total
            line[f"{label}_err"] = total / line["measured_us"] - 1
            line[f"{label}_attention_us"] = float(pred[f"{key}_attention_s"]) * 1e6
            line[f"{label}_weights_us"] = float(pred["weights_s"]) * 1e6
            line[f"{label}_all_reduce_us"] = float(pred["one_all_reduce_s"]) * 1e6
        out.append(line)
    # the AQUA/dense speedup of each (t, context, batch), measured and predicted
    by_case = {}
    for line in out:
        by_case.setdefault((line["t"], line["context"], line["batch"]), {})[line["plan"]] = line
    for _case, pair in by_case.items():
        if {"dense-fused", "aqua-fused"} <= set(pair):
            d, a = pair["dense-fused"], pair["aqua-fused"]
            a["speedup_measured"] = d["measured_us"] / a["measured_us"]
            for label in profiles:
                a[f"speedup_{label}"] = d[f"{label}_us"] / a[f"{label}_us"]
    return out


def render(
    rows: list[dict[str, Any]],
    fit: Fit | None,
    table: list[dict[str, Any]],
    labels: list[str],
    sources: list[str],
) -> str:
    env = [r for r in rows if r["kind"] == "env"]
    lines = ["# Tensor-parallel decode layer: predicted against measured", ""]
    lines.append(
        "Runs: "
        + "; ".join(
            f"{e.get('gpu', e['device'])} x {e['world_size']} over {e['backend']}, torch {e['torch']}"
            f"{', NCCL ' + str(e['nccl']) if e.get('nccl') else ''}, {e['date']}, multicast env {e['multicast_env']}"
            for e in env
        )
    )
    lines.append(
        f"Files: {', '.join(sources)}. Predictions: `aqua_model.simulator.parallel.layer_step` on "
        + ", ".join(labels)
        + "."
    )
    lines.append("")
    ar = sorted(
        (r for r in rows if r["kind"] == "all_reduce"), key=lambda r: (r["world_size"], r["message_bytes"])
    )
    if ar:
        lines += [
            "## All-reduce by size",
            "",
            "| t | bytes | median us | q25-q75 us | bus bandwidth GB/s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in ar:
            lines.append(
                f"| {r['world_size']} | {r['message_bytes']} | {r['median_s'] * 1e6:.1f} | "
                f"{r['q25_s'] * 1e6:.1f}-{r['q75_s'] * 1e6:.1f} | {r['busbw_bytes_per_s'] / 1e9:.2f} |"
            )
        lines.append("")
    if fit is not None:
        lines += [
            f"Ring fit ({fit.note}): alpha_0 = {fit.fixed_latency_s * 1e6:.2f} us, alpha = {fit.step_latency_s * 1e6:.2f} us, "
            f"beta = {fit.bandwidth_bytes_per_s / 1e9:.1f} GB/s over {fit.points} points; median |error| of the fit "
            f"{fit.median_abs_rel_err:.1%}.",
            "",
        ]
    if table:
        head = (
            ["plan", "t", "N", "B", "k", "measured us"]
            + [f"{lab} us (err)" for lab in labels]
            + [
                "attn us meas / pred",
                "matmuls us meas / weights pred",
                "all-reduce us meas / pred",
                "AQUA speedup meas / pred",
                "correct",
            ]
        )
        lines += ["## One decode layer", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        first = labels[0]
        for x in table:
            cells = [
                x["plan"],
                str(x["t"]),
                str(x["context"]),
                str(x["batch"]),
                str(x["k"]),
                f"{x['measured_us']:.1f}",
            ]
            cells += [f"{x[f'{lab}_us']:.1f} ({x[f'{lab}_err']:+.1%})" for lab in labels]
            cells += [
                f"{x['attention_us']:.1f} / {x[f'{first}_attention_us']:.1f}",
                f"{x['matmuls_us']:.1f} / {x[f'{first}_weights_us']:.1f}",
                f"{x['all_reduce_us']:.1f} / {x[f'{first}_all_reduce_us']:.1f}",
            ]
            cells.append(
                f"{x['speedup_measured']:.3f} / {x[f'speedup_{first}']:.3f}"
                if "speedup_measured" in x
                else "-"
            )
            cells.append({True: "yes", False: "NO", None: "-"}[x["correct"]])
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for lab in labels:
            errs = [abs(x[f"{lab}_err"]) for x in table]
            sp = [
                abs(x[f"speedup_{lab}"] / x["speedup_measured"] - 1) for x in table if "speedup_measured" in x
            ]
            lines.append(
                f"- {lab}: median |error| of the layer time {statistics.median(errs):.1%} (max {max(errs):.1%}) over "
                f"{len(errs)} layers"
                + (f"; of the AQUA/dense speedup {statistics.median(sp):.1%}" if sp else "")
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="JSONL files of validation/parallel_decode_layer.py")
    p.add_argument(
        "--profile", default="h200", help="hardware profile (name or TOML path) for the predictions"
    )
    p.add_argument(
        "--interconnect-from",
        default=None,
        help="take the [interconnect] table from this profile (e.g. for a calibrated single-GPU profile)",
    )
    p.add_argument("--markdown", default=None, help="write the report here")
    p.add_argument(
        "--interconnect-out", default=None, help="write the fitted [interconnect] table here (TOML)"
    )
    args = p.parse_args(argv)
    rows = read_rows(args.runs)
    prof = hardware.load(args.profile)
    if args.interconnect_from is not None:
        prof = dataclasses.replace(prof, interconnect=hardware.load(args.interconnect_from).interconnect)
    if prof.interconnect is None:
        p.error(f"profile {args.profile} has no [interconnect] table; pass --interconnect-from")
    points = [(r["world_size"], r["message_bytes"], r["median_s"]) for r in rows if r["kind"] == "all_reduce"]
    fit = None
    label = f"{prof.key} ({prof.mode})"
    profiles = {label: prof}
    try:
        fit = fit_ring(points, step_latency_s=prof.interconnect.step_latency_s)
    except ValueError as exc:
        print(f"no interconnect fit: {exc}", file=sys.stderr)
    if fit is not None:
        fitted = fitted_interconnect(prof.interconnect, fit, ", ".join(args.runs))
        profiles[f"{label} + fitted interconnect"] = dataclasses.replace(prof, interconnect=fitted)
        if args.interconnect_out:
            Path(args.interconnect_out).write_text(interconnect_toml(fitted))
    table = layer_table(rows, profiles)
    text = render(rows, fit, table, list(profiles), args.runs)
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
