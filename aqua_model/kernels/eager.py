"""The eager-torch implementations that the plans of :mod:`aqua_model.plans.attention` declare.

Each ``*_decode`` / ``*_prefill`` function except :func:`aqua_step_decode` is a *stage builder*:
it returns the plan's kernels as ``[(kernel name, callable), ...]`` in launch order, each callable
reading the tensors the previous one left; running them in order is the implementation, and
timing one alone repeats exactly that launch. :func:`aqua_step_decode` is a plain call.

Conventions (those of the validation suite): q is already multiplied by the softmax scale, so
no stage scales it; AQUA keys are cached rotated (P orthogonal, one per KV head); ``k_proj``
rotates the new keys ``k_new`` [H_kv, B*T, d] (head-major); selection is "group" (the g query
heads of a KV group share the k dims with the largest sum of |q^|, summed in float32); GQA
never copies K or V: queries are viewed as [B, H_kv, g, ...]. Outputs are written into ``out``
(any contiguous tensor of B*H_q*T*d elements of q's dtype).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aqua_model.kernels.reference import causal_mask

Stages = list[tuple[str, Callable[[], torch.Tensor]]]


def _softmax_value(buf: dict[str, torch.Tensor], v: torch.Tensor, out: torch.Tensor) -> Stages:
    """The eager tail: softmax of ``buf["s"]`` (kept as ``buf["p"]``), then probabilities @ V into ``out``."""

    def softmax() -> torch.Tensor:
        buf.pop("p", None)  # free the last call's probabilities first (peak memory)
        buf["p"] = torch.softmax(buf["s"], dim=-1)
        return buf["p"]

    def value() -> torch.Tensor:
        return torch.matmul(buf["p"], v, out=out)

    return [("softmax", softmax), ("value", value)]


def _shape(q: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int, int]:
    B, hq, T, d = q.shape
    hkv = v.shape[1]
    return B, hq, hkv, hq // hkv, T, d


def dense_eager_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, out: torch.Tensor) -> Stages:
    """Dense decode: scores (q @ K^T), softmax, value. q [B, H_q, 1, d]; k, v [B, H_kv, N, d]."""
    B, hq, hkv, g, _, d = _shape(q, v)
    qg = q.view(B, hkv, g, d)
    kt = k.transpose(-1, -2)  # [B, H_kv, d, N] view, no copy
    out = out.view(B, hkv, g, d)
    buf: dict[str, torch.Tensor] = {}

    def scores() -> torch.Tensor:
        buf.pop("s", None)  # free the last call's scores first (peak memory)
        buf["s"] = torch.matmul(qg, kt)
        return buf["s"]

    return [("scores", scores), *_softmax_value(buf, v, out)]


def query_projections(P: torch.Tensor, g: int) -> torch.Tensor:
    """P per query head, [H_q, d, d] (query head h uses P[h // g]): one copy, made once."""
    return P.repeat_interleave(g, dim=0) if g > 1 else P


def _aqua_prologue(
    q: torch.Tensor,
    P: torch.Tensor,
    k_new: torch.Tensor,
    k_keep: int,
    buf: dict[str, torch.Tensor],
    P_query: torch.Tensor | None = None,
) -> Stages:
    """q_proj, k_proj and topk of a decode step: one batched GEMM per projection (torch.matmul
    broadcasting P over the batch would materialise B copies of P first)."""
    B, hq, d = q.shape[0], q.shape[1], q.shape[3]
    hkv = P.shape[0]
    g = hq // hkv
    buf["qh"] = torch.empty((B, hkv, g, d), dtype=q.dtype, device=q.device)
    buf["kh"] = torch.empty_like(k_new)
    P_q = query_projections(P, g) if P_query is None else P_query  # [H_q, d, d]
    q_rows = q.view(B, hq, d).transpose(0, 1)  # [H_q, B, d] view
    qh_rows = buf["qh"].view(B, hq, d).transpose(0, 1)

    def q_proj() -> torch.Tensor:
        return torch.bmm(q_rows, P_q, out=qh_rows)

    def k_proj() -> torch.Tensor:
        return torch.bmm(k_new, P, out=buf["kh"])  # [H_kv, B, d]

    def topk() -> torch.Tensor:
        # [B, H_kv, d], summed in fp32 like the kernel; at g = 1 the sum is the fp32 copy, so the
        # selection launches the same kernels (abs, sum, torch.topk) whatever g is
        mag = buf["qh"].abs().sum(dim=2, dtype=torch.float32)
        buf["idx"] = torch.topk(mag, k_keep, dim=-1).indices  # [B, H_kv, k]
        return buf["idx"]

    return [("q_proj", q_proj), ("k_proj", k_proj), ("topk", topk)]


def aqua_eager_decode(
    q: torch.Tensor,
    P: torch.Tensor,
    k_new: torch.Tensor,
    k_hat_t: torch.Tensor,
    v: torch.Tensor,
    *,
    k_keep: int,
    out: torch.Tensor,
) -> Stages:
    """AQUA decode in eager torch: q_proj, k_proj, topk, gather (a [B, H_kv, g, k, N] copy of the
    kept rows of the dim-major K^T, one per query head, plus q^'s kept dims), scores, softmax,
    value. q [B, H_q, 1, d]; P [H_kv, d, d]; k_new [H_kv, B, d]; k_hat_t [B, H_kv, d, N]."""
    B, hq, hkv, g, _, d = _shape(q, v)
    N = k_hat_t.shape[-1]
    out = out.view(B, hkv, g, d)
    buf: dict[str, torch.Tensor] = {}
    prologue = _aqua_prologue(q, P, k_new, k_keep, buf)
    kt_all = k_hat_t.unsqueeze(2).expand(B, hkv, g, d, N)

    def gather() -> torch.Tensor:
        idx = buf["idx"]
        rows = idx[:, :, None, :, None].expand(B, hkv, g, k_keep, N)
        buf.pop("ksel", None)
        buf["ksel"] = torch.gather(kt_all, 3, rows)  # [B, H_kv, g, k, N]: one copy per query head
        buf["qsel"] = torch.gather(buf["qh"], -1, idx[:, :, None, :].expand(B, hkv, g, k_keep))
        return buf["ksel"]

    def scores() -> torch.Tensor:
        buf["s"] = torch.matmul(buf["qsel"].unsqueeze(-2), buf["ksel"]).squeeze(-2)  # [B, H_kv, g, N]
        return buf["s"]

    return [*prologue, ("gather", gather), ("scores", scores), *_softmax_value(buf, v, out)]


def aqua_step_decode(
    q: torch.Tensor,
    P: torch.Tensor,
    k_new: torch.Tensor,
    k_hat_t: torch.Tensor,
    v: torch.Tensor,
    *,
    k_keep: int,
    selection: str = "group",
    select_in: str = "torch",
    out: torch.Tensor,
    P_query: torch.Tensor | None = None,
) -> torch.Tensor:
    """A decode step around the fused kernel: rotate q and the new key (torch.bmm), then
    :func:`aqua_model.kernels.triton_decode.aqua_decode` selecting ``select_in`` ("torch":
    torch.topk). ``k_hat_t`` [B, H_kv, d, N] may be a transposed view of a token-major cache.
    ``P_query``: P per query head (:func:`query_projections`), made once by the caller; without
    it every call copies P (one more launch). Returns ``out`` viewed as [B, H_q, d]."""
    from aqua_model.kernels import triton_decode as td

    B, hq, _, _, _, d = _shape(q, v)
    buf: dict[str, torch.Tensor] = {}
    q_proj, k_proj, _ = _aqua_prologue(q, P, k_new, k_keep, buf, P_query)
    q_proj[1]()
    k_proj[1]()
    return td.aqua_decode(
        buf["qh"].view(B, hq, d),
        k_hat_t,
        v,
        None,
        k_keep=k_keep,
        selection=selection,
        scale=1.0,
        select_in=select_in,
        out=out.view(B, hq, d),
    )


def _prefill_mask(
    buf: dict[str, torch.Tensor], shape: tuple[int, ...], T: int, S: int, device: torch.device
) -> Callable[[], torch.Tensor]:
    hidden = causal_mask(T, S, device=device).logical_not()  # [T, S] True where masked

    def mask() -> torch.Tensor:
        return buf["s"].view(*shape).masked_fill_(hidden, float("-inf"))

    return mask


def dense_eager_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, out: torch.Tensor) -> Stages:
    """Dense prefill: the full rectangle of scores, the causal mask applied in place
    (masked_fill_), softmax, value. q [B, H_q, T, d]; k, v [B, H_kv, S, d] (S = N + T)."""
    B, hq, hkv, g, T, d = _shape(q, v)
    S = k.shape[2]
    qg = q.view(B, hkv, g * T, d)
    kt = k.transpose(-1, -2)
    out = out.view(B, hkv, g * T, d)
    buf: dict[str, torch.Tensor] = {}

    def scores() -> torch.Tensor:
        buf.pop("s", None)
        buf["s"] = torch.matmul(qg, kt)  # [B, H_kv, g*T, S]: the full rectangle
        return buf["s"]

    mask = _prefill_mask(buf, (B, hkv, g, T, S), T, S, q.device)
    return [("scores", scores), ("mask", mask), *_softmax_value(buf, v, out)]


def aqua_eager_prefill(
    q: torch.Tensor,
    P: torch.Tensor,
    k_new: torch.Tensor,
    k_hat: torch.Tensor,
    v: torch.Tensor,
    *,
    k_keep: int,
    out: torch.Tensor,
) -> Stages:
    """AQUA prefill in eager torch: q_proj, k_proj, topk (scattering a 0/1 mask of the kept
    dims), scores of the masked q^ against all d dims, the causal mask, softmax, value.
    q [B, H_q, T, d]; P [H_kv, d, d]; k_new [H_kv, B*T, d]; k_hat [B, H_kv, S, d]."""
    B, hq, hkv, g, T, d = _shape(q, v)
    S = k_hat.shape[2]
    qg = q.view(B, hkv, g * T, d)
    out = out.view(B, hkv, g * T, d)
    buf: dict[str, torch.Tensor] = {}

    def q_proj() -> torch.Tensor:
        buf["qh"] = torch.matmul(
            qg, P
        )  # [B, H_kv, g*T, d]; broadcasts P over the batch (B copies, small against q)
        return buf["qh"]

    def k_proj() -> torch.Tensor:
        buf["kh"] = torch.bmm(k_new, P)  # [H_kv, B*T, d]
        return buf["kh"]

    def topk() -> torch.Tensor:
        mag = buf["qh"].view(B, hkv, g, T, d).abs().sum(dim=2, dtype=torch.float32)  # [B, H_kv, T, d]
        idx = torch.topk(mag, k_keep, dim=-1).indices
        buf["keep"] = torch.zeros((B, hkv, T, d), dtype=q.dtype, device=q.device).scatter_(-1, idx, 1.0)
        return buf["keep"]

    kt = k_hat.transpose(-1, -2)

    def scores() -> torch.Tensor:
        qm = (buf["qh"].view(B, hkv, g, T, d) * buf["keep"].unsqueeze(2)).view(B, hkv, g * T, d)
        buf.pop("s", None)
        buf["s"] = torch.matmul(qm, kt)
        return buf["s"]

    mask = _prefill_mask(buf, (B, hkv, g, T, S), T, S, q.device)
    return [
        ("q_proj", q_proj),
        ("k_proj", k_proj),
        ("topk", topk),
        ("scores", scores),
        ("mask", mask),
        *_softmax_value(buf, v, out),
    ]


#: The functions above that return stages (the rest return the output).
STAGE_BUILDERS = ("dense_eager_decode", "aqua_eager_decode", "dense_eager_prefill", "aqua_eager_prefill")
