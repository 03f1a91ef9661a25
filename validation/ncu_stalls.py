#!/usr/bin/env python3
"""The one-launch decode and SDPA once each per shape, for Nsight Compute's warp-state sections
(where the kernel's warps wait: memory, barriers, the scheduler).

Shapes (H_q = 32, H_kv = 8, d = 128, bf16, group selection, random inputs, dim-major keys of an
aligned capacity): the issue's short target (B = 1, N = 1024, k = 32), its 16K GQA target
(B = 8, N = 16384, k = 32) and its batch-1 long target (B = 1, N = 32768, k = 32). Each call is made
once outside the profiled NVTX range (compile, plan) and once inside ``aqua_ncu``; SDPA (cuDNN)
on the same shape after it. Prints one line per profiled case, in launch order.

Usage on the GPU (see validation/run_h200_kernels_v5.sh, NCU_STALLS=1):
  ncu --nvtx --nvtx-include aqua_ncu/ --section WarpStateStats ... python3 validation/ncu_stalls.py
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from aqua_model.kernels import triton_decode as td

PROFILED_RANGE = "aqua_ncu"
SHAPES = [(1, 1024, 32), (8, 16384, 32), (1, 32768, 32)]  # (B, N, k)
HEADS_Q, HEADS_KV, HEAD_DIM = 32, 8, 128


def main() -> int:
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(20261203)
    dt, dev = torch.bfloat16, torch.device("cuda")
    for B, N, k in SHAPES:
        cap = -(-N // 16) * 16 + 16
        q = torch.randn(B, HEADS_Q, HEAD_DIM, device=dev, dtype=dt)
        kT = torch.randn(B, HEADS_KV, HEAD_DIM, cap, device=dev, dtype=dt)
        v = torch.randn(B, HEADS_KV, cap, HEAD_DIM, device=dev, dtype=dt)
        kd = torch.randn(B, HEADS_KV, N, HEAD_DIM, device=dev, dtype=dt)
        out = torch.empty(B, HEADS_Q, HEAD_DIM, device=dev, dtype=dt)

        def aqua(q=q, kT=kT, v=v, out=out, N=N, k=k):
            return td.aqua_decode(q, kT, v, k_keep=k, selection="group", length=N, out=out)

        def sdpa(q=q, kd=kd, v=v, N=N):
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q.unsqueeze(2), kd, v[:, :, :N], enable_gqa=True)

        for label, fn in (("aqua", aqua), ("sdpa", sdpa)):
            fn()
            torch.cuda.synchronize()
            torch.cuda.nvtx.range_push(PROFILED_RANGE)
            fn()
            torch.cuda.synchronize()
            torch.cuda.nvtx.range_pop()
            print(f"profiled {label} B={B} N={N} k={k}", flush=True)
        del q, kT, v, kd, out
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
