"""What tile-shared selection costs in accuracy: SmolLM2-135M, perplexity and KL against tile size M and k.

The fused prefill kernel (aqua_model/kernels/triton_prefill.py) shares one set of k rotated
dims among the M = BLOCK_M queries of a tile of one head (the top-k of their summed |q^|), so
that its score product runs over k dims on tensor cores. Per-query AQUA (M = 1) picks k dims
per query. This script measures the price of sharing in a real RoPE decoder with GQA:
SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads, d = 64), through the decoder helper's
integration (aqua_model.integrations.transformers, not modified): P is calibrated per (layer, KV
group) on post-RoPE q and k of English calibration text (aqua_model.integrations.calibrate), and
held-out English text is cut into segments of --segment-tokens tokens, each one causal prefill
without a cache (teacher forcing; tokens 1 .. T-1 predicted), tiles aligned at positions 0, M, 2M.

Configurations: M in {1, 16, 64, 128} x k in {d/4, d/2, 3d/4} (16, 32, 48 of 64: the k/d of
k = 32, 64, 96 at d = 128). M = 1 runs the integration's own per-query AQUA (method "aqua",
selection "per-head"); M > 1 runs the tile rule of aqua_model.kernels.triton_prefill
(tile_keep_mask / aqua_prefill_reference, the kernel's reference) registered as one more
attention implementation. Two checks run first and stop the script if they fail: the tile
rule at M = 1 gives the integration's per-query logits, and at k = d the baseline's.

Metrics per configuration (aqua_model.fidelity.decoder): perplexity increase over the unmodified
model with a paired 95% bootstrap CI over segments, KL(base || approx) in nats per token, and
top-1 agreement. Beside them the compute-bound ceiling of the kernel at that k/d (dense over AQUA
tensor-core FLOPs of causal prefill, from aqua_model.costs: 2d/(d + k)).

Usage: python analysis/prefill_accuracy.py [--out analysis/results] [--segments 8] [--segment-tokens 256]
       [--calibration-segments 6] [--fresh] [--no-progress]
Resumable: per-segment rows stream to prefill_accuracy_segments.csv. Writes, under --out:
  prefill_accuracy_segments.csv   one row per (dataset, config, segment)
  prefill_accuracy.csv / .md      the table: M, k, perplexity increase [CI], KL, top-1, ceiling
  prefill_accuracy_run.json       sizes, versions, checks and the wall time
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AttentionInterface  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, eager_mask  # noqa: E402

from aqua_model.costs import component_flops  # noqa: E402
from aqua_model.fidelity import decoder as study  # noqa: E402
from aqua_model.integrations import models, transformers as aqua_tf  # noqa: E402
from aqua_model.integrations.calibrate import calibrate_model  # noqa: E402
from aqua_model.kernels import triton_prefill as tp  # noqa: E402
from aqua_model.kernels.reference import rotate  # noqa: E402
from aqua_model.table_render import to_csv, to_markdown  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "aqua_model" / "fidelity_data"
HELDOUT = ("heldout_en.txt", "heldout_en_2.txt")
CALIBRATION = ("calibration_en.txt",)
ENTRY_JOIN = "%\n"
"""Joins two fortune files into one text (as analysis/decoder_study.py does)."""
TILES = (1, 16, 64, 128)
"""Queries per selection tile M (1: per-query AQUA; 16 .. 128: the kernel's BLOCK_M)."""
K_FRACTIONS = (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))
"""k/d of the sweep: k = 32, 64, 96 at d = 128 (the benchmark's k), 16, 32, 48 here."""
IMPLEMENTATION = "aqua-prefill-tile"
"""Name under which the tile-shared rule is registered in transformers' AttentionInterface."""
TILE_ATTR = "aqua_prefill_tile"
"""Attribute of each attention module holding its tile size M."""
CHECK_TOL = 1e-3
"""Largest max |logit difference| accepted by the two equivalence checks. The model runs in float32:
rotating q and k by P moves each score by ~1e-6 relative (float32 rounding of a 64-term product),
and through 30 layers the logits (magnitude ~10-30) move by ~1e-4 (seen: 9.9e-5 at k = d); a wrong
rule moves them by > 0.1."""


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """One configuration: k kept dims shared by tiles of ``tile`` queries (1: per query)."""

    k: int
    tile: int

    @property
    def key(self) -> str:
        return f"aqua-k{self.k}-tile{self.tile}"


def tile_attention_forward(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Tile-shared AQUA for a full-sequence causal forward: q^ = q P, k^ = k P (post-RoPE, the
    module's P from the integration's layer state), then the kernel's reference."""
    state = getattr(module, aqua_tf.STATE_ATTR)
    if dropout:
        raise ValueError(f"dropout must be 0, got {dropout!r}")
    T, N = query.shape[2], key.shape[2]
    if T != N:
        raise ValueError(
            f"the tile study runs full sequences without a cache: queries T={T} must equal keys N={N}"
        )
    g = query.shape[1] // key.shape[1]
    q_hat = rotate(query, state.projection, g=g)
    k_hat = rotate(key, state.projection)
    out = tp.aqua_prefill_reference(
        q_hat,
        k_hat,
        value,
        k_keep=state.settings.k,
        block_m=getattr(module, TILE_ATTR),
        causal=True,
        scale=scaling,
    )
    return out.transpose(1, 2).contiguous(), None


def setup_factory(model: Any, projections: Any) -> Any:
    AttentionInterface.register(IMPLEMENTATION, tile_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)

    def setup(cfg: TileConfig, *, force_tile_rule: bool = False) -> None:
        aqua_tf.apply(model, projections, k=cfg.k, method="aqua", selection="per-head")
        if cfg.tile > 1 or force_tile_rule:
            for mod in aqua_tf.attention_modules(model):
                setattr(mod, TILE_ATTR, cfg.tile)
            model.set_attn_implementation(IMPLEMENTATION)

    return setup


def logits(model: Any, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch, use_cache=False).logits.float()


def ceiling(d: int, k: int, T: int) -> float:
    """Dense over AQUA tensor-core FLOPs (scores + values) of causal prefill, from the cost model."""
    dense = component_flops(method="dense", phase="prefill", d=d, k=d, context=0, prompt=T)
    aqua = component_flops(method="aqua", phase="prefill", d=d, k=k, context=0, prompt=T)
    return float((dense["scores"] + dense["value"]) / (aqua["scores"] + aqua["value"]))


def read(names: tuple[str, ...]) -> str:
    return ENTRY_JOIN.join((DATA / n).read_text(encoding="utf-8") for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--segments", type=int, default=8, help="held-out segments")
    parser.add_argument("--segment-tokens", type=int, default=256)
    parser.add_argument("--calibration-segments", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--fresh", action="store_true", help="delete the streamed rows first")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seg_csv = out / "prefill_accuracy_segments.csv"
    if args.fresh:
        seg_csv.unlink(missing_ok=True)
    torch.manual_seed(0)
    model, tokenizer = models.load()
    aqua_tf.restore(model)
    info = models.MODELS[models.DEFAULT_MODEL]
    layers, heads_q, heads_kv, d = aqua_tf.model_shape(model)
    T = args.segment_tokens
    cal_segs = study.token_segments(
        tokenizer(read(CALIBRATION))["input_ids"], length=T, max_segments=args.calibration_segments
    )
    if len(cal_segs) < args.calibration_segments:
        raise ValueError(
            f"calibration text holds {len(cal_segs)} segments of {T} tokens, fewer than {args.calibration_segments}"
        )
    projections = calibrate_model(model, cal_segs, model_name=info.name, text="+".join(CALIBRATION))
    print(
        f"calibrated P on {projections.n_tokens} tokens in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    segs = study.token_segments(tokenizer(read(HELDOUT))["input_ids"], length=T, max_segments=args.segments)
    if len(segs) < args.segments:
        raise ValueError(
            f"held-out text holds {len(segs)} segments of {T} tokens, fewer than --segments {args.segments}"
        )
    setup = setup_factory(model, projections)

    # checks on one batch: the tile rule at M = 1 is the integration's per-query AQUA; at k = d it is exact
    probe = torch.stack(segs[:2])
    base = logits(model, probe)
    k_mid = int(K_FRACTIONS[1] * d)
    setup(TileConfig(k_mid, 1))
    per_query = logits(model, probe)
    setup(TileConfig(k_mid, 1), force_tile_rule=True)
    tile_one = logits(model, probe)
    setup(TileConfig(d, 128))
    exact = logits(model, probe)
    aqua_tf.restore(model)
    checks = {
        "tile_rule_at_M1_vs_integration_per_query_max_abs_logit_diff": float(
            (tile_one - per_query).abs().max()
        ),
        "tile_rule_at_k_eq_d_vs_baseline_max_abs_logit_diff": float((exact - base).abs().max()),
        "tolerance": CHECK_TOL,
    }
    for name, value in checks.items():
        if name != "tolerance" and not value <= CHECK_TOL:
            raise SystemExit(f"check failed: {name} = {value:.3g} > {CHECK_TOL}")
    print(f"checks passed: {checks}", file=sys.stderr)

    cfgs = [TileConfig(int(frac * d), tile) for frac in K_FRACTIONS for tile in TILES]
    ref = study.reference(model, segs, batch_size=args.batch_size)
    rows = study.run_configs(
        model=model,
        references={"en": ref},
        configs=cfgs,
        setup=setup,
        csv_path=seg_csv,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    aqua_tf.restore(model)
    keys = {c.key for c in cfgs}
    summary = study.summarize([r for r in rows if r["config"] in keys])
    table = []
    for cfg in cfgs:
        e = summary[("en", cfg.key)]
        table.append(
            {
                "k": cfg.k,
                "k/d": str(Fraction(cfg.k, d)),
                "tile M": cfg.tile,
                "selection": "per query (integration)" if cfg.tile == 1 else f"shared by {cfg.tile} queries",
                "ppl": round(e["ppl"], 4),
                "ppl increase %": round(100 * e["ppl_increase"], 3),
                "ppl increase CI %": f"[{100 * e['ppl_increase_lo']:+.2f}, {100 * e['ppl_increase_hi']:+.2f}]",
                "KL nats/token": round(e["kl_nats"], 5),
                "KL CI": f"[{e['kl_lo']:.5f}, {e['kl_hi']:.5f}]",
                "top-1 %": round(100 * e["top1_agreement"], 2),
                "compute ceiling": round(ceiling(d, cfg.k, T), 4),
            }
        )
    base_ppl = summary[("en", cfgs[0].key)]["base_ppl"]
    note = (
        f"Generated by analysis/prefill_accuracy.py: {info.name} ({info.quantization} GGUF dequantized; the baseline is "
        f"that quantized model, perplexity {base_ppl:.3f}), {layers} layers, {heads_q}/{heads_kv} heads, d = {d}; "
        f"{len(segs)} held-out English segments of {T} tokens, each one causal prefill without a cache; P per (layer, KV "
        f"group) from post-RoPE q and k of {projections.n_tokens} English calibration tokens. Tiles of M consecutive "
        "queries of one head share the top-k of their summed |q^| (M = 1: per-query AQUA through the integration). "
        f"Perplexity increase = ppl/ppl_base - 1 with a paired 95% bootstrap CI over segments ({study.BOOTSTRAP_RESAMPLES} "
        "resamples); KL(base || approx) in nats per token; top-1 = agreement of the argmax next token with the baseline's; "
        "compute ceiling = dense over AQUA tensor-core FLOPs of causal prefill (2d/(d + k)), the most a compute-bound "
        "kernel can gain at that k."
    )
    (out / "prefill_accuracy.csv").write_text(to_csv(table))
    (out / "prefill_accuracy.md").write_text(
        "# Tile-shared selection: accuracy against tile size M and k\n\n" + to_markdown(table) + f"\n{note}\n"
    )
    elapsed = time.perf_counter() - start
    run = {
        "schema_version": 1,
        "model": info.name,
        "quantization": info.quantization,
        "layers": layers,
        "heads_q": heads_q,
        "heads_kv": heads_kv,
        "d": d,
        "segment_tokens": T,
        "heldout_segments": len(segs),
        "heldout_tokens": len(segs) * T,
        "calibration_tokens": projections.n_tokens,
        "tiles": list(TILES),
        "k": sorted({c.k for c in cfgs}),
        "checks": checks,
        "bootstrap_resamples": study.BOOTSTRAP_RESAMPLES,
        "wall_time_s_last_invocation": round(elapsed, 1),
        **study.run_environment(),
    }
    (out / "prefill_accuracy_run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(f"done in {elapsed:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
