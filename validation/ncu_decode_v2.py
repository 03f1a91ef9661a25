#!/usr/bin/env python3
"""Each decode kernel once per shape, for Nsight Compute (ncu) to read its counters.

Kernels: torch SDPA (cuDNN backend, the one ``bench_decode_v2.py`` found fastest at these shapes)
on a dense token-major K and V, and ``aqua_decode`` (prologue, split-N pass, combine; q^ given,
launch parameters by the shipped rule) on an ``AquaKVCache`` (paged dim-major keys, T = 64).
Shapes: B = 8, H_q = 32, H_kv in {32 (MHA), 8 (GQA g = 4)}, N in {16384, 65536}, d = 128, bf16,
random normal inputs; k in {96, 32} (MHA: per-head selection, which is group selection at g = 1;
GQA: group selection), plus per-head selection under GQA at k = 32 and k = 96.

Each call is first made once outside the profiled range (Triton compile, cuDNN plan, cached
launcher), then once inside the NVTX push/pop range ``PROFILED_RANGE``; ncu's
``--nvtx --nvtx-include aqua_ncu/`` profiles only those launches. Cases run in ``cases()``'s order,
each SDPA case before the AQUA cases of its (H_kv, N), so the digest can walk ncu's rows in launch
order: an AQUA case is exactly ``KERNELS`` (three launches); an SDPA case is every launch up to
the next prologue. The manifest (JSONL, one line per case, in that order) holds each case's
shape, the kernel names expected and the useful bytes: SDPA's all of K and V; AQUA's split pass
the key rows it reads (the prologue's union count, summed over batch and KV heads) x N x 2 bytes
plus all of V.

Usage (on the GPU):
  ncu --target-processes all --clock-control none --nvtx --nvtx-include aqua_ncu/ \\
      --metrics <see analysis/ncu_decode_v2_digest.py METRICS> --export REP \\
      python3 validation/ncu_decode_v2.py --manifest MANIFEST.jsonl
  ncu --import REP.ncu-rep --csv --page raw --print-units base > NCU.csv
  python3 analysis/ncu_decode_v2_digest.py --ncu NCU.csv --manifest MANIFEST.jsonl
CPU check (no profiler; contexts scaled down by --dry-run-scale, the reference fallback):
  python3 validation/ncu_decode_v2.py --dry-run --manifest /tmp/m.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from aqua_model.kernels import triton_decode as td
from aqua_model.kernels.kv_cache import AquaKVCache

#: NVTX range that ncu's --nvtx-include selects (a push/pop range: "aqua_ncu/" on the command line).
PROFILED_RANGE = "aqua_ncu"
SEED = 20261201
BATCH, HEADS_Q, HEAD_DIM = 8, 32, 128
HEADS_KV = (32, 8)
CONTEXTS = (16384, 65536)
K_KEEP = (96, 32)
#: Per-head selection under GQA is profiled at these k as well.
PER_HEAD_GQA_K = (32, 96)
ESIZE_BYTES = 2  # bf16


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str  # "sdpa" or "aqua"
    B: int
    hq: int
    hkv: int
    N: int
    d: int
    k: int | None = None
    selection: str | None = None

    @property
    def g(self) -> int:
        return self.hq // self.hkv

    @property
    def label(self) -> str:
        base = f"B{self.B} Hq{self.hq}/Hkv{self.hkv} N{self.N} d{self.d}"
        if self.kind == "sdpa":
            return f"sdpa {base}"
        return f"aqua {self.selection} k{self.k} {base}"


def cases(*, batch: int = BATCH, contexts: tuple[int, ...] = CONTEXTS) -> list[Case]:
    """The profiled cases in launch order: per (H_kv, N), SDPA, then the AQUA cases."""
    out: list[Case] = []
    for hkv in HEADS_KV:
        for N in contexts:
            out.append(Case("sdpa", batch, HEADS_Q, hkv, N, HEAD_DIM))
            sel = "per-head" if hkv == HEADS_Q else "group"
            for k in K_KEEP:
                out.append(Case("aqua", batch, HEADS_Q, hkv, N, HEAD_DIM, k, sel))
            if hkv != HEADS_Q:
                for k in PER_HEAD_GQA_K:
                    out.append(Case("aqua", batch, HEADS_Q, hkv, N, HEAD_DIM, k, "per-head"))
    return out


def rows_read_host(q_hat: torch.Tensor, *, hkv: int, k: int, selection: str) -> int:
    """Key rows the split pass reads, summed over batch and KV heads, from torch.topk of |q^|
    (group selection: k per group; per-head: the union of the group's heads' rows)."""
    B, hq, d = q_hat.shape
    g = hq // hkv
    mag = q_hat.float().abs()
    if selection == "group":
        idx = torch.topk(mag.reshape(B, hkv, g, d).sum(2), k, dim=-1).indices
        return int(idx.shape[0] * idx.shape[1] * k)
    idx = torch.topk(mag, k, dim=-1).indices
    return int(td.union_rows(idx, group=g, m=d).sum().item())


@contextlib.contextmanager
def profiled(enabled: bool) -> Iterator[None]:
    """The NVTX range ncu profiles (CUDA only; a no-op on the CPU)."""
    if enabled:
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push(PROFILED_RANGE)
    try:
        yield
    finally:
        if enabled:
            torch.cuda.synchronize()
            torch.cuda.nvtx.range_pop()


def sdpa_call(
    q4: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: int, cuda: bool
) -> Callable[[], torch.Tensor]:
    """SDPA decode with the cuDNN backend on CUDA (the default dispatch on the CPU)."""
    if not cuda:
        return lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=g > 1)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def fn() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q4, k, v, enable_gqa=g > 1)

    return fn


def run(manifest_path: str, *, dry_run: bool, scale: int, warmup: bool = True) -> int:
    cuda = torch.cuda.is_available() and not dry_run
    if not cuda and not dry_run:
        print("no CUDA device: use --dry-run for the CPU check", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if cuda else "cpu")
    dt = torch.bfloat16
    batch = BATCH if cuda else 2
    contexts = CONTEXTS if cuda else tuple(max(64, n // scale) for n in CONTEXTS)
    torch.manual_seed(SEED)
    rows: list[dict] = []
    todo = cases(batch=batch, contexts=contexts)
    inputs: dict[tuple[int, int], dict] = {}
    for c in todo:
        key = (c.hkv, c.N)
        if key not in inputs:
            inputs.clear()  # one shape's buffers at a time
            if cuda:
                torch.cuda.empty_cache()
            cache = AquaKVCache(
                batch=c.B, heads_kv=c.hkv, head_dim=c.d, capacity=c.N + 1, dtype=dt, device=dev
            )
            cache.keys[0].normal_()
            cache.values[0, :, :, : c.N].normal_()
            cache.lengths[0] = c.N
            inputs[key] = dict(
                cache=cache,
                k_dense=torch.randn(c.B, c.hkv, c.N, c.d, device=dev, dtype=dt),
                q_hat=torch.randn(c.B, c.hq, c.d, device=dev, dtype=dt),
            )
        inp = inputs[key]
        cache = inp["cache"]
        v_all = cache.values[0]
        row: dict[str, object] = {
            "order": len(rows),
            "label": c.label,
            **dataclasses.asdict(c),
            "g": c.g,
            "dtype": "bfloat16",
            "device": torch.cuda.get_device_name() if cuda else "cpu",
        }
        if c.kind == "sdpa":
            q4 = inp["q_hat"].unsqueeze(2)
            fn = sdpa_call(q4, inp["k_dense"], v_all[:, :, : c.N], c.g, cuda)
            row.update(
                expected_kernels=None,
                backend="cudnn_attention" if cuda else "cpu default",
                useful_bytes=c.B * c.hkv * c.N * 2 * c.d * ESIZE_BYTES,
            )
        else:
            out = torch.full((c.B, c.hq, c.d), float("nan"), dtype=dt, device=dev)
            keys = cache.keys[0]
            k_keep, selection, N = c.k, c.selection, c.N
            fn = lambda keys=keys, out=out, k_keep=k_keep, selection=selection, N=N: (  # noqa: E731
                td.aqua_decode(
                    inp["q_hat"], keys, v_all, k_keep=k_keep, selection=selection, length=N, out=out
                )
            )
            host_rows = rows_read_host(inp["q_hat"], hkv=c.hkv, k=c.k, selection=c.selection)
            row.update(expected_kernels=list(td.KERNELS), rows_read_host=host_rows)
        if warmup:
            fn()  # warm-up: compile, plan, cache the launcher (outside the profiled range)
        with profiled(cuda):
            res = fn()
        if c.kind == "aqua":
            la = td.last_launcher() if cuda else None
            rows_read = int(la.cnt.sum().item()) if la is not None else row["rows_read_host"]
            row.update(
                rows_read=rows_read,
                rows_read_from="prologue count" if la is not None else "host topk",
                useful_bytes=(rows_read + c.B * c.hkv * c.d) * c.N * ESIZE_BYTES,
            )
            if la is not None:
                row.update(
                    config=dataclasses.asdict(la.st.config),
                    splits=la.splits_for(c.N)[0],
                    tile_rows=list(la.parts),
                )
        if not bool(torch.isfinite(res.float()).all()):
            print(f"non-finite output: {c.label}", file=sys.stderr)
            return 1
        rows.append(row)
        print(f"profiled {row['order']:2d}: {c.label}", file=sys.stderr, flush=True)
    with open(manifest_path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} cases to {manifest_path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="JSONL of the profiled cases, in launch order")
    ap.add_argument("--dry-run", action="store_true", help="CPU check: small contexts, no profiler range")
    ap.add_argument("--dry-run-scale", type=int, default=256, help="contexts divided by this under --dry-run")
    ap.add_argument(
        "--no-warmup",
        action="store_true",
        help="no unprofiled call first (for ncu's --kernel-name filter instead of the NVTX range)",
    )
    args = ap.parse_args(argv)
    if args.dry_run_scale < 1:
        raise ValueError(f"--dry-run-scale must be >= 1, got {args.dry_run_scale}")
    return run(args.manifest, dry_run=args.dry_run, scale=args.dry_run_scale, warmup=not args.no_warmup)


if __name__ == "__main__":
    sys.exit(main())
