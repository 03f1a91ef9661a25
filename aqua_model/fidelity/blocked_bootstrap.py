"""Paired two-stage bootstrap of a perplexity increase: windows, then blocks of positions inside each window.

Each row of the long-context study carries, per window, sums over B blocks of consecutive
scored positions (:mod:`aqua_model.fidelity.longctx`). One resample draws W windows with
replacement and, inside every drawn window, B of its blocks with replacement; the method's and
the baseline's sums use the same draws (paired), so the interval is that of the increase itself,
not of two independent perplexities. Positions next to each other are correlated, so they are
resampled in blocks, never one by one; windows are independent texts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
"""Bootstrap resamples of every interval."""

CONFIDENCE = 0.95
"""Two-sided level of every interval (percentile bootstrap)."""


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_increase(
    rows: Sequence[Mapping[str, Any]],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Perplexity increase of one config over its baseline, KL and top-1, with two-stage bootstrap CIs.

    ``rows``: one per window, each with ``block_nll``, ``block_base_nll``, ``block_kl``,
    ``block_top1`` (lists of B per-block sums) and ``block_tokens``. Returns the point values,
    their intervals and ``significant`` (the increase's interval excludes 0).
    """
    if not rows:
        raise ValueError("rows must hold at least one window's row, got none")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100, got {resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    arrays = {}
    for name in ("nll", "base_nll", "kl", "top1"):
        lengths = {len(r[f"block_{name}"]) for r in rows}
        if len(lengths) != 1:
            raise ValueError(
                f"every row must have the same number of blocks, got block_{name} lengths {sorted(lengths)}"
            )
        arrays[name] = np.array([r[f"block_{name}"] for r in rows], dtype=float)  # [W, B]
    block_tokens = {int(r["block_tokens"]) for r in rows}
    if len(block_tokens) != 1:
        raise ValueError(f"rows must share block_tokens, got {sorted(block_tokens)}")
    W, B = arrays["nll"].shape
    tokens = W * B * block_tokens.pop()
    rng = np.random.default_rng([seed, W, B])
    win = rng.integers(0, W, size=(resamples, W))
    blk = rng.integers(0, B, size=(resamples, W, B))
    picked = {name: a[win[:, :, None], blk].sum(axis=(1, 2)) for name, a in arrays.items()}
    increase = np.exp((picked["nll"] - picked["base_nll"]) / tokens) - 1.0
    ppl = math.exp(arrays["nll"].sum() / tokens)
    base = math.exp(arrays["base_nll"].sum() / tokens)
    lo, hi = _interval(increase, confidence)
    out: dict[str, Any] = {
        "windows": W,
        "tokens": tokens,
        "ppl": ppl,
        "base_ppl": base,
        "ppl_increase": ppl / base - 1.0,
        "ppl_increase_lo": lo,
        "ppl_increase_hi": hi,
        "significant": not (lo <= 0.0 <= hi),
        "kl_nats": float(arrays["kl"].sum() / tokens),
        "top1_agreement": float(arrays["top1"].sum() / tokens),
    }
    out["kl_lo"], out["kl_hi"] = _interval(picked["kl"] / tokens, confidence)
    out["top1_lo"], out["top1_hi"] = _interval(picked["top1"] / tokens, confidence)
    return out
