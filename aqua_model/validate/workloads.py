"""The real kernels each plan names, written in torch (and the project's Triton decode kernel).

For a :class:`~aqua_model.validate.cases.Case` this module builds random inputs (never zeros)
and a :class:`Workload`: the plan's kernels as separate callables, named as in
:mod:`aqua_model.plans`, plus ``total``, the whole plan run end to end, which is what the
case's measured time is. Each kernel callable reads the tensors the previous kernel left, so
timing one in isolation repeats exactly that launch.

Conventions shared by every plan:

* q is drawn already multiplied by 1/sqrt(d), so no plan launches a separate scaling kernel
  (the cost model counts none);
* AQUA keys are cached already rotated (random orthogonal P per KV head); ``k_proj`` rotates
  the one new key per KV head (decode) or the T new keys (prefill);
* selection is "group": the g query heads of a KV group share the k dims with the largest
  sum of |q^| (what :func:`aqua_model.predict` assumes by default);
* GQA never copies K or V: queries are viewed as [B, H_kv, g, ...].

Decode plans: ``dense-fused`` (torch SDPA), ``dense-eager`` (scores, softmax, value),
``aqua-eager`` (q_proj, k_proj, topk, gather into a materialised [B, H_q, k, N] copy of the
selected rows of the dim-major K^T, scores, softmax, value), ``aqua-fused`` (q_proj, k_proj,
topk, and the Triton kernel of :mod:`aqua_model.kernels.triton_decode` on a dim-major K^T),
``aqua-token-major`` (the same kernel given a transposed view of a token-major K^; recorded as
unsupported when the kernel refuses that layout). Prefill plans (T new tokens, N cached):
``dense-fused`` (SDPA, causal), ``dense-eager`` (full rectangle of scores, causal mask applied
in place before the softmax), ``aqua-eager`` (q_proj, k_proj, topk building a mask of the kept
dims, scores of the masked q^ against all d dims, softmax, value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from aqua_model.validate.cases import Case

#: torch dtype of each storage dtype name.
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: Largest relative error of a plan's output against the float32 reference on the checked
#: slice (bf16 inputs and outputs land between 1e-3 and 1e-2; see the device METHOD notes).
CHECK_TOLERANCE = 3e-2
#: Fewest output vectors that must be within CHECK_TOLERANCE (the rest may be near-tie
#: selection flips between bf16 and float32; see :func:`fraction_close`).
CHECK_MIN_FRACTION = 0.9
#: Query rows of a prefill case compared with the reference (first, middle, last ...).
CHECK_PREFILL_ROWS = 16


class Unsupported(Exception):
    """The plan cannot run on this case with the kernels that exist (reason in the message)."""


@dataclass
class Workload:
    """A plan ready to time: its kernels in launch order and the end-to-end callable."""

    kernels: list[tuple[str, Callable[[], Any]]]
    total: Callable[[], torch.Tensor]
    out: torch.Tensor | None
    reference: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Inputs:
    """Random inputs of one shape, shared by every plan and k at that shape."""

    q: torch.Tensor  # [B, H_q, T, d], pre-scaled by 1/sqrt(d)
    k_new: torch.Tensor  # [H_kv, B*T, d] the keys this step appends (unrotated, head-major)
    P: torch.Tensor  # [H_kv, d, d] orthogonal
    v: torch.Tensor  # [B, H_kv, S, d]
    k: torch.Tensor | None = None  # [B, H_kv, S, d] token-major keys (dense plans)
    k_hat: torch.Tensor | None = None  # [B, H_kv, S, d] rotated token-major keys
    k_hat_t: torch.Tensor | None = None  # [B, H_kv, d, S] rotated dim-major keys



def _softmax_value(buf: dict[str, torch.Tensor], v: torch.Tensor, out: torch.Tensor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The eager tail shared by every eager plan: softmax of the scores in ``buf["s"]`` (kept
    as ``buf["p"]``), then the probabilities times V written into ``out``."""

    def softmax() -> torch.Tensor:
        buf.pop("p", None)  # free the last call's probabilities first (peak memory)
        buf["p"] = torch.softmax(buf["s"], dim=-1)
        return buf["p"]

    def value() -> torch.Tensor:
        return torch.matmul(buf["p"], v, out=out)

    return softmax, value

def _randn(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    x = torch.randn(shape, dtype=torch.float32 if device.type == "cpu" else dtype, device=device, generator=gen)
    if scale != 1.0:
        x.mul_(scale)
    return x.to(dtype)


def random_orthogonal(heads: int, d: int, *, device: torch.device, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """[heads, d, d] random orthogonal matrices (QR of Gaussian matrices, sign-fixed)."""
    a = torch.randn((heads, d, d), dtype=torch.float32, device=device, generator=gen)
    qm, r = torch.linalg.qr(a)
    qm = qm * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return qm.to(dtype)


#: Key copies a plan may read, and the Inputs field holding each.
LAYOUT_FIELDS = {"token-major": "k", "rotated-token-major": "k_hat", "rotated-dim-major": "k_hat_t"}


def make_inputs(case: Case, *, device: torch.device, seed: int, layouts: tuple[str, ...]) -> Inputs:
    """Random inputs for ``case``; ``layouts`` names the key copies to build:
    "token-major" (K), "rotated-token-major" (K^), "rotated-dim-major" (K^T)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    dt = TORCH_DTYPES[case.dtype]
    B, hq, hkv, d, T, S = case.batch, case.heads_q, case.heads_kv, case.d, case.queries, case.keys
    q = _randn((B, hq, T, d), dt, device, gen, scale=1.0 / math.sqrt(d))
    k_new = _randn((hkv, B * T, d), dt, device, gen)
    P = random_orthogonal(hkv, d, device=device, gen=gen, dtype=dt)
    v = _randn((B, hkv, S, d), dt, device, gen)
    inp = Inputs(q=q, k_new=k_new, P=P, v=v)
    set_layouts(inp, case, device=device, seed=seed, layouts=layouts)
    return inp


def set_layouts(inp: Inputs, case: Case, *, device: torch.device, seed: int, layouts: tuple[str, ...]) -> None:
    """Keep exactly the key copies in ``layouts``: free the others first, then draw the missing."""
    for name, attr in LAYOUT_FIELDS.items():
        if name not in layouts:
            setattr(inp, attr, None)
    dt = TORCH_DTYPES[case.dtype]
    B, hkv, d, S = case.batch, case.heads_kv, case.d, case.keys
    for i, (name, attr) in enumerate(LAYOUT_FIELDS.items()):
        if name in layouts and getattr(inp, attr) is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed + 1 + i)
            shape = (B, hkv, d, S) if name == "rotated-dim-major" else (B, hkv, S, d)
            setattr(inp, attr, _randn(shape, dt, device, gen))


def layouts_for(case: Case) -> tuple[str, ...]:
    """The key copies ``case``'s plan reads."""
    if case.plan.startswith("dense"):
        return ("token-major",)
    if case.plan in ("aqua-fused", "aqua-eager") and case.phase == "decode":
        return ("rotated-dim-major",)
    return ("rotated-token-major",)


# -- references (float32, on a slice of the batch) ------------------------------------------


def _ref_attention(q: torch.Tensor, keys: torch.Tensor, v: torch.Tensor, g: int, mask: torch.Tensor | None) -> torch.Tensor:
    """q [H_q, t, d], keys [H_kv, S, d], v [H_kv, S, d] (float32); mask [t, S] True = visible."""
    kq = keys.repeat_interleave(g, dim=0)
    vq = v.repeat_interleave(g, dim=0)
    scores = q @ kq.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ vq


def _ref_group_mask(q_hat: torch.Tensor, k: int, g: int, sum_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bool [H_q, t, d]: the k dims of each query with the largest |q^| summed over its group
    (the sum taken in ``sum_dtype``)."""
    hq, t, d = q_hat.shape
    mag = q_hat.abs().to(sum_dtype).reshape(hq // g, g, t, d).sum(1).float()
    idx = torch.topk(mag, k, dim=-1).indices
    keep = torch.zeros_like(mag, dtype=torch.bool).scatter_(-1, idx, True)
    return keep.repeat_interleave(g, dim=0)


def _causal(T: int, S: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(S, device=device)[None, :]
    return j <= (S - T) + i


def _check_rows(case: Case) -> torch.Tensor | None:
    if case.phase == "decode":
        return None
    T = case.queries
    return torch.unique(torch.linspace(0, T - 1, min(T, CHECK_PREFILL_ROWS)).round().long())


def _reference(case: Case, inp: Inputs, result: Callable[[], torch.Tensor]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A callable giving (plan output, float32 reference) on batch element 0 (and a few rows)."""

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        out = result()[0].float()  # [H_q, T, d]
        rows = _check_rows(case)
        q = inp.q[0].float()
        device = q.device
        mask = None if case.phase == "decode" else _causal(case.queries, case.keys, device)
        if rows is not None:
            rows = rows.to(device)
            out, mask = out[:, rows], mask[rows]
        v = inp.v[0].float()
        if case.plan.startswith("dense"):
            q_use = q if rows is None else q[:, rows]
            return out, _ref_attention(q_use, inp.k[0].float(), v, case.g, mask)
        P = inp.P.float().repeat_interleave(case.g, dim=0)  # [H_q, d, d]
        q_hat = (q @ P).to(inp.q.dtype).float()  # the plan rotates in the storage dtype
        if rows is not None:
            q_hat = q_hat[:, rows]
        keys = inp.k_hat_t[0].float().transpose(-1, -2) if inp.k_hat_t is not None else inp.k_hat[0].float()
        # Group selection sums |q^| over g heads: in float32 (the Triton kernel) or in the
        # storage dtype (an eager sum); near-ties may pick different dims, and both are
        # faithful, so each output vector is compared with the closer of the two references.
        refs = [_ref_attention(q_hat * _ref_group_mask(q_hat, case.k, case.g, dt), keys, v, case.g, mask)
                for dt in (torch.float32, inp.q.dtype)]
        err = [torch.linalg.vector_norm(out - r, dim=-1, keepdim=True) for r in refs]
        return out, torch.where(err[0] <= err[1], refs[0], refs[1])

    return run


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, NaN-propagating (a NaN anywhere gives NaN)."""
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def fraction_close(out: torch.Tensor, ref: torch.Tensor, tol: float = CHECK_TOLERANCE) -> float:
    """Fraction of output vectors (last dim) within relative error ``tol`` of the reference.

    An AQUA query whose k-th and (k+1)-th summed |q^| nearly tie may keep a different dim in
    bf16 than in float32, and then that one vector differs by more than rounding; a wrong
    kernel (bad indexing, unwritten output) moves almost every vector.
    """
    num = torch.linalg.vector_norm(out - ref, dim=-1)
    den = torch.linalg.vector_norm(ref, dim=-1)
    ok = num <= tol * den  # False for NaN
    return float(ok.float().mean())


# -- decode plans ------------------------------------------------------------------------------


def _decode(case: Case, inp: Inputs) -> Workload:
    B, hq, hkv, g, d, k, N = case.batch, case.heads_q, case.heads_kv, case.g, case.d, case.k, case.context
    dev, dt = inp.q.device, inp.q.dtype
    q4 = inp.q  # [B, H_q, 1, d]
    qg = q4.view(B, hkv, g, d)
    notes: list[str] = []

    if case.plan == "dense-fused":
        def attention() -> torch.Tensor:
            return F.scaled_dot_product_attention(q4, inp.k, inp.v, scale=1.0, enable_gqa=g > 1)

        return Workload([("attention", attention)], attention, None, _reference(case, inp, attention),
                        ["SDPA allocates its output (not poisoned); checked against the float32 reference"])

    out = torch.full((B, hkv, g, d), float("nan"), dtype=dt, device=dev)
    if case.plan == "dense-eager":
        kt = inp.k.transpose(-1, -2)  # [B, H_kv, d, N] view, no copy
        buf: dict[str, torch.Tensor] = {}

        def scores() -> torch.Tensor:
            buf.pop("s", None)  # free the last call's scores first (peak memory)
            buf["s"] = torch.matmul(qg, kt)
            return buf["s"]

        softmax, value = _softmax_value(buf, inp.v, out)

        def total() -> torch.Tensor:
            scores(); softmax(); return value()

        return Workload([("scores", scores), ("softmax", softmax), ("value", value)], total, out,
                        _reference(case, inp, lambda: total().reshape(B, hq, 1, d)), notes)

    # AQUA prologue: rotate the query (per KV head) and the one new key; select the dims.
    # One batched GEMM per projection, batched over heads, so nothing is copied: torch.matmul
    # broadcasting P over the batch would materialise B copies of P first.
    buf = {"qh": torch.empty((B, hkv, g, d), dtype=dt, device=dev), "kh": torch.empty_like(inp.k_new)}
    P = inp.P  # [H_kv, d, d]
    P_q = P.repeat_interleave(g, dim=0) if g > 1 else P  # [H_q, d, d]: query head h uses P[h // g]
    q_rows = q4.view(B, hq, d).transpose(0, 1)  # [H_q, B, d] view
    qh_rows = buf["qh"].view(B, hq, d).transpose(0, 1)

    def q_proj() -> torch.Tensor:
        return torch.bmm(q_rows, P_q, out=qh_rows)

    def k_proj() -> torch.Tensor:
        return torch.bmm(inp.k_new, P, out=buf["kh"])  # [H_kv, B, d]

    def topk() -> torch.Tensor:
        mag = buf["qh"].abs()
        if g > 1:
            mag = mag.sum(dim=2, dtype=torch.float32)  # [B, H_kv, d], summed in fp32 like the kernel
        else:
            mag = mag.view(B, hkv, d)
        buf["idx"] = torch.topk(mag, k, dim=-1).indices  # [B, H_kv, k]
        return buf["idx"]

    prologue = [("q_proj", q_proj), ("k_proj", k_proj), ("topk", topk)]
    q_proj(); k_proj(); topk()  # fill buf so each kernel can be timed alone

    if case.plan == "aqua-eager":
        kt_all = inp.k_hat_t.unsqueeze(2).expand(B, hkv, g, d, N)

        def gather() -> torch.Tensor:
            idx = buf["idx"]
            rows = idx[:, :, None, :, None].expand(B, hkv, g, k, N)
            buf.pop("ksel", None)
            buf["ksel"] = torch.gather(kt_all, 3, rows)  # [B, H_kv, g, k, N]: one copy per query head
            buf["qsel"] = torch.gather(buf["qh"], -1, idx[:, :, None, :].expand(B, hkv, g, k))
            return buf["ksel"]

        def scores() -> torch.Tensor:
            buf["s"] = torch.matmul(buf["qsel"].unsqueeze(-2), buf["ksel"]).squeeze(-2)  # [B, H_kv, g, N]
            return buf["s"]

        softmax, value = _softmax_value(buf, inp.v, out)

        gather(); scores(); softmax()
        kernels = prologue + [("gather", gather), ("scores", scores), ("softmax", softmax), ("value", value)]

        def total() -> torch.Tensor:
            for _, fn in kernels:
                fn()
            return out

        notes.append("gather also gathers q^'s kept dims (a second, tiny launch)")
        return Workload(kernels, total, out, _reference(case, inp, lambda: total().reshape(B, hq, 1, d)), notes)

    from aqua_model.kernels import triton_decode as td

    out3 = out.view(B, hq, d)
    if case.plan == "aqua-fused":
        keys = inp.k_hat_t
    else:  # aqua-token-major: a dim-major view of a token-major cache (strides (1, d))
        keys = inp.k_hat.transpose(-1, -2)

    def attend(select_in: str) -> torch.Tensor:
        return td.aqua_decode(buf["qh"].view(B, hq, d), keys, inp.v, None, k_keep=k, selection="group",
                              scale=1.0, select_in=select_in, out=out3)

    try:
        attend("torch")
    except ValueError as exc:
        if case.plan == "aqua-token-major":
            raise Unsupported(f"triton_decode.aqua_decode refuses a token-major key view: {exc}") from exc
        raise
    if not td.triton_available(dev):
        notes.append("no Triton on this device: aqua_decode ran its eager reference fallback")

    def attention() -> torch.Tensor:
        return attend("kernel")

    def total() -> torch.Tensor:
        q_proj(); k_proj()
        return attend("torch")

    notes.append("total: aqua_decode(select_in='torch') runs the topk launches then the fused kernel; "
                 "the isolated 'attention' is the fused kernel selecting in-kernel (select_in='kernel')")
    kernels = prologue + [("attention", attention)]
    return Workload(kernels, total, out, _reference(case, inp, lambda: total().reshape(B, hq, 1, d)), notes)


# -- prefill plans -----------------------------------------------------------------------------


def _prefill(case: Case, inp: Inputs) -> Workload:
    B, hq, hkv, g, d, k, T, S = case.batch, case.heads_q, case.heads_kv, case.g, case.d, case.k, case.queries, case.keys
    dev, dt = inp.q.device, inp.q.dtype
    if case.plan == "dense-fused":
        if case.context == 0:
            def attention() -> torch.Tensor:
                return F.scaled_dot_product_attention(inp.q, inp.k, inp.v, is_causal=True, scale=1.0, enable_gqa=g > 1)
        else:
            from torch.nn.attention.bias import causal_lower_right

            bias = causal_lower_right(T, S)

            def attention() -> torch.Tensor:
                return F.scaled_dot_product_attention(inp.q, inp.k, inp.v, attn_mask=bias, scale=1.0, enable_gqa=g > 1)

        return Workload([("attention", attention)], attention, None, _reference(case, inp, attention),
                        ["SDPA allocates its output (not poisoned); checked against the float32 reference"])

    hidden = _causal(T, S, dev).logical_not()  # [T, S] True where masked
    out = torch.full((B, hkv, g * T, d), float("nan"), dtype=dt, device=dev)
    qg = inp.q.view(B, hkv, g * T, d)
    buf: dict[str, torch.Tensor] = {}

    def mask() -> torch.Tensor:
        return buf["s"].view(B, hkv, g, T, S).masked_fill_(hidden, float("-inf"))

    softmax, value = _softmax_value(buf, inp.v, out)

    notes = ["the causal mask is applied to the scores in place (masked_fill_) before the softmax"]
    if case.plan == "dense-eager":
        kt = inp.k.transpose(-1, -2)

        def scores() -> torch.Tensor:
            buf.pop("s", None)
            buf["s"] = torch.matmul(qg, kt)  # [B, H_kv, g*T, S]: the full rectangle
            return buf["s"]

        kernels = [("scores", scores), ("mask", mask), ("softmax", softmax), ("value", value)]
    else:  # aqua-eager
        P = inp.P

        def q_proj() -> torch.Tensor:
            buf["qh"] = torch.matmul(qg, P)  # [B, H_kv, g*T, d]
            return buf["qh"]

        def k_proj() -> torch.Tensor:
            buf["kh"] = torch.bmm(inp.k_new, P)  # [H_kv, B*T, d]
            return buf["kh"]

        def topk() -> torch.Tensor:
            mag = buf["qh"].view(B, hkv, g, T, d).abs().sum(dim=2, dtype=torch.float32)  # [B, H_kv, T, d]
            idx = torch.topk(mag, k, dim=-1).indices
            buf["keep"] = torch.zeros((B, hkv, T, d), dtype=dt, device=dev).scatter_(-1, idx, 1.0)
            return buf["keep"]

        kt = inp.k_hat.transpose(-1, -2)

        def scores() -> torch.Tensor:
            qm = (buf["qh"].view(B, hkv, g, T, d) * buf["keep"].unsqueeze(2)).view(B, hkv, g * T, d)
            buf.pop("s", None)
            buf["s"] = torch.matmul(qm, kt)
            return buf["s"]

        kernels = [("q_proj", q_proj), ("k_proj", k_proj), ("topk", topk), ("scores", scores),
                   ("mask", mask), ("softmax", softmax), ("value", value)]
        notes.append("topk also scatters a 0/1 mask of the kept dims; scores multiplies q^ by it first")
        notes.append("q_proj: torch.matmul broadcasts P over the batch (B copies of P, small against q)")
    for _, fn in kernels[:-1]:
        fn()

    def total() -> torch.Tensor:
        for _, fn in kernels:
            fn()
        return out

    return Workload(kernels, total, out, _reference(case, inp, lambda: total().view(B, hq, T, d)), notes)


def build(case: Case, inp: Inputs) -> Workload:
    """The workload of ``case`` over ``inp`` (from :func:`make_inputs`); raises Unsupported."""
    if case.skip_reason:
        raise Unsupported(case.skip_reason)
    return _decode(case, inp) if case.phase == "decode" else _prefill(case, inp)
