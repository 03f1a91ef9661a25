"""Long-context quality of AQUA and its peers on two GQA decoders, the dense prefix shared by all methods.

Models: SmolLM2-135M-Instruct (9 / 3 heads, d 64) and Qwen2.5-Coder-0.5B-Instruct (14 / 2 heads,
d 64), both from GGUF files shipped in Python packages (aqua_model.integrations.models),
dequantized by transformers (the baseline is that quantized model). Texts: the running Python's
standard-library source files, read from its installation and recorded by path and SHA-256
(aqua_model.fidelity.stdlib_texts); P is calibrated per (layer, KV group) on post-RoPE q and k
of one long calibration sequence (the interpreter's LICENSE.txt and other stdlib files, disjoint
from the evaluation files), run as a chunked prefill so its keys reach the positions a long
context reaches.

Deployment (named assumption, aqua_model.fidelity.longctx.DEPLOYMENT): prefill dense, decode
sparse. For a context of N tokens the first N - S - 1 are prefilled by the unmodified model;
the S = --scored-tokens positions that predict the last S tokens run as one chunk with each
method's attention over that cache; perplexity, KL and top-1 are scored on those S positions
against the unmodified model on the same chunk. One window of text serves every context (the
prefill of context N continues that of the previous context) and every method.

Usage: python analysis/longctx_study.py --model smollm2-135m-instruct [--windows 8] [--out analysis/results]
       python analysis/longctx_study.py --tables-only      (rewrite the summary tables from the JSONL rows)
       python analysis/longctx_study.py --ci --out DIR     (the reduced form: small segments, SmolLM2)

Resumable: rows are appended and fsync'ed to longctx_rows_<model>.jsonl; a rerun skips windows
whose rows are all there (--fresh starts over). Writes, under --out:
  longctx_rows_<model>.jsonl    one row per (window, context, config): per-block sums, seconds
  longctx_projections_<model>.pt  P of the model (reloaded when the calibration text matches)
  longctx_run_<model>.json      texts (path, SHA-256), sizes, versions, timings, deployment check
  longctx_summary.csv / .md     per (model, context, config): perplexity increase with 95% CI, KL, top-1
  longctx_finding.md            per model and selection mode: the largest k reduction within noise at 4K
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

import torch

from aqua_model.fidelity import blocked_bootstrap, longctx, stdlib_texts
from aqua_model.fidelity.decoder import Config, run_environment
from aqua_model.integrations import models, transformers as aqua_tf
from aqua_model.integrations.calibrate import ModelProjections, calibrate_model_prefill
from aqua_model.table_render import to_csv, to_markdown

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
"""The study's models (keys of aqua_model.integrations.models.MODELS)."""
CONTEXTS = (1024, 2048, 4096, 8192)
"""Context lengths N (tokens), capped per model at its config's max_position_embeddings."""
SCORED_TOKENS = 128
"""S: scored positions at the end of every context. 128, not the 256 first planned: on the shared 2-core
machine (load 8, about a fifth of a core per process) a 256-position chunk of SmolLM2 took 6-10 s at 1K-2K
and Qwen costs about four times as much, which put one Qwen window near an hour."""
BLOCK_TOKENS = 16
"""Positions per bootstrap block (8 blocks of the 128 scored positions)."""
PREFILL_CHUNK_TOKENS = 512
"""Tokens per forward of the dense prefill (bounds the [chunk, N] score memory)."""
EVAL_FILES = (
    "_pydecimal.py",
    "turtle.py",
    "inspect.py",
    "typing.py",
    "pydoc.py",
    "tarfile.py",
    "doctest.py",
    "argparse.py",
    "_pyio.py",
    "zipfile.py",
)
"""Evaluation windows, one per file (its first N_max tokens), in order: --windows takes the first ones."""
DEFAULT_WINDOWS = 6
"""Windows per model (the first ones of EVAL_FILES); a run stopped early keeps the windows it finished."""
CALIBRATION_FILES = ("LICENSE.txt", "subprocess.py", "difflib.py", "locale.py")
"""Calibration text: these files joined by CALIBRATION_JOIN, its first --calibration-tokens tokens."""
CALIBRATION_JOIN = "\n\n"
K_FRACTIONS = (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))
"""k/d of the approximate configs (k = d runs once, as the exactness check)."""
SELECTIONS = ("per-head", "group")
PEER_FRACTIONS = (Fraction(1, 2),)
"""k/d at which the peers run by default (the compute budget: see SCORED_TOKENS); --peer-fractions widens it."""
PEERS = ("sparq", "loki")
"""SparQ-style (top-k |q|, unrotated) and Loki-style (the first k rotated coordinates) dimension selection."""
CALIB_TAG = "py"
"""Calibration tag in config keys (the stdlib calibration text)."""
FINDING_CONTEXT = 4096
"""Context at which the finding names the largest k reduction within noise."""
DEFAULT_THREADS = 1
"""torch threads (the shared 2-core machines: see analysis/decoder_study.py's DEFAULT_THREADS)."""
CHECK_CONFIG = ("aqua", Fraction(1, 2), "per-head")
"""Config of the deployment check (projected-key cache against the dense cache rotated on the fly)."""
CI = {
    "models": ("smollm2-135m-instruct",),
    "contexts": (96, 160),
    "scored_tokens": 32,
    "block_tokens": 8,
    "prefill_chunk_tokens": 64,
    "windows": 2,
    "calibration_tokens": 256,
}
"""The reduced form run in CI (tests/test_longctx_study.py): SmolLM2, 2 windows, contexts 96 and 160."""


def of(fraction: Fraction, d: int) -> int:
    value = fraction * d
    if value.denominator != 1:
        raise ValueError(f"fraction {fraction} of d={d} is not an integer")
    return int(value)


def configs(d: int, peer_fractions: tuple[Fraction, ...] = K_FRACTIONS) -> list[Config]:
    """The study's configurations for head dim d (the peers at ``peer_fractions`` of d only)."""
    out = [Config("aqua", d, calib=CALIB_TAG, group="exactness")]
    for frac in K_FRACTIONS:
        for sel in SELECTIONS:
            out.append(Config("aqua", of(frac, d), selection=sel, calib=CALIB_TAG, group="aqua"))
        if frac in peer_fractions:
            for peer in PEERS:
                out.append(Config(peer, of(frac, d), calib=CALIB_TAG, group="peer"))
    return out


def tokens_of(tokenizer: Any, text: str) -> torch.Tensor:
    return torch.as_tensor(tokenizer(text)["input_ids"], dtype=torch.int64)


def projections_for(
    model: Any, tokenizer: Any, *, key: str, out: Path, calibration_tokens: int, chunk: int
) -> tuple[ModelProjections, list[dict[str, str]], float]:
    """P of the model on the calibration text (reloaded from its file when it matches); seconds spent."""
    texts = stdlib_texts.read_texts(CALIBRATION_FILES)
    tag = "+".join(f"{t.name}@{t.sha256[:12]}" for t in texts) + f" first {calibration_tokens} tokens"
    path = out / f"longctx_projections_{key}.pt"
    name = models.MODELS[key].name
    t0 = time.perf_counter()
    if path.exists():
        proj = ModelProjections.load(path, model_name=name)
        if proj.text == tag and proj.n_tokens == calibration_tokens:
            return proj, [t.record() for t in texts], 0.0
    ids = tokens_of(tokenizer, CALIBRATION_JOIN.join(t.text for t in texts))
    if ids.numel() < calibration_tokens:
        raise ValueError(
            f"calibration text {tag} holds {ids.numel()} tokens, fewer than {calibration_tokens}"
        )
    proj = calibrate_model_prefill(
        model, ids[:calibration_tokens], model_name=name, text=tag, chunk_tokens=chunk
    )
    proj.save(path)
    return proj, [t.record() for t in texts], time.perf_counter() - t0


def deployment_check(
    model: Any, proj: ModelProjections, ids: torch.Tensor, *, plan: longctx.LongContextPlan, d: int
) -> dict[str, Any]:
    """The study's cache (dense keys, rotated by the attention) against a real projected-key cache.

    Two projected-key caches against the study's dense cache, each then running the first
    context's scored chunk with CHECK_CONFIG: one filled with the dense prefix's own keys and
    values (``same_keys_*``: only the rotation's rounding differs), one prefilled by the model
    itself with exact AQUA (k = d) attention (the deployment; its keys differ by float rounding,
    which can flip a near-tied top-k choice). Returns the largest key and logit differences, the
    KL between the two runs and their top-1 agreement.
    """
    method, frac, sel = CHECK_CONFIG
    cfg = Config(method, of(frac, d), selection=sel, calib=CALIB_TAG)
    context = plan.contexts[0]
    prefix, end = plan.span(context)
    chunk = ids[prefix:end][None]
    from transformers.cache_utils import DynamicCache

    def prefill(cache: Any) -> None:
        for s in range(0, prefix, plan.prefill_chunk_tokens):
            e = min(prefix, s + plan.prefill_chunk_tokens)
            model(input_ids=ids[s:e][None], cache=cache, use_cache=True, logits_to_keep=1)

    with torch.no_grad():
        aqua_tf.restore(model)
        dense = DynamicCache(config=model.config)
        prefill(dense)
        prefix_kv = [(layer.keys, layer.values) for layer in dense.layers]
        rotated = [aqua_tf._rotate(layer.keys, proj.calibration.P[i]) for i, layer in enumerate(dense.layers)]
        aqua_tf.apply(model, proj, **cfg.apply_kwargs())
        logits_a = model(input_ids=chunk, cache=dense, use_cache=True).logits[0].float()
        same = aqua_tf.projected_key_cache(model)
        for layer, (k, v) in zip(same.layers, prefix_kv):
            layer.update(k, v)
        logits_c = model(input_ids=chunk, cache=same, use_cache=True).logits[0].float()
        aqua_tf.apply(model, proj, k=d, method="aqua")
        projected = aqua_tf.projected_key_cache(model)
        prefill(projected)
        key_diff = max(
            float((layer.keys[..., :prefix, :].float() - r.float()).abs().max())
            for layer, r in zip(projected.layers, rotated)
        )
        aqua_tf.apply(model, proj, **cfg.apply_kwargs())
        logits_b = model(input_ids=chunk, cache=projected, use_cache=True).logits[0].float()
        aqua_tf.restore(model)
    la, lb, lc = (torch.log_softmax(x, -1) for x in (logits_a, logits_b, logits_c))
    return {
        "config": cfg.key,
        "context": context,
        "same_keys_max_abs_logit_difference": float((logits_a - logits_c).abs().max()),
        "same_keys_kl_nats": float((la.exp() * (la - lc)).sum(-1).clamp_min(0).mean()),
        "same_keys_top1_agreement": float((la.argmax(-1) == lc.argmax(-1)).double().mean()),
        "max_abs_key_difference": key_diff,
        "max_abs_logit_difference": float((logits_a - logits_b).abs().max()),
        "kl_nats": float((la.exp() * (la - lb)).sum(-1).clamp_min(0).mean()),
        "top1_agreement": float((la.argmax(-1) == lb.argmax(-1)).double().mean()),
    }


def run_model(key: str, *, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Calibrate, then evaluate every pending window of one model; returns its run record."""
    start = time.perf_counter()
    model, tokenizer = models.load(key)
    model.set_attn_implementation("sdpa")  # the unmodified model's prefill; apply/restore come back to it
    info = models.MODELS[key]
    layers, heads_q, heads_kv, d = aqua_tf.model_shape(model)
    limit = int(model.config.max_position_embeddings)
    plan = longctx.LongContextPlan(
        contexts=tuple(n for n in args.contexts if n <= limit),
        scored_tokens=args.scored_tokens,
        block_tokens=args.block_tokens,
        prefill_chunk_tokens=args.chunk_tokens,
    )
    load_s = time.perf_counter() - start
    print(
        f"{info.name}: {layers} layers, {heads_q}/{heads_kv} heads, d {d}; loaded in {load_s:.0f} s",
        file=sys.stderr,
    )
    proj, cal_texts, cal_s = projections_for(
        model,
        tokenizer,
        key=key,
        out=out,
        calibration_tokens=args.calibration_tokens,
        chunk=args.chunk_tokens,
    )
    texts = stdlib_texts.read_texts(EVAL_FILES[: args.windows])
    stdlib_texts.check_disjoint(stdlib_texts.read_texts(CALIBRATION_FILES), texts)
    windows = {}
    for t in texts:
        ids = tokens_of(tokenizer, t.text)
        if ids.numel() < plan.contexts[-1]:
            raise ValueError(
                f"{t.name} holds {ids.numel()} tokens, fewer than the largest context {plan.contexts[-1]}"
            )
        windows[t.name] = ids[: plan.contexts[-1]]
    cfgs = configs(d, tuple(args.peer_fractions))
    rows_path = out / f"longctx_rows_{key}.jsonl"
    if args.fresh:
        rows_path.unlink(missing_ok=True)
    fields = {
        "model": key,
        "scored_tokens": plan.scored_tokens,
        "block_tokens": plan.block_tokens,
        "calibration_tokens": args.calibration_tokens,
    }
    match = {k: v for k, v in fields.items()}
    done = longctx.done_keys(longctx.read_rows(rows_path), **match)
    pending = longctx.pending_windows(windows, plan=plan, configs=cfgs, done=done)
    check = None
    check_s = 0.0
    if pending:
        t0 = time.perf_counter()
        check = deployment_check(model, proj, windows[pending[0]], plan=plan, d=d)
        check_s = time.perf_counter() - t0
        print(f"deployment check: {check}", file=sys.stderr)
    writer = longctx.JsonlWriter(rows_path)
    bar = longctx.Progress(
        len(pending) * len(plan.contexts) * (len(cfgs) + 1), enabled=not args.no_progress, label=info.name
    )

    def setup(cfg: Config) -> None:
        aqua_tf.apply(model, proj, **cfg.apply_kwargs())

    def reset() -> None:
        aqua_tf.restore(model)

    run_path = out / f"longctx_run_{key}.json"
    previous = json.loads(run_path.read_text()) if run_path.exists() else {}
    invocation: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "windows_pending": len(pending),
        "windows_done": 0,
        "seconds": {
            "load": round(load_s, 1),
            "calibration": round(cal_s, 1),
            "deployment_check": round(check_s, 1),
        },
    }
    record = {
        "schema_version": 1,
        "model": info.name,
        "key": key,
        "quantization": info.quantization,
        "source": info.source,
        "licence": info.licence,
        "layers": layers,
        "heads_q": heads_q,
        "heads_kv": heads_kv,
        "d": d,
        "max_position_embeddings": limit,
        "deployment": longctx.DEPLOYMENT,
        "contexts": list(plan.contexts),
        "scored_tokens": plan.scored_tokens,
        "block_tokens": plan.block_tokens,
        "prefill_chunk_tokens": plan.prefill_chunk_tokens,
        "calibration_tokens": args.calibration_tokens,
        "calibration_texts": cal_texts,
        "evaluation_texts": [t.record() for t in texts],
        "configs": [c.key for c in cfgs],
        "deployment_check": check if check is not None else previous.get("deployment_check"),
        "bootstrap": {"resamples": blocked_bootstrap.RESAMPLES, "confidence": blocked_bootstrap.CONFIDENCE},
        "invocations": [*previous.get("invocations", []), invocation],
        **run_environment(),
    }
    t0 = time.perf_counter()

    def save() -> None:
        invocation["seconds"]["evaluation"] = round(time.perf_counter() - t0, 1)
        invocation["seconds"]["total"] = round(time.perf_counter() - start, 1)
        _atomic(run_path, json.dumps(record, indent=2) + "\n")

    save()
    for name in pending:
        longctx.evaluate_window(
            model=model,
            ids=windows[name],
            window=name,
            plan=plan,
            configs=cfgs,
            setup=setup,
            reset=reset,
            done=done,
            write=writer.write,
            step=bar.step,
            row_fields={**fields, "heads_q": heads_q, "heads_kv": heads_kv, "d": d},
        )
        invocation["windows_done"] += 1
        save()  # after every window: a stopped run leaves a record of what it finished
    bar.close()
    invocation["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    aqua_tf.restore(model)
    return record


# --------------------------------------------------------------------------- tables


def summary_rows(out: Path) -> list[dict[str, Any]]:
    """Per (model, context, config): the paired two-stage bootstrap summary of every JSONL file under ``out``."""
    flat = []
    for key in MODELS:
        run_path = out / f"longctx_run_{key}.json"
        rows_path = out / f"longctx_rows_{key}.jsonl"
        if not run_path.exists() or not rows_path.exists():
            continue
        run = json.loads(run_path.read_text())
        match = {
            "model": key,
            "scored_tokens": run["scored_tokens"],
            "block_tokens": run["block_tokens"],
            "calibration_tokens": run["calibration_tokens"],
        }
        rows = [r for r in longctx.read_rows(rows_path) if all(r.get(k) == v for k, v in match.items())]
        d = run["d"]
        ran = [c for c in configs(d) if c.key in set(run["configs"])]  # the configs this model's run had
        wanted = {longctx.BASELINE, *(c.key for c in ran)}
        for cfg in ran:
            for context in run["contexts"]:
                # only windows complete at this context, so every config is summarised over the same windows
                complete = {
                    t["name"]
                    for t in run["evaluation_texts"]
                    if wanted
                    <= {r["config"] for r in rows if r["window"] == t["name"] and r["context"] == context}
                }
                got = [
                    r
                    for r in rows
                    if r["config"] == cfg.key and r["context"] == context and r["window"] in complete
                ]
                if not got:
                    continue
                got.sort(key=lambda r: r["window"])
                s = blocked_bootstrap.paired_increase(got)
                flat.append(
                    {
                        "model": run["model"],
                        "heads_q": run["heads_q"],
                        "heads_kv": run["heads_kv"],
                        "d": d,
                        "context": context,
                        "config": cfg.key,
                        "method": cfg.method,
                        "k": cfg.k,
                        "k_over_d": str(Fraction(cfg.k, d)),
                        "selection": cfg.selection,
                        "windows": s["windows"],
                        "tokens": s["tokens"],
                        "base_ppl": round(s["base_ppl"], 5),
                        "ppl": round(s["ppl"], 5),
                        "ppl_increase_pct": round(100 * s["ppl_increase"], 4),
                        "ppl_increase_lo_pct": round(100 * s["ppl_increase_lo"], 4),
                        "ppl_increase_hi_pct": round(100 * s["ppl_increase_hi"], 4),
                        "significant": s["significant"],
                        "kl_nats": float(f"{s['kl_nats']:.4g}"),
                        "top1_agreement": round(s["top1_agreement"], 4),
                        "scored_tokens": run["scored_tokens"],
                        "block_tokens": run["block_tokens"],
                        "chunk_seconds_mean": round(sum(r["seconds"] for r in got) / len(got), 3),
                    }
                )
    return flat


def _ci(r: dict[str, Any]) -> str:
    return f"{r['ppl_increase_pct']:+.2f}% [{r['ppl_increase_lo_pct']:+.2f}, {r['ppl_increase_hi_pct']:+.2f}]"


def finding_rows(flat: list[dict[str, Any]], *, context: int = FINDING_CONTEXT) -> list[dict[str, Any]]:
    """Per model and (method, selection): the smallest k at ``context`` whose increase, and that of every
    larger k of the series, has a 95% interval holding 0 (the largest k reduction within noise)."""
    out = []
    for model in sorted({r["model"] for r in flat}):
        at = [r for r in flat if r["model"] == model and r["context"] == context]
        if not at:
            continue
        d = at[0]["d"]
        series = [("aqua", "per-head"), ("aqua", "group"), ("sparq", "per-head"), ("loki", "per-head")]
        for method, sel in series:
            pts = sorted(
                [r for r in at if r["method"] == method and r["selection"] == sel and r["k"] < d],
                key=lambda r: -r["k"],
            )
            best = None
            for r in pts:
                if r["significant"]:
                    break
                best = r
            out.append(
                {
                    "model": model,
                    "context": context,
                    "method": method,
                    "selection": sel,
                    "smallest_k_within_noise": "none" if best is None else best["k"],
                    "k_reduction_pct": 0 if best is None else round(100 * (1 - best["k"] / d), 1),
                    "its_increase": "" if best is None else _ci(best),
                    "next_k_down": next(
                        (f"k={r['k']}: {_ci(r)}" for r in pts if best is None or r["k"] < best["k"]), ""
                    ),
                }
            )
    return out


def write_tables(out: Path) -> None:
    flat = summary_rows(out)
    if not flat:
        raise ValueError(f"no long-context rows under {out}: run the study first")
    _atomic(out / "longctx_summary.csv", to_csv(flat))
    parts = ["# Long-context quality: perplexity increase of the last scored positions, 95% CI\n"]
    for model in sorted({r["model"] for r in flat}):
        rows = [r for r in flat if r["model"] == model]
        ctxs = sorted({r["context"] for r in rows})
        first = rows[0]
        windows = ", ".join(
            f"{next(r['windows'] for r in rows if r['context'] == n)} at N = {n}" for n in ctxs
        )
        parts.append(
            f"\n## {model} ({first['heads_q']} / {first['heads_kv']} heads, d = {first['d']}; "
            f"S = {first['scored_tokens']} scored positions in blocks of {first['block_tokens']}; "
            f"windows: {windows})\n\n"
        )
        table = []
        for key in dict.fromkeys(r["config"] for r in rows):
            line = {"config": key}
            for n in ctxs:
                hit = next((r for r in rows if r["config"] == key and r["context"] == n), None)
                line[f"N={n}"] = "" if hit is None else _ci(hit)
            table.append(line)
        parts.append(to_markdown(table))
        base = [
            {"context": n, "base_ppl": next(r["base_ppl"] for r in rows if r["context"] == n)} for n in ctxs
        ]
        parts.append("\nBaseline perplexity of the scored positions:\n\n" + to_markdown(base))
    parts.append(
        "\nGenerated by analysis/longctx_study.py. "
        + longctx.DEPLOYMENT
        + ". Increase = ppl/ppl_base - 1 on the "
        "scored positions, paired two-stage bootstrap over windows and blocks of positions "
        f"({blocked_bootstrap.RESAMPLES} resamples). Per-row KL, top-1 and chunk times: longctx_summary.csv.\n"
    )
    _atomic(out / "longctx_summary.md", "".join(parts))
    find = finding_rows(flat)
    _atomic(
        out / "longctx_finding.md",
        f"# Largest k reduction within noise at N = {FINDING_CONTEXT}\n\n"
        + to_markdown(find)
        + "\nThe smallest k whose perplexity increase, and that of every larger k of the same series, has a 95% "
        "interval holding 0; 'next_k_down' is the first k below it (or the largest k when none qualifies).\n",
    )


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--model", action="append", choices=MODELS, help="repeatable; default: both")
    parser.add_argument("--windows", type=int, default=DEFAULT_WINDOWS)
    parser.add_argument("--contexts", type=int, nargs="+", default=list(CONTEXTS))
    parser.add_argument("--scored-tokens", type=int, default=SCORED_TOKENS)
    parser.add_argument("--block-tokens", type=int, default=BLOCK_TOKENS)
    parser.add_argument("--chunk-tokens", type=int, default=PREFILL_CHUNK_TOKENS)
    parser.add_argument("--calibration-tokens", type=int, default=CONTEXTS[-1])
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument(
        "--peer-fractions",
        type=Fraction,
        nargs="+",
        default=list(PEER_FRACTIONS),
        help="k/d at which SparQ- and Loki-style run (default: PEER_FRACTIONS)",
    )
    parser.add_argument("--ci", action="store_true", help="the reduced form (CI dict): overrides the sizes")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--tables-only", action="store_true")
    args = parser.parse_args(argv)
    if args.ci:
        args.model = list(CI["models"])
        args.contexts = list(CI["contexts"])
        args.scored_tokens, args.block_tokens = CI["scored_tokens"], CI["block_tokens"]
        args.chunk_tokens, args.windows = CI["prefill_chunk_tokens"], CI["windows"]
        args.calibration_tokens = CI["calibration_tokens"]
    if not set(args.peer_fractions) <= set(K_FRACTIONS):
        parser.error(
            f"--peer-fractions must be among {[str(f) for f in K_FRACTIONS]}, got {args.peer_fractions}"
        )
    if not 1 <= args.windows <= len(EVAL_FILES):
        parser.error(f"--windows must be in [1, {len(EVAL_FILES)}], got {args.windows}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not args.tables_only:
        torch.manual_seed(0)
        torch.set_num_threads(args.threads)
        for key in args.model or MODELS:
            rec = run_model(key, args=args, out=out)
            print(f"{key}: {rec['invocations'][-1]['seconds']}", file=sys.stderr)
    write_tables(out)


if __name__ == "__main__":
    main()
