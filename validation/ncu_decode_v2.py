#!/usr/bin/env python3
"""Each decode kernel once per shape, for Nsight Compute (ncu) to read its counters.

Kernels: torch SDPA (cuDNN backend, the one ``bench_decode_v2.py`` found fastest at these shapes)
on a dense token-major K and V, and ``aqua_decode`` (q^ given, launch parameters by the shipped
rule) on an ``AquaKVCache`` (paged dim-major keys, T = 64), on the path ``--launches`` picks: 1
(the default, one launch: ``td.FUSED_KERNELS``) or 3 (prologue, split-N pass, combine:
``td.KERNELS``, the path of the committed v2 results).
Shapes ``--shapes v2``: B = 8, H_q = 32, H_kv in {32 (MHA), 8 (GQA g = 4)}, N in {16384, 65536},
d = 128, bf16, random normal inputs; k in {96, 32} (MHA: per-head selection, which is group
selection at g = 1; GQA: group selection), plus per-head selection under GQA at k = 32 and k = 96.
``--shapes v3`` (the default): those cases, then batch-1 GQA cases: B = 1, H_q = 32, H_kv = 8,
d = 128, N in {32768, 65536}, group selection at k in {32, 64}, each N's after an SDPA case of
its shape.

Each call is first made once outside the profiled range (Triton compile, cuDNN plan, cached
launcher), then once inside the NVTX push/pop range ``PROFILED_RANGE``; ncu's
``--nvtx --nvtx-include aqua_ncu/`` profiles only those launches. Cases run in ``cases()``'s order,
each SDPA case before the AQUA cases of its (B, H_kv, N), so the digest can walk ncu's rows in
launch order: an AQUA case is exactly its ``expected_kernels`` (the launches of its path); an
SDPA case is every launch up to the next AQUA case's first kernel. The manifest (JSONL, one line
per case, in that order) holds each case's shape, the kernel names expected and the useful bytes:
SDPA's all of K and V; AQUA's streaming kernel (the split pass, or the one-launch kernel) the key
rows it reads (the union count ``last_launcher().cnt``, summed over batch and KV heads) x N x 2
bytes plus all of V.

Usage (on the GPU; validation/run_ncu_decode_v3.sh runs all of it):
  ncu --target-processes all --clock-control none --nvtx --nvtx-include aqua_ncu/ \\
      --metrics <see analysis/ncu_decode_v2_digest.py METRICS> --export REP \\
      python3 validation/ncu_decode_v2.py --launches 1 --shapes v3 --manifest MANIFEST.jsonl
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
#: ``--shapes v3`` adds batch-1 GQA cases (group selection): B, H_kv, contexts, k.
V3_BATCH, V3_HEADS_KV = 1, 8
V3_CONTEXTS = (32768, 65536)
V3_K_KEEP = (32, 64)
SHAPES = ("v2", "v3")
#: ``--launches`` -> the kernel names that path launches, in order.
LAUNCH_KERNELS: dict[int, tuple[str, ...]] = {1: td.FUSED_KERNELS, 3: td.KERNELS}


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


def cases(
    *,
    batch: int = BATCH,
    contexts: tuple[int, ...] = CONTEXTS,
    shapes: str = "v2",
    v3_contexts: tuple[int, ...] = V3_CONTEXTS,
) -> list[Case]:
    """The profiled cases in launch order: per (B, H_kv, N), SDPA, then the AQUA cases (``shapes``
    "v2": the committed v2 run's cases; "v3": those, then the batch-1 GQA cases at ``v3_contexts``)."""
    if shapes not in SHAPES:
        raise ValueError(f"shapes must be one of {SHAPES}, got {shapes!r}")
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
    if shapes == "v3":
        for N in v3_contexts:
            out.append(Case("sdpa", V3_BATCH, HEADS_Q, V3_HEADS_KV, N, HEAD_DIM))
            for k in V3_K_KEEP:
                out.append(Case("aqua", V3_BATCH, HEADS_Q, V3_HEADS_KV, N, HEAD_DIM, k, "group"))
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


def run(
    manifest_path: str,
    *,
    dry_run: bool,
    scale: int,
    warmup: bool = True,
    launches: int = 1,
    shapes: str = "v3",
) -> int:
    if launches not in LAUNCH_KERNELS:
        raise ValueError(f"launches must be one of {sorted(LAUNCH_KERNELS)}, got {launches!r}")
    expected = list(LAUNCH_KERNELS[launches])
    cuda = torch.cuda.is_available() and not dry_run
    if not cuda and not dry_run:
        print("no CUDA device: use --dry-run for the CPU check", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if cuda else "cpu")
    dt = torch.bfloat16
    batch = BATCH if cuda else 2
    contexts = CONTEXTS if cuda else tuple(max(64, n // scale) for n in CONTEXTS)
    v3_contexts = V3_CONTEXTS if cuda else tuple(max(64, n // scale) for n in V3_CONTEXTS)
    torch.manual_seed(SEED)
    rows: list[dict] = []
    todo = cases(batch=batch, contexts=contexts, shapes=shapes, v3_contexts=v3_contexts)
    inputs: dict[tuple[int, int, int], dict] = {}
    for c in todo:
        key = (c.B, c.hkv, c.N)
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
                    inp["q_hat"],
                    keys,
                    v_all,
                    k_keep=k_keep,
                    selection=selection,
                    length=N,
                    out=out,
                    launches=launches,
                )
            )
            host_rows = rows_read_host(inp["q_hat"], hkv=c.hkv, k=c.k, selection=c.selection)
            row.update(expected_kernels=expected, launches=launches, rows_read_host=host_rows)
        if warmup:
            fn()  # warm-up: compile, plan, cache the launcher (outside the profiled range)
        with profiled(cuda):
            res = fn()
        if c.kind == "aqua":
            la = td.last_launcher() if cuda else None
            rows_read = int(la.cnt.sum().item()) if la is not None else row["rows_read_host"]
            row.update(
                rows_read=rows_read,
                rows_read_from=(
                    ("prologue count" if launches == 3 else "fused kernel count")
                    if la is not None
                    else "host topk"
                ),
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
    ap.add_argument(
        "--launches",
        type=int,
        choices=sorted(LAUNCH_KERNELS),
        default=1,
        help="AQUA's path: 1 the one-launch kernel (td.FUSED_KERNELS), 3 prologue, split, combine (td.KERNELS)",
    )
    ap.add_argument(
        "--shapes",
        choices=SHAPES,
        default="v3",
        help="v2: the committed v2 run's cases; v3: those plus batch-1 GQA cases (B 1, H_kv 8, N 32K and 64K)",
    )
    args = ap.parse_args(argv)
    if args.dry_run_scale < 1:
        raise ValueError(f"--dry-run-scale must be >= 1, got {args.dry_run_scale}")
    return run(
        args.manifest,
        dry_run=args.dry_run,
        scale=args.dry_run_scale,
        warmup=not args.no_warmup,
        launches=args.launches,
        shapes=args.shapes,
    )


if __name__ == "__main__":
    sys.exit(main())
