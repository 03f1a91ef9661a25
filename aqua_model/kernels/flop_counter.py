"""Matmul FLOPs of the reference, counted by torch's own ``FlopCounterMode``, per component.

This is an independent check of the symbolic cost model (:mod:`aqua_model.costs`): the counter
was written by the PyTorch authors and counts 2 FLOPs per multiply-add of every matmul-like
aten op (mm, bmm, baddbmm, matmul's decompositions, ...). It counts nothing else, so only the
matmul components can be compared: ``q_proj``, ``k_proj``, ``scores``, ``value``. The
``select`` (|q^|, top-k) and ``softmax`` stages are counted too, and must be 0 here; the
cost model gives them non-matmul FLOPs by convention.

Each component is counted by running the very helper that the reference pipeline uses
(:func:`~aqua_model.kernels.reference.rotate`, ``select_dims``, ``selected_scores``, the
softmax-values step) under its own counter; the whole pipeline (cache append + attend, or
``dense_attention``) is then counted once more, and its total must equal the sum of the parts,
so no matmul escapes the breakdown.

The eager reference computes the whole query x key rectangle and masks it, so a prefill counted
here matches the model's ``causal=False`` count (all T * (context + T) pairs); decode (one
query, all keys visible) matches exactly.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from aqua_model._checks import check_choice, check_int
from aqua_model.kernels import reference as ref

COMPONENTS = ("q_proj", "k_proj", "select", "scores", "softmax", "value")
MATMUL_COMPONENTS = ("q_proj", "k_proj", "scores", "value")


def _count(fn, *args, **kwargs):
    """(result, matmul FLOPs) of fn(*args, **kwargs) under a fresh FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return out, int(counter.get_total_flops())


def _random_orthogonal(heads_kv: int, d: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    a = torch.randn(heads_kv, d, d, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(a).Q.to(dtype)


def reference_flops(
    *,
    method: str,
    phase: str,
    batch: int,
    heads_q: int,
    heads_kv: int,
    d: int,
    k: int | None,
    context: int,
    prompt: int | None = None,
    causal: bool = False,
    selection: str = "per-head",
    seed: int = 0,
) -> dict[str, int]:
    """Matmul FLOPs of one reference step, summed over batch and query heads, by component.

    Decode: ``context`` keys in all, the last of them appended (and rotated) in this step, one
    query per head. Prefill: ``prompt`` new keys appended after ``context`` cached ones, then
    ``prompt`` queries attend (``causal`` masks but still computes the full rectangle).
    Returns the keys of :data:`COMPONENTS` plus ``"total"`` (the whole pipeline, counted once).
    Dense has no projections and no selection: those are 0.
    """
    method = check_choice("method", method, ("dense", "aqua"))
    phase = check_choice("phase", phase, ("decode", "prefill"))
    B = check_int("batch", batch, minimum=1)
    hq = check_int("heads_q", heads_q, minimum=1)
    hkv = check_int("heads_kv", heads_kv, minimum=1)
    d = check_int("d", d, minimum=1)
    if hq % hkv:
        raise ValueError(f"heads_q must be a multiple of heads_kv, got heads_q={hq}, heads_kv={hkv}")
    g = hq // hkv
    if phase == "decode":
        context = check_int("context", context, minimum=1)
        if prompt is not None:
            raise ValueError(f"prompt is only used when phase='prefill', got prompt={prompt!r}")
        new, cached = 1, context - 1
    else:
        context = check_int("context", context, minimum=0)
        if prompt is None:
            raise ValueError("prompt (new tokens T) is required when phase='prefill'")
        new, cached = check_int("prompt", prompt, minimum=1), context
    kk = d if method == "dense" and k is None else check_int("k", k, minimum=1, maximum=d)

    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float64

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    q = rnd(B, hq, new, d)
    k_old, v_old = rnd(B, hkv, cached, d), rnd(B, hkv, cached, d)
    k_new, v_new = rnd(B, hkv, new, d), rnd(B, hkv, new, d)
    counts = dict.fromkeys(COMPONENTS, 0)

    if method == "dense":
        keys, values = torch.cat([k_old, k_new], 2), torch.cat([v_old, v_new], 2)
        scores, counts["scores"] = _count(torch.matmul, q, ref.expand_kv(keys, g).transpose(-1, -2))
        _, counts["value"] = _count(ref._softmax_values, scores, ref.expand_kv(values, g), causal=causal)
        _, counts["total"] = _count(ref.dense_attention, q, keys, values, causal=causal)
        return counts

    P = _random_orthogonal(hkv, d, gen, dtype)
    # The per-component pass, on its own cache, following ProjectedKVCache and aqua_attention_rotated.
    cache = ref.ProjectedKVCache(P)
    if cached:
        cache.append(k_old, v_old)
    _, counts["k_proj"] = _count(cache.append, k_new, v_new)
    assert cache.keys is not None and cache.values is not None  # append filled the cache
    q_hat, counts["q_proj"] = _count(ref.rotate, q, P, g=g)
    idx, counts["select"] = _count(ref.select_dims, q_hat, k_keep=kk, selection=selection, g=g)
    raw, counts["scores"] = _count(ref.selected_scores, q_hat, ref.expand_kv(cache.keys, g), idx)
    scale = d**-0.5
    scores = raw * scale
    work = torch.promote_types(scores.dtype, torch.float32)
    _, counts["softmax"] = _count(torch.softmax, scores.to(work), dim=-1)
    _, counts["value"] = _count(ref._softmax_values, scores, ref.expand_kv(cache.values, g), causal=causal)

    # The whole pipeline once more, through the public API only.
    whole = ref.ProjectedKVCache(P)
    if cached:
        whole.append(k_old, v_old)

    def step() -> torch.Tensor:
        whole.append(k_new, v_new)
        return whole.attend(q, k_keep=kk, selection=selection, causal=causal)

    _, counts["total"] = _count(step)
    return counts
