"""Predicted against measured: per-case errors, error statistics, speedup-ratio errors, targets.

Definitions (for a case with measured time m and predicted time p in one mode):

* signed error e = p / m - 1 (positive: the model predicts slower than measured);
* absolute percentage error |e|; per plan and mode: median, mean, p90 (linear interpolation)
  and maximum of |e|, and the geometric-mean error exp(mean |ln(p / m)|) - 1 (the typical
  factor by which predictions are off; 10% everywhere gives 10%);
* speedup of an AQUA plan at a shape: dense-fused time / AQUA time at the same phase, context,
  prompt, batch, heads, d and dtype; its error is S_predicted / S_measured - 1;
* rank correlation: Spearman's rho between predicted and measured times (and speedups);
* a measurement faster than the roofline allows (measured < the sum over the plan's kernels of
  max(bytes / datasheet bandwidth, FLOPs / datasheet peak)) is flagged: it means a units or
  FLOP-convention error, or bytes that stayed in L2 between kernels of a small case.

Targets, over all measured cases in calibrated mode: median |e| <= 5%, p90 |e| <= 10%, median
|speedup error| <= 5%.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from aqua_model.simulator.plan_status import STATUS_SCHEMA_VERSION, UNVALIDATED_P90
from aqua_model.validate.runner import read_rows

#: Modes a row carries predictions for.
MODES: tuple[str, ...] = ("datasheet", "calibrated")
#: The dense baseline of every speedup ratio.
BASELINE_PLAN = "dense-fused"
#: Targets (fractions) over all calibrated-mode cases.
TARGET_MEDIAN_ABS = 0.05
TARGET_P90_ABS = 0.10
TARGET_MEDIAN_RATIO = 0.05
#: Fewest points for a rank correlation.
MIN_SPEARMAN_POINTS = 3
#: Percentile reported as "p90".
P90 = 90.0


@dataclass(frozen=True)
class ErrorStats:
    """Absolute-error statistics of one group of (predicted, measured) pairs."""

    n: int
    median_abs: float
    mean_abs: float
    geomean: float
    p90_abs: float
    max_abs: float
    median_signed: float
    spearman: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def error_stats(predicted: Iterable[float], measured: Iterable[float]) -> ErrorStats:
    """Statistics of p / m - 1 over paired positive values (see the module docstring)."""
    p = np.asarray(list(predicted), dtype=float)
    m = np.asarray(list(measured), dtype=float)
    if p.shape != m.shape:
        raise ValueError(f"predicted and measured must pair up, got {p.size} and {m.size} values")
    if p.size == 0:
        nan = math.nan
        return ErrorStats(0, nan, nan, nan, nan, nan, nan, nan)
    if np.any(~(p > 0)) or np.any(~(m > 0)):
        raise ValueError("predicted and measured times must all be > 0")
    e = p / m - 1.0
    a = np.abs(e)
    return ErrorStats(
        n=int(p.size),
        median_abs=float(np.median(a)),
        mean_abs=float(np.mean(a)),
        geomean=float(np.exp(np.mean(np.abs(np.log(p / m)))) - 1.0),
        p90_abs=float(np.percentile(a, P90)),
        max_abs=float(np.max(a)),
        median_signed=float(np.median(e)),
        spearman=spearman(p, m),
    )


def spearman(x: Any, y: Any) -> float:
    """Spearman's rho (scipy.stats.spearmanr); NaN for fewer than 3 points or constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < MIN_SPEARMAN_POINTS or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def pairing_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a speedup ratio pairs an AQUA row with its dense-fused row on: the shape (phase,
    context, prompt, batch, heads, d, dtype), not the plan, k or the selection (dense attention
    selects nothing), and the run (``heldout_seed``: rows of different held-out runs never pair)."""
    return tuple(
        row.get(f)
        for f in ("phase", "context", "prompt", "batch", "heads_q", "heads_kv", "d", "dtype", "heldout_seed")
    )


_shape_key = pairing_key


def _ok(row: dict[str, Any]) -> bool:
    return row.get("status") == "ok" and (row.get("measured_s") or 0) > 0


def _pred(row: dict[str, Any], mode: str) -> float | None:
    v = row.get(f"predicted_{mode}_s")
    return float(v) if v is not None and v > 0 else None


@dataclass
class Report:
    """Everything the report prints, computed once from the rows."""

    rows: list[dict[str, Any]]
    status_counts: dict[str, int]
    case_errors: list[dict[str, Any]]
    stats: dict[tuple[str, str], ErrorStats]  # (plan or "all", mode)
    ratio_rows: list[dict[str, Any]]
    ratio_stats: dict[tuple[str, str], ErrorStats]
    kernel_stats: dict[tuple[str, str, str], ErrorStats]  # (plan, kernel, mode)
    roofline_flags: list[dict[str, Any]]
    targets: dict[str, Any]
    env: dict[str, Any] = field(default_factory=dict)
    modes_present: tuple[str, ...] = ()


def build_report(rows: list[dict[str, Any]]) -> Report:
    """Compute every statistic from result rows (see the module docstring)."""
    counts = dict(Counter(r.get("status", "?") for r in rows))
    ok = [r for r in rows if _ok(r)]
    modes = tuple(m for m in MODES if any(_pred(r, m) for r in ok))
    case_errors = []
    for r in rows:
        item: dict[str, Any] = {
            "case_id": r.get("case_id"),
            "plan": r.get("plan"),
            "status": r.get("status"),
            "measured_s": r.get("measured_s"),
            "measured_iqr_s": r.get("measured_iqr_s"),
        }
        for m in MODES:
            p = _pred(r, m)
            item[f"predicted_{m}_s"] = p
            item[f"error_{m}"] = (p / r["measured_s"] - 1.0) if (p and _ok(r)) else None
        case_errors.append(item)

    stats: dict[tuple[str, str], ErrorStats] = {}
    plans = sorted({r["plan"] for r in ok})
    for m in modes:
        pairs = [(r, cast(float, _pred(r, m))) for r in ok if _pred(r, m)]
        stats[("all", m)] = error_stats([p for _, p in pairs], [r["measured_s"] for r, _ in pairs])
        for phase in sorted({r["phase"] for r in ok}):
            sel: list[Any] = [(r, p) for r, p in pairs if r["phase"] == phase]
            stats[(f"{phase} (all plans)", m)] = error_stats(
                [p for _, p in sel], [r["measured_s"] for r, _ in sel]
            )
            for plan in plans:
                sel = [(r, p) for r, p in pairs if r["plan"] == plan and r["phase"] == phase]
                if sel:
                    stats[(f"{phase}/{plan}", m)] = error_stats(
                        [p for _, p in sel], [r["measured_s"] for r, _ in sel]
                    )

    baseline = {pairing_key(r): r for r in ok if r["plan"] == BASELINE_PLAN}
    ratio_rows = []
    for r in ok:
        if not r["plan"].startswith("aqua") or pairing_key(r) not in baseline:
            continue
        b = baseline[pairing_key(r)]
        item = {
            "case_id": r["case_id"],
            "plan": r["plan"],
            "phase": r["phase"],
            "measured_speedup": b["measured_s"] / r["measured_s"],
            "low": r.get("predicted_speedup_low"),
            "high": r.get("predicted_speedup_high"),
        }
        for m in MODES:
            pa, pb = _pred(r, m), _pred(b, m)
            item[f"predicted_speedup_{m}"] = pb / pa if (pa and pb) else None
            item[f"ratio_error_{m}"] = (
                (item[f"predicted_speedup_{m}"] / item["measured_speedup"] - 1.0) if (pa and pb) else None
            )
        ratio_rows.append(item)
    ratio_stats: dict[tuple[str, str], ErrorStats] = {}
    for m in modes:
        sel = [x for x in ratio_rows if x[f"predicted_speedup_{m}"]]
        ratio_stats[("all", m)] = error_stats(
            [x[f"predicted_speedup_{m}"] for x in sel], [x["measured_speedup"] for x in sel]
        )
        for phase in sorted({x["phase"] for x in sel}):
            sub = [x for x in sel if x["phase"] == phase]
            ratio_stats[(f"{phase} (all AQUA plans)", m)] = error_stats(
                [x[f"predicted_speedup_{m}"] for x in sub], [x["measured_speedup"] for x in sub]
            )
        for key in sorted({f"{x['phase']}/{x['plan']}" for x in sel}):
            sub = [x for x in sel if f"{x['phase']}/{x['plan']}" == key]
            ratio_stats[(key, m)] = error_stats(
                [x[f"predicted_speedup_{m}"] for x in sub], [x["measured_speedup"] for x in sub]
            )

    kernel_stats: dict[tuple[str, str, str], ErrorStats] = {}
    for m in modes:
        groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for r in ok:
            for k in r.get("kernels", []):
                p, meas = k.get(f"predicted_{m}_s"), k.get("measured_s")
                if p and meas and p > 0 and meas > 0:
                    groups[(f"{r['phase']}/{r['plan']}", k["name"])].append((p, meas))
        for (plan, name), pts in groups.items():
            kernel_stats[(plan, name, m)] = error_stats([p for p, _ in pts], [x for _, x in pts])

    flags = []
    for r in ok:
        floor = r.get("roofline_floor_s")
        if floor and r["measured_s"] < floor:
            flags.append(
                {
                    "case_id": r["case_id"],
                    "measured_s": r["measured_s"],
                    "floor_s": floor,
                    "bytes": r.get("bytes"),
                    "kind": "plan",
                }
            )
        for k in r.get("kernels", []):
            kf, km = k.get("roofline_floor_s"), k.get("measured_s")
            if kf and km and km < kf:
                flags.append(
                    {
                        "case_id": r["case_id"],
                        "kernel": k["name"],
                        "measured_s": km,
                        "floor_s": kf,
                        "bytes": k.get("bytes"),
                        "kind": "kernel",
                    }
                )

    targets = _targets(stats, ratio_stats)
    env = cast("dict[str, Any]", next((r.get("env") for r in rows if r.get("env")), {}) or {})
    return Report(
        rows, counts, case_errors, stats, ratio_rows, ratio_stats, kernel_stats, flags, targets, env, modes
    )


def _targets(
    stats: dict[tuple[str, str], ErrorStats], ratio_stats: dict[tuple[str, str], ErrorStats]
) -> dict[str, Any]:
    s = stats.get(("all", "calibrated"))
    rs = ratio_stats.get(("all", "calibrated"))
    checks = {
        "median_abs_error": (s.median_abs if s else math.nan, TARGET_MEDIAN_ABS),
        "p90_abs_error": (s.p90_abs if s else math.nan, TARGET_P90_ABS),
        "median_speedup_ratio_error": (rs.median_abs if rs else math.nan, TARGET_MEDIAN_RATIO),
    }
    out: dict[str, Any] = {}
    for name, (value, limit) in checks.items():
        met = None if math.isnan(value) else bool(value <= limit)
        out[name] = {"value": value, "target": limit, "met": met}
    vals = [v["met"] for v in out.values()]
    out["all_met"] = None if any(v is None for v in vals) else all(vals)
    return out


# -- rendering ---------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}%"


def _apct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1e3:.4f}"


def _rho(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _stats_table(stats: dict[Any, ErrorStats], label: str) -> list[str]:
    lines = [
        f"| {label} | mode | n | median | mean | geomean | p90 | max | median signed | Spearman |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in sorted(stats.items(), key=lambda kv: (kv[0][-1], kv[0][:-1])):
        name = " / ".join(key[:-1])
        lines.append(
            f"| {name} | {key[-1]} | {s.n} | {_apct(s.median_abs)} | {_apct(s.mean_abs)} | {_apct(s.geomean)} | "
            f"{_apct(s.p90_abs)} | {_apct(s.max_abs)} | {_pct(s.median_signed)} | {_rho(s.spearman)} |"
        )
    return lines


def render_text(rep: Report, *, per_case: bool = True) -> str:
    """Plain-text report: per-case lines, then the statistics and the targets."""
    out = []
    if per_case:
        out.append(
            f"{'case':<78} {'status':<11} {'measured ms':>12} {'datasheet ms':>12} {'err':>8} {'calibrated ms':>13} {'err':>8}"
        )
        for c in rep.case_errors:
            out.append(
                f"{c['case_id']:<78} {c['status']:<11} {_ms(c['measured_s']):>12} {_ms(c['predicted_datasheet_s']):>12} "
                f"{_pct(c['error_datasheet']):>8} {_ms(c['predicted_calibrated_s']):>13} {_pct(c['error_calibrated']):>8}"
            )
        out.append("")
    out.append("statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(rep.status_counts.items())))
    out.append("")
    out.append("absolute percentage error of predicted time, per plan and mode:")
    out += _stats_table(rep.stats, "plan")
    out.append("")
    out.append("error of predicted speedup (dense-fused / AQUA plan) against measured:")
    out += _stats_table(rep.ratio_stats, "plan")
    out.append("")
    out.append(
        f"roofline violations (measured faster than the datasheet roofline allows): {len(rep.roofline_flags)}"
    )
    out.append("")
    out += _target_lines(rep)
    return "\n".join(out)


def _target_lines(rep: Report) -> list[str]:
    t = rep.targets
    lines = ["targets (all measured cases, calibrated mode):"]
    for name in ("median_abs_error", "p90_abs_error", "median_speedup_ratio_error"):
        v = t[name]
        verdict = "not evaluated" if v["met"] is None else ("met" if v["met"] else "MISSED")
        lines.append(
            f"- {name.replace('_', ' ')}: {_apct(v['value'])} (target <= {_apct(v['target'])}): {verdict}"
        )
    overall = t["all_met"]
    lines.append(
        f"- overall: {'not evaluated' if overall is None else ('all targets met' if overall else 'targets MISSED')}"
    )
    return lines


def render_markdown(rep: Report) -> str:
    """The Markdown summary: environment, headline, tables, flags, targets, per-case table."""
    env = rep.env
    lines = ["# Validation: predicted against measured", ""]
    if env:
        lines.append(
            f"Device: {env.get('gpu') if env.get('device') == 'cuda' else env.get('cpu', 'cpu')}; "
            f"driver {env.get('driver')}; torch {env.get('torch')}; triton {env.get('triton')}; "
            f"CUDA {env.get('cuda')}; date {env.get('date')}."
        )
    method = next((r.get("timing_method") for r in rep.rows if r.get("timing_method")), None)
    policy = next((r.get("cache_policy") for r in rep.rows if r.get("cache_policy")), None)
    if method:
        lines.append(f"Timing: {method}, median and interquartile range per call; caches: {policy}.")
    modes = {m: next((r.get(f"{m}_mode") for r in rep.rows if r.get(f"{m}_mode")), None) for m in MODES}
    lines.append("Prediction modes: " + ", ".join(f"{m} = `{v}`" for m, v in modes.items() if v) + ".")
    lines += [
        "",
        "Statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(rep.status_counts.items())) + ".",
        "",
    ]
    lines += ["## Targets", ""] + _target_lines(rep) + [""]
    lines += [
        "## Error of predicted time, per plan and mode",
        "",
        "Error e = predicted / measured - 1; geomean = exp(mean |ln(predicted / measured)|) - 1.",
        "",
    ]
    lines += _stats_table(rep.stats, "plan") + [""]
    lines += [
        "## Error of predicted speedup over dense-fused (SDPA)",
        "",
        "Speedup = dense-fused time / AQUA plan time at the same shape; error = predicted / measured - 1.",
        "",
    ]
    lines += _stats_table(rep.ratio_stats, "plan") + [""]
    lines += [
        "## Error per kernel (isolated kernel timings)",
        "",
        "Each kernel timed alone (same timer and L2 flush), against its own roofline prediction.",
        "",
    ]
    lines += _stats_table(rep.kernel_stats, "plan / kernel") + [""]
    lines += _host_overhead_lines(rep)
    lines += ["## Roofline check", ""]
    if rep.roofline_flags:
        lines.append(
            f"{len(rep.roofline_flags)} measurement(s) faster than the datasheet roofline allows "
            "(bytes / peak bandwidth and FLOPs / peak): a units or FLOP-convention error, or bytes that "
            "stayed in L2 between the kernels of a small case:"
        )
        lines += ["", "| case | kernel | measured ms | floor ms | bytes |", "|---|---|---:|---:|---:|"]
        for f in rep.roofline_flags:
            lines.append(
                f"| {f['case_id']} | {f.get('kernel', '(plan)')} | {_ms(f['measured_s'])} | {_ms(f['floor_s'])} | "
                f"{f.get('bytes') or 0:.4g} |"
            )
    else:
        lines.append("No measurement is faster than the datasheet roofline allows.")
    lines += [
        "",
        "## Speedups",
        "",
        "| case | measured | predicted (datasheet) | err | predicted (calibrated) | err |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for x in rep.ratio_rows:
        lines.append(
            f"| {x['case_id']} | {x['measured_speedup']:.3f} | {_f3(x['predicted_speedup_datasheet'])} | "
            f"{_pct(x['ratio_error_datasheet'])} | {_f3(x['predicted_speedup_calibrated'])} | {_pct(x['ratio_error_calibrated'])} |"
        )
    lines += [
        "",
        "## Every case",
        "",
        "| case | status | measured ms | IQR ms | datasheet ms | err | calibrated ms | err | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    by_id = {r.get("case_id"): r for r in rep.rows}
    for c in rep.case_errors:
        r = by_id.get(c["case_id"], {})
        note = (r.get("error") or r.get("skip_reason") or "").replace("|", "/")[:120]
        lines.append(
            f"| {c['case_id']} | {c['status']} | {_ms(c['measured_s'])} | {_ms(c['measured_iqr_s'])} | "
            f"{_ms(c['predicted_datasheet_s'])} | {_pct(c['error_datasheet'])} | {_ms(c['predicted_calibrated_s'])} | "
            f"{_pct(c['error_calibrated'])} | {note} |"
        )
    return "\n".join(lines) + "\n"


def host_overhead(rep: Report) -> dict[str, tuple[int, float, float]]:
    """Per phase/plan: (n, median eager time / graph time, median eager - graph in seconds)."""
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rep.rows:
        e = r.get("measured_eager_s")
        if _ok(r) and e and e > 0 and r.get("measured_eager_s") != r.get("measured_s"):
            groups[f"{r['phase']}/{r['plan']}"].append((e, r["measured_s"]))
    return {
        k: (len(v), float(np.median([e / m for e, m in v])), float(np.median([e - m for e, m in v])))
        for k, v in sorted(groups.items())
    }


def _host_overhead_lines(rep: Report) -> list[str]:
    table = host_overhead(rep)
    if not table:
        return []
    lines = [
        "## Host overhead (eager launches against CUDA-graph replays)",
        "",
        "The cases are timed as CUDA-graph replays (device time, what the roofline predicts); each plan "
        "was also timed launched eagerly from Python. The difference is host time (Python, torch dispatch, "
        "Triton's launcher) that the device waits for; the model does not include it.",
        "",
        "| plan | n | median eager / graph | median eager - graph (ms) |",
        "|---|---:|---:|---:|",
    ]
    for k, (n, ratio, diff) in table.items():
        lines.append(f"| {k} | {n} | {ratio:.2f} | {diff * 1e3:.4f} |")
    return lines + [""]


def _f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def report_file(
    path: str | os.PathLike[str],
    *,
    markdown: str | os.PathLike[str] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> Report:
    """Build the report of a results file (or of ``rows`` read from it and re-predicted) and
    write its Markdown summary if asked."""
    rep = build_report(read_rows(path) if rows is None else rows)
    if markdown is not None:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(render_markdown(rep))
    return rep


# -- held-out against in-sample (issue 12) ---------------------------------------------------------

#: Targets on held-out cases, calibrated mode (issue 12): (name, plan key, statistic, threshold).
HELDOUT_TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("decode aqua-fused: median abs error", "time", "decode/aqua-fused", "median_abs", 0.04),
    ("decode aqua-fused: p90 abs error", "time", "decode/aqua-fused", "p90_abs", 0.10),
    ("decode aqua-fused: max abs error", "time", "decode/aqua-fused", "max_abs", 0.25),
    ("decode dense-fused (SDPA): median abs error", "time", "decode/dense-fused", "median_abs", 0.04),
    ("decode dense-fused (SDPA): p90 abs error", "time", "decode/dense-fused", "p90_abs", 0.10),
    ("decode dense-fused (SDPA): max abs error", "time", "decode/dense-fused", "max_abs", 0.25),
    ("decode aqua-fused / SDPA speedup: median error", "ratio", "decode/aqua-fused", "median_abs", 0.03),
    ("decode aqua-fused / SDPA speedup: p90 error", "ratio", "decode/aqua-fused", "p90_abs", 0.08),
    (
        "prefill dense-fused (SDPA causal): median abs error",
        "time",
        "prefill/dense-fused",
        "median_abs",
        0.05,
    ),
    ("prefill dense-fused (SDPA causal): p90 abs error", "time", "prefill/dense-fused", "p90_abs", 0.12),
)
#: The goal for the share of held-out measurements inside their 80% interval.
COVERAGE_GOAL = (0.75, 0.85)


def coverage(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per phase/plan and "all": (measurements inside their calibrated 80% time interval, rows with an interval)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        lo, hi = r.get("predicted_calibrated_low_s"), r.get("predicted_calibrated_high_s")
        if not _ok(r) or lo is None or hi is None:
            continue
        inside = int(lo <= r["measured_s"] <= hi)
        for key in (f"{r['phase']}/{r['plan']}", "all"):
            out[key][0] += inside
            out[key][1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def speedup_coverage(rep: Report) -> dict[str, tuple[int, int]]:
    """Per phase/plan and "all": (measured speedups inside their 80% interval, speedups with an interval)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for x in rep.ratio_rows:
        lo, hi = x.get("low"), x.get("high")
        if lo is None or hi is None:
            continue
        inside = int(lo <= x["measured_speedup"] <= hi)
        for key in (f"{x['phase']}/{x['plan']}", "all"):
            out[key][0] += inside
            out[key][1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def heldout_targets(rep: Report) -> list[dict[str, Any]]:
    """Each issue-12 target on held-out rows: value, threshold, met (None when not evaluable)."""
    out = []
    for name, kind, key, stat, limit in HELDOUT_TARGETS:
        table = rep.stats if kind == "time" else rep.ratio_stats
        s = table.get((key, "calibrated"))
        value = getattr(s, stat) if s is not None and s.n else math.nan
        out.append(
            {
                "target": name,
                "n": s.n if s is not None else 0,
                "value": value,
                "threshold": limit,
                "met": None if math.isnan(value) else bool(value <= limit),
            }
        )
    inside, n = coverage(rep.rows).get("all", (0, 0))
    value = inside / n if n else math.nan
    out.append(
        {
            "target": "80% interval coverage of held-out times",
            "n": n,
            "value": value,
            "threshold": COVERAGE_GOAL,
            "met": None if math.isnan(value) else bool(COVERAGE_GOAL[0] <= value <= COVERAGE_GOAL[1]),
        }
    )
    return out


def status_entries(rep: Report, *, seed: Any, commit: Any) -> list[dict[str, Any]]:
    """Per phase/plan measured held out: its calibrated p90, and "unvalidated" (with the reason)
    when that exceeds ``UNVALIDATED_P90``, else "validated"."""
    out = []
    for key, mode in sorted(rep.stats):
        if mode != "calibrated" or "/" not in key or key.startswith(("decode (", "prefill (")):
            continue
        phase, plan = key.split("/", 1)
        s = rep.stats[(key, mode)]
        worst = max(
            (
                c
                for c in rep.case_errors
                if c["plan"] == plan
                and c["case_id"].startswith(phase + "/")
                and c.get("error_calibrated") is not None
            ),
            key=lambda c: abs(c["error_calibrated"]),
            default=None,
        )
        entry = {
            "phase": phase,
            "plan": plan,
            "n": s.n,
            "heldout_median_abs": s.median_abs,
            "heldout_p90_abs": s.p90_abs,
            "heldout_max_abs": s.max_abs,
            "seed": seed,
            # TOML has no null: a run outside a git checkout records that instead of a commit
            "model_commit": commit if commit is not None else "unknown (not a git checkout)",
            "status": "unvalidated" if s.p90_abs > UNVALIDATED_P90 else "validated",
        }
        if entry["status"] == "unvalidated":
            device = rep.env.get("gpu") if rep.env.get("device") == "cuda" else rep.env.get("cpu", "cpu")
            entry["reason"] = (
                f"held-out p90 error {s.p90_abs:.0%} > {UNVALIDATED_P90:.0%} over {s.n} cases ({device}, seed {seed}, "
                f"model frozen at {str(commit)[:10]}; median {s.median_abs:.0%}, median signed "
                f"{s.median_signed:+.0%}"
                + (f"; worst {worst['case_id']} {worst['error_calibrated']:+.0%}" if worst else "")
                + ")"
            )
        out.append(entry)
    return out


def write_status(entries: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write the plan verdicts read by :mod:`aqua_model.simulator.plan_status`."""
    from aqua_model._datafiles import to_toml

    doc = {
        "schema_version": STATUS_SCHEMA_VERSION,
        "note": (
            f"Held-out verdicts per plan (calibrated mode, H200): 'unvalidated' where the held-out p90 of "
            f"|predicted / measured - 1| exceeds {UNVALIDATED_P90:.0%}. Written by aqua-model validate report --heldout "
            "--status-out; read by aqua_model.simulator.plan_status."
        ),
        "plan": entries,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(to_toml(doc, header="Plan verdicts from the held-out validation (issue 12)"))


def targets_table(heldout: Report, *, title: str = "target") -> list[str]:
    """Markdown rows of the issue's held-out targets (:func:`heldout_targets`): value, threshold, met."""
    lines = [f"| {title} | n | measured | threshold | met |", "|---|---:|---:|---:|---|"]
    for t in heldout_targets(heldout):
        thr = t["threshold"]
        thr_txt = f"{thr[0]:.0%}-{thr[1]:.0%}" if isinstance(thr, tuple) else f"<= {thr:.0%}"
        met = "not evaluated" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {t['target']} | {t['n']} | {_apct(t['value'])} | {thr_txt} | {met} |")
    return lines


def _cell(s: ErrorStats | None) -> str:
    if s is None or not s.n:
        return "– | – | – | 0"
    return f"{_apct(s.median_abs)} | {_apct(s.p90_abs)} | {_apct(s.max_abs)} | {s.n}"


def side_by_side(insample: Report, heldout: Report) -> list[str]:
    """Markdown: per phase/plan, in-sample against held-out errors (calibrated mode), time and speedup,
    and the held-out coverage of the 80% intervals."""
    keys = sorted(
        {
            k
            for (k, m) in list(insample.stats) + list(heldout.stats)
            if m == "calibrated" and "/" in k and not k.startswith(("decode (", "prefill ("))
        }
    )
    cov_t, cov_s = coverage(heldout.rows), speedup_coverage(heldout)
    lines = [
        "| plan | in-sample median | p90 | max | n | held-out median | p90 | max | n | held-out 80% coverage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in keys:
        inside, n = cov_t.get(key, (0, 0))
        cov = f"{inside / n:.0%} ({inside}/{n})" if n else "–"
        lines.append(
            f"| {key} | {_cell(insample.stats.get((key, 'calibrated')))} | {_cell(heldout.stats.get((key, 'calibrated')))} | {cov} |"
        )
    lines += [
        "",
        "| AQUA/SDPA speedup of | in-sample median | p90 | max | n | held-out median | p90 | max | n | held-out 80% coverage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rkeys = sorted(
        {
            k
            for (k, m) in list(insample.ratio_stats) + list(heldout.ratio_stats)
            if m == "calibrated" and "/" in k and not k.startswith(("decode (", "prefill ("))
        }
    )
    for key in rkeys:
        inside, n = cov_s.get(key, (0, 0))
        cov = f"{inside / n:.0%} ({inside}/{n})" if n else "–"
        lines.append(
            f"| {key} | {_cell(insample.ratio_stats.get((key, 'calibrated')))} | "
            f"{_cell(heldout.ratio_stats.get((key, 'calibrated')))} | {cov} |"
        )
    return lines


def heldout_markdown(insample: Report, heldout: Report, *, meta: dict[str, Any] | None = None) -> str:
    """The held-out summary: provenance, side-by-side tables, the issue's targets, coverage, verdicts."""
    meta = meta or {}
    lines = ["# Held-out validation: in-sample (the grid) against held-out (drawn after the freeze)", ""]
    if meta:
        lines.append(
            f"Model frozen at commit `{meta.get('model_commit')}` (fingerprint `{str(meta.get('model_sha256'))[:16]}`); "
            f"held-out seed {meta.get('seed')}; {meta.get('cases')} cases from {meta.get('shapes')} shapes; "
            f"redraws {meta.get('redraws')}."
        )
        lines.append("")
    env = heldout.env or insample.env
    if env:
        lines.append(
            f"Device: {env.get('gpu')}; driver {env.get('driver')}; torch {env.get('torch')}; triton {env.get('triton')}; "
            f"CUDA {env.get('cuda')}; date {env.get('date')}. Time: CUDA-graph replays (device time); eager time recorded "
            "beside it (`measured_eager_s`)."
        )
        lines.append("")
    lines += [
        "Statuses, in-sample: "
        + ", ".join(f"{k} {v}" for k, v in sorted(insample.status_counts.items()))
        + "; held-out: "
        + ", ".join(f"{k} {v}" for k, v in sorted(heldout.status_counts.items()))
        + ".",
        "",
    ]
    lines += ["## Calibrated mode, per plan", ""] + side_by_side(insample, heldout) + [""]
    lines += ["## The issue's targets (held-out, calibrated mode)", ""] + targets_table(heldout)
    lines += ["", "## Plans the held-out run could not predict (p90 > 25%)", ""]
    bad = [
        e
        for e in status_entries(heldout, seed=meta.get("seed"), commit=meta.get("model_commit"))
        if e["status"] == "unvalidated"
    ]
    lines += [f"- {e['phase']}/{e['plan']}: unvalidated: {e['reason']}" for e in bad] or ["- none"]
    lines += ["", "## Host overhead on held-out cases", ""] + _host_overhead_lines(heldout)
    return "\n".join(lines) + "\n"
