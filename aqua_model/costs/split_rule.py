"""The launch geometry of the split-N decode kernels, without torch: how many programs they run.

The Triton decode of :mod:`aqua_model.kernels.triton_decode` is one launch by default
(:data:`DEFAULT_LAUNCHES`): one program per (batch, KV head, split of N), each selecting its
group's rows, the last split of each (batch, KV head) merging; its three-launch path runs a
prologue with one program per (batch, KV head), the split-N pass with one program per (batch, KV
head, split of N), and the combine with one program per (batch, query head). How many splits it cuts N into,
and the row tile and token block each program streams, follow the rule written here; the
simulator reads the same functions to place the programs against the GPU's SMs (occupancy and
wave quantization of the split pass, :mod:`aqua_model.simulator.roofline`), so the rule has one
home. Every function takes numpy arrays (broadcast) or ints.

Rule (read off the H200 sweep ``validation/results/h200/decode_v2_tuning.jsonl`` by the
kernels work of issue 15):

* row tile: the key rows one program reads, rounded up to a multiple of 16 and cut into at most
  three power-of-two parts (:func:`row_parts`); group selection reads k rows, per-head selection
  under GQA up to min(d, g k) (the union of the g heads' rows);
* token block: a row tile of more than 64 rows streams blocks of 64 tokens (4 warps, 4 stages),
  64 rows or fewer blocks of 128 tokens (8 warps, 3 stages), or 64 when the keys are paged in
  pages of fewer than 128 tokens (:func:`launch_rule`);
* splits: about ``PROGRAMS_PER_SM`` programs per SM over the batch's B H_kv (KV group, batch)
  units, at least ``MIN_BLOCKS_PER_SPLIT`` blocks per split, never an empty split
  (:func:`split_count`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_int

#: Split-count rule: aim at this many programs per SM, and give each split at least this many
#: blocks of N (a pipeline of num_stages loads needs a few iterations to fill).
PROGRAMS_PER_SM = 8
MIN_BLOCKS_PER_SPLIT = 4
#: Smallest tile of rows (query heads or key rows) a program holds: one tensor-core tile.
MIN_ROWS = 16
#: Row tiles above this many rows stream the smaller token block (more rows, fewer tokens).
WIDE_TILE_ROWS = 64
#: Launches of aqua_decode's default call: 1 (selection, split-N pass and merge in one kernel);
#: 3 (prologue, split pass, combine) is the path kept for comparison (``launches=3``).
DEFAULT_LAUNCHES = 1
LAUNCH_PATHS = (1, 3)
#: Launches of a call handed its kept coordinates (``indices=`` or ``select_in="torch"``): the
#: three-launch path, whose prologue takes them. The one-launch kernel's given-indices variant
#: passes in Triton's interpreter but failed every given-indices GPU test on the H200
#: (``validation/results/h200/decode_v3_gpu_tests.log``, issue 22 call c; cause not found), so
#: it is not used.
GIVEN_LAUNCHES = 3
#: The one-launch kernel's rule, read off the H200 sweeps of issue 22
#: (``validation/results/h200/decode_v3_tune_sort.jsonl`` and ``decode_v3_tune_bisect.jsonl``,
#: then, with selection by rank, ``kernels-v4/decode_v3_tune.jsonl`` and
#: ``kernels-v4-waves/decode_v3_waves.jsonl``): every program pays a fixed cost (selection,
#: pipeline fill, partial store, merge), and programs that do not divide evenly over the SMs leave
#: a tail, so the fastest split count gives every SM about FUSED_PROGRAMS_PER_SM programs: at
#: N = 16K, B = 8, 32 / 8 heads, 4 splits (256 programs) against 3 (192): 98.6 / 104.0 us (k = 32
#: group), 131.7 / 135.9 us (k = 96 group), 127.2 / 132.7 us (k = 32 per-head); B = 1, N = 32K:
#: 32 splits 42.6 us, 24 splits 43.8 us, 47 splits 46.9 us; MHA at B = 8 (256 units): one split
#: 325.1 us, two 386.2 us. More programs than that lose (B = 8, N = 1024: 512 programs 25.4 us
#: against 192 programs 20.5 us; the rule's 256 measured 21.2 us there, 3% slower than 192).
#: Blocks of 64 tokens, 4 warps, 3 stages (4 stages was no better overall in the waves sweep), and
#: as little as FUSED_MIN_BLOCKS_PER_SPLIT block per split where the wave has room (B = 1,
#: N = 1024: 16 splits of one block 14.4 us against 8 of two 15.0 us). The three-launch path is
#: faster nowhere in the tune sweep beyond noise (B = 1, N = 32K, k = 32: 42.3 against 43.7 us,
#: 3%), so the rule never chooses it. 8 warps at blocks of 64 tokens are 1-30% slower at every
#: target shape, 2 warps up to 12% slower at batch 1 (``kernels-v5-warps/decode_v3_warps.jsonl``).
FUSED_PROGRAMS_PER_SM = 2.0
FUSED_MIN_BLOCKS_PER_SPLIT = 1
FUSED_LAUNCH = (64, 4, 3)
#: L2 prefetches the one-launch kernel issues before its selection: the first
#: FUSED_PREFETCH_VALUE_BLOCKS blocks of its chunk's V rows (bytes it reads anyway: no DRAM bytes
#: are added), and with FUSED_PREFETCH_KEYS every stored key row of its first block (the kept rows
#: are not known before the selection, so the unkept rows of one block per program would be extra
#: bytes). A prefetch is a hint: it moves the first V round trip off the chain q -> selection ->
#: K^ and V loads. Read off the H200 prefetch ablation (``validation/results/h200/kernels-v5/
#: decode_v3_prefetch.jsonl``, CUDA-graph medians of three interleaved rounds, outputs equal bit
#: for bit): one block of V is 0.8-3.1% faster at 5 of the 9 shapes (B = 8, N = 2048, k = 64:
#: 30.2 against 31.1 us; B = 1, N = 32K: 41.5 against 42.4 us; B = 8, N = 16K GQA group k = 32:
#: 96.5 against 97.2 us) and within 0.8% either way at the other four (B = 1, N = 256: 12.7
#: against 12.6 us, the one slower); two and four
#: blocks are no better, and the key rows of the first block are slower at short contexts
#: (B = 1, N = 256: 13.2 against 12.6 us), so they stay off.
FUSED_PREFETCH_VALUE_BLOCKS = 1
FUSED_PREFETCH_KEYS = False
#: Most fp32 partial values the one-launch kernel's merge loads at once (heads x padded splits x
#: d_v): 128 registers a thread at 4 warps; a group with more is merged in chunks of heads. From
#: the H200 merge ablation (``validation/results/h200/kernels-v5-c3/decode_v3_merge.jsonl``,
#: CUDA-graph medians of three interleaved rounds): 16384 merges B = 1, 32 / 8 heads, N = 32K
#: (32 splits) in one round instead of two, 39.8 against 41.8 us at 8192 (k = 32), and N = 64K,
#: k = 64 in 68.2 against 70.1 us; 32768 is no faster, and where every tile gives one round
#: (B = 8, N = 16K; B = 1, N = 1024) the times agree within 0.1 us.
MERGE_TILE_VALUES = 16384


def padded_splits(splits: int) -> int:
    """Splits as the one-launch kernel compiles them: 1 (one split, no merge), else the next
    power of two >= 2 (the merge's tile)."""
    splits = check_int("splits", splits, minimum=1)
    return 1 if splits == 1 else max(2, 1 << (splits - 1).bit_length())


def merge_chunk(group: int, s_pad: int, value_dim: int) -> int:
    """Heads the one-launch kernel's merge loads at once: a power of two, at least 1, at most
    the group's heads padded to a power of two, within :data:`MERGE_TILE_VALUES` partial values."""
    group = check_int("group", group, minimum=1)
    fit = max(
        1,
        MERGE_TILE_VALUES
        // (check_int("s_pad", s_pad, minimum=1) * check_int("value_dim", value_dim, minimum=1)),
    )
    return min(1 << max(0, (group - 1).bit_length()), 1 << (fit.bit_length() - 1))


def merge_rounds(*, group: Any, splits: Any, value_dim: Any) -> np.ndarray:
    """Round trips to L2 of the one-launch kernel's merge (the last split's loop over chunks of
    :func:`merge_chunk` heads): 0 for a one-split call, else ceil(group / chunk). Arrays
    broadcast (the simulator's sizes); the same arithmetic as :func:`padded_splits` and
    :func:`merge_chunk`, which the kernel calls per launch."""
    g, sp, dv = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (group, splits, value_dim)))
    if (g < 1).any() or (sp < 1).any() or (dv < 1).any():
        raise ValueError("merge_rounds needs group, splits and value_dim >= 1")

    def pow2_at_least(x: np.ndarray) -> np.ndarray:
        return np.left_shift(1, np.ceil(np.log2(np.maximum(x, 1))).astype(np.int64))

    s_pad = np.where(sp == 1, 1, np.maximum(2, pow2_at_least(sp)))
    fit = np.maximum(1, MERGE_TILE_VALUES // (s_pad * dv))
    chunk = np.minimum(pow2_at_least(g), np.left_shift(1, np.floor(np.log2(fit)).astype(np.int64)))
    return np.where(s_pad == 1, 0, -(-g // chunk))


def row_parts(rows: int) -> tuple[int, int, int]:
    """The row tile for ``rows`` key rows: up to three power-of-two parts >= 16, largest first,
    covering ``rows`` rounded up to a multiple of 16 (rounded further up when that needs more than
    three parts). E.g. 96 -> (64, 32, 0), 112 -> (64, 32, 16), 40 -> (32, 16, 0), 128 -> (128, 0, 0)."""
    rows = check_int("rows", rows, minimum=1)
    r16 = -(-rows // MIN_ROWS)
    while bin(r16).count("1") > 3:
        r16 += 1
    parts = [1 << b for b in range(r16.bit_length() - 1, -1, -1) if r16 >> b & 1]
    parts = [p * MIN_ROWS for p in parts] + [0, 0, 0]
    return parts[0], parts[1], parts[2]


def tile_rows(*, d: int, k: int, g: int, selection: str) -> int:
    """Most key rows one split-N program reads: k when the group shares one selection (or
    g = 1), else the largest possible union of the g heads' selections, min(d, g k)."""
    if selection == "group" or g == 1:
        return int(k)
    return int(min(d, g * k))


def padded_tile_rows(rows: int, d: int) -> int:
    """Rows of the tile actually loaded: the sum of :func:`row_parts`, at most d padded to a
    power of two >= 16 (rounding never needs more rows than the padded coordinates)."""
    d_pad = max(MIN_ROWS, 1 << max(0, (int(d) - 1).bit_length()))
    return min(sum(row_parts(rows)), d_pad)


def launch_rule(
    rows: int, *, page: int | None = None, launches: int = DEFAULT_LAUNCHES
) -> tuple[int, int, int]:
    """(block_n, num_warps, num_stages) of the split pass for a tile of ``rows`` key rows, with
    keys unpaged (``page`` None) or paged in pages of ``page`` tokens, for the one-launch kernel
    (``launches`` 1: :data:`FUSED_LAUNCH`) or the three-launch path's split pass."""
    if launches not in LAUNCH_PATHS:
        raise ValueError(f"launches must be one of {LAUNCH_PATHS}, got {launches!r}")
    if launches == 1:
        block_n, warps, stages = FUSED_LAUNCH
        return (block_n if page is None else min(block_n, page)), warps, stages
    if sum(row_parts(rows)) > WIDE_TILE_ROWS:
        return (64 if page is None else min(64, page)), 4, 4
    if page is None or page >= 128:
        return 128, 8, 3
    return min(64, page), 4, 3


def split_count(
    *,
    programs: Any,
    context: Any,
    block_n: Any,
    sm_count: int,
    programs_per_sm: float | None = None,
    num_splits: int | None = None,
    launches: int = DEFAULT_LAUNCHES,
) -> tuple[np.ndarray, np.ndarray]:
    """(num_splits, chunk tokens) of the split pass: N cut into chunks of whole blocks so that no
    split is empty. ``programs`` is B H_kv (one unit per batch element and KV head); with
    ``num_splits`` unset the count aims at ``programs_per_sm`` programs per SM, with at least
    ``MIN_BLOCKS_PER_SPLIT`` blocks per split; the one-launch kernel (``launches`` 1) aims at
    ``FUSED_PROGRAMS_PER_SM`` (rounded down, at least one split) with at least
    ``FUSED_MIN_BLOCKS_PER_SPLIT`` blocks per split. Arrays broadcast."""
    bn = np.asarray(block_n, dtype=np.int64)
    ctx = np.asarray(context, dtype=np.int64)
    units = np.maximum(1, np.asarray(programs, dtype=np.int64))
    blocks = np.maximum(1, -(-ctx // bn))
    if num_splits is not None:
        want = np.full(np.broadcast(blocks, units).shape, int(num_splits), dtype=np.int64)
    elif launches == 1:
        pps = FUSED_PROGRAMS_PER_SM if programs_per_sm is None else programs_per_sm
        want = np.minimum(
            np.floor(pps * int(sm_count) / units).astype(np.int64), -(-blocks // FUSED_MIN_BLOCKS_PER_SPLIT)
        )
    else:
        pps = PROGRAMS_PER_SM if programs_per_sm is None else programs_per_sm
        want = np.minimum(
            np.ceil(pps * int(sm_count) / units).astype(np.int64), -(-blocks // MIN_BLOCKS_PER_SPLIT)
        )
    want = np.maximum(1, np.minimum(want, blocks))
    chunk = -(-blocks // want) * bn
    return -(-ctx // chunk), chunk


def split_programs(
    *,
    batch: Any,
    heads_kv: Any,
    context: Any,
    rows: Any,
    d: Any,
    sm_count: int,
    page: int | None = None,
    launches: int = DEFAULT_LAUNCHES,
) -> np.ndarray:
    """Programs of the split pass at these sizes (B H_kv units times their splits), by the rule
    above for the one-launch kernel or the three-launch path (``launches``); ``rows`` the tile
    rows (:func:`tile_rows`). Arrays broadcast."""
    b, h, n, r, dd = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.int64) for x in (batch, heads_kv, context, rows, d))
    )
    units = b * h
    block_n = np.empty(b.shape, dtype=np.int64)
    for rr, dv in {(int(x), int(y)) for x, y in zip(r.reshape(-1), dd.reshape(-1))}:
        block_n[(r == rr) & (dd == dv)] = launch_rule(
            padded_tile_rows(max(1, rr), dv), page=page, launches=launches
        )[0]
    splits, _ = split_count(programs=units, context=n, block_n=block_n, sm_count=sm_count, launches=launches)
    return units * splits


__all__ = [
    "DEFAULT_LAUNCHES",
    "GIVEN_LAUNCHES",
    "FUSED_LAUNCH",
    "FUSED_PREFETCH_KEYS",
    "FUSED_PREFETCH_VALUE_BLOCKS",
    "FUSED_MIN_BLOCKS_PER_SPLIT",
    "FUSED_PROGRAMS_PER_SM",
    "LAUNCH_PATHS",
    "MIN_BLOCKS_PER_SPLIT",
    "MERGE_TILE_VALUES",
    "MIN_ROWS",
    "PROGRAMS_PER_SM",
    "WIDE_TILE_ROWS",
    "launch_rule",
    "merge_chunk",
    "merge_rounds",
    "padded_splits",
    "padded_tile_rows",
    "row_parts",
    "split_count",
    "split_programs",
    "tile_rows",
]
