"""Published numbers of AQUA's neighbours next to this model's prediction for the same setting.

Writes analysis/results/peers_published.{csv,md}. Each row names the claim, its source, the
setting (what is from the paper page cited and what is from memory of the paper), and the
model's number for that setting, with a note on why the two differ where they do.

Run: python analysis/peers_published.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aqua_model.simulator.comparison import compare
from aqua_model.table_render import to_csv, to_markdown

RESULTS_DIR = Path(__file__).parent / "results"
STEM = "peers_published"
COLUMNS = (
    "method",
    "claim",
    "published",
    "source",
    "setting",
    "hardware",
    "baseline",
    "model_quantity",
    "model",
    "model_ceiling",
    "notes",
)
HEAD_DIM = 128
#: Fraction of the context H2O keeps in its headline experiments (10% heavy + 10% recent).
H2O_BUDGET_FRACTION = 0.2


def sparq_row() -> dict[str, Any]:
    """SparQ: attention data-transfer saving at r = d/8, k_t = N/16 (the 1/8 setting)."""
    n_ctx = 4096
    result = compare(
        d=HEAD_DIM,
        context=n_ctx,
        gpu="a100-80gb-sxm",
        batch=1,
        heads_q=32,
        heads_kv=32,
        methods=("dense", "sparq"),
        r=HEAD_DIM // 8,
        k_t=n_ctx // 16,
    )
    row = result.row("sparq")
    return {
        "method": "SparQ",
        "claim": "up to 8x less attention data transfer",
        "published": 8.0,
        "source": "https://www.sciencestack.ai/paper/2312.04985 (abstract of arXiv 2312.04985); https://arxiv.deeppaper.ai/domain_tags/Memory%20Bandwidth?locale=en",
        "setting": f"d={HEAD_DIM}, r=d/8=16, k_t=N/16={n_ctx // 16}, N={n_ctx} (r, k_t of the 1/8 setting from memory of the paper, not from the cited page)",
        "hardware": "none (a byte count)",
        "baseline": "dense K+V read",
        "model_quantity": "dense bytes / SparQ bytes per KV head (K/V reads)",
        "model": 1 / row.bytes_ratio,
        "model_ceiling": row.ceiling,
        "notes": "Agrees: r/(2d) + k_t/N = 1/16 + 1/16 = 1/8; the mean-V read adds d*s per step (7.999x). "
        "The model also counts what the paper's transfer ratio leaves out: the duplicated dim-major K "
        f"(KV memory {row.kv_memory_ratio:.2f}x dense) and, in the plan, N fp32 approximate scores "
        "per query head written and re-read by the top-k, which a fused GPU kernel cannot avoid; "
        f"the predicted speedup on an A100 at batch 1 is {row.predicted_speedup:.2f}x, not 8x.",
    }


def quest_row() -> dict[str, Any]:
    """Quest: self-attention speedup at 32K with a 2048-token budget on an RTX 4090 vs FlashInfer."""
    n_ctx, budget, page = 32768, 2048, 16
    result = compare(
        d=HEAD_DIM,
        context=n_ctx,
        gpu="rtx-4090",
        batch=1,
        heads_q=32,
        heads_kv=32,
        methods=("dense", "quest"),
        k_t=budget,
        page=page,
    )
    row = result.row("quest")
    return {
        "method": "Quest",
        "claim": "self-attention speedup at 32K context, 2048-token budget",
        "published": 7.03,
        "source": "https://hanlab.mit.edu/projects/quest ; https://syfi.cs.washington.edu/publications/quest (up to 7.03x self-attention, 2.23x end-to-end)",
        "setting": f"N={n_ctx}, k_t={budget}, p={page}, d={HEAD_DIM}, 32 MHA heads (LongChat-7B-32K shape), batch 1 "
        "(budget and context as in the brief; page size 16, model and batch from memory of the paper)",
        "hardware": "NVIDIA GeForce RTX 4090 (datasheet profile)",
        "baseline": "FlashInfer decode (modelled as dense-fused)",
        "model_quantity": "predicted attention speedup over dense fused decode",
        "model": row.predicted_speedup,
        "model_ceiling": row.ceiling,
        "notes": "Close: both are bandwidth-bound reads of 1/16 of the KV cache (budget) plus 1/16 (min/max metadata, 2/p of K), "
        "ceiling 8x; the model loses the rest to three kernel launches and the page top-k. The 2.23x end-to-end figure "
        "also includes weight reads (the paper quantises weights, from memory) and is not modelled here.",
    }


def loki_row() -> dict[str, Any]:
    """Loki: measured attention speedup vs its byte ceiling, k_f = d_f = 0.25."""
    n_ctx, batch = 4096, 16
    kwargs = dict(
        d=HEAD_DIM,
        context=n_ctx,
        gpu="a100-80gb-sxm",
        batch=batch,
        heads_q=40,
        heads_kv=40,
        methods=("dense", "loki"),
        r=HEAD_DIM // 4,
        k_t=n_ctx // 4,
    )
    eager = compare(baseline="dense-eager", **kwargs).row("loki")
    fused = compare(**kwargs).row("loki")
    return {
        "method": "Loki",
        "claim": "attention speedup (about 1.4x, 'up to 40-45%')",
        "published": 1.45,
        "source": "https://www.sciencestack.ai/paper/2406.02542 (up to 45%); https://study.space/p/Loki%3A_Low-Rank_Keys_for_Efficient_Sparse_Attention (up to 40%, Llama2-13B); project ANCHORS.md (~1.4x vs ~2.7x ceiling)",
        "setting": f"Llama2-13B shape (40 MHA heads, d={HEAD_DIM}), r=d/4=32, k_t=N/4, N={n_ctx}, batch {batch} "
        "(k_f = d_f = 0.25, context, batch and GPU from memory of the paper)",
        "hardware": "NVIDIA A100 80GB SXM (datasheet profile)",
        "baseline": "HuggingFace eager attention (modelled as dense-eager)",
        "model_quantity": "predicted attention speedup over dense eager",
        "model": eager.predicted_speedup,
        "model_ceiling": eager.ceiling,
        "notes": f"Ceiling 1/(r/(2d) + k_t/N) = 1/(1/8 + 1/4) = {eager.ceiling:.2f}x matches the ~2.7x in ANCHORS; both the "
        f"published and the modelled speedups sit far below it. The model predicts {eager.predicted_speedup:.2f}x over eager and "
        f"{fused.predicted_speedup:.2f}x over a fused (SDPA/FlashAttention) baseline: at decode the model's three-kernel eager plan is "
        "only slightly slower than fused. It is below the published value because the A100 profile's gather (0.42) and strided "
        "(0.40) efficiencies are assumptions, not measurements, and they dominate Loki's top-k gather and token-major prefix "
        "read; the paper's HF eager baseline also pays per-op overheads (KV copies, fp32 softmax, extra launches) that the "
        "modelled eager plan does not, which makes its measured ratio larger.",
    }


def h2o_row() -> dict[str, Any]:
    """H2O: KV memory and byte ceiling at a 20% budget (10% heavy hitters + 10% recent)."""
    n_ctx = 4096
    budget = int(n_ctx * H2O_BUDGET_FRACTION)
    result = compare(
        d=HEAD_DIM,
        context=n_ctx,
        gpu="a100-80gb-sxm",
        batch=1,
        heads_q=32,
        heads_kv=32,
        methods=("dense", "h2o"),
        budget=budget,
        window=budget // 2,
    )
    row = result.row("h2o")
    return {
        "method": "H2O",
        "claim": "20% KV budget: ~5x less KV memory; up to 29x throughput vs DeepSpeed/Accelerate",
        "published": 5.0,
        "source": "https://pith.science/pith/MH2XVHQOPBSABRG55I2UUI33LR (20% heavy hitters, up to 29x/29x/3x throughput, OPT-6.7B/30B); https://aiwiki.ai/wiki/h2o_kv_eviction",
        "setting": f"OPT-6.7B shape (32 MHA heads, d={HEAD_DIM}), b=0.2N={budget}, w=b/2, N={n_ctx}, batch 1",
        "hardware": "NVIDIA A100 80GB SXM (datasheet profile)",
        "baseline": "dense KV cache",
        "model_quantity": "dense KV memory / H2O KV memory",
        "model": 1 / row.kv_memory_ratio,
        "model_ceiling": row.ceiling,
        "notes": f"Memory agrees (5x, minus the fp32 accumulated scores: {1 / row.kv_memory_ratio:.2f}x). The byte ceiling of one "
        f"decode step is {row.ceiling:.2f}x and the predicted attention speedup {row.predicted_speedup:.2f}x. The 29x is a "
        "throughput gain of a whole system against offloading baselines (larger batches fit in GPU memory), "
        "not an attention-kernel speedup; this model does not predict it.",
    }


def build_rows() -> list[dict[str, Any]]:
    """All rows, in a fixed order."""
    return [sparq_row(), quest_row(), loki_row(), h2o_row()]


def main() -> None:
    rows = build_rows()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{STEM}.csv").write_text(to_csv(rows, COLUMNS))
    header = (
        "# Published numbers of AQUA's neighbours vs this model\n\n"
        "Generated by `analysis/peers_published.py`. Ratios are x-fold (published and model in the same unit per row). "
        "Settings marked 'from memory' were not confirmed from the cited page.\n\n"
    )
    (RESULTS_DIR / f"{STEM}.md").write_text(header + to_markdown(rows, COLUMNS))
    for row in rows:
        print(
            f"{row['method']:6s} published {row['published']:.2f}  model {row['model']:.2f}  ceiling {row['model_ceiling']:.2f}  ({row['model_quantity']})"
        )


if __name__ == "__main__":
    main()
