"""Fused split-N (flash-decoding) Triton kernels: AQUA decode on a dim-major key cache, and dense.

Layouts. Queries q [B, H_q, d] (one decode query per head; [B, H_q, 1, d] is accepted too).
AQUA keys are cached rotated and dim-major, so the k selected coordinates of a query are k rows
contiguous along N: either K^T [B, H_kv, m, N] (m <= d stored coordinates; any strides, e.g. a
``[..., :N]`` view of an aligned-capacity buffer, or the transposed view of a token-major cache)
or the paged layout of :class:`aqua_model.kernels.kv_cache.AquaKVCache`, [B, H_kv, pages, m, T]
(T tokens per page: the kept rows of one block of tokens lie in one T*m region). Values are
token-major [B, H_kv, N, d_v] and read in full, once per KV group.

Three launches (``KERNELS``):

1. ``_prologue_kernel``, one program per (batch, KV head): loads the group's g queries, rotates
   them by P (optional; fp32), optionally rotates the new key and appends it and the new value to
   the cache (the decode step of ``AquaKVCache``), selects the kept coordinates (top-k of |q^|
   per head, or of the sum of |q^| over the group, or given indices, or all), and writes the
   *union* of the group's kept rows (ascending, at most ``R`` of them) with, per head, q^ at
   those rows, zero where that head did not select the row.
2. ``_split_kernel``, one program per (batch, KV head, split of N): streams its chunk of N,
   loading each union row of K^T once (row-masked loads: unused slots move no bytes) and V once
   for all g heads; scores = q_sel @ K_rows on the tensor cores (head rows padded to 16; the row
   tile split into at most three power-of-two parts, e.g. 96 = 64 + 32, so that k = 96 is not
   padded to 128), online softmax in base 2, P @ V; writes an unnormalised partial output and
   (max, sum) per head.
3. ``_combine_kernel``, one program per (batch, query head), merges its splits (log-sum-exp).
   (Merging in the last split to finish, behind an atomic counter, saved the launch but put a
   serial loop over the splits on the critical path: 151 us against 135 us at B = 8, H_kv = 8,
   N = 16K, k = 96 on the H200, ``validation/results/h200/decode_v2_check_fused_combine.jsonl``.)

So per-head selection under GQA reads the union of the g heads' rows, the bytes the cost model
counts (``union_rows``), and group selection reads k rows per group.

Alignment. Triton specialises integer arguments divisible by 16; a dim-major row stride that
is not (K^T [.., m, N] contiguous with N % 16 != 0) makes every K load a scalar 2-byte load and
drops its cp.async pipelining (``validation/decode_ptx_check.py`` shows it in the PTX). Pass a
view of an aligned capacity (``AquaKVCache`` does: its rows are pages of T tokens).

Host overhead. ``aqua_decode`` caches, per argument signature (shapes, strides, dtypes,
alignment, options), the launch parameters, the workspaces and the compiled kernels, and
launches them through Triton's compiled-kernel launcher directly; no torch op runs on the hot
path except the output allocation (pass ``out=`` to avoid it). A CUDA graph captures a call
like any other stream work: warm it up once eagerly (compiles and allocates), then capture with
``torch.cuda.graph``; the workspaces are cached buffers, so replays reuse them (see
:func:`aqua_decode`).

The public wrappers fall back to the eager reference where triton or CUDA is missing
(``TRITON_INTERPRET=1`` runs the kernels on CPU tensors through Triton's interpreter).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Any

import torch

from aqua_model._checks import check_choice, check_int
from aqua_model.costs.split_rule import (
    DEFAULT_LAUNCHES,
    FUSED_PREFETCH_KEYS,
    FUSED_PREFETCH_VALUE_BLOCKS,
    GIVEN_LAUNCHES,
    LAUNCH_PATHS,
    MIN_ROWS,
    launch_rule,
    merge_chunk,
    padded_splits,
    row_parts,
    split_count,
)
from aqua_model.kernels import reference as ref
from aqua_model.kernels.performance import PerformanceWarning

try:  # triton is optional: the module imports and falls back without it
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the machine
    triton = None
    tl = None
    HAS_TRITON = False


def _patch_interpreter_index() -> None:
    """Triton 3.6's interpreter turns 1-element arrays into loop bounds with int(), which numpy
    >= 2.4 refuses; take the element instead (only under TRITON_INTERPRET=1)."""
    from triton.runtime import interpreter as it

    orig = it._patch_lang_tensor
    if getattr(orig, "aqua_patched", False):
        return

    def patched(tensor: Any, scope: Any) -> None:
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched.aqua_patched = True  # type: ignore[attr-defined]
    it._patch_lang_tensor = patched


if HAS_TRITON and os.environ.get("TRITON_INTERPRET") == "1":
    _patch_interpreter_index()

SELECTIONS = ("per-head", "group")
#: Where the kept coordinates are chosen. "prepass" and "kernel": in the Triton prologue (the
#: same launch; "kernel" is kept for callers of the first version, which selected inside pass 1);
#: "torch": torch.topk first, the indices then passed to the prologue.
SELECT_WHERE = ("kernel", "prepass", "torch")
#: The CUDA kernels one call launches, in order (what the ``aqua-fused`` plan lists).
KERNELS = ("_prologue_kernel", "_split_kernel", "_combine_kernel")
#: The CUDA kernel the one-launch path runs (the default: what the ``aqua-fused`` plan lists).
FUSED_KERNELS = ("_fused_kernel",)
_SEL_ALL, _SEL_GIVEN, _SEL_HEAD, _SEL_GROUP = 0, 1, 2, 3
#: Blocks of V the one-launch kernel may prefetch into L2 before its selection (a power of two:
#: the prefetch tile is blocks x block_n tokens).
PREFETCH_VALUE_BLOCKS = (0, 1, 2, 4)
#: Bytes of one L2 line (the unit one prefetch instruction brings in).
L2_LINE_BYTES = 128
#: Later one-launch calls pass their pointers to Triton's C launcher as integer addresses
#: (:meth:`_Kernel.launch_ints`); False sends tensors through Triton's launcher object as the
#: first call does (kept for the host-time comparison of ``validation/host_overhead.py``).
LAUNCH_BY_ADDRESS = True
#: Per-head selection ranks each head in turn (:func:`_rank_keep`) up to this many heads per KV
#: group, and sorts the whole 16-row tile (:func:`_topk_mask`) above it. The static SASS counts
#: (about 890 instructions a head against 3430 for the sort, ``validation/select_sass.py``) broke
#: even at 3.9 heads, but timed on the H200 the sort is as fast or faster at every group size
#: (``validation/results/h200/kernels-v5-headrank/decode_v3_headrank.jsonl``, CUDA-graph medians
#: of three interleaved rounds): g = 3 (SmolLM2's 9 / 3, B = 1, N = 4096) 13.1 us sorted against
#: 17.4 us ranked, g = 2 (16 / 8) 19.0 against 23.7 us, g = 1 (MHA, B = 1, N = 4096) 26.7
#: against 28.3 us. So 0: per-head selection always sorts (the rank path stays for the
#: ``headrank`` ablation of ``validation/bench_decode_v3.py``); group selection ranks the sum.
HEAD_RANK_MAX_GROUP = 0
_MIN_ROWS = MIN_ROWS  # query rows per program: the smallest tensor-core tile
#: PAGE constexpr of an unpaged layout: every block then lies in "page" 0.
_NO_PAGE = 1 << 30
# The launch rule (row tiles, token blocks, split counts: PROGRAMS_PER_SM, MIN_BLOCKS_PER_SPLIT)
# has one home, aqua_model.costs.split_rule, which the simulator reads too.


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """Launch parameters of the split kernel.

    block_n: tokens per loop step; num_warps / num_stages: Triton's; programs_per_sm: the split
    count is chosen so that batch * H_kv * splits is about this many programs per SM (None: the
    rule's default); num_splits: an explicit split count (overrides programs_per_sm); launches: 1
    for the one-launch kernel (``FUSED_KERNELS``), 3 for the prologue, split pass and combine
    (``KERNELS``). prefetch_value_blocks / prefetch_keys: the one-launch kernel's L2 prefetches
    before its selection (:data:`aqua_model.costs.split_rule.FUSED_PREFETCH_VALUE_BLOCKS`: 0, 1, 2
    or 4 blocks of V; ``FUSED_PREFETCH_KEYS``: every stored key row of the first block); CUDA
    only (Triton's interpreter has no inline PTX, so it runs without them).
    """

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    programs_per_sm: int | None = None
    num_splits: int | None = None
    launches: int = DEFAULT_LAUNCHES
    prefetch_value_blocks: int = FUSED_PREFETCH_VALUE_BLOCKS
    prefetch_keys: bool = FUSED_PREFETCH_KEYS

    def __post_init__(self) -> None:
        if self.launches not in LAUNCH_PATHS:
            raise ValueError(f"DecodeConfig.launches must be one of {LAUNCH_PATHS}, got {self.launches!r}")
        if (
            type(self.prefetch_value_blocks) is not int
            or self.prefetch_value_blocks not in PREFETCH_VALUE_BLOCKS
        ):
            raise ValueError(
                f"DecodeConfig.prefetch_value_blocks must be one of {PREFETCH_VALUE_BLOCKS}, "
                f"got {self.prefetch_value_blocks!r}"
            )
        if type(self.prefetch_keys) is not bool:
            raise ValueError(f"DecodeConfig.prefetch_keys must be a bool, got {self.prefetch_keys!r}")


def triton_available(device: torch.device | None = None) -> bool:
    """True when the Triton kernels can run on ``device`` (CUDA, or the Triton interpreter)."""
    if not HAS_TRITON:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return device is not None and device.type == "cuda"


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def tile_rows(*, m: int, k_keep: int, group: int, mode: int, shared: bool) -> int:
    """Most key rows one program reads: all m (dense), k (the group shares one selection, or one
    head per group), or the largest possible union of the g heads' selections, min(m, g * k)."""
    if mode == _SEL_ALL:
        return m
    if shared or group == 1:
        return k_keep
    return min(m, group * k_keep)


if HAS_TRITON:

    @triton.jit
    def _topk_mask(mag, k_keep, D_PAD: tl.constexpr):
        """Mask of the k_keep largest entries of each row of ``mag`` [.., D_PAD] (ties: lower
        index first, as :func:`aqua_model.kernels.reference.top_indices`; entries < 0 are padding
        and never among them when k_keep <= valid count). The k-th largest value comes from a
        sort of the row (a bisection on the float bits, 31 rounds of a row count, measured slower
        on the H200: ``validation/results/h200/decode_v3_tune_bisect.jsonl``)."""
        srt = tl.sort(mag, dim=len(mag.shape) - 1)
        cols = tl.arange(0, D_PAD)
        thr = tl.sum(tl.where(cols == D_PAD - k_keep, srt, 0.0), axis=len(mag.shape) - 1)
        thr = tl.expand_dims(thr, len(mag.shape) - 1)
        gt = mag > thr
        eq = mag == thr
        need = k_keep - tl.sum(gt.to(tl.int32), axis=len(mag.shape) - 1)
        eq_rank = tl.cumsum(eq.to(tl.int32), axis=len(mag.shape) - 1)
        return gt | (eq & (eq_rank <= tl.expand_dims(need, len(mag.shape) - 1)))

    @triton.jit
    def _rank_keep(a, k_keep, D_PAD: tl.constexpr):
        """Mask of the k_keep largest entries of ``a`` [D_PAD] by rank: entry i is kept when
        fewer than k_keep entries beat it (a larger value, or an equal one at a lower index: the
        ties rule of :func:`aqua_model.kernels.reference.top_indices`; entries < 0 are padding).
        D_PAD^2 compares, summed down the compared axis (axis 0, which Triton's layout keeps in
        each thread's registers: 832 SASS instructions at D_PAD = 128 and 4 warps against 3272 for
        the sort of :func:`_topk_mask` on a 16-row tile, ``validation/select_sass.py``)."""
        i = tl.arange(0, D_PAD)
        beats = (a[:, None] > a[None, :]) | ((a[:, None] == a[None, :]) & (i[:, None] < i[None, :]))
        return tl.sum(beats.to(tl.int32), axis=0) < k_keep

    @triton.jit
    def _select_mask(
        qh,
        given_ptr,
        b,
        h,
        G,
        k_keep,
        stride_gb,
        stride_gh,
        stride_gs,
        D_PAD: tl.constexpr,
        M_KEY: tl.constexpr,
        ROWS: tl.constexpr,
        SELECT: tl.constexpr,
        GIVEN_PER_HEAD: tl.constexpr,
        HEAD_RANK: tl.constexpr,
    ):
        """Kept coordinates of the group's g heads, a [ROWS, D_PAD] mask over q^ [ROWS, D_PAD]
        (fp32): all stored ones, given indices, top-k of |q^| per head (HEAD_RANK: each head by
        :func:`_rank_keep`, else one sort of the tile, :func:`_topk_mask`), or of its group sum
        (:func:`_rank_keep`)."""
        rows = tl.arange(0, ROWS)
        dims = tl.arange(0, D_PAD)
        head_ok = rows < G
        key_ok = head_ok[:, None] & (dims < M_KEY)[None, :]
        if SELECT == 0:  # all stored coordinates (the dense control)
            sel = key_ok
        elif SELECT == 1:  # given indices: [.., G, k] per head or [.., k] per group
            sel = key_ok & (dims[None, :] < 0)  # all false, in the tile's shape
            for s in range(0, k_keep):
                if GIVEN_PER_HEAD:
                    col = tl.load(
                        given_ptr + b * stride_gb + (h * G + rows) * stride_gh + s * stride_gs,
                        mask=head_ok,
                        other=-1,
                    )
                else:
                    col = tl.load(given_ptr + b * stride_gb + h * stride_gh + s * stride_gs + rows * 0)
                sel = sel | (col[:, None] == dims[None, :])
            sel = sel & key_ok
        elif SELECT == 2:  # per head: top-k of |q^|
            mag = tl.where(key_ok, tl.abs(qh), -1.0)
            if HEAD_RANK:  # each head ranked in turn (few heads: cheaper than sorting the tile)
                sel = key_ok & (dims[None, :] < 0)  # all false, in the tile's shape
                for r in range(0, G):
                    row = (rows == r)[:, None]
                    keep = _rank_keep(tl.max(tl.where(row, mag, -1.0), axis=0), k_keep, D_PAD)
                    sel = sel | (row & keep[None, :])
                sel = sel & key_ok
            else:
                sel = _topk_mask(mag, k_keep, D_PAD) & key_ok
        else:  # per group: top-k of the sum of |q^| over the g heads, by rank
            gm = tl.sum(tl.where(key_ok, tl.abs(qh), 0.0), axis=0)
            gm = tl.where(dims < M_KEY, gm, -1.0)
            sel = _rank_keep(gm, k_keep, D_PAD)[None, :] & key_ok
        return sel

    @triton.jit
    def _group_queries(
        q_ptr,
        p_ptr,
        given_ptr,
        kn_ptr,
        vn_ptr,
        kc_ptr,
        vc_ptr,
        b,
        h,
        G,
        k_keep,
        pos,
        write,
        stride_qb,
        stride_qh,
        stride_ph,
        stride_gb,
        stride_gh,
        stride_gs,
        stride_knb,
        stride_knh,
        stride_vnb,
        stride_vnh,
        stride_kcb,
        stride_kch,
        stride_kct,
        stride_kcd,
        stride_vcb,
        stride_vch,
        stride_vcn,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        M_KEY: tl.constexpr,
        ROWS: tl.constexpr,
        DV: tl.constexpr,
        PAGE: tl.constexpr,
        ROTATE: tl.constexpr,
        SELECT: tl.constexpr,
        APPEND: tl.constexpr,
        GIVEN_PER_HEAD: tl.constexpr,
        HEAD_RANK: tl.constexpr,
    ):
        """The group's g queries as a [ROWS, D_PAD] fp32 tile of q^ (rotated by P when ROTATE, then
        rounded to q's dtype) and the mask of their kept coordinates (:func:`_select_mask`). With
        APPEND the new key rides in row G, is rotated with the queries, and, where ``write``, k^
        and the new value are stored at position ``pos`` of the cache."""
        rows = tl.arange(0, ROWS)
        dims = tl.arange(0, D_PAD)
        head_ok = rows < G
        dim_ok = dims < D
        x = tl.load(
            q_ptr + b * stride_qb + (h * G + rows)[:, None] * stride_qh + dims[None, :],
            mask=head_ok[:, None] & dim_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        if APPEND:  # the new key rides in row G of the tile and is rotated with the queries
            kn = tl.load(kn_ptr + b * stride_knb + h * stride_knh + dims, mask=dim_ok, other=0.0).to(
                tl.float32
            )
            x = tl.where((rows == G)[:, None], kn[None, :], x)
        if ROTATE:
            pm = tl.load(
                p_ptr + h * stride_ph + dims[:, None] * D + dims[None, :],
                mask=dim_ok[:, None] & dim_ok[None, :],
                other=0.0,
            )
            x = tl.dot(x, pm, input_precision="tf32x3")
        if APPEND:  # row G of the tile is k^: a store masked to that row writes its first m coordinates
            kc = kc_ptr + b * stride_kcb + h * stride_kch + (pos // PAGE) * stride_kct + (pos % PAGE)
            tl.store(
                kc + rows[:, None] * 0 + dims[None, :] * stride_kcd,
                x.to(kc_ptr.dtype.element_ty),
                mask=(rows == G)[:, None] & (dims < M_KEY)[None, :] & write,
            )
            offs_dv = tl.arange(0, DV)
            vn = tl.load(vn_ptr + b * stride_vnb + h * stride_vnh + offs_dv)
            tl.store(
                vc_ptr + b * stride_vcb + h * stride_vch + pos * stride_vcn + offs_dv,
                vn.to(vc_ptr.dtype.element_ty),
                mask=(offs_dv < DV) & write,
            )
        qh = x.to(q_ptr.dtype.element_ty).to(tl.float32)  # q^ at its storage precision
        sel = _select_mask(
            qh,
            given_ptr,
            b,
            h,
            G,
            k_keep,
            stride_gb,
            stride_gh,
            stride_gs,
            D_PAD,
            M_KEY,
            ROWS,
            SELECT,
            GIVEN_PER_HEAD,
            HEAD_RANK,
        )
        return qh, sel

    @triton.jit(do_not_specialize=["G", "heads_kv", "k_keep", "pos"])
    def _prologue_kernel(
        q_ptr,
        p_ptr,
        given_ptr,
        qs_ptr,
        idx_ptr,
        cnt_ptr,
        kn_ptr,
        vn_ptr,
        kc_ptr,
        vc_ptr,
        G,
        heads_kv,
        k_keep,
        pos,
        stride_qb,
        stride_qh,
        stride_ph,
        stride_gb,
        stride_gh,
        stride_gs,
        stride_knb,
        stride_knh,
        stride_vnb,
        stride_vnh,
        stride_kcb,
        stride_kch,
        stride_kct,
        stride_kcd,
        stride_vcb,
        stride_vch,
        stride_vcn,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        M_KEY: tl.constexpr,
        ROWS: tl.constexpr,
        R_TOT: tl.constexpr,
        DV: tl.constexpr,
        PAGE: tl.constexpr,
        ROTATE: tl.constexpr,
        SELECT: tl.constexpr,
        APPEND: tl.constexpr,
        GIVEN_PER_HEAD: tl.constexpr,
        HEAD_RANK: tl.constexpr,
    ):
        pid = tl.program_id(0)  # b * heads_kv + h
        b = (pid // heads_kv).to(tl.int64)
        h = pid % heads_kv
        qh, sel = _group_queries(
            q_ptr,
            p_ptr,
            given_ptr,
            kn_ptr,
            vn_ptr,
            kc_ptr,
            vc_ptr,
            b,
            h,
            G,
            k_keep,
            pos,
            True,
            stride_qb,
            stride_qh,
            stride_ph,
            stride_gb,
            stride_gh,
            stride_gs,
            stride_knb,
            stride_knh,
            stride_vnb,
            stride_vnh,
            stride_kcb,
            stride_kch,
            stride_kct,
            stride_kcd,
            stride_vcb,
            stride_vch,
            stride_vcn,
            D,
            D_PAD,
            M_KEY,
            ROWS,
            DV,
            PAGE,
            ROTATE,
            SELECT,
            APPEND,
            GIVEN_PER_HEAD,
            HEAD_RANK,
        )
        rows = tl.arange(0, ROWS)
        dims = tl.arange(0, D_PAD)
        u = tl.max(sel.to(tl.int32), axis=0)  # [D_PAD]: the union of the group's rows
        cnt = tl.sum(u, axis=0)
        slot_of = tl.cumsum(u, axis=0) - 1  # ascending compaction: row j goes to slot slot_of[j]
        in_union = (u > 0) & (slot_of < R_TOT)
        tl.store(idx_ptr + pid * R_TOT + slot_of, dims, mask=in_union)
        qm = tl.where(sel, qh, 0.0)  # each head's q^ at its own rows, zero at the others' rows
        tl.store(
            qs_ptr + pid * (ROWS * R_TOT) + rows[:, None] * R_TOT + slot_of[None, :],
            qm.to(qs_ptr.dtype.element_ty),
            mask=in_union[None, :],
        )
        tl.store(cnt_ptr + pid, cnt)

    @triton.jit
    def _load_part(
        qs_ptr,
        idx_ptr,
        pid,
        cnt,
        stride_kd,
        OFF: tl.constexpr,
        R: tl.constexpr,
        ROWS: tl.constexpr,
        R_TOT: tl.constexpr,
    ):
        """One part of the row tile: q^ at its rows [ROWS, R], the rows' int32 offsets, validity."""
        slots = OFF + tl.arange(0, R)
        valid = slots < cnt  # slots past the union are never written by the prologue
        idx = tl.load(idx_ptr + pid * R_TOT + slots, mask=valid, other=0)
        rows = tl.arange(0, ROWS)
        q = tl.load(
            qs_ptr + pid * (ROWS * R_TOT) + rows[:, None] * R_TOT + slots[None, :],
            mask=valid[None, :],
            other=0.0,
        )
        return q, idx * stride_kd, valid

    @triton.jit
    def _part_scores(q, k_blk, rowoff, valid, offs_k, n_ok, MASK_N: tl.constexpr):
        ptrs = k_blk + (rowoff[:, None] + offs_k[None, :])
        if MASK_N:
            kt = tl.load(ptrs, mask=valid[:, None] & n_ok[None, :], other=0.0)
        else:
            kt = tl.load(ptrs, mask=valid[:, None], other=0.0)
        return tl.dot(q.to(kt.dtype), kt)

    @triton.jit
    def _block_step(
        blk,
        end,
        q0,
        ro0,
        ok0,
        q1,
        ro1,
        ok1,
        q2,
        ro2,
        ok2,
        k_base,
        v_base,
        stride_kt,
        stride_kn,
        stride_vn,
        m_i,
        l_i,
        acc,
        scale_log2,
        R1: tl.constexpr,
        R2: tl.constexpr,
        BLOCK_N: tl.constexpr,
        DV: tl.constexpr,
        PAGE: tl.constexpr,
        MASK_N: tl.constexpr,
    ):
        n0 = blk * BLOCK_N
        offs = tl.arange(0, BLOCK_N)
        # page arithmetic on block numbers keeps the offsets' divisibility visible to the compiler
        # (n0 // PAGE and n0 % PAGE on token numbers would hide it and make every load scalar)
        BLOCKS_PER_PAGE: tl.constexpr = PAGE // BLOCK_N
        # (int32 offsets inside one (batch, head) slice: the wrapper checks it has < 2^31 elements)
        k_blk = k_base + (
            (blk // BLOCKS_PER_PAGE) * stride_kt + (blk % BLOCKS_PER_PAGE) * (BLOCK_N * stride_kn)
        )
        offs_k = offs * stride_kn
        n_ok = (n0 + offs) < end
        s = _part_scores(q0, k_blk, ro0, ok0, offs_k, n_ok, MASK_N)
        if R1 > 0:
            s += _part_scores(q1, k_blk, ro1, ok1, offs_k, n_ok, MASK_N)
        if R2 > 0:
            s += _part_scores(q2, k_blk, ro2, ok2, offs_k, n_ok, MASK_N)
        offs_dv = tl.arange(0, DV)
        vptr = v_base + n0 * stride_vn + (offs[:, None] * stride_vn + offs_dv[None, :])
        if MASK_N:
            vt = tl.load(vptr, mask=n_ok[:, None], other=0.0)
            s = tl.where(n_ok[None, :], s * scale_log2, float("-inf"))
        else:
            vt = tl.load(vptr)
            s = s * scale_log2
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
        return m_new, l_i, acc

    @triton.jit
    def _stream_chunk(
        q0,
        ro0,
        ok0,
        q1,
        ro1,
        ok1,
        q2,
        ro2,
        ok2,
        k_base,
        v_base,
        N,
        blk0,
        chunk_blocks,
        stride_kt,
        stride_kn,
        stride_vn,
        scale_log2,
        ROWS: tl.constexpr,
        R1: tl.constexpr,
        R2: tl.constexpr,
        DV: tl.constexpr,
        BLOCK_N: tl.constexpr,
        PAGE: tl.constexpr,
    ):
        """Online softmax of the ROWS query rows over tokens [blk0, blk0 + chunk_blocks) blocks of
        N: (running max, running sum, unnormalised output) in base 2."""
        m_i = tl.full([ROWS], float("-inf"), tl.float32)
        l_i = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([ROWS, DV], tl.float32)
        end = tl.minimum((blk0 + chunk_blocks) * BLOCK_N, N)
        blk_full = end // BLOCK_N
        for blk in range(blk0, blk_full):
            m_i, l_i, acc = _block_step(
                blk,
                end,
                q0,
                ro0,
                ok0,
                q1,
                ro1,
                ok1,
                q2,
                ro2,
                ok2,
                k_base,
                v_base,
                stride_kt,
                stride_kn,
                stride_vn,
                m_i,
                l_i,
                acc,
                scale_log2,
                R1,
                R2,
                BLOCK_N,
                DV,
                PAGE,
                False,
            )
        if blk_full * BLOCK_N < end:
            m_i, l_i, acc = _block_step(
                blk_full,
                end,
                q0,
                ro0,
                ok0,
                q1,
                ro1,
                ok1,
                q2,
                ro2,
                ok2,
                k_base,
                v_base,
                stride_kt,
                stride_kn,
                stride_vn,
                m_i,
                l_i,
                acc,
                scale_log2,
                R1,
                R2,
                BLOCK_N,
                DV,
                PAGE,
                True,
            )
        return m_i, l_i, acc

    @triton.jit(do_not_specialize=["N", "chunk_blocks", "G", "heads_kv", "num_splits"])
    def _split_kernel(
        qs_ptr,
        idx_ptr,
        cnt_ptr,
        k_ptr,
        v_ptr,
        part_acc_ptr,
        part_ml_ptr,
        N,
        chunk_blocks,
        G,
        heads_kv,
        num_splits,
        scale_log2,
        stride_kb,
        stride_kh,
        stride_kt,
        stride_kd,
        stride_kn,
        stride_vb,
        stride_vh,
        stride_vn,
        ROWS: tl.constexpr,
        R0: tl.constexpr,
        R1: tl.constexpr,
        R2: tl.constexpr,
        DV: tl.constexpr,
        BLOCK_N: tl.constexpr,
        PAGE: tl.constexpr,
    ):
        pid = tl.program_id(0)  # b * heads_kv + h
        pid_s = tl.program_id(1)  # split
        b = (pid // heads_kv).to(tl.int64)  # 64-bit offsets: caches can exceed 2^31 elements
        h = pid % heads_kv
        R_TOT: tl.constexpr = R0 + R1 + R2
        cnt = tl.load(cnt_ptr + pid)
        k_base = k_ptr + b * stride_kb + h * stride_kh
        q0, ro0, ok0 = _load_part(qs_ptr, idx_ptr, pid, cnt, stride_kd, 0, R0, ROWS, R_TOT)
        if R1 > 0:
            q1, ro1, ok1 = _load_part(qs_ptr, idx_ptr, pid, cnt, stride_kd, R0, R1, ROWS, R_TOT)
        else:
            q1, ro1, ok1 = q0, ro0, ok0
        if R2 > 0:
            q2, ro2, ok2 = _load_part(qs_ptr, idx_ptr, pid, cnt, stride_kd, R0 + R1, R2, ROWS, R_TOT)
        else:
            q2, ro2, ok2 = q0, ro0, ok0
        v_base = v_ptr + b * stride_vb + h * stride_vh

        m_i, l_i, acc = _stream_chunk(
            q0,
            ro0,
            ok0,
            q1,
            ro1,
            ok1,
            q2,
            ro2,
            ok2,
            k_base,
            v_base,
            N,
            pid_s * chunk_blocks,
            chunk_blocks,
            stride_kt,
            stride_kn,
            stride_vn,
            scale_log2,
            ROWS,
            R1,
            R2,
            DV,
            BLOCK_N,
            PAGE,
        )
        rows = tl.arange(0, ROWS)
        head_ok = rows < G
        head = pid * G + rows  # b * H_q + h * G + row
        offs_dv = tl.arange(0, DV)
        part = head * num_splits + pid_s
        tl.store(part_acc_ptr + part[:, None] * DV + offs_dv[None, :], acc, mask=head_ok[:, None])
        tl.store(part_ml_ptr + part * 2, m_i, mask=head_ok)
        tl.store(part_ml_ptr + part * 2 + 1, l_i, mask=head_ok)

    @triton.jit
    def _gather_part(qm, u, slot_of, stride_kd, OFF: tl.constexpr, R: tl.constexpr, D_PAD: tl.constexpr):
        """One part of the row tile, compacted in registers: q^ at slots [OFF, OFF + R) of the
        union [ROWS, R] (a one-hot matmul: exact, one nonzero product per entry), the rows'
        int32 offsets and their validity."""
        dims = tl.arange(0, D_PAD)
        slots = OFF + tl.arange(0, R)
        hit = (u > 0)[:, None] & (slot_of[:, None] == slots[None, :])  # [D_PAD, R]: row j in slot r
        idx = tl.sum(tl.where(hit, dims[:, None], 0), axis=0)
        valid = tl.sum(hit.to(tl.int32), axis=0) > 0
        q = tl.dot(qm, hit.to(qm.dtype))
        return q, idx * stride_kd, valid

    @triton.jit
    def _merge_splits(
        part_acc_ptr,
        part_ml_ptr,
        out_ptr,
        first_head,
        G,
        num_splits,
        DV: tl.constexpr,
        S_PAD: tl.constexpr,
        H_CHUNK: tl.constexpr,
    ):
        """Log-sum-exp merge of the splits of heads first_head .. first_head + G - 1, H_CHUNK heads
        at a time, each chunk's partials loaded at once ([H_CHUNK, S_PAD, DV]: one round trip to L2
        per chunk, not per head); reads bypass L1 (.cg: written by other programs)."""
        s = tl.arange(0, S_PAD)
        r = tl.arange(0, H_CHUNK)
        offs_dv = tl.arange(0, DV)
        for r0 in range(0, G, H_CHUNK):
            head = first_head + r0 + r
            head_ok = (r0 + r) < G
            ok = head_ok[:, None] & (s < num_splits)[None, :]
            part = head[:, None] * num_splits + s[None, :]
            m = tl.load(part_ml_ptr + part * 2, mask=ok, other=float("-inf"), cache_modifier=".cg")
            l = tl.load(part_ml_ptr + part * 2 + 1, mask=ok, other=0.0, cache_modifier=".cg")
            acc = tl.load(
                part_acc_ptr + part[:, :, None] * DV + offs_dv[None, None, :],
                mask=ok[:, :, None],
                other=0.0,
                cache_modifier=".cg",
            )
            m_all = tl.max(m, axis=1)
            w = tl.where(ok, tl.exp2(m - m_all[:, None]), 0.0)
            num = tl.sum(acc * w[:, :, None], axis=1)
            den = tl.sum(l * w, axis=1)
            tl.store(
                out_ptr + head[:, None] * DV + offs_dv[None, :],
                (num / den[:, None]).to(out_ptr.dtype.element_ty),
                mask=head_ok[:, None],
            )

    @triton.jit
    def _prefetch_l2(ptrs):
        """Ask L2 for the lines at ``ptrs`` (PTX ``prefetch.global.L2``: no registers written, no
        wait; a later load of those bytes then hits L2 or joins the request in flight)."""
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;",
            "=r,l",
            [ptrs],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )

    @triton.jit
    def _prefetch_chunk(
        k_base,
        v_base,
        blk0,
        end,
        stride_kt,
        stride_kd,
        stride_kn,
        stride_vn,
        M_KEY: tl.constexpr,
        D_PAD: tl.constexpr,
        DV: tl.constexpr,
        BLOCK_N: tl.constexpr,
        PAGE: tl.constexpr,
        PREFETCH_V: tl.constexpr,
        V_LINES: tl.constexpr,
        PREFETCH_K: tl.constexpr,
    ):
        """L2 prefetches of a program's first tokens, issued before its selection: the first
        PREFETCH_V blocks of its V rows (V_LINES lines a token; tokens past the chunk's ``end``
        are clamped to its last one), and with PREFETCH_K every stored key row of its first
        block (one line a row: BLOCK_N tokens of one row)."""
        if PREFETCH_V > 0:
            t = blk0 * BLOCK_N + tl.arange(0, PREFETCH_V * BLOCK_N)
            t = tl.minimum(t, end - 1)
            line = tl.arange(0, V_LINES) * (DV // V_LINES)
            _prefetch_l2(v_base + (t[:, None] * stride_vn + line[None, :]))
        if PREFETCH_K and stride_kn == 1:  # dim-major rows (a token-major view has no key lines to ask for)
            BLOCKS_PER_PAGE: tl.constexpr = PAGE // BLOCK_N
            k_blk = k_base + (
                (blk0 // BLOCKS_PER_PAGE) * stride_kt + (blk0 % BLOCKS_PER_PAGE) * (BLOCK_N * stride_kn)
            )
            r = tl.minimum(tl.arange(0, D_PAD), M_KEY - 1)
            _prefetch_l2(k_blk + r * stride_kd)

    @triton.jit(do_not_specialize=["N", "chunk_blocks", "G", "heads_kv", "k_keep", "pos", "num_splits"])
    def _fused_kernel(
        q_ptr,
        p_ptr,
        given_ptr,
        kn_ptr,
        vn_ptr,
        k_ptr,
        v_ptr,
        part_acc_ptr,
        part_ml_ptr,
        count_ptr,
        cnt_ptr,
        out_ptr,
        N,
        chunk_blocks,
        G,
        heads_kv,
        k_keep,
        pos,
        num_splits,
        scale_log2,
        stride_qb,
        stride_qh,
        stride_ph,
        stride_gb,
        stride_gh,
        stride_gs,
        stride_knb,
        stride_knh,
        stride_vnb,
        stride_vnh,
        stride_kb,
        stride_kh,
        stride_kt,
        stride_kd,
        stride_kn,
        stride_vb,
        stride_vh,
        stride_vn,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        M_KEY: tl.constexpr,
        ROWS: tl.constexpr,
        R0: tl.constexpr,
        R1: tl.constexpr,
        R2: tl.constexpr,
        DV: tl.constexpr,
        BLOCK_N: tl.constexpr,
        PAGE: tl.constexpr,
        ROTATE: tl.constexpr,
        SELECT: tl.constexpr,
        APPEND: tl.constexpr,
        GIVEN_PER_HEAD: tl.constexpr,
        HEAD_RANK: tl.constexpr,
        S_PAD: tl.constexpr,
        H_CHUNK: tl.constexpr,
        PREFETCH_V: tl.constexpr,
        V_LINES: tl.constexpr,
        PREFETCH_K: tl.constexpr,
    ):
        """The whole decode call in one launch, one program per (batch, KV head, split of N): each
        program selects its group's kept rows itself (:func:`_group_queries`), compacts them in
        registers (:func:`_gather_part`), streams its chunk (:func:`_stream_chunk`); one split
        writes the output, several write partials and the last program of the (batch, KV head) to
        finish (an acq_rel atomic counter, reset by that program) merges them (:func:`_merge_splits`).
        S_PAD == 1 compiles the one-split variant; PREFETCH_V / PREFETCH_K its L2 prefetches
        (:func:`_prefetch_chunk`), issued first."""
        pid = tl.program_id(0)  # b * heads_kv + h
        pid_s = tl.program_id(1)  # split
        b = (pid // heads_kv).to(tl.int64)
        h = pid % heads_kv
        k_base = k_ptr + b * stride_kb + h * stride_kh
        v_base = v_ptr + b * stride_vb + h * stride_vh
        if PREFETCH_V > 0 or PREFETCH_K:
            _prefetch_chunk(
                k_base,
                v_base,
                pid_s * chunk_blocks,
                tl.minimum((pid_s + 1) * chunk_blocks * BLOCK_N, N),
                stride_kt,
                stride_kd,
                stride_kn,
                stride_vn,
                M_KEY,
                D_PAD,
                DV,
                BLOCK_N,
                PAGE,
                PREFETCH_V,
                V_LINES,
                PREFETCH_K,
            )
        # the cache step: the program whose chunk holds the new token writes it, then streams it
        write = pid_s == pos // (chunk_blocks * BLOCK_N)
        qh, sel = _group_queries(
            q_ptr,
            p_ptr,
            given_ptr,
            kn_ptr,
            vn_ptr,
            k_ptr,
            v_ptr,
            b,
            h,
            G,
            k_keep,
            pos,
            write,
            stride_qb,
            stride_qh,
            stride_ph,
            stride_gb,
            stride_gh,
            stride_gs,
            stride_knb,
            stride_knh,
            stride_vnb,
            stride_vnh,
            stride_kb,
            stride_kh,
            stride_kt,
            stride_kd,
            stride_vb,
            stride_vh,
            stride_vn,
            D,
            D_PAD,
            M_KEY,
            ROWS,
            DV,
            PAGE,
            ROTATE,
            SELECT,
            APPEND,
            GIVEN_PER_HEAD,
            HEAD_RANK,
        )
        if APPEND:  # the appended k^ and v are read back by this program's other threads
            tl.debug_barrier()
        u = tl.max(sel.to(tl.int32), axis=0)  # [D_PAD]: the union of the group's rows
        slot_of = tl.cumsum(u, axis=0) - 1  # ascending compaction: row j goes to slot slot_of[j]
        tl.store(cnt_ptr + pid, tl.sum(u, axis=0), mask=pid_s == 0)  # the union's size (diagnostic)
        qm = tl.where(sel, qh, 0.0).to(q_ptr.dtype.element_ty)  # each head's q^ at its own rows
        q0, ro0, ok0 = _gather_part(qm, u, slot_of, stride_kd, 0, R0, D_PAD)
        if R1 > 0:
            q1, ro1, ok1 = _gather_part(qm, u, slot_of, stride_kd, R0, R1, D_PAD)
        else:
            q1, ro1, ok1 = q0, ro0, ok0
        if R2 > 0:
            q2, ro2, ok2 = _gather_part(qm, u, slot_of, stride_kd, R0 + R1, R2, D_PAD)
        else:
            q2, ro2, ok2 = q0, ro0, ok0
        m_i, l_i, acc = _stream_chunk(
            q0,
            ro0,
            ok0,
            q1,
            ro1,
            ok1,
            q2,
            ro2,
            ok2,
            k_base,
            v_base,
            N,
            pid_s * chunk_blocks,
            chunk_blocks,
            stride_kt,
            stride_kn,
            stride_vn,
            scale_log2,
            ROWS,
            R1,
            R2,
            DV,
            BLOCK_N,
            PAGE,
        )
        rows = tl.arange(0, ROWS)
        head_ok = rows < G
        head = pid * G + rows  # b * H_q + h * G + row
        offs_dv = tl.arange(0, DV)
        if S_PAD == 1:
            o = acc / l_i[:, None]
            tl.store(
                out_ptr + head[:, None] * DV + offs_dv[None, :],
                o.to(out_ptr.dtype.element_ty),
                mask=head_ok[:, None],
            )
        else:
            part = head * num_splits + pid_s
            tl.store(part_acc_ptr + part[:, None] * DV + offs_dv[None, :], acc, mask=head_ok[:, None])
            tl.store(part_ml_ptr + part * 2, m_i, mask=head_ok)
            tl.store(part_ml_ptr + part * 2 + 1, l_i, mask=head_ok)
            tl.debug_barrier()  # every thread's partials before the release below
            done = tl.atomic_add(count_ptr + pid, 1, sem="acq_rel")
            if done == num_splits - 1:  # the last split of this (batch, KV head) to finish
                _merge_splits(part_acc_ptr, part_ml_ptr, out_ptr, pid * G, G, num_splits, DV, S_PAD, H_CHUNK)
                tl.atomic_xchg(count_ptr + pid, 0)  # ready for the next call (and graph replays)

    @triton.jit(do_not_specialize=["num_splits"])
    def _combine_kernel(
        part_acc_ptr,
        part_ml_ptr,
        out_ptr,
        num_splits,
        DV: tl.constexpr,
        S_PAD: tl.constexpr,
    ):
        """One program per (batch, query head): the log-sum-exp merge of its splits, all loaded at once."""
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


_SM_COUNT: dict[int, int] = {}


def prefetch_consts(config: DecodeConfig, *, value_dim: int, dtype: torch.dtype) -> dict[str, Any]:
    """The one-launch kernel's prefetch constexprs for ``config``: none under Triton's
    interpreter (no inline PTX there); V_LINES, the L2 lines of one token's value row."""
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    line_elems = max(1, L2_LINE_BYTES // dtype.itemsize)
    return dict(
        PREFETCH_V=0 if interp else config.prefetch_value_blocks,
        V_LINES=max(1, value_dim // line_elems),
        PREFETCH_K=False if interp else config.prefetch_keys,
    )


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def plan_splits(
    *, programs: int, context: int, config: DecodeConfig, device: torch.device
) -> tuple[int, int]:
    """(num_splits, chunk): N cut into chunks of whole blocks so that no split is empty, by the
    rule of :func:`aqua_model.costs.split_rule.split_count` for ``config.launches`` (the
    one-launch kernel or the three-launch path), over ``programs`` = batch * H_kv units;
    ``config.num_splits`` or ``config.programs_per_sm`` override the rule's count."""
    splits, chunk = split_count(
        programs=max(1, programs),
        context=max(1, context),
        block_n=config.block_n,
        sm_count=_sm_count(device),
        programs_per_sm=config.programs_per_sm,
        num_splits=config.num_splits,
        launches=config.launches,
    )
    return int(splits), int(chunk)


def choose_config(
    *, rows: int, value_dim: int, page: int | None = None, launches: int = DEFAULT_LAUNCHES
) -> DecodeConfig:
    """Launch parameters by rule (the split count is then set by :func:`plan_splits`).

    From the H200 sweep in ``validation/results/h200/decode_v2_tuning.jsonl`` (six shapes, seven
    (block_n, num_warps, num_stages) shapes, paged and unpaged keys): a row tile of more than 64
    rows streams best as blocks of 64 tokens, 4 warps, 4 stages (k = 96: 439 us against 472 us with
    3 stages; the union tile of 128 rows: 425 us); 64 rows or fewer as blocks of 128 tokens, 8
    warps, 3 stages (k = 32: 321 us; k = 64 at batch 32: 397 us), which needs pages of >= 128
    tokens (else blocks of 64, 4 warps, 3 stages). ``value_dim`` is accepted for rules that will
    need it (both rules were measured at d_v = 128). The one-launch kernel (``launches`` 1, the
    default) has its own rule (:data:`aqua_model.costs.split_rule.FUSED_LAUNCH`)."""
    check_int("rows", rows, minimum=1)
    check_int("value_dim", value_dim, minimum=1)
    block_n, num_warps, num_stages = launch_rule(rows, page=page, launches=launches)
    return DecodeConfig(block_n=block_n, num_warps=num_warps, num_stages=num_stages, launches=launches)


# ---------------------------------------------------------------------------------------- launch


_RUNTIME_KNOBS = getattr(getattr(triton, "knobs", None), "runtime", None)


def _launch_hooks_set() -> bool:
    """True when a launch hook is registered (a profiler): launches then go through the JIT.
    Triton 3.6 keeps an empty ``HookChain`` when none is; older versions keep None."""
    rt = _RUNTIME_KNOBS
    if rt is None:
        return False
    enter, leave = rt.launch_enter_hook, rt.launch_exit_hook
    return bool(getattr(enter, "calls", enter)) or bool(getattr(leave, "calls", leave))


class _Kernel:
    """One Triton kernel at fixed constexprs and options: first call through the JIT (compiles),
    later calls through the compiled kernel's launcher (no re-binding of the arguments), or
    (:meth:`launch_ints`) straight into the launcher's C entry point with pointers as integers."""

    __slots__ = ("fn", "consts", "options", "compiled", "_launch", "_head", "_tail", "_raw", "_raw_head")

    def __init__(self, fn: Any, consts: dict[str, Any], options: dict[str, int]) -> None:
        names = list(getattr(fn, "arg_names", consts))  # the launcher takes every argument in order
        self.fn, self.options = fn, options
        self.consts = {n: consts[n] for n in sorted(consts, key=names.index)}
        self.compiled = None
        self._launch: Any = None
        self._head: Any = None
        self._tail = tuple(self.consts.values())
        self._raw: Any = None
        self._raw_head: Any = None

    def __call__(self, grid: tuple[int, int, int], *args: Any) -> None:
        if self.compiled is None or _launch_hooks_set():
            ck = self.fn[grid](*args, **self.consts, **self.options)
            if self.compiled is None and ck is not None and hasattr(ck, "run") and hasattr(ck, "function"):
                self.compiled = ck
                self._launch = ck.run  # the C launcher (a property of the compiled kernel)
                self._head = (ck.function, ck.packed_metadata, None, None, None)
                self._bind_raw(ck)
            return
        stream = _get_stream(torch.cuda.current_device())
        self._launch(grid[0], grid[1], grid[2], stream, *self._head, *args, *self._tail)

    def _bind_raw(self, ck: Any) -> None:
        """The C entry point behind Triton's launcher object, where the kernel needs no scratch
        memory (that launcher then only forwards its arguments); else None."""
        run = ck.run
        raw = getattr(run, "launch", None)
        scratch = (getattr(run, "global_scratch_size", None), getattr(run, "profile_scratch_size", None))
        if raw is None or scratch != (0, 0):
            return
        coop, pdl = getattr(run, "launch_cooperative_grid", None), getattr(run, "launch_pdl", None)
        if coop is None or pdl is None:
            return
        self._raw = raw
        # function, cooperative grid, PDL, global and profile scratch, metadata, launch metadata, hooks
        self._raw_head = (ck.function, coop, pdl, None, None, ck.packed_metadata, None, None, None)

    @property
    def ready(self) -> bool:
        """Compiled, and no launch hook (profiler) asks for the JIT's path."""
        return self.compiled is not None and not _launch_hooks_set()

    def launch_ints(self, grid: tuple[int, int, int], *args: Any) -> None:
        """Launch a compiled kernel (:attr:`ready`) with pointer arguments given as integer
        device addresses (``tensor.data_ptr()``): Triton's launcher then neither calls
        ``data_ptr`` nor asks the driver about each pointer. The caller vouches that every
        address is device memory of the current device (the fast path of :func:`aqua_decode`
        keys on the tensors' devices)."""
        stream = _get_stream(torch.cuda.current_device())
        if self._raw is not None:
            self._raw(grid[0], grid[1], grid[2], stream, *self._raw_head, *args, *self._tail)
        else:
            self._launch(grid[0], grid[1], grid[2], stream, *self._head, *args, *self._tail)


def _get_stream(device: int) -> int:
    return triton.runtime.driver.active.get_current_stream(device)


@dataclasses.dataclass
class _Static:
    """What fixes the compiled kernels and the workspaces of a call."""

    B: int
    hq: int
    hkv: int
    d: int
    m: int
    dv: int
    group: int
    mode: int
    k_keep: int
    rotate: bool
    append: bool
    given_per_head: bool
    page: int  # PAGE constexpr (_NO_PAGE for an unpaged layout)
    q_dtype: torch.dtype
    device: torch.device
    config: DecodeConfig
    #: Triton's specialisation of the call's integer strides and pointers (see ``launch_spec``):
    #: compiled kernels assume it, so calls that differ in it must not share a launcher.
    spec: tuple = ()


def launch_spec(*tensors: torch.Tensor | None, ints: tuple[int, ...] = ()) -> tuple:
    """How Triton specialises a call: each tensor's strides (== 1, divisible by 16, or neither)
    and 16-byte alignment, and the same for extra integer arguments."""

    def cls(x: int) -> int:  # Triton: == 1 is a constant, % 16 == 0 a hint, >= 2^31 an int64
        return (1 if x == 1 else (16 if x % 16 == 0 else 0)) + (64 if abs(x) >= 2**31 else 0)

    out: list[int] = []
    for t in tensors:
        if t is None:
            out.append(-1)
            continue
        out.append(t.data_ptr() % 16 == 0)
        out.extend(cls(x) for x in t.stride())
    out.extend(cls(x) for x in ints)
    return tuple(out)


class DecodeLauncher:
    """Cached launch state of one call signature: workspaces, constexprs, compiled kernels.

    ``run(...)`` launches the prologue, the split kernel and the combine (``KERNELS``). Workspaces are reused by every call: calls on one stream are ordered, so this is
    safe there, and a CUDA graph that captures ``run`` replays on the same buffers."""

    def __init__(self, st: _Static) -> None:
        self.st = st
        self.rows = max(_MIN_ROWS, _next_pow2(st.group + (1 if st.append else 0)))
        r = tile_rows(
            m=st.m,
            k_keep=st.k_keep,
            group=st.group,
            mode=st.mode,
            shared=st.mode == _SEL_GROUP or (st.mode == _SEL_GIVEN and not st.given_per_head),
        )
        self.parts = row_parts(r)
        self.r_tot = sum(self.parts)
        d_pad = max(16, _next_pow2(st.d))
        if self.r_tot > d_pad:  # rounding up never needs more rows than the padded coordinates
            self.parts, self.r_tot = (d_pad, 0, 0), d_pad
        units = st.B * st.hkv
        dev = st.device
        self.qs = torch.zeros(units, self.rows, self.r_tot, dtype=st.q_dtype, device=dev)
        self.idx = torch.zeros(units, self.r_tot, dtype=torch.int32, device=dev)
        self.cnt = torch.zeros(units, dtype=torch.int32, device=dev)
        head_rank = st.mode == _SEL_HEAD and st.group <= HEAD_RANK_MAX_GROUP
        self.prologue = _Kernel(
            _prologue_kernel,
            dict(
                D=st.d,
                D_PAD=d_pad,
                M_KEY=st.m,
                ROWS=self.rows,
                R_TOT=self.r_tot,
                DV=st.dv,
                PAGE=st.page,
                ROTATE=st.rotate,
                SELECT=st.mode,
                APPEND=st.append,
                GIVEN_PER_HEAD=st.given_per_head,
                HEAD_RANK=head_rank,
            ),
            dict(num_warps=8 if st.rotate else 4),
        )
        cfg = st.config
        self._split_opts = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        p0, p1, p2 = self.parts
        self.split = _Kernel(
            _split_kernel,
            dict(
                ROWS=self.rows,
                R0=p0,
                R1=p1,
                R2=p2,
                DV=st.dv,
                BLOCK_N=cfg.block_n,
                PAGE=st.page,
            ),
            dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
        )
        self._combine: dict[int, _Kernel] = {}
        # the one-launch path: its compiled variants per padded split count (1: one split), the
        # per-(batch, KV head) arrival counters (zero between calls: the last program resets them)
        self.fused: dict[int, _Kernel] | None = {} if cfg.launches == 1 else None
        self.count = torch.zeros(units, dtype=torch.int32, device=dev)
        self._fused_consts = dict(
            D=st.d,
            D_PAD=d_pad,
            M_KEY=st.m,
            ROWS=self.rows,
            R0=p0,
            R1=p1,
            R2=p2,
            DV=st.dv,
            BLOCK_N=cfg.block_n,
            PAGE=st.page,
            ROTATE=st.rotate,
            SELECT=st.mode,
            APPEND=st.append,
            GIVEN_PER_HEAD=st.given_per_head,
            HEAD_RANK=head_rank,
            **prefetch_consts(cfg, value_dim=st.dv, dtype=st.q_dtype),
        )
        self._plans: dict[int, tuple[int, int]] = {}
        self._ws: tuple[torch.Tensor, torch.Tensor] | None = None
        self._ws_ptrs: tuple[int, int] = (0, 0)
        # device addresses of the launcher's own buffers, for the integer-pointer launches (CUDA)
        self._ptrs: tuple[int, int, int] | None = (
            (self.idx.data_ptr(), self.count.data_ptr(), self.cnt.data_ptr()) if dev.type == "cuda" else None
        )
        self.units = units

    def splits_for(self, N: int) -> tuple[int, int]:
        """(num_splits, chunk_blocks) at context N (cached per N)."""
        plan = self._plans.get(N)
        if plan is None:
            splits, chunk = plan_splits(
                programs=self.units, context=N, config=self.st.config, device=self.st.device
            )
            plan = (splits, chunk // self.st.config.block_n)
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[N] = plan
        return plan

    def _workspace(self, splits: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.st.B * self.st.hq * splits
        ws = self._ws
        if ws is None or ws[0].shape[0] < n:
            dev = self.st.device
            ws = (
                torch.empty(n, self.st.dv, dtype=torch.float32, device=dev),
                torch.empty(n, 2, dtype=torch.float32, device=dev),
            )
            self._ws = ws
            self._ws_ptrs = (ws[0].data_ptr(), ws[1].data_ptr())
        return ws

    def poison(self) -> None:
        """Fill the workspaces with NaN (tests: every element the kernels read must be written)."""
        for t in (self.qs,) + (self._ws or ()):
            t.fill_(float("nan"))
        self.idx.fill_(-(1 << 30))
        self.cnt.fill_(-1)

    def static_args(
        self,
        *,
        q: torch.Tensor,
        k_strides: tuple[int, int, int, int, int],
        v: torch.Tensor,
        P: torch.Tensor | None = None,
        given: torch.Tensor | None = None,
        k_new: torch.Tensor | None = None,
        v_new: torch.Tensor | None = None,
    ) -> tuple[tuple[int | None, ...], tuple[int, ...]]:
        """The integer arguments of a call signature (strides), for the prologue and the split
        kernel: computed once per signature by the callers' caches."""
        st = self.st
        gs = given.stride() if given is not None else (0, 0, 0)
        kn_s = (k_new.stride(0), k_new.stride(1)) if k_new is not None else (0, 0)
        vn_s = (v_new.stride(0), v_new.stride(1)) if v_new is not None else (0, 0)
        ph = P.stride(0) if (P is not None and P.dim() == 3) else 0
        skb, skh, skt, skd, skn = k_strides
        svb, svh, svn = v.stride(0), v.stride(1), v.stride(2)
        pro = (
            (st.group, st.hkv, st.k_keep)
            + (None,)
            + (
                q.stride(0),
                q.stride(1),
                ph,
                gs[0],
                gs[1],
                gs[2],
                kn_s[0],
                kn_s[1],
                vn_s[0],
                vn_s[1],
                skb,
                skh,
                skt,
                skd,
                svb,
                svh,
                svn,
            )
        )
        split = (skb, skh, skt, skd, skn, svb, svh, svn)
        return pro, split

    def _run_fused(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        N: int,
        scale: float,
        out: torch.Tensor,
        P: torch.Tensor | None,
        given: torch.Tensor | None,
        k_new: torch.Tensor | None,
        v_new: torch.Tensor | None,
        pos: int,
        pro: tuple,
        split: tuple,
    ) -> torch.Tensor:
        """Launch the one-launch kernel (``FUSED_KERNELS``) of :class:`DecodeLauncher`."""
        splits, chunk_blocks = self._plans.get(N) or self.splits_for(N)
        s_pad = padded_splits(splits)
        kern = self.fused.get(s_pad)  # type: ignore[union-attr]
        if kern is None:
            kern = self.fused[s_pad] = _Kernel(  # type: ignore[index]
                _fused_kernel,
                dict(self._fused_consts, S_PAD=s_pad, H_CHUNK=merge_chunk(self.st.group, s_pad, self.st.dv)),
                self._split_opts,
            )
        if splits > 1:
            ws = self._ws
            if ws is None or ws[0].shape[0] < self.st.B * self.st.hq * splits:
                ws = self._workspace(splits)
            acc, ml = ws
        else:
            acc = ml = out
        # the integer arguments after the pointers, in the kernel's order
        scalars = (N, chunk_blocks, pro[0], pro[1], pro[2], pos, splits, scale * _LOG2E, *pro[4:14], *split)
        if LAUNCH_BY_ADDRESS and self._ptrs is not None and kern.ready:
            qp, op = q.data_ptr(), out.data_ptr()
            accp, mlp = (op, op) if splits == 1 else self._ws_ptrs
            idxp, countp, cntp = self._ptrs
            kern.launch_ints(
                (self.units, splits, 1),
                qp,
                qp if P is None else P.data_ptr(),
                idxp if given is None else given.data_ptr(),
                qp if k_new is None else k_new.data_ptr(),
                qp if v_new is None else v_new.data_ptr(),
                k.data_ptr(),
                v.data_ptr(),
                accp,
                mlp,
                countp,
                cntp,
                op,
                *scalars,
            )
            return out
        kern(
            (self.units, splits, 1),
            q,
            q if P is None else P,
            self.idx if given is None else given,
            q if k_new is None else k_new,
            q if v_new is None else v_new,
            k,
            v,
            acc,
            ml,
            self.count,
            self.cnt,
            out,
            *scalars,
        )
        return out

    def run(
        self,
        *,
        q: torch.Tensor,
        k: torch.Tensor,
        k_strides: tuple[int, int, int, int, int],
        v: torch.Tensor,
        N: int,
        scale: float,
        out: torch.Tensor,
        P: torch.Tensor | None = None,
        given: torch.Tensor | None = None,
        k_new: torch.Tensor | None = None,
        v_new: torch.Tensor | None = None,
        pos: int = 0,
        static: tuple[tuple[int | None, ...], tuple[int, ...]] | None = None,
    ) -> torch.Tensor:
        """Launch the kernels (arguments already validated by the caller; ``static`` from
        :meth:`static_args` of the same call signature, or None to compute it)."""
        global _LAST
        _LAST = self
        if static is None:
            static = self.static_args(
                q=q, k_strides=k_strides, v=v, P=P, given=given, k_new=k_new, v_new=v_new
            )
        pro, split = static
        if self.fused is not None:
            return self._run_fused(q, k, v, N, scale, out, P, given, k_new, v_new, pos, pro, split)
        self.prologue(
            (self.units, 1, 1),
            q,
            q if P is None else P,
            self.idx if given is None else given,
            self.qs,
            self.idx,
            self.cnt,
            q if k_new is None else k_new,
            q if v_new is None else v_new,
            k,
            v,
            pro[0],
            pro[1],
            pro[2],
            pos,
            *pro[4:],
        )
        splits, chunk_blocks = self._plans.get(N) or self.splits_for(N)
        ws = self._ws
        if ws is None or ws[0].shape[0] < self.st.B * self.st.hq * splits:
            ws = self._workspace(splits)
        self.split(
            (self.units, splits, 1),
            self.qs,
            self.idx,
            self.cnt,
            k,
            v,
            ws[0],
            ws[1],
            N,
            chunk_blocks,
            self.st.group,
            self.st.hkv,
            splits,
            scale * _LOG2E,
            *split,
        )
        s_pad = max(2, 1 << (splits - 1).bit_length())
        comb = self._combine.get(s_pad)
        if comb is None:
            comb = self._combine[s_pad] = _Kernel(
                _combine_kernel, dict(DV=self.st.dv, S_PAD=s_pad), dict(num_warps=4)
            )
        comb((self.st.B * self.st.hq, 1, 1), ws[0], ws[1], out, splits)
        return out


_LOG2E = math.log2(math.e)


_LAUNCHERS: dict[tuple, DecodeLauncher] = {}
_LAST: DecodeLauncher | None = None


def last_launcher() -> DecodeLauncher | None:
    """The launcher of the most recent Triton call (its ``cnt`` holds the union sizes it read)."""
    return _LAST


_MAX_LAUNCHERS = 256


def get_launcher(st: _Static, key: tuple | None = None) -> DecodeLauncher:
    """The cached launcher of ``st`` (``key`` defaults to the fields of ``st``)."""
    key = key if key is not None else tuple(dataclasses.astuple(st))
    la = _LAUNCHERS.get(key)
    if la is None:
        if len(_LAUNCHERS) >= _MAX_LAUNCHERS:
            _LAUNCHERS.pop(next(iter(_LAUNCHERS)))
        la = DecodeLauncher(st)
        _LAUNCHERS[key] = la
    return la


def key_strides(k: torch.Tensor) -> tuple[int, tuple[int, int, int, int, int], int]:
    """(N capacity, (stride_b, stride_h, stride_page, stride_dim, stride_token), PAGE) of a key
    tensor: 4-D [B, H_kv, m, N] (any strides) or paged 5-D [B, H_kv, pages, m, T]."""
    if k.dim() == 5:
        s = k.stride()
        return k.shape[2] * k.shape[4], (s[0], s[1], s[2], s[3], s[4]), k.shape[4]
    s = k.stride()
    # unpaged: one "page" of _NO_PAGE tokens, so the page stride never contributes
    return k.shape[3], (s[0], s[1], 0, s[2], s[3]), _NO_PAGE


# ---------------------------------------------------------------------------------------- checks


def _as_3d_query(q: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(q, torch.Tensor) or not q.is_floating_point():
        raise TypeError(
            f"q must be a floating torch.Tensor [B, H_q, d] or [B, H_q, 1, d], got {type(q).__name__}"
        )
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
    """Rotated keys: [B, H_kv, m, N] dim-major (rows contiguous along N; any other strides), or
    the transposed view of a token-major [B, H_kv, N, m] cache (``K.transpose(-1, -2)``: each
    kept coordinate then costs whole memory sectors), or paged [B, H_kv, pages, m, T]."""
    doc = "[B, H_kv, m, N] (dim-major, or a transposed token-major view) or paged [B, H_kv, pages, m, T]"
    if not isinstance(k, torch.Tensor) or not k.is_floating_point():
        raise TypeError(f"k_dimmajor must be a floating torch.Tensor {doc}, got {type(k).__name__}")
    if k.dim() not in (4, 5) or k.shape[0] != B:
        raise ValueError(f"k_dimmajor must be {doc} with B={B}, got shape {tuple(k.shape)}")
    if k.dim() == 5:
        T = k.shape[4]
        if k.stride(4) != 1 or T < 16 or T != _next_pow2(T):
            raise ValueError(
                f"a paged k_dimmajor needs contiguous pages of a power-of-two T >= 16 tokens, got shape {tuple(k.shape)} strides {k.stride()}"
            )
    elif k.stride(-1) != 1 and k.stride(-2) != 1:
        raise ValueError(
            f"k_dimmajor must be contiguous along N (dim-major) or along m (token-major view), got strides {k.stride()}"
        )
    return k


def _check_out(
    out: torch.Tensor, B: int, hq: int, dv: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    if (
        not isinstance(out, torch.Tensor)
        or out.dtype != dtype
        or not out.is_contiguous()
        or out.numel() != B * hq * dv
    ):
        raise ValueError(f"out must be a contiguous {dtype} tensor of B*H_q*d_v = {B * hq * dv} elements")
    check_same_device(device, out=out)
    return out.view(B, hq, dv)


def check_interpreter_dtype(name: str, dtype: torch.dtype) -> None:
    """Under Triton's interpreter (``TRITON_INTERPRET=1``) bf16 kernels return wrong numbers
    (relative errors of 1e10 against the float32 reference, measured on this package's decode
    kernel; float16 and float32 agree to 3e-4 and 6e-7): refuse bf16 there instead."""
    if dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1":
        raise ValueError(
            f"{name} is torch.bfloat16, which Triton's interpreter (TRITON_INTERPRET=1) computes wrongly: "
            "use torch.float16 or torch.float32 there (bf16 runs on CUDA)"
        )


def check_same_device(device: torch.device, **tensors: torch.Tensor | None) -> None:
    """Every tensor given (None skipped) lives on ``device``: the kernels take their addresses
    as device pointers."""
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(
                f"{name} is on {t.device}, q on {device}: every tensor of a call must be on one device"
            )


def _check_length(length: int | None, capacity: int) -> int:
    if length is None:
        return capacity
    return check_int("length", length, minimum=1, maximum=capacity)


#: Elements of one (batch, KV head) slice of K or V the kernels address with int32 offsets.
MAX_SLICE_ELEMENTS = 2**31 - 1


def check_slice_size(*, m: int, capacity: int, value_dim: int, value_rows: int) -> None:
    """ValueError when one (batch, KV head) slice of K (m x capacity) or V is too large for the
    kernels' int32 offsets (about 16M tokens at m = d_v = 128)."""
    for name, n in (("m * capacity of k", m * capacity), ("N * d_v of v", value_rows * value_dim)):
        if n > MAX_SLICE_ELEMENTS:
            raise ValueError(
                f"{name} = {n} elements per (batch, KV head) exceeds {MAX_SLICE_ELEMENTS} (int32 offsets)"
            )


def _dense_keys(k: torch.Tensor, N: int) -> torch.Tensor:
    """Token-major [B, H_kv, N, m] view or copy of the first N keys of any accepted key layout."""
    if k.dim() == 5:
        B, H, pages, m, T = k.shape
        return k.permute(0, 1, 2, 4, 3).reshape(B, H, pages * T, m)[:, :, :N]
    return k.transpose(-1, -2)[:, :, :N]


def _fast_key(
    q, k, v, P, indices, out, k_keep, selection, select_in, scale, config, length, launches
) -> tuple:
    return (
        q.shape,
        q.stride(),
        q.dtype,
        q.device,
        k.shape,
        k.stride(),
        k.dtype,
        k.device,
        v.shape,
        v.stride(),
        v.dtype,
        v.device,
        None if P is None else (P.shape, P.stride(), P.dtype, P.device, P.data_ptr() % 16),
        None
        if indices is None
        else (indices.shape, indices.stride(), indices.dtype, indices.device, indices.data_ptr() % 16),
        None if out is None else (out.shape, out.stride(), out.dtype, out.device, out.data_ptr() % 16),
        q.data_ptr() % 16,
        k.data_ptr() % 16,
        v.data_ptr() % 16,
        k_keep,
        selection,
        select_in,
        scale,
        config,
        length is None,
        launches,
    )


#: Fast path of aqua_decode: argument signature -> (launcher, capacity, k strides, scale, 4-D query,
#: static integer arguments).
_FAST: dict[tuple, tuple[DecodeLauncher, int, tuple, float, bool, tuple]] = {}


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
    length: int | None = None,
    launches: int | None = None,
    poison_workspace: bool = False,
) -> torch.Tensor:
    """AQUA decode attention against a rotated dim-major key cache.

    q [B, H_q, d] or [B, H_q, 1, d]: the query (already rotated when P is None, else rotated in
    the prologue kernel by P [d, d] / [H_kv, d, d], in fp32, then rounded to q's dtype).
    k_dimmajor: rotated keys [B, H_kv, m, N] (m <= d stored coordinates; rows contiguous along N;
    for full speed the row stride should be a multiple of 16 elements: pass a view of an aligned
    capacity), a transposed view of a token-major [B, H_kv, N, m] cache (the ``aqua-token-major``
    layout: correct, each kept coordinate a strided read), or paged [B, H_kv, pages, m, T].
    v [B, H_kv, N_cap, d_v] token-major. length: tokens to attend (default: all of N).
    k_keep: coordinates kept (1..m); selection "per-head" (each head its own top-k of |q^|; under
    GQA the group's program reads the union of its heads' rows once) or "group" (top-k of the
    sum of |q^| over the group); select_in "prepass"/"kernel" (the Triton prologue) or "torch"
    (torch.topk, then the prologue with those indices). indices: precomputed kept coordinates,
    int32 [B, H_q, k_keep] ("per-head") or [B, H_kv, k_keep] ("group").
    scale defaults to 1/sqrt(d). Returns [B, H_q, d_v] (or [B, H_q, 1, d_v]) in q's dtype.

    launches: 1 (one kernel, ``FUSED_KERNELS``: each split program selects its group's rows, the
    last split of each (batch, KV head) to finish merges behind an atomic counter) or 3 (the
    prologue, split pass and combine, ``KERNELS``); None: ``config.launches``, by default
    :data:`aqua_model.costs.split_rule.DEFAULT_LAUNCHES`; given indices (``indices`` or
    ``select_in="torch"``) always run the three-launch path (:data:`~aqua_model.costs.split_rule.GIVEN_LAUNCHES`). Dim-major key rows whose stride is not
    a multiple of 16 elements get a :class:`PerformanceWarning` (once per stride): every key load
    is then a scalar load. Repeated calls with the
    same signature reuse cached launch parameters, workspaces and compiled kernels. CUDA graphs:
    call once eagerly (with the same shapes), then ``with torch.cuda.graph(g): aqua_decode(...)``
    with ``out=`` a static buffer; replays use the cached workspaces, so do not run two captured
    graphs of the same signature concurrently on different streams. Falls back to
    :func:`reference.aqua_attention_rotated` without triton / CUDA (where ``indices`` must be None).
    """
    key = None
    if not poison_workspace:
        try:
            key = _fast_key(
                q,
                k_dimmajor,
                v,
                P,
                indices,
                out,
                k_keep,
                selection,
                select_in,
                scale,
                config,
                length,
                launches,
            )
            hit = _FAST.get(key)
        except (AttributeError, TypeError):  # not tensors, or unhashable: the checks below say why
            key = hit = None
        if hit is not None and length is not None and not (type(length) is int and 1 <= length <= hit[1]):
            hit = None  # a bad length: the checks below say why
        if hit is not None:
            la, cap, ks, s, four, static = hit
            N = cap if length is None else length
            q3 = q[:, :, 0, :] if four else q
            if out is None:
                o = torch.empty(q3.shape[0], q3.shape[1], la.st.dv, dtype=q3.dtype, device=q3.device)
            else:
                o = out.view(q3.shape[0], q3.shape[1], la.st.dv)
            given = indices
            if given is None and select_in == "torch":
                given = _torch_topk(q3, P, la.st)
            la.run(
                q=q3, k=k_dimmajor, k_strides=ks, v=v, N=N, scale=s, out=o, P=P, given=given, static=static
            )
            return o.unsqueeze(2) if four else o
    q3, four = _as_3d_query(q)
    B, hq, d = q3.shape
    k_dimmajor = _check_keys(k_dimmajor, B)
    v = _check_cache("v", v, B, "[B, H_kv, N, d_v]")
    hkv = k_dimmajor.shape[1]
    m = k_dimmajor.shape[-2]
    cap, k_strides, page = key_strides(k_dimmajor)
    N = _check_length(length, cap)
    _warn_misaligned(k_dimmajor, page)
    if v.shape[1] != hkv or v.shape[2] < N:
        raise ValueError(f"v must be [B, H_kv={hkv}, N >= {N}, d_v], got {tuple(v.shape)}")
    if not 1 <= m <= d:
        raise ValueError(f"k_dimmajor stores m coordinates with 1 <= m <= d={d}, got m={m}")
    if hkv < 1 or hq % hkv:
        raise ValueError(f"H_q must be a multiple of H_kv, got H_q={hq}, H_kv={hkv}")
    g = hq // hkv
    k_keep = check_int("k_keep", k_keep, minimum=1, maximum=m)
    selection = check_choice("selection", selection, SELECTIONS)
    select_in = check_choice("select_in", select_in, SELECT_WHERE)
    if launches is not None and (type(launches) is not int or launches not in LAUNCH_PATHS):
        raise ValueError(f"launches must be one of {LAUNCH_PATHS} or None, got {launches!r}")
    s = ref._scale(scale, d)
    if P is not None:
        P = ref._check_projection(P, heads_kv=hkv, d=d)
    g_sel = g if selection == "group" else 1
    if indices is not None:
        want = (B, hq // g_sel, k_keep)
        if (
            not isinstance(indices, torch.Tensor)
            or indices.dtype != torch.int32
            or tuple(indices.shape) != want
        ):
            raise ValueError(
                f"indices must be an int32 tensor of shape {want}, got {getattr(indices, 'shape', indices)!r}"
            )
        if not triton_available(q3.device):
            raise ValueError("indices are only supported on the Triton path (CUDA or TRITON_INTERPRET=1)")
    if not triton_available(q3.device):
        q_hat = (
            q3 if P is None else ref.rotate(q3.unsqueeze(2).float(), P.float(), g=g).squeeze(2).to(q3.dtype)
        )
        o = ref.aqua_attention_rotated(
            q_hat.unsqueeze(2),
            _dense_keys(k_dimmajor, N),
            v[:, :, :N],
            k_keep=k_keep,
            selection=selection,
            causal=True,
            scale=s,
        )[:, :, 0, :]
        if out is not None:
            out.copy_(o.reshape(out.shape))
            o = out.view(o.shape)
        return o.unsqueeze(2) if four else o
    if q3.stride(-1) != 1:
        raise ValueError(f"q must be contiguous in its last dim, got strides {tuple(q3.stride())}")
    check_same_device(q3.device, k_dimmajor=k_dimmajor, v=v, P=P, indices=indices)
    check_interpreter_dtype("q", q3.dtype)
    check_slice_size(m=m, capacity=cap, value_dim=v.shape[3], value_rows=v.shape[2])
    dv = v.shape[3]
    if dv != _next_pow2(dv) or dv < 16:
        raise ValueError(f"the Triton kernels need a value head dim that is a power of two >= 16, got {dv}")
    if P is not None and (P.dtype != torch.float32 or not P.is_contiguous()):
        P = P.float().contiguous()  # a torch op on every call: pass P as contiguous fp32 to avoid it
        key = None  # the converted P is not the caller's: no fast path for this signature
    if out is not None:
        out3 = _check_out(out, B, hq, dv, q3.dtype, q3.device)
    else:
        out3 = torch.empty(B, hq, dv, dtype=q3.dtype, device=q3.device)
    mode = _SEL_GROUP if selection == "group" else _SEL_HEAD
    if indices is not None or select_in == "torch":
        mode = _SEL_GIVEN
        if launches == 1:
            raise ValueError(
                "launches=1 does not take given indices (indices= or select_in='torch'): they run the "
                f"three-launch path (launches={GIVEN_LAUNCHES} or None)"
            )
        launches = GIVEN_LAUNCHES
    shared = selection == "group"
    if config is None:
        config = choose_config(
            rows=tile_rows(m=m, k_keep=k_keep, group=g, mode=mode, shared=shared),
            value_dim=dv,
            page=None if page == _NO_PAGE else page,
            launches=DEFAULT_LAUNCHES if launches is None else launches,
        )
    elif page != _NO_PAGE and page % config.block_n:
        raise ValueError(f"config.block_n must divide the page of {page} tokens, got {config.block_n}")
    if launches is not None:
        config = dataclasses.replace(config, launches=launches)
    st = _Static(
        B=B,
        hq=hq,
        hkv=hkv,
        d=d,
        m=m,
        dv=dv,
        group=g,
        mode=mode,
        k_keep=k_keep,
        rotate=P is not None,
        append=False,
        given_per_head=not shared,
        page=page,
        q_dtype=q3.dtype,
        device=q3.device,
        config=config,
    )
    given = indices
    if given is None and select_in == "torch":
        given = _torch_topk(q3, P, st)
    st = dataclasses.replace(
        st, spec=launch_spec(q3, v, P, given, out3, ints=k_strides) + (k_dimmajor.data_ptr() % 16 == 0,)
    )
    la = get_launcher(st)
    if poison_workspace:
        la.poison()
    static = la.static_args(q=q3, k_strides=k_strides, v=v, P=P, given=given)
    la.run(
        q=q3, k=k_dimmajor, k_strides=k_strides, v=v, N=N, scale=s, out=out3, P=P, given=given, static=static
    )
    if key is not None:
        if len(_FAST) >= _MAX_LAUNCHERS:
            _FAST.pop(next(iter(_FAST)))
        _FAST[key] = (la, cap, k_strides, s, four, static)
    return out3.unsqueeze(2) if four else out3


#: Dim-major key row strides already warned about (:func:`_warn_misaligned`).
_WARNED_STRIDES: set[int] = set()
#: Triton's divisibility hint: a row stride that is a multiple of this many elements keeps the
#: key loads vectorised (16-byte) and pipelined (cp.async).
ROW_STRIDE_ALIGN = 16


def _warn_misaligned(k: torch.Tensor, page: int) -> None:
    """PerformanceWarning, once per stride, when dim-major key rows are not 16-element aligned."""
    if page != _NO_PAGE or k.stride(-1) != 1 or k.shape[-2] < 2:
        return  # paged pages are aligned; a token-major view has no row stride to align
    stride = k.stride(-2)
    if stride % ROW_STRIDE_ALIGN == 0 or stride in _WARNED_STRIDES:
        return
    _WARNED_STRIDES.add(stride)
    warnings.warn(
        f"aqua_decode: the dim-major key rows have a stride of {stride} elements, not a multiple of "
        f"{ROW_STRIDE_ALIGN}: every key load becomes a scalar load (measured 0.38-0.76x of SDPA). "
        f"Fix: keep the keys in a buffer whose capacity is a multiple of {ROW_STRIDE_ALIGN} tokens "
        "and pass a [..., :N] view of it (as AquaKVCache allocates), or use AquaKVCache.",
        PerformanceWarning,
        stacklevel=3,
    )


def _torch_topk(q3: torch.Tensor, P: torch.Tensor | None, st: _Static) -> torch.Tensor:
    """Kept coordinates by torch.topk of |q^| (rotated in torch when P is given), int32."""
    qh = (
        q3
        if P is None
        else ref.rotate(q3.unsqueeze(2).float(), P.float(), g=st.group).squeeze(2).to(q3.dtype)
    )
    mag = qh[..., : st.m].abs().float()
    if st.mode == _SEL_GIVEN and not st.given_per_head:
        mag = mag.reshape(st.B, st.hkv, st.group, st.m).sum(2)
    # torch.topk (two launches, what the aqua-step-topk plan counts); its order among exactly equal
    # magnitudes is torch's (the Triton selection and the reference keep the lower index)
    return torch.topk(mag, st.k_keep, dim=-1).indices.to(torch.int32)


def union_rows(indices: torch.Tensor, *, group: int, m: int) -> torch.Tensor:
    """Distinct coordinates selected by the g heads of each KV group: [B, H_q, k] -> [B, H_kv]."""
    B, hq, kk = indices.shape
    hit = torch.zeros(B, hq // group, m, dtype=torch.bool, device=indices.device)
    hit.scatter_(-1, indices.long().reshape(B, hq // group, group * kk), True)
    return hit.sum(-1)


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
    """Dense decode with the same kernels (the control): every stored coordinate is kept.

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
            out.copy_(o.reshape(out.shape))
            o = out.view(o.shape)
        return o.unsqueeze(2) if four else o
    q3 = q3.contiguous()
    check_same_device(q3.device, k=k, v=v)
    check_interpreter_dtype("q", q3.dtype)
    dv = v.shape[3]
    out3 = (
        _check_out(out, B, hq, dv, q3.dtype, q3.device)
        if out is not None
        else torch.empty(B, hq, dv, dtype=q3.dtype, device=q3.device)
    )
    kT = k_tok.transpose(-1, -2)  # [B, H_kv, d, N] view
    cap, k_strides, page = key_strides(kT)
    st = _Static(
        B=B,
        hq=hq,
        hkv=hkv,
        d=d,
        m=d,
        dv=dv,
        group=g,
        mode=_SEL_ALL,
        k_keep=d,
        rotate=False,
        append=False,
        given_per_head=False,
        page=page,
        q_dtype=q3.dtype,
        device=q3.device,
        config=config or choose_config(rows=d, value_dim=dv),
        spec=launch_spec(q3, v, out3, ints=k_strides) + (kT.data_ptr() % 16 == 0,),
    )
    la = get_launcher(st)
    if poison_workspace:
        la.poison()
    la.run(q=q3, k=kT, k_strides=k_strides, v=v, N=N, scale=s, out=out3)
    return out3.unsqueeze(2) if four else out3
