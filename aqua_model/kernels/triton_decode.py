"""Fused split-N (flash-decoding) Triton kernels: AQUA decode on a dim-major key cache, and dense.

Layouts. Queries q [B, H_q, d] (one decode query per head; [B, H_q, 1, d] is accepted too).
AQUA keys are cached rotated and dim-major, K^T [B, H_kv, m, N] (m <= d stored coordinates), so
the k selected coordinates of a query are k contiguous rows of length N: every load is a
coalesced row segment. Values are token-major [B, H_kv, N, d_v] and read in full, once per
program. The dense control reads token-major keys [B, H_kv, N, d] (or dim-major).

Pass 1 (``_split_kernel``): one program per (batch, selection unit, split of N). A selection
unit is one query head ("per-head") or one KV group of g query heads ("group", one program then
serves all g heads and reads each selected key row once). The program
  1. picks the k coordinates: in the kernel from |q^| (rank counting over the m coordinates,
     ties to the lower index; summed over the g heads in group mode), or from given indices,
     or all of them (dense);
  2. streams its block of N: gathers the k rows of K^T, scores = q_sel . K_sel on the tensor
     cores (the head rows padded to 16), online softmax in base 2, accumulates P @ V;
  3. writes an unnormalised partial output and (max, sum) per head.
Pass 2 (``_combine_kernel``) merges the splits of each head with a log-sum-exp.

The public wrappers fall back to the eager reference where triton or CUDA is missing
(``TRITON_INTERPRET=1`` runs the kernels on CPU tensors through Triton's interpreter).
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch

from aqua_model._checks import check_choice, check_int
from aqua_model.kernels import reference as ref

try:  # triton is optional: the module imports and falls back without it
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the machine
    triton = None
    tl = None
    HAS_TRITON = False

SELECTIONS = ("per-head", "group")
SELECT_WHERE = ("kernel", "prepass", "torch")
_MODE_DENSE, _MODE_GIVEN, _MODE_SELECT = 0, 1, 2
_ROWS = 16  # query rows per program, padded to the smallest tensor-core tile


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """Launch parameters of pass 1.

    block_n: tokens per loop step; num_warps / num_stages: Triton's; programs_per_sm: the split
    count is chosen so that batch * units * splits is about this many programs per SM (None:
    use ``num_splits``); num_splits: explicit split count.
    """

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    programs_per_sm: int | None = 8
    num_splits: int | None = None


def triton_available(device: torch.device | None = None) -> bool:
    """True when the Triton kernels can run on ``device`` (CUDA, or the Triton interpreter)."""
    if not HAS_TRITON:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return device is not None and device.type == "cuda"


if HAS_TRITON:

    @triton.jit
    def _block_step(
        q_sel, krow_ptr, v_base, n0, end, stride_kn, stride_vn, row_valid, offs_dv,
        m_i, l_i, acc, scale_log2,
        BLOCK_N: tl.constexpr, MASK_ROWS: tl.constexpr, MASK_N: tl.constexpr,
    ):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        if MASK_N:
            n_ok = offs_n < end
            if MASK_ROWS:
                kmask = row_valid[:, None] & n_ok[None, :]
            else:
                kmask = n_ok[None, :]
            kt = tl.load(krow_ptr + offs_n[None, :] * stride_kn, mask=kmask, other=0.0)
            vt = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :], mask=n_ok[:, None], other=0.0)
        else:
            if MASK_ROWS:
                kt = tl.load(krow_ptr + offs_n[None, :] * stride_kn, mask=row_valid[:, None], other=0.0)
            else:
                kt = tl.load(krow_ptr + offs_n[None, :] * stride_kn)
            vt = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :])
        s = tl.dot(q_sel, kt) * scale_log2  # [ROWS, BLOCK_N], log2 domain
        if MASK_N:
            s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
        return m_new, l_i, acc

    @triton.jit
    def _rank_select(q_base, head_ok, slots, M_KEY: tl.constexpr, M_PAD: tl.constexpr):
        """Coordinate of rank s (by summed |q^| over the served heads, ties to the lower index)."""
        dims = tl.arange(0, M_PAD)
        qa = tl.load(q_base[:, None] + dims[None, :], mask=head_ok[:, None] & (dims < M_KEY)[None, :], other=0.0)
        mag = tl.sum(tl.abs(qa.to(tl.float32)), axis=0)  # [M_PAD]
        mag = tl.where(dims < M_KEY, mag, -1.0)  # padding is never selected
        mi = mag[:, None]
        mj = mag[None, :]
        beats = (mj > mi) | ((mj == mi) & (dims[None, :] < dims[:, None]))
        rank = tl.sum(beats.to(tl.int32), axis=1)  # [M_PAD], a permutation of 0..M_PAD-1
        onehot = rank[None, :] == slots[:, None]  # [KK_PAD, M_PAD]
        return tl.sum(tl.where(onehot, dims[None, :], 0), axis=1)  # [KK_PAD]

    @triton.jit
    def _select_kernel(
        q_ptr, idx_ptr, k_keep, units, stride_qb, stride_qh, stride_ib, stride_ih,
        G: tl.constexpr, ROWS: tl.constexpr, M_KEY: tl.constexpr, M_PAD: tl.constexpr, KK_PAD: tl.constexpr,
    ):
        """Pre-pass: the kept coordinates of one selection unit, written as int32 [k_keep]."""
        pid = tl.program_id(0)
        b = (pid // units).to(tl.int64)
        unit = pid % units
        rows = tl.arange(0, ROWS)
        q_base = q_ptr + b * stride_qb + (unit * G + rows) * stride_qh
        slots = tl.arange(0, KK_PAD)
        idx = _rank_select(q_base, rows < G, slots, M_KEY, M_PAD)
        tl.store(idx_ptr + b * stride_ib + unit * stride_ih + slots, idx, mask=slots < k_keep)

    @triton.jit
    def _split_kernel(
        q_ptr, k_ptr, v_ptr, idx_ptr, part_acc_ptr, part_ml_ptr,
        N, chunk, k_keep, group, heads_q, units, num_splits, scale_log2,
        stride_qb, stride_qh,
        stride_kb, stride_kh, stride_kd, stride_kn,
        stride_vb, stride_vh, stride_vn,
        stride_ib, stride_ih,
        MODE: tl.constexpr, G: tl.constexpr, ROWS: tl.constexpr,
        M_KEY: tl.constexpr, M_PAD: tl.constexpr, KK_PAD: tl.constexpr, DV: tl.constexpr,
        BLOCK_N: tl.constexpr, MASK_ROWS: tl.constexpr,
    ):
        pid_u = tl.program_id(0)  # b * units + unit
        pid_s = tl.program_id(1)  # split
        b = (pid_u // units).to(tl.int64)  # 64-bit offsets: caches can exceed 2^31 elements
        unit = pid_u % units
        h0 = unit * G  # first query head served
        hkv = h0 // group
        rows = tl.arange(0, ROWS)
        head_ok = rows < G
        q_base = q_ptr + b * stride_qb + (h0 + rows) * stride_qh  # [ROWS] row pointers

        slots = tl.arange(0, KK_PAD)
        if MODE == 0:  # dense: all stored coordinates
            idx = slots
            row_valid = slots < M_KEY
        elif MODE == 1:  # indices given by the caller
            row_valid = slots < k_keep
            idx = tl.load(idx_ptr + b * stride_ib + unit * stride_ih + slots, mask=row_valid, other=0)
        else:  # select in the kernel: rank of each coordinate by (summed) |q^|
            idx = _rank_select(q_base, head_ok, slots, M_KEY, M_PAD)
            row_valid = slots < k_keep

        q_sel = tl.load(q_base[:, None] + idx[None, :], mask=head_ok[:, None] & row_valid[None, :], other=0.0)
        k_base = k_ptr + b * stride_kb + hkv * stride_kh
        krow_ptr = k_base + idx[:, None] * stride_kd  # [KK_PAD, 1]
        v_base = v_ptr + b * stride_vb + hkv * stride_vh
        offs_dv = tl.arange(0, DV)

        m_i = tl.full([ROWS], float("-inf"), tl.float32)
        l_i = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([ROWS, DV], tl.float32)
        start = pid_s * chunk
        end = tl.minimum(start + chunk, N)
        n_full = start + ((end - start) // BLOCK_N) * BLOCK_N
        for n0 in range(start, n_full, BLOCK_N):
            m_i, l_i, acc = _block_step(
                q_sel, krow_ptr, v_base, n0, end, stride_kn, stride_vn, row_valid, offs_dv,
                m_i, l_i, acc, scale_log2, BLOCK_N, MASK_ROWS, False,
            )
        if n_full < end:
            m_i, l_i, acc = _block_step(
                q_sel, krow_ptr, v_base, n_full, end, stride_kn, stride_vn, row_valid, offs_dv,
                m_i, l_i, acc, scale_log2, BLOCK_N, MASK_ROWS, True,
            )

        head = b * heads_q + h0 + rows  # [ROWS]
        part = head * num_splits + pid_s
        tl.store(part_acc_ptr + part[:, None] * DV + offs_dv[None, :], acc, mask=head_ok[:, None])
        tl.store(part_ml_ptr + part * 2, m_i, mask=head_ok)
        tl.store(part_ml_ptr + part * 2 + 1, l_i, mask=head_ok)

    @triton.jit
    def _combine_kernel(
        part_acc_ptr, part_ml_ptr, out_ptr, num_splits,
        DV: tl.constexpr, S_PAD: tl.constexpr,
    ):
        head = tl.program_id(0)
        s = tl.arange(0, S_PAD)
        s_ok = s < num_splits
        part = head * num_splits + s
        m = tl.load(part_ml_ptr + part * 2, mask=s_ok, other=float("-inf"))
        l = tl.load(part_ml_ptr + part * 2 + 1, mask=s_ok, other=0.0)
        offs_dv = tl.arange(0, DV)
        acc = tl.load(part_acc_ptr + part[:, None] * DV + offs_dv[None, :], mask=s_ok[:, None], other=0.0)
        m_all = tl.max(m, axis=0)
        w = tl.where(s_ok, tl.exp2(m - m_all), 0.0)
        num = tl.sum(acc * w[:, None], axis=0)
        den = tl.sum(l * w, axis=0)
        tl.store(out_ptr + head * DV + offs_dv, (num / den).to(out_ptr.dtype.element_ty))


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


_SM_COUNT: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def plan_splits(*, programs: int, context: int, config: DecodeConfig, device: torch.device) -> tuple[int, int]:
    """(num_splits, chunk): split N into chunks (multiples of block_n) so that no split is empty."""
    bn = config.block_n
    blocks = max(1, math.ceil(context / bn))
    if config.num_splits is not None:
        want = config.num_splits
    else:
        want = math.ceil(config.programs_per_sm * _sm_count(device) / max(1, programs))
    want = max(1, min(want, blocks))
    chunk = math.ceil(blocks / want) * bn
    return math.ceil(context / chunk), chunk


def _launch(
    *,
    mode: int,
    q: torch.Tensor,
    k: torch.Tensor,
    k_dim_major: bool,
    v: torch.Tensor,
    idx: torch.Tensor | None,
    k_keep: int,
    g_serve: int,
    group: int,
    scale: float,
    config: DecodeConfig,
    out: torch.Tensor | None,
    poison_workspace: bool,
) -> torch.Tensor:
    B, hq, d = q.shape
    hkv = k.shape[1]
    if k_dim_major:
        m, N = k.shape[2], k.shape[3]
        s_kd, s_kn = k.stride(2), k.stride(3)
    else:
        N, m = k.shape[2], k.shape[3]
        s_kd, s_kn = k.stride(3), k.stride(2)
    dv = v.shape[3]
    if dv != _next_pow2(dv) or dv < 16:
        raise ValueError(f"the Triton kernels need a value head dim that is a power of two >= 16, got {dv}")
    units = hq // g_serve
    splits, chunk = plan_splits(programs=B * units, context=N, config=config, device=q.device)
    f32 = torch.float32
    fill = torch.full if poison_workspace else (lambda shape, _v, **kw: torch.empty(shape, **kw))
    part_acc = fill((B * hq * splits, dv), float("nan"), dtype=f32, device=q.device)
    part_ml = fill((B * hq * splits, 2), float("nan"), dtype=f32, device=q.device)
    if out is None:
        out = torch.empty(B, hq, dv, dtype=q.dtype, device=q.device)
    m_pad = max(16, _next_pow2(m))
    kk_pad = m_pad if mode == _MODE_DENSE else max(16, _next_pow2(k_keep))
    mask_rows = (m != kk_pad) if mode == _MODE_DENSE else (k_keep != kk_pad)
    if idx is None:
        idx_t, s_ib, s_ih = q, 0, 0  # unused placeholder pointer
    else:
        idx_t, s_ib, s_ih = idx, idx.stride(0), idx.stride(1)
    grid = (B * units, splits)
    _split_kernel[grid](
        q, k, v, idx_t, part_acc, part_ml,
        N, chunk, k_keep, group, hq, units, splits, scale * math.log2(math.e),
        q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), s_kd, s_kn,
        v.stride(0), v.stride(1), v.stride(2),
        s_ib, s_ih,
        MODE=mode, G=g_serve, ROWS=max(_ROWS, _next_pow2(g_serve)),
        M_KEY=m, M_PAD=m_pad, KK_PAD=kk_pad, DV=dv,
        BLOCK_N=config.block_n, MASK_ROWS=mask_rows,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    _combine_kernel[(B * hq,)](part_acc, part_ml, out, splits, DV=dv, S_PAD=max(2, _next_pow2(splits)), num_warps=4)
    return out


def _as_3d_query(q: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(q, torch.Tensor) or not q.is_floating_point():
        raise TypeError(f"q must be a floating torch.Tensor [B, H_q, d] or [B, H_q, 1, d], got {type(q).__name__}")
    if q.dim() == 4:
        if q.shape[2] != 1:
            raise ValueError(f"decode takes one query per head: q [B, H_q, 1, d], got {tuple(q.shape)}")
        return q[:, :, 0, :], True
    if q.dim() != 3:
        raise ValueError(f"q must be [B, H_q, d] or [B, H_q, 1, d], got shape {tuple(q.shape)}")
    return q, False


def _check_cache(name: str, x: torch.Tensor, B: int, doc: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor {doc}, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] != B:
        raise ValueError(f"{name} must be {doc} with B={B}, got shape {tuple(x.shape)}")
    if x.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dim, got strides {x.stride()}")
    return x


def _check_keys(k: torch.Tensor, B: int) -> torch.Tensor:
    """Rotated keys as a [B, H_kv, m, N] tensor: dim-major (rows contiguous along N), or the
    transposed view of a token-major [B, H_kv, N, m] cache (``K.transpose(-1, -2)``), which the
    kernel reads through its strides: each kept coordinate then costs whole memory sectors."""
    doc = "[B, H_kv, m, N] (dim-major, or a transposed token-major view)"
    if not isinstance(k, torch.Tensor) or not k.is_floating_point():
        raise TypeError(f"k_dimmajor must be a floating torch.Tensor {doc}, got {type(k).__name__}")
    if k.dim() != 4 or k.shape[0] != B:
        raise ValueError(f"k_dimmajor must be {doc} with B={B}, got shape {tuple(k.shape)}")
    if k.stride(-1) != 1 and k.stride(-2) != 1:
        raise ValueError(f"k_dimmajor must be contiguous along N (dim-major) or along m (token-major view), got strides {k.stride()}")
    return k


def _check_out(out: torch.Tensor, B: int, hq: int, dv: int, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dtype != dtype or not out.is_contiguous() or out.numel() != B * hq * dv:
        raise ValueError(f"out must be a contiguous {dtype} tensor of B*H_q*d_v = {B * hq * dv} elements")
    return out.view(B, hq, dv)


def aqua_decode(
    q: torch.Tensor,
    k_dimmajor: torch.Tensor,
    v: torch.Tensor,
    P: torch.Tensor | None = None,
    *,
    k_keep: int,
    selection: str = "per-head",
    scale: float | None = None,
    select_in: str = "prepass",
    indices: torch.Tensor | None = None,
    config: DecodeConfig | None = None,
    out: torch.Tensor | None = None,
    poison_workspace: bool = False,
) -> torch.Tensor:
    """AQUA decode attention against a rotated dim-major key cache.

    q [B, H_q, d] or [B, H_q, 1, d]: the query (already rotated when P is None, else rotated
    here by P [d, d] / [H_kv, d, d]). k_dimmajor [B, H_kv, m, N]: rotated keys, m <= d stored
    coordinates; a transposed view of a token-major [B, H_kv, N, m] cache is accepted too (the
    layout of the ``aqua-token-major`` plan: correct, but each kept coordinate is a strided read). v [B, H_kv, N, d_v]. k_keep: coordinates kept (1..m); selection "per-head" or
    "group"; select_in "kernel" (rank counting inside pass 1), "prepass" (the same ranking in
    a small Triton kernel launched first; the default: on the H200 pass 1 then needs 142 rather
    than 254 registers at k=96 and ran 2-3% faster) or "torch" (torch.topk).
    indices: optional precomputed kept coordinates, int32 [B, H_q, k_keep] ("per-head") or
    [B, H_kv, k_keep] ("group"), e.g. to time the kernel without its selection step.
    scale defaults to 1/sqrt(d). Returns [B, H_q, d_v] (or [B, H_q, 1, d_v]) in q's dtype.
    Falls back to :func:`reference.aqua_attention_rotated` without triton / CUDA (where
    ``indices`` must be None).
    """
    q3, four = _as_3d_query(q)
    B, hq, d = q3.shape
    k_dimmajor = _check_keys(k_dimmajor, B)
    v = _check_cache("v", v, B, "[B, H_kv, N, d_v]")
    hkv, m, N = k_dimmajor.shape[1:]
    if v.shape[1] != hkv or v.shape[2] != N:
        raise ValueError(f"v must be [B, H_kv={hkv}, N={N}, d_v], got {tuple(v.shape)}")
    if not 1 <= m <= d:
        raise ValueError(f"k_dimmajor stores m coordinates with 1 <= m <= d={d}, got m={m}")
    if hkv < 1 or hq % hkv:
        raise ValueError(f"H_q must be a multiple of H_kv, got H_q={hq}, H_kv={hkv}")
    g = hq // hkv
    k_keep = check_int("k_keep", k_keep, minimum=1, maximum=m)
    selection = check_choice("selection", selection, SELECTIONS)
    select_in = check_choice("select_in", select_in, SELECT_WHERE)
    s = ref._scale(scale, d)
    if P is not None:
        P = ref._check_projection(P, heads_kv=hkv, d=d)
        q3 = ref.rotate(q3.unsqueeze(2).float(), P.float(), g=g).squeeze(2).to(q3.dtype)
    g_serve = g if selection == "group" else 1
    if indices is not None:
        want = (B, hq // g_serve, k_keep)
        if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int32 or tuple(indices.shape) != want:
            raise ValueError(f"indices must be an int32 tensor of shape {want}, got {getattr(indices, 'shape', indices)!r}")
        if not triton_available(q3.device):
            raise ValueError("indices are only supported on the Triton path (CUDA or TRITON_INTERPRET=1)")
    if not triton_available(q3.device):
        o = ref.aqua_attention_rotated(
            q3.unsqueeze(2), k_dimmajor.transpose(-1, -2), v, k_keep=k_keep, selection=selection, causal=True, scale=s
        )
        o = o[:, :, 0, :]
        if out is not None:
            out.copy_(o)
            o = out
        return o.unsqueeze(2) if four else o
    q3 = q3.contiguous()
    idx = None
    mode = _MODE_SELECT
    if indices is not None:
        idx, mode = indices.contiguous(), _MODE_GIVEN
    elif select_in == "prepass":
        units = hq // g_serve
        idx = torch.empty(B, units, k_keep, dtype=torch.int32, device=q3.device)
        m_pad = max(16, _next_pow2(m))
        _select_kernel[(B * units,)](
            q3, idx, k_keep, units, q3.stride(0), q3.stride(1), idx.stride(0), idx.stride(1),
            G=g_serve, ROWS=max(_ROWS, _next_pow2(g_serve)), M_KEY=m, M_PAD=m_pad,
            KK_PAD=max(16, _next_pow2(k_keep)), num_warps=4,
        )
        mode = _MODE_GIVEN
    elif select_in == "torch":
        mag = q3[..., :m].abs().float()
        if g_serve > 1:
            mag = mag.reshape(B, hkv, g, m).sum(2)
        idx = torch.topk(mag, k_keep, dim=-1).indices.to(torch.int32).contiguous()
        mode = _MODE_GIVEN
    if out is not None:
        out = _check_out(out, B, hq, v.shape[3], q3.dtype)
    o = _launch(
        mode=mode, q=q3, k=k_dimmajor, k_dim_major=True, v=v, idx=idx, k_keep=k_keep, g_serve=g_serve,
        group=g, scale=s, config=config or DecodeConfig(), out=out, poison_workspace=poison_workspace,
    )
    return o.unsqueeze(2) if four else o


def dense_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    key_layout: str = "token-major",
    config: DecodeConfig | None = None,
    out: torch.Tensor | None = None,
    poison_workspace: bool = False,
) -> torch.Tensor:
    """Dense decode with the same split-N structure (the control): one program per KV group.

    q [B, H_q, d] or [B, H_q, 1, d]; k [B, H_kv, N, d] ("token-major") or [B, H_kv, d, N]
    ("dim-major"); v [B, H_kv, N, d_v]. Falls back to :func:`reference.dense_attention`.
    """
    q3, four = _as_3d_query(q)
    B, hq, d = q3.shape
    key_layout = check_choice("key_layout", key_layout, ("token-major", "dim-major"))
    k = _check_cache("k", k, B, "[B, H_kv, N, d]" if key_layout == "token-major" else "[B, H_kv, d, N]")
    v = _check_cache("v", v, B, "[B, H_kv, N, d_v]")
    k_tok = k if key_layout == "token-major" else k.transpose(-1, -2)
    hkv, N = k_tok.shape[1], k_tok.shape[2]
    if k_tok.shape[3] != d:
        raise ValueError(f"k head dim must equal q head dim d={d}, got {k_tok.shape[3]}")
    if v.shape[1] != hkv or v.shape[2] != N:
        raise ValueError(f"v must be [B, H_kv={hkv}, N={N}, d_v], got {tuple(v.shape)}")
    if hkv < 1 or hq % hkv:
        raise ValueError(f"H_q must be a multiple of H_kv, got H_q={hq}, H_kv={hkv}")
    g = hq // hkv
    s = ref._scale(scale, d)
    if not triton_available(q3.device):
        o = ref.dense_attention(q3.unsqueeze(2), k_tok, v, causal=True, scale=s)[:, :, 0, :]
        if out is not None:
            out.copy_(o)
            o = out
        return o.unsqueeze(2) if four else o
    if out is not None:
        out = _check_out(out, B, hq, v.shape[3], q3.dtype)
    o = _launch(
        mode=_MODE_DENSE, q=q3.contiguous(), k=k, k_dim_major=key_layout == "dim-major", v=v, idx=None,
        k_keep=d, g_serve=g, group=g, scale=s, config=config or DecodeConfig(), out=out,
        poison_workspace=poison_workspace,
    )
    return o.unsqueeze(2) if four else o
