"""The GQA selection trade-off at matched context: long-context quality beside the decode speedup.

For each model shape (SmolLM2-135M 9 / 3, Qwen2.5-Coder-0.5B 14 / 2, and Llama-3.1-8B 32 / 8, speed
only: no offline Llama weights, so no quality), batch, context of TRADEOFF_CONTEXTS, k of the
long-context study and both selection modes: the perplexity increase of the study
(analysis/results/longctx_summary.csv, with its 95% CI) beside the fused AQUA decode kernel's
speedup over SDPA for that g, k and context. A speedup is 'measured' when the H200 file MEASURED
(the [kernels] helper's decode_v3 run at these shapes: heads_q, heads_kv, d, k, selection, batch,
context, dtype, CUDA-graph times and speedup_graph) has the row, else 'predicted' by
aqua_model.simulate on the frozen calibrated H200 profile PREDICTION_PROFILE, with its 80% interval.

Re-runnable: reads only committed files (rerun after new measurements land).

Usage: python analysis/longctx_tradeoff.py [--out analysis/results] [--figures figures] [--measured PATH]
Writes longctx_tradeoff.csv / .md under --out, longctx_frontier.pdf / .png under --figures (batch
BATCH), and the generated sections (trade-off, finding, summary, check, run times, exactness) of
docs/longctx.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import aqua_model
from aqua_model.plots.longctx_frontier import tradeoff_figure
from aqua_model.plots.style import savefig
from aqua_model.table_render import to_csv, to_markdown

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "validation" / "results" / "h200" / "kernels-v5-sort" / "decode_v3_longctx.jsonl"
"""The H200 measurements of the shipped one-launch kernel at the study's shapes (issue 22, fifth round)."""
MEASURED_SDPA_ALSO = (
    ROOT / "validation" / "results" / "h200" / "kernels-v5-shipped" / "decode_v3_longctx.jsonl",
)
"""Another call of the same round at the same shapes: its SDPA rows stand in for MEASURED's where
that call ran a different backend more than 5% faster (``analysis/sdpa_baseline.py``: MEASURED's
backend trial picked flash over cuDNN at 24 of its 144 shapes)."""
PREDICTION_PROFILE = ROOT / "validation" / "results" / "h200" / "h200-heldout-898775459.toml"
"""The newest frozen calibrated H200 profile (held-out round 3), which carries the plans' 80% intervals."""
SHAPES = (
    {"model": "SmolLM2-135M-Instruct", "heads_q": 9, "heads_kv": 3, "d": 64},
    {"model": "Qwen2.5-Coder-0.5B-Instruct", "heads_q": 14, "heads_kv": 2, "d": 64},
    {"model": "Llama-3.1-8B", "heads_q": 32, "heads_kv": 8, "d": 128},
)
"""Model shapes of the table (per layer: query heads, KV heads, head dim)."""
TRADEOFF_CONTEXTS = (2048, 4096, 8192)
"""Contexts of the table (the issue's 2K-8K)."""
K_FRACTIONS = (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))
"""k/d of the table (the long-context study's approximate k)."""
SELECTIONS = ("per-head", "group")
BATCH = 8
"""Decode batch of the figure (the decoder frontier's batch; one query per sequence)."""
BATCHES = (1, 8)
"""Decode batches of the table (the measured file's)."""
DTYPE = "bf16"
"""Attention dtype of every speedup."""
PLAN = "aqua-fused"
"""The AQUA plan whose speedup over dense-fused (SDPA) is reported."""


def read_summary(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run analysis/longctx_study.py first")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


SPEEDUP_FIELDS = ("speedup_graph", "speedup")
"""Measured speedup column, first found: SDPA's CUDA-graph time over aqua_decode's (the [kernels] file), or a
plain ``speedup``."""
DTYPE_NAMES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16"}
"""Spellings of a row's dtype."""


def read_measured(path: Path, also: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """Rows of the measured file ([] when it does not exist yet), each SDPA baseline checked
    against the rows of ``also`` (:func:`sdpa_baseline.fastest_sdpa_baseline`)."""
    if not path.is_file():
        return []
    rows = _read_rows(path)
    if also:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from sdpa_baseline import fastest_sdpa_baseline

        rows = fastest_sdpa_baseline(rows, [_read_rows(p) for p in also])
    return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = {"heads_q", "heads_kv", "d", "k", "selection", "batch", "context"} - set(row)
        if not any(f in row for f in SPEEDUP_FIELDS):
            missing.add(" or ".join(SPEEDUP_FIELDS))
        if missing:
            raise ValueError(f"{path}:{i + 1} misses the columns {sorted(missing)}")
        rows.append(row)
    return rows


def _number(name: str, value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"{name} must be a finite number in {where}, got {value!r}")


def measured_spread(row: dict[str, Any], where: str) -> tuple[float | None, float | None]:
    """(low, high) of a measured speedup from the two timings' interquartile ranges (SDPA's time at the
    bottom / top of its IQR over AQUA's at the top / bottom of its own), or a row's own bounds, or None."""
    need = ("sdpa_graph_s", "sdpa_graph_iqr_s", "aqua_graph_s", "aqua_graph_iqr_s")
    if all(f in row for f in need):
        s, si, a, ai = (_number(f, row[f], where) for f in need)
        return (s - si / 2) / (a + ai / 2), (s + si / 2) / (a - ai / 2)
    if "speedup_lo" in row and "speedup_hi" in row:
        return _number("speedup_lo", row["speedup_lo"], where), _number(
            "speedup_hi", row["speedup_hi"], where
        )
    return None, None


def speed(
    measured: list[dict[str, Any]],
    *,
    shape: dict[str, Any],
    k: int,
    selection: str,
    context: int,
    source: str,
    batch: int = BATCH,
) -> dict[str, Any]:
    """The speedup of PLAN at one shape: the measured row when there is one, else the prediction."""
    hits = [
        r
        for r in measured
        if (r["heads_q"], r["heads_kv"], r["d"], r["k"], r["selection"], r["batch"], r["context"])
        == (shape["heads_q"], shape["heads_kv"], shape["d"], k, selection, batch, context)
        and DTYPE_NAMES.get(str(r.get("dtype", DTYPE))) == DTYPE
    ]
    if len(hits) > 1:
        raise ValueError(
            f"{len(hits)} measured rows for {shape['model']} k={k} {selection} N={context} "
            f"batch {batch}: expected one"
        )
    if hits:
        r = hits[0]
        where = f"the measured row of {shape['model']} k={k} {selection} N={context} batch {batch}"
        field = next(f for f in SPEEDUP_FIELDS if f in r)
        lo, hi = measured_spread(r, where)
        return {
            "speedup": _number(field, r[field], where),
            "speed_source": "measured",
            "speedup_lo": lo,
            "speedup_hi": hi,
            "speed_detail": f"H200, {source} ({field}; range from the timings' IQRs)",
        }
    sim = aqua_model.simulate(
        gpu=str(PREDICTION_PROFILE),
        context=context,
        batch=batch,
        k=k,
        heads_q=shape["heads_q"],
        heads_kv=shape["heads_kv"],
        d=shape["d"],
        plan=PLAN,
        selection=selection,
        dtype=DTYPE,
    )
    iv = sim.speedup_interval
    status = sim.statuses.get(PLAN, "")
    return {
        "speedup": float(sim.speedup),
        "speed_source": "predicted",
        "speedup_lo": None if iv is None else float(iv[0]),
        "speedup_hi": None if iv is None else float(iv[1]),
        "speed_detail": f"roofline, {sim.mode}, 80% interval"
        + (f"; {status.split(' (')[0]}" if status else ""),
    }


def tradeoff_rows(
    summary: list[dict[str, str]],
    measured: list[dict[str, Any]],
    *,
    contexts: tuple[int, ...] = TRADEOFF_CONTEXTS,
    source: str = MEASURED.name,
    batches: tuple[int, ...] = BATCHES,
) -> list[dict[str, Any]]:
    """One row per (shape, batch, context, k, selection): the study's quality (None where not measured)
    beside the speedup (measured, else predicted)."""
    rows = []
    for shape, batch in ((s, b) for s in SHAPES for b in batches):
        d = shape["d"]
        for context in contexts:
            for frac in K_FRACTIONS:
                k = int(frac * d)
                for sel in SELECTIONS:
                    q = next(
                        (
                            r
                            for r in summary
                            if r["model"] == shape["model"]
                            and int(r["context"]) == context
                            and r["method"] == "aqua"
                            and int(r["k"]) == k
                            and r["selection"] == sel
                        ),
                        None,
                    )
                    row: dict[str, Any] = {
                        "model": shape["model"],
                        "heads_q": shape["heads_q"],
                        "heads_kv": shape["heads_kv"],
                        "g": shape["heads_q"] // shape["heads_kv"],
                        "d": d,
                        "context": context,
                        "k": k,
                        "k_over_d": str(frac),
                        "selection": sel,
                        "ppl_increase_pct": None if q is None else float(q["ppl_increase_pct"]),
                        "ppl_increase_lo_pct": None if q is None else float(q["ppl_increase_lo_pct"]),
                        "ppl_increase_hi_pct": None if q is None else float(q["ppl_increase_hi_pct"]),
                        "significant": None if q is None else q["significant"] == "True",
                        "kl_nats": None if q is None else float(q["kl_nats"]),
                        "quality": "measured" if q is not None else "not measured (no offline weights)",
                        "batch": batch,
                    }
                    row.update(
                        speed(
                            measured,
                            shape=shape,
                            k=k,
                            selection=sel,
                            context=context,
                            source=source,
                            batch=batch,
                        )
                    )
                    for f in ("speedup", "speedup_lo", "speedup_hi"):
                        row[f] = None if row[f] is None else round(row[f], 4)
                    rows.append(row)
    return rows


def _cell_quality(r: dict[str, Any]) -> str:
    if r["ppl_increase_pct"] is None:
        return "n/a"
    return f"{r['ppl_increase_pct']:+.2f}% [{r['ppl_increase_lo_pct']:+.2f}, {r['ppl_increase_hi_pct']:+.2f}]"


def _cell_speed(r: dict[str, Any]) -> str:
    iv = "" if r["speedup_lo"] is None else f" [{r['speedup_lo']:.2f}, {r['speedup_hi']:.2f}]"
    return f"{r['speedup']:.2f}x{iv} ({r['speed_source'][0]})"


def markdown(rows: list[dict[str, Any]], *, source: str = MEASURED.name) -> str:
    parts = ["# GQA selection trade-off at matched context\n"]
    for shape in SHAPES:
        for batch in sorted({r["batch"] for r in rows}):
            mine = [r for r in rows if r["model"] == shape["model"] and r["batch"] == batch]
            if not mine:
                continue
            parts.append(
                f"\n## {shape['model']} ({shape['heads_q']} / {shape['heads_kv']} heads, g = {mine[0]['g']}, "
                f"d = {shape['d']}), batch {batch}\n\n"
            )
            table = []
            for context in sorted({r["context"] for r in mine}):
                for frac in K_FRACTIONS:
                    k = int(frac * shape["d"])
                    by = {r["selection"]: r for r in mine if r["context"] == context and r["k"] == k}
                    table.append(
                        {
                            "N": context,
                            "k": f"{k} ({frac})",
                            "per-head: ppl increase": _cell_quality(by["per-head"]),
                            "per-head: speedup": _cell_speed(by["per-head"]),
                            "group: ppl increase": _cell_quality(by["group"]),
                            "group: speedup": _cell_speed(by["group"]),
                        }
                    )
            parts.append(to_markdown(table))
    parts.append(
        "\nGenerated by analysis/longctx_tradeoff.py. Quality: analysis/results/longctx_summary.csv (the last "
        "scored positions after a dense prefill, paired 95% bootstrap CI; n/a: no offline weights). Speedup of "
        f"the fused AQUA decode kernel over SDPA per layer, {DTYPE}, one query per sequence: (m) measured on the "
        f"H200 ({source}, CUDA-graph times; the range spans the timings' interquartile ranges), (p) predicted by "
        f"the roofline on {PREDICTION_PROFILE.name} with its 80% interval.\n"
    )
    return "".join(parts)


CI_DIR = "longctx_ci"
"""Sub-folder of --out holding the CI form's committed run record (its timing)."""
DOCS = ROOT / "docs" / "longctx.md"
"""The study's page; its generated sections sit between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``."""


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the generated section ``name`` replaced by ``body`` (the markers must exist, once)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"the page must hold the markers {begin} and {end} once each, in that order")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def docs_sections(out: Path) -> dict[str, str]:
    """The generated sections of the page: the trade-off tables and the study's finding and summary."""

    def table_part(path: Path) -> str:
        text = path.read_text(encoding="utf-8")
        return text.split("\n", 1)[1].strip()  # without the file's own title

    runs = [json.loads(p.read_text()) for p in sorted(out.glob("longctx_run_*.json"))]
    check = [{"model": r["model"], **(r["deployment_check"] or {})} for r in runs]
    timing = []
    for r in runs:
        for inv in r.get("invocations", []):
            sec = inv["seconds"]
            timing.append(
                {
                    "model": r["model"],
                    "started (UTC)": inv["started_utc"],
                    "windows run": f"{inv['windows_done']} of {inv['windows_pending']} pending",
                    "load s": sec.get("load"),
                    "calibration s": sec.get("calibration"),
                    "evaluation s": sec.get("evaluation"),
                    "total s": sec.get("total"),
                }
            )
    ci_runs = sorted((out / CI_DIR).glob("longctx_run_*.json")) if (out / CI_DIR).is_dir() else []
    for p in ci_runs:
        r = json.loads(p.read_text())
        inv = r["invocations"][0]
        timing.append(
            {
                "model": r["model"] + " (CI form)",
                "started (UTC)": inv["started_utc"],
                "windows run": f"{inv['windows_done']} of {inv['windows_pending']} pending",
                "load s": inv["seconds"].get("load"),
                "calibration s": inv["seconds"].get("calibration"),
                "evaluation s": inv["seconds"].get("evaluation"),
                "total s": inv["seconds"].get("total"),
            }
        )
    exact = [json.loads(p.read_text()) for p in sorted(out.glob("longctx_exactness_*.json"))]
    exact_rows = [
        {
            "model": e["model"],
            "tokens": e["tokens"],
            "KL fp32, k = d": f"{e['kl_fp32_aqua_kd_vs_fp32']:.2e}",
            "KL bf16 vs fp32 (noise floor)": f"{e['kl_bf16_vs_fp32_noise_floor']:.2e}",
            "KL bf16 k = d vs fp32": f"{e['kl_bf16_aqua_kd_vs_fp32']:.2e}",
            "KL bf16 k = d vs bf16": f"{e['kl_bf16_aqua_kd_vs_bf16']:.2e}",
            "fp32 < 1e-6": e["fp32_exact"],
            "bf16 within floor": e["bf16_within_noise_floor"],
        }
        for e in exact
    ]
    return {
        "tradeoff": table_part(out / "longctx_tradeoff.md"),
        "finding": table_part(out / "longctx_finding.md"),
        "summary": table_part(out / "longctx_summary.md"),
        "check": to_markdown(check, list(dict.fromkeys(c for row in check for c in row)))
        if check
        else "(no run)",
        "runtime": to_markdown(timing) if timing else "(no run record)",
        "exactness": to_markdown(exact_rows) if exact_rows else "(not run: analysis/longctx_exactness.py)",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "analysis" / "results")
    parser.add_argument("--figures", type=Path, default=ROOT / "figures")
    parser.add_argument("--measured", type=Path, default=MEASURED)
    parser.add_argument("--contexts", type=int, nargs="+", default=list(TRADEOFF_CONTEXTS))
    parser.add_argument(
        "--batches", type=int, nargs="+", default=list(BATCHES), help="decode batches of the table"
    )
    parser.add_argument("--docs", type=Path, default=DOCS, help="page whose generated sections are rewritten")
    args = parser.parse_args(argv)
    summary = read_summary(args.out / "longctx_summary.csv")
    source = f"{args.measured.parent.name}/{args.measured.name}"
    also = MEASURED_SDPA_ALSO if args.measured == MEASURED else ()
    if also:
        source += f", SDPA baselines checked against {', '.join(f'{p.parent.name}/{p.name}' for p in also)}"
    rows = tradeoff_rows(
        summary,
        read_measured(args.measured, also),
        contexts=tuple(args.contexts),
        source=source,
        batches=tuple(args.batches),
    )
    (args.out / "longctx_tradeoff.csv").write_text(to_csv(rows), encoding="utf-8")
    (args.out / "longctx_tradeoff.md").write_text(markdown(rows, source=source), encoding="utf-8")
    savefig(tradeoff_figure(rows), args.figures / "longctx_frontier")  # batch FIGURE_BATCH
    if args.docs.is_file():
        text = args.docs.read_text(encoding="utf-8")
        for name, body in docs_sections(args.out).items():
            text = replace_section(text, name, body)
        args.docs.write_text(text, encoding="utf-8")
    n_measured = sum(r["speed_source"] == "measured" for r in rows)
    print(f"{len(rows)} rows, {n_measured} measured speedups, {len(rows) - n_measured} predicted")


if __name__ == "__main__":
    main()
