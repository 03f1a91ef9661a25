#!/usr/bin/env python3
"""One tensor-parallel decode layer over torch.distributed, timed; and the all-reduce timed by size.

What it measures, on t processes (one GPU each over NCCL, or CPU processes over gloo):

1. the all-reduce of M bytes (bf16 on CUDA) for M from 1 KiB to 256 MiB and at the message size of
   each decode batch (B * hidden * 2 bytes): per size, samples of ``--inner`` back-to-back calls
   after a barrier, each sample's time the slowest rank's; median and quartiles. These rows
   calibrate the interconnect (``validation/parallel_report.py`` fits alpha_0, alpha and beta);
2. one decoder layer of the model's shape (default Llama-3.1-70B: hidden 8192, 64 query / 8 KV
   heads of 128, MLP 28672) split Megatron-style over the t ranks: rank r holds query heads
   [r H_q/t, (r+1) H_q/t) with their KV heads (split when t <= H_kv, one replicated head when
   t > H_kv), the matching rows of W_q, W_k, W_v and columns of W_o, and MLP channels
   [r I/t, (r+1) I/t). The layer: qkv = x W_qkv (one matmul; the new key and value are
   projected but not appended to the cache), attention of the rank's heads over its KV cache of
   ``context`` tokens, o = attn W_o, all-reduce(o), h = x + o, gate|up = h W_gu (one matmul),
   m = (silu(gate) * up) W_down, all-reduce(m), out = h + m. Norms and RoPE are left out.
   Attention runs two ways: ``dense-fused`` (torch SDPA, token-major K and V, enable_gqa) and
   ``aqua-fused`` (``aqua_model.kernels.triton_decode.aqua_decode`` over a dim-major rotated key
   cache, the Triton kernels on CUDA, their torch reference on CPU; queries taken as already
   rotated, P folded into W_q; group-shared selection of k dims). Timed: the whole layer
   (``--layers-per-sample`` distinct layers back to back per sample, so a barrier's skew is
   spread over several layers; eager launches timed by CUDA events, or CUDA-graph replays with
   ``--graph-layer``; L2 flushed before each sample), and on each rank alone the attention and
   the matmuls without the all-reduces (CUDA-graph replays, the single-GPU suite's timer);
3. correctness, once per plan at the smallest context and batch: the all-reduced attention output
   and MLP output of the split layer against the same layer computed whole in fp32 on rank 0 from
   the full weights (the same seeded tensors every rank sliced), given the split layer's queries;
   AQUA's reference is ``reference.aqua_attention_rotated`` with group selection (skipped when
   t > H_kv: a rank's group then holds only H_q/t of the group's heads, which changes the selection).

NCCL runs with NVLink multicast off, as the project's machines require: NCCL_NVLS_ENABLE=0,
TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1 are forced in this process and every
process it starts, before torch initialises CUDA or NCCL, and recorded in the env row.

Usage (one JSONL per world size; then the report):
  torchrun --nproc-per-node 8 validation/parallel_decode_layer.py --out validation/results/h200x8/parallel_t8.jsonl
  python validation/parallel_decode_layer.py --spawn 2 --backend gloo --tiny --quick --out /tmp/t2.jsonl   # CPU check
  python validation/parallel_report.py validation/results/h200x8/parallel_t*.jsonl --markdown .../parallel_report.md
"""

from __future__ import annotations

import os

#: NVLink multicast switches, forced off before torch touches CUDA or NCCL (see the docstring).
MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
os.environ.update(MULTICAST_OFF)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SCHEMA_VERSION = 1
PLANS = ("dense-fused", "aqua-fused")
#: The tiny shape of the CPU check: every split the 70B shape has, at a size gloo runs in seconds.
TINY = {"hidden": 64, "heads_q": 4, "heads_kv": 2, "head_dim": 16, "intermediate": 128}
#: Relative error allowed between the split layer's outputs and the fp32 whole layer (bf16 inputs
#: and outputs carry 8 bits of mantissa, about 0.4% per rounding; a few roundings in the sums).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 1e-2}
#: Bytes zeroed before each timed sample on CUDA (several times the H200's 60 MB L2).
FLUSH_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Shape:
    """One decoder layer's widths (the whole layer, before the split)."""

    hidden: int
    heads_q: int
    heads_kv: int
    head_dim: int
    intermediate: int


@dataclass(frozen=True)
class Shard:
    """What rank ``rank`` of ``t`` holds: index ranges into the whole layer's heads and channels."""

    t: int
    rank: int
    q_heads: range
    kv_heads: range
    mlp: range

    @property
    def heads_q(self) -> int:
        return len(self.q_heads)

    @property
    def heads_kv(self) -> int:
        return len(self.kv_heads)


def shard_of(shape: Shape, t: int, rank: int) -> Shard:
    """Megatron's contiguous split; one replicated KV head per rank when t > H_kv (query head h
    reads KV head h // g, so rank r's heads all read KV head r // (t / H_kv))."""
    if shape.heads_q % t or shape.intermediate % t:
        raise ValueError(
            f"t={t} must divide the {shape.heads_q} query heads and {shape.intermediate} MLP channels"
        )
    if (t <= shape.heads_kv and shape.heads_kv % t) or (t > shape.heads_kv and t % shape.heads_kv):
        raise ValueError(f"t={t} must divide the {shape.heads_kv} KV heads or be a multiple of them")
    hq, inter = shape.heads_q // t, shape.intermediate // t
    if t <= shape.heads_kv:
        kv = shape.heads_kv // t
        kv_heads = range(rank * kv, (rank + 1) * kv)
    else:
        head = rank // (t // shape.heads_kv)
        kv_heads = range(head, head + 1)
    return Shard(
        t, rank, range(rank * hq, (rank + 1) * hq), kv_heads, range(rank * inter, (rank + 1) * inter)
    )


# -- weights and caches --------------------------------------------------------------------------


@dataclass
class LayerWeights:
    """One rank's weights, stored [in, out] for x @ W: qkv [h, (hq + 2 hkv) d], o [hq d, h],
    gu [h, 2 I/t] (gate then up), down [I/t, h]."""

    qkv: torch.Tensor
    o: torch.Tensor
    gu: torch.Tensor
    down: torch.Tensor


def _randn(shape: tuple[int, ...], gen: torch.Generator, device: torch.device, fan_in: int) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32) / math.sqrt(fan_in)


def full_layer(shape: Shape, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The whole layer's weights in fp32, [out, in] as nn.Linear stores them, from ``seed``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    h, d = shape.hidden, shape.head_dim
    return {
        "q": _randn((shape.heads_q * d, h), gen, device, h),
        "k": _randn((shape.heads_kv * d, h), gen, device, h),
        "v": _randn((shape.heads_kv * d, h), gen, device, h),
        "o": _randn((h, shape.heads_q * d), gen, device, shape.heads_q * d),
        "gate": _randn((shape.intermediate, h), gen, device, h),
        "up": _randn((shape.intermediate, h), gen, device, h),
        "down": _randn((h, shape.intermediate), gen, device, shape.intermediate),
    }


def slice_layer(
    full: dict[str, torch.Tensor], shape: Shape, shard: Shard, dtype: torch.dtype
) -> LayerWeights:
    """Rank ``shard.rank``'s slice of the whole layer, in ``dtype``."""
    d = shape.head_dim
    q = full["q"][shard.q_heads.start * d : shard.q_heads.stop * d]
    k = full["k"][shard.kv_heads.start * d : shard.kv_heads.stop * d]
    v = full["v"][shard.kv_heads.start * d : shard.kv_heads.stop * d]
    o = full["o"][:, shard.q_heads.start * d : shard.q_heads.stop * d]
    m = slice(shard.mlp.start, shard.mlp.stop)
    return LayerWeights(
        qkv=torch.cat([q, k, v]).t().contiguous().to(dtype),
        o=o.t().contiguous().to(dtype),
        gu=torch.cat([full["gate"][m], full["up"][m]]).t().contiguous().to(dtype),
        down=full["down"][:, m].t().contiguous().to(dtype),
    )


def random_shard(
    shape: Shape, shard: Shard, seed: int, device: torch.device, dtype: torch.dtype
) -> LayerWeights:
    """A rank's weights drawn directly at shard size (the layers timed after the checked one)."""
    gen = torch.Generator(device=device).manual_seed(seed * 1009 + shard.rank)
    h, d, inter = shape.hidden, shape.head_dim, len(shard.mlp)
    cols = (shard.heads_q + 2 * shard.heads_kv) * d
    return LayerWeights(
        qkv=_randn((h, cols), gen, device, h).to(dtype),
        o=_randn((shard.heads_q * d, h), gen, device, shard.heads_q * d).to(dtype),
        gu=_randn((h, 2 * inter), gen, device, h).to(dtype),
        down=_randn((inter, h), gen, device, inter).to(dtype),
    )


@dataclass
class Cache:
    """A rank's KV cache: token-major K and V [B, hkv, N, d] (SDPA) and AQUA's dim-major rotated
    keys K^T [B, hkv, d, N] (the same keys, so both plans attend over one cache)."""

    k: torch.Tensor
    v: torch.Tensor
    k_t: torch.Tensor


def make_cache(k: torch.Tensor, v: torch.Tensor, plan: str) -> Cache:
    k_t = k.transpose(-1, -2).contiguous() if plan == "aqua-fused" else k[..., :0, :]
    return Cache(k if plan == "dense-fused" else k[..., :0, :], v, k_t)


# -- the layer ------------------------------------------------------------------------------------


def attention_fn(plan: str, k_keep: int) -> Callable[[torch.Tensor, Cache], torch.Tensor]:
    """q [B, hq, d] -> [B, hq, d] over the rank's cache, by ``plan``."""
    if plan == "dense-fused":

        def dense(q: torch.Tensor, c: Cache) -> torch.Tensor:
            return F.scaled_dot_product_attention(
                q.unsqueeze(2), c.k, c.v, enable_gqa=c.k.shape[1] != q.shape[1]
            ).squeeze(2)

        return dense
    from aqua_model.kernels.triton_decode import aqua_decode

    def aqua(q: torch.Tensor, c: Cache) -> torch.Tensor:
        return aqua_decode(q.contiguous(), c.k_t, c.v, k_keep=k_keep, selection="group")

    return aqua


def layer_forward(
    x: torch.Tensor,
    w: LayerWeights,
    cache: Cache,
    shard: Shard,
    shape: Shape,
    attend: Callable[[torch.Tensor, Cache], torch.Tensor],
    *,
    reduce: bool = True,
    trace: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One split decoder layer on this rank; ``reduce=False`` leaves out the two all-reduces."""
    B, d = x.shape[0], shape.head_dim
    qkv = x @ w.qkv
    q = qkv[:, : shard.heads_q * d].reshape(B, shard.heads_q, d)
    a = attend(q, cache)
    o = a.reshape(B, shard.heads_q * d) @ w.o
    if reduce:
        dist.all_reduce(o)
    h = x + o
    gate, up = (h @ w.gu).chunk(2, dim=-1)
    m = (F.silu(gate) * up) @ w.down
    if reduce:
        dist.all_reduce(m)
    if trace is not None:
        trace.update(q=q, o=o, h=h, m=m)
    return h + m


def reference_outputs(
    full: dict[str, torch.Tensor],
    shape: Shape,
    q: torch.Tensor,
    h: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: str,
    k_keep: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole layer in fp32 given all heads' queries q [B, H_q, d] (gathered from the ranks)
    and the split layer's h: the attention block's output o and the MLP's output m."""
    from aqua_model.kernels import reference as ref

    qf, kf, vf = q.float().unsqueeze(2), k.float(), v.float()
    if plan == "dense-fused":
        a = ref.dense_attention(qf, kf, vf, causal=True)
    else:
        a = ref.aqua_attention_rotated(qf, kf, vf, k_keep=k_keep, selection="group", causal=True)
    o = a.squeeze(2).reshape(q.shape[0], -1) @ full["o"].t()
    hf = h.float()
    m = (F.silu(hf @ full["gate"].t()) * (hf @ full["up"].t())) @ full["down"].t()
    return o, m


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


# -- timing ---------------------------------------------------------------------------------------


class Clock:
    """Wall time on the CPU; CUDA events on a GPU (device time, L2 flushed before each sample)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device=device) if self.cuda else None
        self.device = device

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def barrier(self) -> None:
        self.sync()
        if self.cuda:
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def sample(self, fn: Callable[[], Any]) -> float:
        """Seconds of one call of ``fn`` started right after a barrier."""
        if self.cuda:
            self.flush.zero_()
        self.barrier()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def collective_stats(
    clock: Clock, fn: Callable[[], Any], *, samples: int, warmup: int, per_call: int
) -> dict[str, float]:
    """Median and quartiles over ``samples`` of the slowest rank's time per call (``fn`` makes
    ``per_call`` calls), and the median of the fastest rank's (skew shows as their gap)."""
    for _ in range(warmup):
        fn()
    clock.sync()
    times = torch.tensor(
        [clock.sample(fn) / per_call for _ in range(samples)], dtype=torch.float64, device=clock.device
    )
    slow, fast = times.clone(), times.clone()
    dist.all_reduce(slow, op=dist.ReduceOp.MAX)
    dist.all_reduce(fast, op=dist.ReduceOp.MIN)
    s = sorted(slow.tolist())
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
    return {
        "median_s": statistics.median(s),
        "q25_s": q[0],
        "q75_s": q[2],
        "fastest_rank_median_s": statistics.median(fast.tolist()),
        "samples": samples,
    }


def graphed(fn: Callable[[], Any], clock: Clock, enabled: bool) -> tuple[Callable[[], Any], str]:
    """``fn`` as a CUDA-graph replay when every rank captured it, else eager (said in the method)."""
    if not (clock.cuda and enabled):
        return fn, "eager"
    from aqua_model.validate.timing import capture_graph

    graph, why = None, ""
    try:
        graph = capture_graph(fn)
    except Exception as exc:  # noqa: BLE001 - recorded, and every rank then runs eagerly
        why = type(exc).__name__
        torch.cuda.synchronize()
    ok = torch.tensor([1 if graph is not None else 0], device=clock.device)
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if int(ok.item()) == 1:
        return graph.replay, "cuda-graph replay"
    return fn, f"eager (graph capture failed on a rank{': ' + why if why else ''})"


def rank_max(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


# -- the run --------------------------------------------------------------------------------------


def env_row(args: argparse.Namespace, device: torch.device, world: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "env",
        "backend": args.backend,
        "world_size": world,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "date": datetime.date.today().isoformat(),
        "multicast_env": {k: os.environ.get(k) for k in MULTICAST_OFF},
        "device": device.type,
    }
    if device.type == "cuda":
        version = torch.cuda.nccl.version()
        row.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            nccl=".".join(map(str, version)) if isinstance(version, tuple) else str(version),
        )
        try:
            import triton

            row["triton"] = triton.__version__
        except Exception:  # noqa: BLE001
            row["triton"] = None
    return row


def all_reduce_sizes(args: argparse.Namespace, shape: Shape, elem: int) -> list[int]:
    sizes = {1 << e for e in range(args.min_log2_bytes, args.max_log2_bytes + 1, 2)}
    sizes |= {b * shape.hidden * elem for b in args.batches}
    return sorted(s for s in sizes if s >= elem)


def run(rank: int, world: int, args: argparse.Namespace) -> None:
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        if args.backend == "nccl"
        else torch.device("cpu")
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    elem = torch.tensor([], dtype=dtype).element_size()
    shape = Shape(**args.shape)
    shard = shard_of(shape, world, rank)
    clock = Clock(device)
    rows: list[dict[str, Any]] = [env_row(args, device, world)]

    # 1. the all-reduce by size
    for size in all_reduce_sizes(args, shape, elem):
        buf = torch.ones(size // elem, dtype=dtype, device=device)

        def burst() -> None:
            for _ in range(args.inner):
                dist.all_reduce(buf)

        stats = collective_stats(clock, burst, samples=args.samples, warmup=2, per_call=args.inner)
        med = stats["median_s"]
        rows.append(
            {
                "schema_version": SCHEMA_VERSION,
                "kind": "all_reduce",
                "backend": args.backend,
                "world_size": world,
                "dtype": args.dtype,
                "message_bytes": size,
                "inner": args.inner,
                **stats,
                "algbw_bytes_per_s": size / med,
                "busbw_bytes_per_s": size / med * 2 * (world - 1) / world,
            }
        )
        del buf

    # 2. and 3. the layer
    base = dict(
        schema_version=SCHEMA_VERSION,
        kind="layer",
        backend=args.backend,
        world_size=world,
        tensor_parallel=world,
        model=args.model,
        shape=asdict(shape),
        heads_q_per_rank=shard.heads_q,
        heads_kv_per_rank=shard.heads_kv,
        intermediate_per_rank=len(shard.mlp),
        dtype=args.dtype,
        k=args.k,
        layers_per_sample=args.layers_per_sample,
    )
    full = full_layer(shape, args.seed, device)
    weights = [slice_layer(full, shape, shard, dtype)] + [
        random_shard(shape, shard, args.seed + i, device, dtype) for i in range(1, args.layers_per_sample)
    ]
    # rank 0 keeps what the check needs; the others only their slices
    full = {k: v for k, v in full.items() if k in ("o", "gate", "up", "down")} if rank == 0 else {}
    checked: set[str] = set()
    for context in args.contexts:
        for batch in args.batches:
            gen = torch.Generator(device=device).manual_seed(args.seed + 7 * context + batch)
            # the whole cache from one seed, every rank slicing its KV heads (so rank 0 can check)
            k_full = torch.randn(
                batch, shape.heads_kv, context, shape.head_dim, generator=gen, device=device
            ).to(dtype)
            v_full = torch.randn(
                batch, shape.heads_kv, context, shape.head_dim, generator=gen, device=device
            ).to(dtype)
            x = torch.randn(batch, shape.hidden, generator=gen, device=device).to(dtype)
            kv = slice(shard.kv_heads.start, shard.kv_heads.stop)
            k_loc, v_loc = k_full[:, kv].contiguous(), v_full[:, kv].contiguous()
            extra = [
                (torch.randn_like(k_loc), torch.randn_like(v_loc)) for _ in range(1, args.layers_per_sample)
            ]
            for plan in PLANS:
                attend = attention_fn(plan, args.k)
                caches = [make_cache(k_loc, v_loc, plan)] + [make_cache(a, b, plan) for a, b in extra]
                row = dict(
                    base, plan=plan, context=context, batch=batch, message_bytes=batch * shape.hidden * elem
                )
                if plan not in checked:
                    row.update(
                        check_layer(
                            rank,
                            world,
                            shape,
                            shard,
                            full,
                            weights[0],
                            caches[0],
                            attend,
                            x,
                            k_full,
                            v_full,
                            plan,
                            args.k,
                            dtype,
                            device,
                        )
                    )
                    checked.add(plan)

                def stack() -> torch.Tensor:
                    y = x
                    for w, c in zip(weights, caches):
                        y = layer_forward(y, w, c, shard, shape, attend)
                    return y

                fn, method = graphed(stack, clock, args.graph_layer)
                stats = collective_stats(
                    clock, fn, samples=args.samples, warmup=3, per_call=args.layers_per_sample
                )
                row.update(
                    {f"layer_{k}": v for k, v in stats.items() if k != "samples"},
                    samples=stats["samples"],
                    timing=method,
                )
                del fn
                q0 = (
                    (x @ weights[0].qkv)[:, : shard.heads_q * shape.head_dim]
                    .reshape(batch, shard.heads_q, shape.head_dim)
                    .contiguous()
                )
                attn_s = local_time(lambda: attend(q0, caches[0]), device, args)
                mm_s = local_time(
                    lambda: layer_forward(
                        x, weights[0], caches[0], shard, shape, lambda q, c: q, reduce=False
                    ),
                    device,
                    args,
                )
                attn_s, mm_s = rank_max([attn_s, mm_s], device)
                row.update(attention_s=attn_s, matmuls_s=mm_s)
                rows.append(row)
                if rank == 0:
                    print(
                        f"[t={world}] {plan} N={context} B={batch}: layer {row['layer_median_s'] * 1e6:.1f} us "
                        f"(attention {attn_s * 1e6:.1f}, matmuls {mm_s * 1e6:.1f}) [{method}]",
                        flush=True,
                    )
            del k_full, v_full, k_loc, v_loc, extra
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if rank == 0:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
        print(f"wrote {len(rows)} rows to {out}", flush=True)


def local_time(fn: Callable[[], Any], device: torch.device, args: argparse.Namespace) -> float:
    """One rank's own median time of ``fn`` (no collective inside), by the suite's timer."""
    from aqua_model.validate.timing import time_fn

    t = time_fn(
        fn,
        device=device.type,
        warmup_ms=args.warmup_ms,
        rep_ms=args.rep_ms,
        graph=args.graphs and device.type == "cuda",
    )
    return t.median_s


def check_layer(
    rank: int,
    world: int,
    shape: Shape,
    shard: Shard,
    full: dict[str, torch.Tensor],
    w: LayerWeights,
    cache: Cache,
    attend: Callable,
    x: torch.Tensor,
    k_full: torch.Tensor,
    v_full: torch.Tensor,
    plan: str,
    k_keep: int,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, Any]:
    """The split layer's all-reduced outputs against the whole layer in fp32 (on rank 0)."""
    trace: dict[str, torch.Tensor] = {}
    layer_forward(x, w, cache, shard, shape, attend, trace=trace)
    q_parts = [torch.empty(trace["q"].shape, dtype=trace["q"].dtype, device=device) for _ in range(world)]
    dist.all_gather(q_parts, trace["q"].contiguous())
    replicated = world > shape.heads_kv
    if plan == "aqua-fused" and replicated:
        return {
            "check": "skipped: t > H_kv splits a KV group's heads over ranks, so group selection differs",
            "correct": None,
        }
    result = torch.zeros(3, dtype=torch.float64, device=device)
    if rank == 0:
        q_all = torch.cat(q_parts, dim=1)
        o_ref, m_ref = reference_outputs(full, shape, q_all, trace["h"], k_full, v_full, plan, k_keep)
        err_o, err_m = rel_err(trace["o"], o_ref), rel_err(trace["m"], m_ref)
        result = torch.tensor(
            [err_o, err_m, float(max(err_o, err_m) <= TOLERANCE[dtype])], dtype=torch.float64, device=device
        )
    dist.broadcast(result, src=0)
    err_o, err_m, ok = result.tolist()
    return {
        "check": f"all-reduced attention output and MLP output vs the whole layer in fp32 on rank 0 (tolerance {TOLERANCE[dtype]:g})",
        "attention_rel_err": err_o,
        "mlp_rel_err": err_m,
        "correct": bool(ok),
    }


def worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    """A process started by ``--spawn``: joins the group over TCP on localhost."""
    os.environ.update(MULTICAST_OFF)
    torch.set_num_threads(max(1, args.threads))
    dist.init_process_group(args.backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        run(rank, world, args)
    finally:
        dist.destroy_process_group()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSONL written by rank 0")
    p.add_argument(
        "--backend", choices=("nccl", "gloo"), default="nccl" if torch.cuda.is_available() else "gloo"
    )
    p.add_argument(
        "--spawn", type=int, default=0, help="start this many local processes (else: launched by torchrun)"
    )
    p.add_argument(
        "--start-method",
        choices=("spawn", "fork"),
        default="spawn",
        help="how --spawn starts them (fork: CPU only, reuses this process's imports)",
    )
    p.add_argument("--model", default="llama-3.1-70b", help="model config whose layer shape is used")
    p.add_argument("--tiny", action="store_true", help=f"the tiny shape {TINY} (CPU check)")
    p.add_argument("--contexts", default="4096,32768", help="cached tokens N, comma-separated")
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--k", type=int, default=32, help="AQUA's kept dims")
    p.add_argument(
        "--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default: bf16 on CUDA, fp32 on CPU"
    )
    p.add_argument("--layers-per-sample", type=int, default=4)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--inner", type=int, default=10, help="back-to-back all-reduces per sample")
    p.add_argument("--min-log2-bytes", type=int, default=10)
    p.add_argument("--max-log2-bytes", type=int, default=28)
    p.add_argument(
        "--no-graphs",
        dest="graphs",
        action="store_false",
        help="time the attention and the matmuls of one rank eagerly on CUDA (default: CUDA-graph replays)",
    )
    p.add_argument(
        "--graph-layer",
        action="store_true",
        help="also capture the layers with their all-reduces in a CUDA graph (default: eager launches, "
        "device time by CUDA events; a capture failing on one rank could stall the others)",
    )
    p.add_argument("--quick", action="store_true", help="few samples and small sizes (the CPU check)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per spawned CPU process")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.contexts = [int(c) for c in args.contexts.split(",")]
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.dtype is None:
        args.dtype = "bf16" if args.backend == "nccl" else "fp32"
    if args.tiny:
        args.shape = dict(TINY)
        args.model = "tiny"
    else:
        from aqua_model import models

        cfg = models.load(args.model)
        args.shape = {
            "hidden": cfg.hidden_size,
            "heads_q": cfg.heads,
            "heads_kv": cfg.kv_heads,
            "head_dim": cfg.head_dim,
            "intermediate": cfg.intermediate_size,
        }
    args.warmup_ms, args.rep_ms = (1.0, 5.0) if args.quick else (5.0, 40.0)
    if args.quick:
        args.samples, args.inner, args.layers_per_sample = (
            min(args.samples, 5),
            min(args.inner, 3),
            min(args.layers_per_sample, 2),
        )
        args.max_log2_bytes = min(args.max_log2_bytes, 16)
    if args.k < 1 or args.k > args.shape["head_dim"]:
        p.error(f"--k must be in 1..{args.shape['head_dim']}, got {args.k}")
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.spawn:
        import torch.multiprocessing as mp

        if args.start_method == "fork" and args.backend == "nccl":
            raise SystemExit("--start-method fork cannot start CUDA processes; use spawn or torchrun")
        mp.start_processes(
            worker,
            args=(args.spawn, _free_port(), args),
            nprocs=args.spawn,
            join=True,
            start_method=args.start_method,
        )
        return 0
    dist.init_process_group(args.backend, init_method="env://")
    try:
        run(dist.get_rank(), dist.get_world_size(), args)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
