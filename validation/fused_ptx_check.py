#!/usr/bin/env python3
"""The one-launch decode kernel's L2 prefetches, as compiled for the H200 (sm_90 PTX; no GPU
needed: Triton's compiler runs on the CPU).

Compiles ``_fused_kernel`` (group selection, k = 32 rows of d = 128, 16 query rows, blocks of 64
tokens, paged keys, four splits, the one-launch rule's 4 warps and 3 stages) for each
(prefetch_value_blocks, prefetch_keys) of ``DecodeConfig`` and counts its ``prefetch.global.L2``
instructions (per thread: every thread issues its share of the prefetch tile), its global loads
and its ``cp.async`` copies, and where the first prefetch sits against the first global load
(before it: the prefetches leave before the query is read).

Usage: PYTHONPATH=. python3 validation/fused_ptx_check.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_ptx_check import compile_sm90  # noqa: E402

from aqua_model.kernels import triton_decode as td  # noqa: E402

#: The compiled case: (constexprs other than the prefetch's, launch options).
CONSTS = dict(
    D=128,
    D_PAD=128,
    M_KEY=128,
    ROWS=16,
    R0=32,
    R1=0,
    R2=0,
    DV=128,
    BLOCK_N=64,
    PAGE=64,
    ROTATE=False,
    SELECT=td._SEL_GROUP,
    APPEND=False,
    GIVEN_PER_HEAD=False,
    HEAD_RANK=False,
    S_PAD=4,
    H_CHUNK=4,
)
NUM_WARPS, NUM_STAGES = 4, 3
ESIZE_BYTES = 2  # bf16
POINTERS = dict(
    q_ptr="*bf16",
    p_ptr="*bf16",
    given_ptr="*i32",
    kn_ptr="*bf16",
    vn_ptr="*bf16",
    k_ptr="*bf16",
    v_ptr="*bf16",
    part_acc_ptr="*fp32",
    part_ml_ptr="*fp32",
    count_ptr="*i32",
    cnt_ptr="*i32",
    out_ptr="*bf16",
)


def compile_fused(prefetch_value_blocks: int, prefetch_keys: bool):
    """``_fused_kernel`` compiled as Triton's JIT would for dim-major paged keys (stride_kn 1,
    every other integer argument divisible by 16)."""
    fn = td._fused_kernel
    cfg = td.DecodeConfig(prefetch_value_blocks=prefetch_value_blocks, prefetch_keys=prefetch_keys)
    consts = dict(CONSTS, **td.prefetch_consts(cfg, value_dim=CONSTS["DV"], dtype=torch.bfloat16))
    ints = {n: 16 for n in fn.arg_names if n not in consts and n not in POINTERS and n != "scale_log2"}
    ints["stride_kn"] = 1
    return compile_sm90(fn, consts, POINTERS, ints, dict(num_warps=NUM_WARPS, num_stages=NUM_STAGES))


def expected_prefetches(prefetch_value_blocks: int, prefetch_keys: bool) -> int:
    """Prefetch instructions per thread: the V tile (blocks x block_n tokens x lines a token) and
    the key rows of one block (M_KEY rows, padded to D_PAD, one line each), over the threads."""
    threads = 32 * NUM_WARPS
    v_lines = max(1, CONSTS["DV"] * ESIZE_BYTES // td.L2_LINE_BYTES)
    v = prefetch_value_blocks * CONSTS["BLOCK_N"] * v_lines
    k = CONSTS["D_PAD"] if prefetch_keys else 0
    return -(-v // threads) + -(-k // threads)


def count(prefetch_value_blocks: int, prefetch_keys: bool) -> dict:
    ptx = compile_fused(prefetch_value_blocks, prefetch_keys).asm["ptx"]
    lines = ptx.splitlines()
    first = {
        pat: next((i for i, ln in enumerate(lines) if re.search(pat, ln)), None)
        for pat in (r"prefetch\.global\.L2", r"ld\.global")
    }
    pf, ld = first[r"prefetch\.global\.L2"], first[r"ld\.global"]
    return dict(
        prefetch_value_blocks=prefetch_value_blocks,
        prefetch_keys=prefetch_keys,
        prefetch_instructions=len(re.findall(r"prefetch\.global\.L2", ptx)),
        expected_prefetch_instructions=expected_prefetches(prefetch_value_blocks, prefetch_keys),
        global_loads=len(re.findall(r"ld\.global", ptx)),
        cp_async=len(re.findall(r"cp\.async\.[a-z]+\.shared\.global", ptx)),
        prefetch_before_first_load=None if pf is None or ld is None else pf < ld,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not td.HAS_TRITON:
        print("needs triton")
        return 2
    import triton

    rows = [count(pv, pk) for pv in td.PREFETCH_VALUE_BLOCKS for pk in (False, True)]
    for r in rows:
        print(r)
    if args.out:
        env = dict(triton=triton.__version__, target="cuda sm_90", consts=CONSTS, num_warps=NUM_WARPS)
        args.out.write_text(json.dumps(dict(env=env, rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
