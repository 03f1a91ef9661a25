#!/usr/bin/env python3
"""Static SASS instruction counts of the decode kernel's selection, compiled for the H200 (sm_90)
on any machine with triton (no GPU needed: Triton's bundled ptxas and cuobjdump).

Compares, at D_PAD = 128 and 16 query rows (the one-launch kernel's tile):
``sort-group``  the old group selection: a sort of the 16-row running-sum tile (``_topk_mask``);
``rank-group``  the shipped one: the rank of each coordinate of the group's sum (``_rank_keep``);
``sort-head``   per-head selection by one sort of the tile (``_topk_mask``, used above
                ``HEAD_RANK_MAX_GROUP`` heads);
``rank-head``   per-head selection ranking one head at a time (one loop iteration's body: the
                loop runs g times).
Static counts are a proxy (the kernels have no data-dependent branches in these parts; the
rank-head loop body runs g times); the timed comparison is the GPU benchmark's.

Usage: PYTHONPATH=. python3 validation/select_sass.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from aqua_model.kernels import triton_decode as td

ROWS = 16
D_PAD = 128
TARGET = GPUTarget("cuda", 90, 32)


@triton.jit
def _load_tile(q_ptr, G, ROWS: tl.constexpr, D_PAD: tl.constexpr):
    rows = tl.arange(0, ROWS)
    dims = tl.arange(0, D_PAD)
    ok = (rows < G)[:, None] & (dims < D_PAD)[None, :]
    return tl.load(q_ptr + rows[:, None] * D_PAD + dims[None, :], mask=ok, other=0.0), ok


@triton.jit
def sort_group(q_ptr, o_ptr, k_keep, G, ROWS: tl.constexpr, D_PAD: tl.constexpr):
    qh, ok = _load_tile(q_ptr, G, ROWS, D_PAD)
    rows = tl.arange(0, ROWS)
    gm = tl.cumsum(tl.where(ok, tl.abs(qh), 0.0), axis=0)
    last = td._topk_mask(gm, k_keep, D_PAD) & (rows == ROWS - 1)[:, None]
    tl.store(o_ptr + tl.arange(0, D_PAD), tl.max(last.to(tl.int32), axis=0))


@triton.jit
def rank_group(q_ptr, o_ptr, k_keep, G, ROWS: tl.constexpr, D_PAD: tl.constexpr):
    qh, ok = _load_tile(q_ptr, G, ROWS, D_PAD)
    gm = tl.sum(tl.where(ok, tl.abs(qh), 0.0), axis=0)
    tl.store(o_ptr + tl.arange(0, D_PAD), td._rank_keep(gm, k_keep, D_PAD).to(tl.int32))


@triton.jit
def sort_head(q_ptr, o_ptr, k_keep, G, ROWS: tl.constexpr, D_PAD: tl.constexpr):
    qh, ok = _load_tile(q_ptr, G, ROWS, D_PAD)
    sel = td._topk_mask(tl.where(ok, tl.abs(qh), -1.0), k_keep, D_PAD) & ok
    rows = tl.arange(0, ROWS)
    tl.store(o_ptr + rows[:, None] * D_PAD + tl.arange(0, D_PAD)[None, :], sel.to(tl.int32))


@triton.jit
def rank_head(q_ptr, o_ptr, k_keep, G, ROWS: tl.constexpr, D_PAD: tl.constexpr):
    qh, ok = _load_tile(q_ptr, G, ROWS, D_PAD)
    rows = tl.arange(0, ROWS)
    row = (rows == G - 1)[:, None]  # one head: the body of the per-head loop
    keep = td._rank_keep(tl.max(tl.where(row, tl.abs(qh), -1.0), axis=0), k_keep, D_PAD)
    tl.store(o_ptr + rows[:, None] * D_PAD + tl.arange(0, D_PAD)[None, :], (row & keep[None, :]).to(tl.int32))


SIGNATURE = {
    "q_ptr": "*fp32",
    "o_ptr": "*i32",
    "k_keep": "i32",
    "G": "i32",
    "ROWS": "constexpr",
    "D_PAD": "constexpr",
}


def sass_count(fn, num_warps: int) -> dict:
    c = triton.compile(
        ASTSource(fn=fn, signature=SIGNATURE, constexprs={"ROWS": ROWS, "D_PAD": D_PAD}),
        target=TARGET,
        options={"num_warps": num_warps},
    )
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    cubin = Path("/tmp") / f"select_sass_{fn.__name__}_{num_warps}.cubin"
    cubin.write_bytes(c.asm["cubin"])
    sass = subprocess.run([str(tool), "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    n = len(re.findall(r"^\s+/\*[0-9a-f]{4}\*/", sass, re.M))
    return dict(
        variant=fn.__name__,
        num_warps=num_warps,
        sass_instructions=n,
        local_memory=".local" in c.asm["ptx"],
        shared_bytes=c.metadata.shared,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = [sass_count(fn, w) for fn in (sort_group, rank_group, sort_head, rank_head) for w in (4, 8)]
    env = dict(triton=triton.__version__, target="cuda sm_90", rows=ROWS, d_pad=D_PAD)
    for r in rows:
        print(r)
    if args.out:
        args.out.write_text(json.dumps(dict(env=env, rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
