"""Validation workloads: each plan's declared implementation run on random inputs of a case.

For a :class:`~aqua_model.validate.cases.Case` this module builds random inputs (never zeros)
and a :class:`Workload` from the plan's :class:`~aqua_model.plans.kernel.Implementation`
(:func:`aqua_model.plans.build_plan`): the callable and its fixed keyword arguments come from
the plan, and this module only hands it the case's tensors in the key layout the plan reads
(``Plan.key_layout``). ``total`` runs the implementation end to end (what the case's measured
time is); ``kernels`` are the plan's kernels as separate callables when the implementation is
a stage builder (:mod:`aqua_model.kernels.eager`), each reading the tensors the previous one
left, so timing one in isolation repeats exactly that launch. A model-only plan has no
workload. The float32 check uses :mod:`aqua_model.kernels.reference` (attention, selection
and causal mask), on a slice of the batch.

Conventions shared by every plan:

* q is drawn already multiplied by 1/sqrt(d), so no plan launches a separate scaling kernel
  (the cost model counts none);
* AQUA keys are cached already rotated (random orthogonal P per KV head); plans that rotate
  the one new key per KV head (decode) or the T new keys (prefill) read ``k_new``; plans given
  a rotated query (``aqua-fused``) read q^ = q P, computed once, untimed;
* selection is the case's: "group" (the g query heads of a KV group share the k dims with the
  largest sum of |q^|, what :func:`aqua_model.predict` assumes by default) or, for the Triton
  implementations, "per-head";
* GQA never copies K or V: queries are viewed as [B, H_kv, g, ...].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from aqua_model.costs.alignment import aligned_capacity
from aqua_model.kernels import reference as kref
from aqua_model.kernels.eager import STAGE_BUILDERS
from aqua_model.plans import Plan, build_plan
from aqua_model.plans.kernel import Implementation
from aqua_model.validate.cases import Case

#: torch dtype of each storage dtype name.
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: Largest relative error of a plan's output against the float32 reference on the checked
#: slice (bf16 inputs and outputs land between 1e-3 and 1e-2; see the device METHOD notes).
CHECK_TOLERANCE = 3e-2
#: Fewest output vectors that must be within CHECK_TOLERANCE (the rest may be near-tie
#: selection flips between bf16 and float32; see :func:`fraction_close`).
CHECK_MIN_FRACTION = 0.9
#: Implementations that take ``selection`` ("group" or "per-head"); the eager ones select per group.
PER_HEAD_FUNCTIONS = ("aqua_decode", "decode_step", "aqua_step_decode")
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
    k_hat_t: torch.Tensor | None = None  # [B, H_kv, d, S] rotated dim-major keys, rows 16-aligned
    #: The layout each key field holds where two layouts share a field (see LAYOUT_FIELDS).
    held: dict[str, str] = field(default_factory=dict)


def _randn(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, gen: torch.Generator, scale: float = 1.0
) -> torch.Tensor:
    x = torch.randn(
        shape, dtype=torch.float32 if device.type == "cpu" else dtype, device=device, generator=gen
    )
    if scale != 1.0:
        x.mul_(scale)
    return x.to(dtype)


def random_orthogonal(
    heads: int, d: int, *, device: torch.device, gen: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """[heads, d, d] random orthogonal matrices (QR of Gaussian matrices, sign-fixed)."""
    a = torch.randn((heads, d, d), dtype=torch.float32, device=device, generator=gen)
    qm, r = torch.linalg.qr(a)
    qm = qm * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return qm.to(dtype)


#: Key copies a plan may read, and the Inputs field holding each: "rotated-dim-major" is a view of
#: an aligned capacity (the row stride a real cache has), "rotated-dim-major-exact" a contiguous
#: [d, N] tensor (row stride N); the two share a field and never coexist.
LAYOUT_FIELDS = {
    "token-major": "k",
    "rotated-token-major": "k_hat",
    "rotated-dim-major": "k_hat_t",
    "rotated-dim-major-exact": "k_hat_t",
}


def make_inputs(case: Case, *, device: torch.device, seed: int, layouts: tuple[str, ...]) -> Inputs:
    """Random inputs for ``case``; ``layouts`` names the key copies to build:
    "token-major" (K), "rotated-token-major" (K^), "rotated-dim-major" (K^T, a view of an aligned
    capacity) or "rotated-dim-major-exact" (K^T, contiguous, row stride N)."""
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


def set_layouts(
    inp: Inputs, case: Case, *, device: torch.device, seed: int, layouts: tuple[str, ...]
) -> None:
    """Keep exactly the key copies in ``layouts``: free the others first, then draw the missing."""
    for attr in dict.fromkeys(LAYOUT_FIELDS.values()):
        wanted = [name for name in layouts if LAYOUT_FIELDS.get(name) == attr]
        if len(wanted) > 1:
            raise ValueError(f"layouts {wanted} share the Inputs field {attr!r}; ask for one, got {layouts}")
        first = next(name for name, a in LAYOUT_FIELDS.items() if a == attr)
        if inp.held.get(attr, first) not in wanted:
            setattr(inp, attr, None)
            inp.held.pop(attr, None)
    dt = TORCH_DTYPES[case.dtype]
    B, hkv, d, S = case.batch, case.heads_kv, case.d, case.keys
    for i, (name, attr) in enumerate(LAYOUT_FIELDS.items()):
        if name in layouts and getattr(inp, attr) is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed + 1 + i)
            if name == "rotated-dim-major":
                # the row stride a real cache has: a capacity rounded up to a multiple of 16 (as
                # AquaKVCache allocates), viewed at the case's S columns (issue 21 item 4); the plans
                # declare the same stride (plans.attention.key_row_stride)
                capacity = aligned_capacity(S)
                setattr(inp, attr, _randn((B, hkv, d, capacity), dt, device, gen)[..., :S])
            elif name == "rotated-dim-major-exact":  # contiguous [d, S]: row stride S
                setattr(inp, attr, _randn((B, hkv, d, S), dt, device, gen))
            else:
                setattr(inp, attr, _randn((B, hkv, S, d), dt, device, gen))
            inp.held[attr] = name


def layouts_for(case: Case) -> tuple[str, ...]:
    """The key copies ``case``'s plan reads (its declared ``key_layout``)."""
    layout = _plan(case).key_layout
    return (layout,) if layout else ()


def _plan(case: Case) -> Plan:
    return build_plan(case.plan, phase=case.phase, selection=case.selection)


# -- references (float32, on a slice of the batch) ------------------------------------------


def _ref_attention(
    q: torch.Tensor, keys: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """One batch element: q [H_q, t, d], keys and v [H_kv, S, d] (float32) through the reference."""
    return kref.masked_attention(q[None], keys[None], v[None], mask=mask)[0]


def _check_rows(case: Case) -> torch.Tensor | None:
    if case.phase == "decode":
        return None
    T = case.queries
    return torch.unique(torch.linspace(0, T - 1, min(T, CHECK_PREFILL_ROWS)).round().long())


def _reference(
    case: Case, inp: Inputs, result: Callable[[], torch.Tensor]
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A callable giving (plan output, float32 reference) on batch element 0 (and a few rows)."""

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        out = result()[0].float()  # [H_q, T, d]
        rows = _check_rows(case)
        q = inp.q[0].float()
        device = q.device
        mask = None if case.phase == "decode" else kref.causal_mask(case.queries, case.keys, device=device)
        if rows is not None:
            rows = rows.to(device)
            out, mask = out[:, rows], cast(torch.Tensor, mask)[rows]  # rows only for prefill
        v = inp.v[0].float()
        if _plan(case).method == "dense":
            q_use = q if rows is None else q[:, rows]
            return out, _ref_attention(q_use, cast(torch.Tensor, inp.k)[0].float(), v, mask)
        P = inp.P.float().repeat_interleave(case.g, dim=0)  # [H_q, d, d]
        q_hat = (q @ P).to(inp.q.dtype).float()  # the plan rotates in the storage dtype
        # selection shared by query tiles
        if cast(Implementation, _plan(case).implementation).function == "aqua_prefill":
            from aqua_model.kernels import triton_prefill as tp

            keys = cast(torch.Tensor, inp.k_hat_t)[0].float().transpose(-1, -2)
            want = tp.aqua_prefill_reference(
                q_hat[None],
                keys[None],
                v[None],
                k_keep=case.k,
                block_m=tp.default_config(d=case.d).block_m,
                causal=True,
                scale=1.0,
            )[0].float()
            return out, (want if rows is None else want[:, rows])
        if rows is not None:
            q_hat = q_hat[:, rows]
        keys = (
            inp.k_hat_t[0].float().transpose(-1, -2)
            if inp.k_hat_t is not None
            else cast(torch.Tensor, inp.k_hat)[0].float()
        )
        # Group selection sums |q^| over g heads: in float32 (the Triton kernel) or in the
        # storage dtype (an eager sum); near-ties may pick different dims, and both are
        # faithful, so each output vector is compared with the closer of the two references.
        g_sel = case.g if case.selection == "group" else 1  # per-head: each head its own top-k
        refs = [
            _ref_attention(
                q_hat * kref.group_keep_mask(q_hat[None], k_keep=case.k, g=g_sel, sum_dtype=dt)[0],
                keys,
                v,
                mask,
            )
            for dt in (torch.float32, inp.q.dtype)
        ]
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


# -- workloads from the plans' implementations ---------------------------------------------------


def _rotated_query(inp: Inputs, case: Case) -> torch.Tensor:
    """q^ = q P per query head (query head h uses P[h // g]), [B, H_q, d], in q's dtype."""
    B, hq, d = case.batch, case.heads_q, case.d
    P_q = inp.P.repeat_interleave(case.g, dim=0) if case.g > 1 else inp.P
    return torch.bmm(inp.q.view(B, hq, d).transpose(0, 1), P_q).transpose(0, 1).contiguous()


def _keys_dim_major(inp: Inputs, layout: str) -> torch.Tensor:
    """Rotated keys as [B, H_kv, d, N]: the dim-major copy, or a transposed token-major view."""
    return (
        cast(torch.Tensor, inp.k_hat_t)
        if layout in ("rotated-dim-major", "rotated-dim-major-exact")
        else cast(torch.Tensor, inp.k_hat).transpose(-1, -2)
    )


def _sdpa_call(
    case: Case, inp: Inputs, fn: Callable[..., Any], fixed: dict[str, Any]
) -> Callable[[], torch.Tensor]:
    gqa = case.g > 1
    if case.phase == "decode":
        return lambda: fn(inp.q, inp.k, inp.v, scale=1.0, enable_gqa=gqa, **fixed)
    if case.context == 0:
        return lambda: fn(inp.q, inp.k, inp.v, is_causal=True, scale=1.0, enable_gqa=gqa, **fixed)
    from torch.nn.attention.bias import causal_lower_right

    bias = causal_lower_right(case.queries, case.keys)
    return lambda: fn(inp.q, inp.k, inp.v, attn_mask=bias, scale=1.0, enable_gqa=gqa, **fixed)


def _arguments(
    case: Case, inp: Inputs, plan: Plan, out: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The case's tensors as the declared callable takes them (keyed by module.function)."""
    impl = cast(Implementation, plan.implementation)  # build() raises Unsupported for plans without one
    key = f"{impl.module}.{impl.function}"
    B, hq, d = case.batch, case.heads_q, case.d
    if key == "aqua_model.kernels.triton_decode.aqua_decode":
        return (
            (_rotated_query(inp, case), _keys_dim_major(inp, plan.key_layout), inp.v, None),
            dict(k_keep=case.k, selection=case.selection, scale=1.0, out=out.view(B, hq, d)),
        )
    if key == "aqua_model.kernels.triton_prefill.aqua_prefill":
        P_q = inp.P.repeat_interleave(case.g, dim=0) if case.g > 1 else inp.P  # [H_q, d, d]
        q_hat = torch.matmul(inp.q, P_q.unsqueeze(0)).contiguous()  # [B, H_q, T, d], untimed
        return (
            (q_hat, _keys_dim_major(inp, plan.key_layout), inp.v),
            dict(k_keep=case.k, causal=True, scale=1.0, out=out),
        )
    if key == "aqua_model.kernels.kv_cache.decode_step":
        from aqua_model.kernels.kv_cache import cache_holding  # repeats the step of the last cached token

        cache, k_last, v_last = cache_holding(cast(torch.Tensor, inp.k_hat_t), inp.v, inp.P)
        return (
            (cache, inp.q.view(B, hq, d), k_last, v_last),
            dict(
                k_keep=case.k,
                selection=case.selection,
                scale=1.0,
                out=out.view(B, hq, d),
                position=case.keys - 1,
            ),
        )
    if key == "aqua_model.kernels.eager.aqua_step_decode":
        from aqua_model.kernels.eager import query_projections

        return (
            (inp.q, inp.P, inp.k_new, _keys_dim_major(inp, plan.key_layout), inp.v),
            dict(k_keep=case.k, selection=case.selection, out=out, P_query=query_projections(inp.P, case.g)),
        )
    if key in ("aqua_model.kernels.eager.dense_eager_decode", "aqua_model.kernels.eager.dense_eager_prefill"):
        return (inp.q, inp.k, inp.v), dict(out=out)
    if key == "aqua_model.kernels.eager.aqua_eager_decode":
        return (inp.q, inp.P, inp.k_new, inp.k_hat_t, inp.v), dict(k_keep=case.k, out=out)
    if key == "aqua_model.kernels.eager.aqua_eager_prefill":
        return (inp.q, inp.P, inp.k_new, inp.k_hat, inp.v), dict(k_keep=case.k, out=out)
    raise Unsupported(f"no workload knows how to call {impl.label()} (plan {plan.name!r})")


def build(case: Case, inp: Inputs) -> Workload:
    """The workload of ``case`` over ``inp`` (from :func:`make_inputs`); raises Unsupported."""
    if case.skip_reason:
        raise Unsupported(case.skip_reason)
    plan = _plan(case)
    if plan.implementation is None:
        raise Unsupported(f"plan {plan.name!r} ({case.phase}) is model-only: {plan.description}")
    impl = plan.implementation
    fn, fixed = impl.resolve(), impl.fixed_kwargs
    B, hq, d = case.batch, case.heads_q, case.d
    view = (B, hq, case.queries, d)
    notes: list[str] = [f"implementation: {impl.label()}"]
    if f"{impl.module}.{impl.function}" == "torch.nn.functional.scaled_dot_product_attention":
        attention = _sdpa_call(case, inp, fn, fixed)
        notes.append("SDPA allocates its output (not poisoned); checked against the float32 reference")
        # a plan of one kernel is timed as that kernel too; decode's two (the flash kernel and its
        # split-KV reduction) are one call, timed as a whole
        stages = [("attention", attention)] if len(plan.kernels) == 1 else []
        return Workload(stages, attention, None, _reference(case, inp, attention), notes)
    if case.selection != "group" and impl.function not in PER_HEAD_FUNCTIONS:
        raise Unsupported(f"{impl.label()} selects per KV group only, got selection={case.selection!r}")
    out = torch.full(view, float("nan"), dtype=inp.q.dtype, device=inp.q.device)
    args, kwargs = _arguments(case, inp, plan, out)
    kwargs.update(fixed)
    if impl.module == "aqua_model.kernels.eager" and impl.function in STAGE_BUILDERS:
        kernels = fn(*args, **kwargs)
        for _, stage in kernels[:-1]:  # fill the buffers so that each stage can be timed alone
            stage()

        def total() -> torch.Tensor:
            for _, stage in kernels:
                stage()
            return out
    else:
        kernels = []

        def total() -> torch.Tensor:
            fn(*args, **kwargs)
            return out

        if len(plan.kernels) == 1:  # a plan of one kernel (the one-launch Triton decode) is timed as it
            kernels = [(plan.kernels[0].name, total)]
        try:
            total()
        except ValueError as exc:
            if plan.key_layout == "rotated-token-major":
                raise Unsupported(f"{impl.label()} refuses a token-major key view: {exc}") from exc
            raise
        if plan.method == "aqua":
            from aqua_model.kernels import triton_decode as td

            if not td.triton_available(inp.q.device):
                notes.append("no Triton on this device: aqua_decode ran its eager reference fallback")
    return Workload(kernels, total, out, _reference(case, inp, lambda: total().view(view)), notes)
