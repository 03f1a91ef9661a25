"""Fused causal AQUA prefill in Triton with tile-shared selection, and its torch references.

Why tiles. A prefill kernel runs on tensor cores: a program multiplies a tile of BLOCK_M
queries by a block of BLOCK_N keys, and the inner dimension of that product is shared by all
rows of the tile. Per-query selection (each query its own k of d rotated dims) cannot shorten
it. Tile-shared selection can: the BLOCK_M queries of one tile of one head share the k dims
with the largest sum of |q^| over the tile, the k rows of q^ and of the dim-major K^T are
gathered into the tile, and the score product runs over k instead of d dims. The value
product is unchanged, so when compute-bound the time ratio to dense is at best
(d + d) / (k + d) = 2d/(d + k): 1.14x at k = 96 of 128, 1.6x at k = 32.

Layouts. q^ [B, H_q, T, d] (rotated: P applied by the caller or folded into W_Q; last stride
1); K^T [B, H_kv, d, N] rotated and dim-major (the package's AQUA key cache; any strides, so
``k_hat.transpose(-1, -2)`` of a token-major K^ works too, at a cost in load width); V
[B, H_kv, N, d_v] token-major. Causal: the T queries are the last T of the N positions
(query i sees keys 0 .. N - T + i; N = T is a plain prompt). GQA: query head h reads KV head
h // g, g = H_q / H_kv.

The kernel (``_prefill_kernel``, one launch; one program per (tile of BLOCK_M queries, query
head), heaviest tiles first): loads the q^ tile, sums |q^| over its rows in fp32, takes the
top-k dims (ties: lower index first), compacts them into ascending slots, split into at most
three power-of-two parts >= 16 (96 = 64 + 32, :func:`aqua_model.kernels.triton_decode.row_parts`'s
rule, so k = 96 is not padded to 128; slots past k are padded with zero q^ columns); then the
FlashAttention-2 loop: the key blocks fully visible to every row without a mask, the
diagonal blocks with the causal mask; scores = q_sel @ K^T_sel on tensor cores, online
softmax in base 2 (fp32), acc += P @ V, a final division by the row sums. At k = d no dim is
gathered: the same loop over contiguous K^T rows is the dense control.

References (torch, any device): :func:`tile_indices` (the tile rule), :func:`tile_keep_mask`,
:func:`aqua_prefill_reference` (tile-shared or, with ``block_m=1``, per-query selection; equal
to dense attention at k = d).

Without triton or CUDA, :func:`aqua_prefill` falls back to :func:`aqua_prefill_reference`;
``TRITON_INTERPRET=1`` runs the kernel on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

import dataclasses

import torch

from aqua_model._checks import check_int
from aqua_model.kernels import reference as ref
from aqua_model.kernels.triton_decode import HAS_TRITON, row_parts, triton_available

if HAS_TRITON:
    import triton
    import triton.language as tl
else:  # pragma: no cover - depends on the machine
    triton = None
    tl = None

#: Tile sizes (query rows per program and per selection) the kernel compiles for.
BLOCK_MS = (16, 32, 64, 128)
#: The CUDA kernels one call launches, in order (what the ``aqua-tile-fused`` plan lists).
KERNELS = ("_prefill_kernel",)
#: log2(e): scores are exponentiated in base 2, so the softmax scale is multiplied by it.
LOG2_E = 1.4426950408889634
_MIN_DIM = 16  # smallest tensor-core operand edge


@dataclasses.dataclass(frozen=True)
class PrefillConfig:
    """Launch parameters: ``block_m`` query rows per program (also the selection tile),
    ``block_n`` keys per loop step, Triton's ``num_warps`` and ``num_stages``."""

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 3

    def __post_init__(self) -> None:
        if self.block_m not in BLOCK_MS:
            raise ValueError(f"block_m must be one of {BLOCK_MS}, got {self.block_m!r}")
        if self.block_n not in (16, 32, 64, 128) or self.block_n > self.block_m:
            raise ValueError(
                f"block_n must be 16, 32, 64 or 128 and <= block_m={self.block_m}, got {self.block_n!r}"
            )
        check_int("num_warps", self.num_warps, minimum=1, maximum=16)
        check_int("num_stages", self.num_stages, minimum=1, maximum=8)


def default_config(*, d: int, block_m: int = 128) -> PrefillConfig:
    """Launch parameters for head dim ``d`` at tile ``block_m`` (FlashAttention-2's usual
    choices: 64-key blocks; 8 warps for 128-row tiles of d = 128, 4 otherwise)."""
    block_n = min(64, block_m)
    warps = 8 if (block_m >= 128 and d >= 128) else 4
    return PrefillConfig(block_m=block_m, block_n=block_n, num_warps=warps, num_stages=3 if d <= 128 else 2)


def slot_parts(*, k_keep: int, d: int) -> tuple[int, int, int]:
    """The gathered inner dimension of the score product as up to three power-of-two parts >= 16:
    k rounded up (96 -> (64, 32, 0), 40 -> (32, 16, 0)), at most (d, 0, 0) (k = 120 of 128: the
    product spans d slots, 8 of them zero; no FLOP is saved but the selection still applies)."""
    d = check_int("d", d, minimum=_MIN_DIM)
    k_keep = check_int("k_keep", k_keep, minimum=1, maximum=d)
    if k_keep == d:
        return d, 0, 0
    parts = row_parts(k_keep)
    if sum(parts) >= d:  # rounding up reached d: the product is no shorter than dense
        return d, 0, 0
    return parts


# ----------------------------------------------------------------------------- references


def _check_rotated(q_hat: torch.Tensor, k_hat: torch.Tensor, v: torch.Tensor, *, causal: bool) -> int:
    ref._check_tensor("q_hat", q_hat, 4, "[B, H_q, T, d]")
    ref._check_tensor("k_hat", k_hat, 4, "[B, H_kv, N, d]")
    ref._check_tensor("v", v, 4, "[B, H_kv, N, d_v]")
    B, hq, T, d = q_hat.shape
    if k_hat.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"batch sizes differ: q_hat {B}, k_hat {k_hat.shape[0]}, v {v.shape[0]}")
    if k_hat.shape[3] != d:
        raise ValueError(f"k_hat must have the head dim of q_hat, d={d}, got {k_hat.shape[3]}")
    if v.shape[1:3] != k_hat.shape[1:3]:
        raise ValueError(
            f"v must match k_hat in heads and length, got k_hat {tuple(k_hat.shape)}, v {tuple(v.shape)}"
        )
    return ref._group_size(hq, k_hat.shape[1], causal=causal, T=T, N=k_hat.shape[2])


def _check_block_m(block_m: int) -> int:
    return check_int("block_m", block_m, minimum=1)


def tile_indices(q_hat: torch.Tensor, *, k_keep: int, block_m: int) -> torch.Tensor:
    """Kept dims [B, H_q, ceil(T / block_m), k_keep] (int64, ascending) of each tile of
    ``block_m`` consecutive queries of one head: the top-k of |q^| summed over the tile's rows
    in float32 (the last tile holds the remaining T mod block_m rows). ``block_m = 1`` is
    per-query selection."""
    ref._check_tensor("q_hat", q_hat, 4, "[B, H_q, T, d]")
    block_m = _check_block_m(block_m)
    B, hq, T, d = q_hat.shape
    k_keep = check_int("k_keep", k_keep, minimum=1, maximum=d)
    tiles = -(-T // block_m)
    mag = q_hat.abs().float()
    if tiles * block_m != T:
        mag = torch.nn.functional.pad(mag, (0, 0, 0, tiles * block_m - T))
    mag = mag.reshape(B, hq, tiles, block_m, d).sum(dim=3)
    return torch.topk(mag, k_keep, dim=-1).indices.sort(dim=-1).values


def tile_keep_mask(
    q_hat: torch.Tensor, *, k_keep: int, block_m: int, indices: torch.Tensor | None = None
) -> torch.Tensor:
    """Bool [B, H_q, T, d]: True at the dims each query's tile keeps (:func:`tile_indices`, or
    the given ``indices`` [B, H_q, tiles, k] of that rule; entries < 0 are unused slots)."""
    B, hq, T, d = q_hat.shape
    idx = tile_indices(q_hat, k_keep=k_keep, block_m=block_m) if indices is None else indices.long()
    tiles = -(-T // _check_block_m(block_m))
    if idx.shape[:3] != (B, hq, tiles):
        raise ValueError(
            f"indices must have shape [B, H_q, tiles, k] = [{B}, {hq}, {tiles}, k], got {tuple(idx.shape)}"
        )
    keep = torch.zeros(B, hq, tiles, d + 1, dtype=torch.bool, device=q_hat.device)
    keep.scatter_(-1, torch.where(idx < 0, d, idx), True)  # unused slots land in a spare column
    keep = keep[..., :d].repeat_interleave(block_m, dim=2)[:, :, :T]
    return keep


def aqua_prefill_reference(
    q_hat: torch.Tensor,
    k_hat: torch.Tensor,
    v: torch.Tensor,
    *,
    k_keep: int,
    block_m: int = 1,
    causal: bool = True,
    scale: float | None = None,
    indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """AQUA attention with selection shared by tiles of ``block_m`` queries; [B, H_q, T, d_v].

    q_hat [B, H_q, T, d], k_hat [B, H_kv, N, d] (token-major, rotated), v [B, H_kv, N, d_v].
    Scores are (q^ masked to its tile's kept dims) @ K^T in float32 (the sum over exactly the
    kept dims), softmax in float32, output in q's dtype. ``block_m = 1`` is per-query AQUA
    (:func:`aqua_model.kernels.reference.aqua_attention_rotated`, "per-head"); at k = d it is
    dense attention. ``indices`` overrides the selection (e.g. the kernel's own, to check it).
    """
    g = _check_rotated(q_hat, k_hat, v, causal=causal)
    d = q_hat.shape[-1]
    k_keep = check_int("k_keep", k_keep, minimum=1, maximum=d)
    s = ref._scale(scale, d)
    work = torch.promote_types(q_hat.dtype, torch.float32)
    q = q_hat.to(work)
    if k_keep < d or indices is not None:
        q = q * tile_keep_mask(q_hat, k_keep=k_keep, block_m=block_m, indices=indices)
    scores = torch.matmul(q, ref.expand_kv(k_hat, g).to(work).transpose(-1, -2)) * s
    return ref._softmax_values(scores, ref.expand_kv(v, g).to(work), causal=causal).to(q_hat.dtype)


# ----------------------------------------------------------------------------- Triton kernel

if HAS_TRITON:

    @triton.jit
    def _topk_keep(mag, k_keep, D: tl.constexpr):
        """Bool [1, D]: the k_keep largest entries of ``mag`` [1, D] (ties: lower index first)."""
        srt = tl.sort(mag, dim=1)
        cols = tl.arange(0, D)[None, :]
        thr = tl.sum(tl.where(cols == D - k_keep, srt, 0.0), axis=1)[:, None]
        gt = mag > thr
        eq = mag == thr
        need = k_keep - tl.sum(gt.to(tl.int32), axis=1)
        eq_rank = tl.cumsum(eq.to(tl.int32), axis=1)
        return gt | (eq & (eq_rank <= need[:, None]))

    @triton.jit
    def _slots(keep, rank, base, k_keep, D: tl.constexpr, K: tl.constexpr):
        """Dims [K] in kept slots base .. base + K - 1 (ascending), 0 past k_keep; and the validity."""
        slot = base + tl.arange(0, K)
        dims = tl.arange(0, D)
        hit = keep & (rank == slot[:, None])  # [K, D]: slot s holds the kept dim of rank s
        idx = tl.sum(tl.where(hit, dims[None, :], 0), axis=1)
        return idx, slot < k_keep

    @triton.jit
    def _gather_q(q_base, stride_qt, offs_m, row_ok, idx, ok):
        return tl.load(
            q_base + offs_m[:, None] * stride_qt + idx[None, :], mask=row_ok[:, None] & ok[None, :], other=0.0
        )

    @triton.jit
    def _key_rows(k_base, stride_kd, stride_kn, idx, offs_n, n_ok, MASK_N: tl.constexpr):
        ptrs = k_base + idx[:, None].to(tl.int64) * stride_kd + offs_n[None, :] * stride_kn
        if MASK_N:
            return tl.load(ptrs, mask=n_ok[None, :], other=0.0)
        return tl.load(ptrs)

    @triton.jit
    def _attend(
        acc,
        l_i,
        m_i,
        q1,
        q2,
        q3,
        idx1,
        idx2,
        idx3,
        k_base,
        v_base,
        stride_kd,
        stride_kn,
        stride_vn,
        offs_m,
        lo,
        hi,
        N,
        offset,
        qk_scale,
        K2: tl.constexpr,
        K3: tl.constexpr,
        DV: tl.constexpr,
        BLOCK_N: tl.constexpr,
        MASKED: tl.constexpr,
        CAUSAL: tl.constexpr,
    ):
        """One stage of the FlashAttention-2 loop over key blocks lo .. hi (MASKED: the causal
        diagonal and the ragged end of N)."""
        dv = tl.arange(0, DV)
        for start_n in tl.range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_ok = offs_n < N
            qk = tl.dot(q1, _key_rows(k_base, stride_kd, stride_kn, idx1, offs_n, n_ok, MASKED))
            if K2 > 0:
                qk = tl.dot(q2, _key_rows(k_base, stride_kd, stride_kn, idx2, offs_n, n_ok, MASKED), qk)
            if K3 > 0:
                qk = tl.dot(q3, _key_rows(k_base, stride_kd, stride_kn, idx3, offs_n, n_ok, MASKED), qk)
            if MASKED:
                visible = n_ok[None, :]
                if CAUSAL:
                    visible = visible & (offs_n[None, :] <= offset + offs_m[:, None])
                qk = tl.where(visible, qk, float("-inf"))
            m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
            alpha = tl.math.exp2(m_i - m_ij)
            l_i = l_i * alpha + tl.sum(p, 1)
            v_ptrs = v_base + offs_n[:, None] * stride_vn + dv[None, :]
            if MASKED:
                vals = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
            else:
                vals = tl.load(v_ptrs)
            acc = tl.dot(p.to(vals.dtype), vals, acc * alpha[:, None])
            m_i = m_ij
        return acc, l_i, m_i

    @triton.jit
    def _prefill_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        o_ptr,
        idx_ptr,
        T,
        N,
        heads_q,
        G,
        k_keep,
        qk_scale,
        stride_qb,
        stride_qh,
        stride_qt,
        stride_kb,
        stride_kh,
        stride_kd,
        stride_kn,
        stride_vb,
        stride_vh,
        stride_vn,
        stride_ob,
        stride_oh,
        stride_ot,
        stride_ib,
        stride_ih,
        stride_it,
        D: tl.constexpr,
        DV: tl.constexpr,
        K1: tl.constexpr,
        K2: tl.constexpr,
        K3: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        SELECT: tl.constexpr,
        CAUSAL: tl.constexpr,
        WRITE_IDX: tl.constexpr,
    ):
        start_m = tl.num_programs(0) - 1 - tl.program_id(0)  # the longest causal rows first
        pid_bh = tl.program_id(1)
        b = (pid_bh // heads_q).to(tl.int64)
        h = pid_bh % heads_q
        hk = (h // G).to(tl.int64)
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_m < T
        q_base = q_ptr + b * stride_qb + h.to(tl.int64) * stride_qh
        k_base = k_ptr + b * stride_kb + hk * stride_kh
        v_base = v_ptr + b * stride_vb + hk * stride_vh
        if SELECT:
            dims = tl.arange(0, D)
            q_full = tl.load(
                q_base + offs_m[:, None] * stride_qt + dims[None, :], mask=row_ok[:, None], other=0.0
            )
            mag = tl.sum(tl.abs(q_full.to(tl.float32)), axis=0, keep_dims=True)  # [1, D]
            keep = _topk_keep(mag, k_keep, D)
            rank = tl.cumsum(keep.to(tl.int32), axis=1) - 1
            idx1, ok1 = _slots(keep, rank, 0, k_keep, D, K1)
            q1 = _gather_q(q_base, stride_qt, offs_m, row_ok, idx1, ok1)
            idx2, idx3, q2, q3 = idx1, idx1, q1, q1
            if K2 > 0:
                idx2, ok2 = _slots(keep, rank, K1, k_keep, D, K2)
                q2 = _gather_q(q_base, stride_qt, offs_m, row_ok, idx2, ok2)
            if K3 > 0:
                idx3, ok3 = _slots(keep, rank, K1 + K2, k_keep, D, K3)
                q3 = _gather_q(q_base, stride_qt, offs_m, row_ok, idx3, ok3)
            if WRITE_IDX:
                i_base = idx_ptr + b * stride_ib + h.to(tl.int64) * stride_ih + start_m * stride_it
                tl.store(i_base + tl.arange(0, K1), tl.where(ok1, idx1, -1))
                if K2 > 0:
                    tl.store(i_base + K1 + tl.arange(0, K2), tl.where(ok2, idx2, -1))
                if K3 > 0:
                    tl.store(i_base + K1 + K2 + tl.arange(0, K3), tl.where(ok3, idx3, -1))
        else:
            idx1 = tl.arange(0, K1)
            q1 = tl.load(
                q_base + offs_m[:, None] * stride_qt + idx1[None, :], mask=row_ok[:, None], other=0.0
            )
            idx2, idx3, q2, q3 = idx1, idx1, q1, q1
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, DV], dtype=tl.float32)
        offset = N - T
        m0 = start_m * BLOCK_M
        if CAUSAL:
            full_hi = ((offset + m0 + 1) // BLOCK_N) * BLOCK_N  # keys every row of the tile sees
            hi = tl.minimum(offset + m0 + BLOCK_M, N)
        else:
            full_hi = (N // BLOCK_N) * BLOCK_N
            hi = N
        acc, l_i, m_i = _attend(
            acc,
            l_i,
            m_i,
            q1,
            q2,
            q3,
            idx1,
            idx2,
            idx3,
            k_base,
            v_base,
            stride_kd,
            stride_kn,
            stride_vn,
            offs_m,
            0,
            full_hi,
            N,
            offset,
            qk_scale,
            K2,
            K3,
            DV,
            BLOCK_N,
            False,
            CAUSAL,
        )
        acc, l_i, m_i = _attend(
            acc,
            l_i,
            m_i,
            q1,
            q2,
            q3,
            idx1,
            idx2,
            idx3,
            k_base,
            v_base,
            stride_kd,
            stride_kn,
            stride_vn,
            offs_m,
            full_hi,
            hi,
            N,
            offset,
            qk_scale,
            K2,
            K3,
            DV,
            BLOCK_N,
            True,
            CAUSAL,
        )
        out = acc / l_i[:, None]
        dv = tl.arange(0, DV)
        o_base = o_ptr + b * stride_ob + h.to(tl.int64) * stride_oh
        tl.store(
            o_base + offs_m[:, None] * stride_ot + dv[None, :],
            out.to(o_ptr.dtype.element_ty),
            mask=row_ok[:, None],
        )


# ----------------------------------------------------------------------------- wrapper


def _is_pow2(x: int) -> bool:
    return x >= 1 and x & (x - 1) == 0


def _check_kernel_inputs(
    q_hat: torch.Tensor, k_hat_t: torch.Tensor, v: torch.Tensor, causal: bool
) -> tuple[int, int, int, int, int, int]:
    ref._check_tensor("q_hat", q_hat, 4, "[B, H_q, T, d]")
    ref._check_tensor("k_hat_t", k_hat_t, 4, "[B, H_kv, d, N]")
    ref._check_tensor("v", v, 4, "[B, H_kv, N, d_v]")
    B, hq, T, d = q_hat.shape
    if k_hat_t.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"batch sizes differ: q_hat {B}, k_hat_t {k_hat_t.shape[0]}, v {v.shape[0]}")
    if k_hat_t.shape[2] != d:
        raise ValueError(f"k_hat_t must be dim-major [B, H_kv, d={d}, N], got shape {tuple(k_hat_t.shape)}")
    hkv, N, dv = v.shape[1], v.shape[2], v.shape[3]
    if k_hat_t.shape[1] != hkv or k_hat_t.shape[3] != N:
        raise ValueError(
            f"v must match k_hat_t in heads and length, got k_hat_t {tuple(k_hat_t.shape)}, v {tuple(v.shape)}"
        )
    g = ref._group_size(hq, hkv, causal=causal, T=T, N=N)
    for name, x in (("d", d), ("d_v", dv)):
        if not _is_pow2(x) or not _MIN_DIM <= x <= 256:
            raise ValueError(f"{name} must be a power of two in [16, 256] for the Triton kernel, got {x}")
    return B, hq, T, d, N, g


def aqua_prefill(
    q_hat: torch.Tensor,
    k_hat_t: torch.Tensor,
    v: torch.Tensor,
    *,
    k_keep: int,
    causal: bool = True,
    scale: float | None = None,
    config: PrefillConfig | None = None,
    out: torch.Tensor | None = None,
    return_indices: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """Fused AQUA prefill with selection shared by each tile of ``config.block_m`` queries.

    q_hat [B, H_q, T, d] rotated queries; k_hat_t [B, H_kv, d, N] rotated dim-major keys; v
    [B, H_kv, N, d_v]; returns [B, H_q, T, d_v] in q's dtype (into ``out`` if given). k_keep =
    d runs the dense control (no gather). With ``return_indices``, also the kept dims
    [B, H_q, tiles, slots] (int32, ascending, -1 in unused slots; None at k = d).
    Without triton or CUDA (and no ``TRITON_INTERPRET=1``) it runs :func:`aqua_prefill_reference`.
    """
    B, hq, T, d, N, g = _check_kernel_inputs(q_hat, k_hat_t, v, causal)
    k_keep = check_int("k_keep", k_keep, minimum=1, maximum=d)
    if not isinstance(return_indices, bool):
        raise TypeError(f"return_indices must be True or False, got {return_indices!r}")
    cfg = default_config(d=d) if config is None else config
    if not isinstance(cfg, PrefillConfig):
        raise TypeError(f"config must be a PrefillConfig or None, got {type(cfg).__name__}")
    s = ref._scale(scale, d)
    dv = v.shape[3]
    if out is not None:
        if (
            not isinstance(out, torch.Tensor)
            or tuple(out.shape) != (B, hq, T, dv)
            or out.dtype != q_hat.dtype
            or out.stride(-1) != 1
        ):
            raise ValueError(
                f"out must be a tensor [B, H_q, T, d_v] = {(B, hq, T, dv)} of dtype {q_hat.dtype} with last "
                f"stride 1, got {getattr(out, 'shape', out)!r}"
            )
    parts = slot_parts(k_keep=k_keep, d=d)
    select = k_keep < d
    tiles = -(-T // cfg.block_m)
    if not triton_available(q_hat.device):
        idx_t = tile_indices(q_hat, k_keep=k_keep, block_m=cfg.block_m) if select else None
        res = aqua_prefill_reference(
            q_hat,
            k_hat_t.transpose(-1, -2),
            v,
            k_keep=k_keep,
            block_m=cfg.block_m,
            causal=causal,
            scale=s,
            indices=idx_t,
        )
        if out is not None:
            out.copy_(res)
            res = out
        if not return_indices:
            return res
        if idx_t is None:
            return res, None
        slots = torch.full((B, hq, tiles, sum(parts)), -1, dtype=torch.int32, device=q_hat.device)
        slots[..., :k_keep] = idx_t.to(torch.int32)
        return res, slots
    if q_hat.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError(
            f"q_hat and v must have last stride 1 (contiguous head dims), got strides {q_hat.stride()} and {v.stride()}"
        )
    if k_hat_t.dtype != v.dtype or q_hat.dtype != v.dtype:
        raise TypeError(
            f"q_hat, k_hat_t and v must share one dtype, got {q_hat.dtype}, {k_hat_t.dtype}, {v.dtype}"
        )
    o = torch.empty(B, hq, T, dv, dtype=q_hat.dtype, device=q_hat.device) if out is None else out
    write_idx = return_indices and select
    idx = (
        torch.full((B, hq, tiles, sum(parts)), -1, dtype=torch.int32, device=q_hat.device) if write_idx else o
    )
    k1, k2, k3 = parts
    grid = (tiles, B * hq)
    _prefill_kernel[grid](
        q_hat,
        k_hat_t,
        v,
        o,
        idx,
        T,
        N,
        hq,
        g,
        k_keep,
        s * LOG2_E,
        q_hat.stride(0),
        q_hat.stride(1),
        q_hat.stride(2),
        k_hat_t.stride(0),
        k_hat_t.stride(1),
        k_hat_t.stride(2),
        k_hat_t.stride(3),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        o.stride(0),
        o.stride(1),
        o.stride(2),
        *(idx.stride()[:3] if write_idx else (0, 0, 0)),
        D=d,
        DV=dv,
        K1=k1,
        K2=k2,
        K3=k3,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        SELECT=select,
        CAUSAL=causal,
        WRITE_IDX=write_idx,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    if not return_indices:
        return o
    return o, (idx if write_idx else None)


__all__ = [
    "BLOCK_MS",
    "KERNELS",
    "PrefillConfig",
    "aqua_prefill",
    "aqua_prefill_reference",
    "default_config",
    "slot_parts",
    "tile_indices",
    "tile_keep_mask",
]
