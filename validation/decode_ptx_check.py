#!/usr/bin/env python3
"""Why a dim-major K^T whose row stride is not a multiple of 16 is slow: the PTX says so.

Compiles the split kernel of ``aqua_model.kernels.triton_decode`` for sm_90 (no GPU needed:
Triton's compiler and its bundled ptxas run on the CPU) twice, with Triton's own specialisation
of the row-stride argument: divisible by 16 (what Triton assumes for N = 12352, or for any row of
``AquaKVCache``'s pages) and not (N = 12345 or 12344: Triton specialises integers only on
divisibility by 16), and counts the global-memory instructions of each. With the hint the key
rows are copied by 16-byte ``cp.async`` into shared memory (pipelined); without it every key
element is a scalar 2-byte ``ld.global.b16``. Writes ``analysis/results/decode_kernels_ptx.md``.

Usage: PYTHONPATH=. python3 validation/decode_ptx_check.py   (needs triton installed)
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from aqua_model.kernels import triton_decode as td

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "analysis" / "results" / "decode_kernels_ptx.md"
#: The shipped rule's split kernel for k = 96 under MHA (rows 64 + 32), d_v = 128, unpaged.
CONSTS = dict(ROWS=16, R0=64, R1=32, R2=0, DV=128, BLOCK_N=64, PAGE=td._NO_PAGE)
OPTIONS = dict(num_warps=4, num_stages=4)
PATTERN = r"(cp\.async\.[a-z]+\.shared\.global|ld\.global[.a-z0-9]*)"


def compile_sm90(fn, consts: dict, pointers: dict[str, str], ints: dict[str, int], options: dict):
    """``fn`` compiled for sm_90 as Triton's JIT specialises a call: ``pointers`` (name -> type)
    16-byte aligned (torch allocations are), an integer argument of ``ints`` equal to 1 a
    constant, one divisible by 16 marked so (arguments in ``do_not_specialize`` neither),
    ``scale_log2`` fp32, every name of ``consts`` a constexpr."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    no_spec = {fn.arg_names[p.num] for p in fn.params if p.do_not_specialize}
    sig, attrs, consts = {}, {}, dict(consts)
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name], attrs[(i,)] = pointers[name], [["tt.divisibility", 16]]
        elif name == "scale_log2":
            sig[name] = "fp32"
        elif name not in no_spec and ints[name] == 1:  # Triton turns an integer 1 into a constant
            sig[name], consts[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if name not in no_spec and ints[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(
        ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", 90, 32), options=options
    )


def compile_split(row_stride: int):
    """The split kernel compiled as Triton's JIT would for a K^T row stride of ``row_stride``."""
    pointers = {
        "qs_ptr": "*bf16",
        "idx_ptr": "*i32",
        "cnt_ptr": "*i32",
        "k_ptr": "*bf16",
        "v_ptr": "*bf16",
        "part_acc_ptr": "*fp32",
        "part_ml_ptr": "*fp32",
    }
    ints = dict(
        N=row_stride,
        chunk_blocks=8,
        G=1,
        heads_kv=32,
        num_splits=5,
        stride_kb=32 * 128 * row_stride,
        stride_kh=128 * row_stride,
        stride_kt=0,
        stride_kd=row_stride,
        stride_kn=1,
        stride_vb=32 * row_stride * 128,
        stride_vh=row_stride * 128,
        stride_vn=128,
    )
    return compile_sm90(td._split_kernel, CONSTS, pointers, ints, OPTIONS)


def main() -> int:
    if not td.HAS_TRITON:
        print("needs triton")
        return 2
    lines = [
        "# The split kernel's global loads against the K^T row stride (sm_90 PTX)",
        "",
        "| row stride (N) | N % 16 | instruction | count |",
        "|---|---|---|---|",
    ]
    for stride in (12352, 12345, 12344):
        counts = Counter(re.findall(PATTERN, compile_split(stride).asm["ptx"]))
        for instr, n in sorted(counts.items()):
            lines.append(f"| {stride} | {stride % 16} | `{instr}` | {n} |")
    lines += [
        "",
        "From `python validation/decode_ptx_check.py` (Triton's compiler for sm_90 on the CPU; no GPU). The "
        f"split kernel at constexprs {CONSTS} and {OPTIONS}. With the row stride divisible by 16 the key rows are "
        "copied by 16-byte `cp.async` (pipelined through shared memory); without it the key loads are scalar "
        "`ld.global.b16` (the `ld.global.b16` also present with the hint are the masked last block of each split "
        "and the per-program q^ loads). Measured cost: `decode_kernels_cliff.md`.",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
