#!/usr/bin/env python3
"""Decode attention on one GPU, second version: the union / paged / cached-launch AQUA kernels
of ``aqua_model.kernels.triton_decode`` and the ``AquaKVCache`` decode step, against torch SDPA.

Modes (each one process; results as JSONL, one row per case, streamed):

``--tune OUT.jsonl``   launch-parameter sweep of the split kernel on six representative shapes
                       (block_n, num_warps, num_stages; then programs per SM for the best), the
                       paged (T = 64) against the unpaged aligned layout, the alignment cliff
                       (contiguous K^T with N % 16 != 0 against the cache), and the host overhead
                       at small shapes. What ``choose_config``'s rule was read from.
``--final OUT.jsonl``  the shipped kernel (launch parameters by rule): a reduced grid (MHA and GQA
                       g = 4, 8; N 4K-256K; k in {16, 24, 32, 48, 64, 96, 112}; batch 1, 8, 32)
                       and ``--random`` shapes of the held-out distribution (batch 1-64 and
                       context 256-256K log-uniform, not powers of two; H_q in {8, 12, ..., 64};
                       g a divisor of H_q up to 8; d in {64, 128}; k uniform in 8..d; both
                       selections under GQA).

Per row (final): the fastest SDPA backend (each timed briefly, the fastest timed again), the AQUA
kernel alone (``aqua_decode`` on the cache's paged keys, q^ given: prologue selection, split-N,
combine), the whole decode step (``AquaKVCache.decode_step``: rotate q, rotate + append the new
key and value, attend) against SDPA's step (the same append by torch slice copies, then SDPA),
each as a CUDA-graph replay (``triton.testing.do_bench``: CUDA events, L2 flushed by its 256 MB
memset before every call, median and quartiles) and as latencies of single calls after a
synchronised L2 flush (eager calls and graph replays alike: the host's launch time is inside).
Inputs are random normal; outputs are poisoned with NaN before a checked run and compared, on
batch elements 0 and B-1, with a float32 reference (selected coordinates from torch.topk of |q^|;
relative error <= 1e-2). Useful bytes: K rows actually read (the prologue's union count per KV
group) plus all of V; ``byte_ceiling`` = SDPA's bytes / those; ``union_byte_ceiling`` (per-head
selection under GQA) from the expected union d (1 - (1 - k/d)^g) of the g heads' rows.

Before timing, every compiled variant the run will need is compiled by worker processes in
parallel (Triton's on-disk cache then serves the timed process).

Usage: PYTHONPATH=. python3 validation/bench_decode_v2.py --final OUT.jsonl [--random 50]
       PYTHONPATH=. python3 validation/bench_decode_v2.py --smoke   (tiny, CPU + interpreter ok)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from aqua_model.kernels import triton_decode as td
from aqua_model.kernels.kv_cache import AquaKVCache

SCHEMA_VERSION = 2
SEED = 20261201
#: Relative error a bf16 kernel output may have against the float32 reference.
TOL = 1e-2
#: Largest K + V (bytes, dense, bf16) of a random shape; larger draws are redrawn (and counted):
#: the run holds dense K, paged K^ and a shared V (1.5x this) plus a float32 check slice.
MAX_KV_BYTES = 16 * 2**30
#: do_bench budgets (ms) of a full timing and of a backend/config trial.
REP_MS, QUICK_MS = 25, 10
#: Single-call latencies sampled per eager / replay figure.
LATENCY_CALLS = 15
H_Q_CHOICES = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64)


def log(*args: object) -> None:
    print(*args, flush=True)


def env_info() -> dict[str, object]:
    info: dict[str, object] = {
        "torch": torch.__version__,
        "triton": getattr(td.triton, "__version__", None),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, sm_count=props.multi_processor_count)
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            info["driver"] = f"unknown ({type(exc).__name__})"
    return info


# ------------------------------------------------------------------------------------- timing


class Clock:
    """do_bench of CUDA-graph replays, and single-call latencies after a synchronised flush."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.flush = torch.empty(256 * 2**20 // 4, dtype=torch.int32, device="cuda") if self.cuda else None

    def bench(self, fn: Callable[[], object], rep_ms: int = REP_MS) -> tuple[float, float, float]:
        """(median, q25, q75) seconds of fn (do_bench; L2 flushed before every call)."""
        if not self.cuda:
            t = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
            t.sort()
            return t[1], t[0], t[2]
        from triton.testing import do_bench

        q25, q50, q75 = do_bench(fn, warmup=5, rep=rep_ms, quantiles=[0.25, 0.5, 0.75])
        return q50 * 1e-3, q25 * 1e-3, q75 * 1e-3

    def graph(self, fn: Callable[[], object]) -> object:
        """fn captured into a CUDA graph (two eager warm-up calls on a side stream first)."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
            fn()
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        torch.cuda.synchronize()
        return g

    def latency(self, fn: Callable[[], object], calls: int = LATENCY_CALLS) -> float:
        """Median seconds from a start event recorded on an idle GPU (L2 flushed, host synchronised)
        to the end of fn's work: host launch time included."""
        if not self.cuda:
            return self.bench(fn)[0]
        fn()
        times = []
        for _ in range(calls):
            self.flush.zero_()
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e-3)
        return statistics.median(times)

    def all(self, fn: Callable[[], object], *, eager: bool = True) -> dict[str, float]:
        """graph_s / graph_iqr_s (do_bench of replays), graph_latency_s, eager_latency_s."""
        if not self.cuda:
            t = self.bench(fn)
            return {
                "graph_s": t[0],
                "graph_iqr_s": t[2] - t[1],
                "graph_latency_s": t[0],
                "eager_latency_s": t[0],
            }
        g = self.graph(fn)
        t = self.bench(g.replay)
        out = {"graph_s": t[0], "graph_iqr_s": t[2] - t[1], "graph_latency_s": self.latency(g.replay)}
        if eager:
            out["eager_latency_s"] = self.latency(fn)
        del g
        return out


# ------------------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    B: int
    hq: int
    hkv: int
    N: int
    d: int
    k: int
    selection: str  # "per-head" or "group" (MHA: "per-head")
    source: str  # "grid" or "random"

    @property
    def g(self) -> int:
        return self.hq // self.hkv

    def kv_bytes(self) -> int:
        return self.B * self.hkv * self.N * 2 * self.d * 2


def grid_cases() -> list[Case]:
    """The reduced grid (batch 8 unless said): the targets' shapes first (MHA, GQA g = 4 and 8 at
    N = 16K and 64K, k = 32 and 96, both selections under GQA), then a k sweep at N = 32K (MHA and
    GQA g = 4 group), then the batch and context ends (batch 1 at 4K and 256K, batch 32 at 4K
    and 64K; shapes over MAX_KV_BYTES left out)."""
    first: list[Case] = []
    rest: list[Case] = []
    heads = [(32, 32), (32, 8), (32, 4)]
    for hq, hkv in heads:
        sels = ["per-head"] if hq == hkv else ["group", "per-head"]
        for N in (16384, 65536):
            for k in (32, 96):
                first += [Case(8, hq, hkv, N, 128, k, s, "grid") for s in sels]
    for hq, hkv, sel in ((32, 32, "per-head"), (32, 8, "group")):
        rest += [Case(8, hq, hkv, 32768, 128, k, sel, "grid") for k in (16, 24, 48, 64, 112)]
    for B, N in ((1, 4096), (1, 262144), (32, 4096), (32, 65536)):
        for hq, hkv, sel in ((32, 32, "per-head"), (32, 8, "group")):
            if B * hkv * N * 512 <= MAX_KV_BYTES:
                rest += [Case(B, hq, hkv, N, 128, k, sel, "grid") for k in (32, 96)]
    return first + rest


def random_cases(n: int, rng: random.Random) -> tuple[list[Case], int]:
    """n shapes of the held-out distribution (both selections for GQA shapes); redraws counted."""
    out: list[Case] = []
    redraws = 0
    while len({(c.B, c.hq, c.hkv, c.N, c.d, c.k) for c in out}) < n:
        B = int(round(math.exp(rng.uniform(0, math.log(64)))))
        N = int(round(math.exp(rng.uniform(math.log(256), math.log(262144)))))
        hq = rng.choice(H_Q_CHOICES)
        g = rng.choice([x for x in range(1, 9) if hq % x == 0])
        d = rng.choice((64, 128))
        k = rng.randint(8, d)
        if N & (N - 1) == 0:
            redraws += 1
            continue
        c = Case(B, hq, hq // g, N, d, k, "per-head", "random")
        if c.kv_bytes() > MAX_KV_BYTES:
            redraws += 1
            continue
        out.append(c)
        if g > 1:
            out.append(dataclasses.replace(c, selection="group"))
    return out, redraws


# ------------------------------------------------------------------------------------- inputs


def make_inputs(
    c: Case, dev: torch.device, dtype: torch.dtype, *, page_tokens: int = 64, seed: int = 0
) -> dict:
    torch.manual_seed(seed)
    B, hq, hkv, N, d = c.B, c.hq, c.hkv, c.N, c.d
    P = torch.linalg.qr(torch.randn(hkv, d, d, device=dev)).Q.contiguous()
    cache = AquaKVCache(
        batch=B,
        heads_kv=hkv,
        head_dim=d,
        capacity=N + 1,
        projection=P,
        page_tokens=page_tokens,
        dtype=dtype,
        device=dev,
    )
    # random rotated keys written straight into the pages (rotation of random normal keys is random
    # normal again); the dense keys for SDPA are drawn separately: only bytes and shapes matter there
    cache.keys[0].normal_()
    cache.values[0, :, :, :N].normal_()
    cache.lengths[0] = N
    k_dense = torch.empty(B, hkv, N + 1, d, device=dev, dtype=dtype).normal_()
    q = torch.randn(B, hq, d, device=dev, dtype=dtype)
    q_hat = torch.matmul(q.float().view(B, hkv, c.g, d), P.unsqueeze(0)).view(B, hq, d).to(dtype)
    return dict(
        P=P,
        cache=cache,
        k_dense=k_dense,
        q=q,
        q_hat=q_hat,
        k_new=torch.randn(B, hkv, d, device=dev, dtype=dtype),
        v_new=torch.randn(B, hkv, d, device=dev, dtype=dtype),
    )


# ------------------------------------------------------------------------------------- checks


def reference(
    q_hat: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *, k_keep: int, selection: str, g: int
) -> torch.Tensor:
    """float32 AQUA decode: scores from q^ with the unselected coordinates zeroed (the same sum of
    products as the selected ones alone). q_hat [b, H_q, d], keys [b, H_kv, N, m], values [b, H_kv, N, dv]."""
    b, hq, d = q_hat.shape
    m = keys.shape[-1]
    qf = q_hat.float()[..., :m]
    mag = qf.abs()
    if selection == "group":
        mag = mag.view(b, hq // g, g, m).sum(2).repeat_interleave(g, dim=1)
    idx = torch.topk(mag, k_keep, dim=-1).indices
    mask = torch.zeros_like(qf).scatter_(-1, idx, 1.0)
    qm = (qf * mask).view(b, hq // g, g, m)
    scores = torch.matmul(qm, keys.float().transpose(-1, -2)) / math.sqrt(d)  # [b, H_kv, g, N]
    return torch.matmul(torch.softmax(scores, dim=-1), values.float()).view(b, hq, -1)


def rel_err(out: torch.Tensor, want: torch.Tensor) -> float:
    return ((out.double() - want.double()).norm() / want.double().norm()).item()


def check_rows(out: torch.Tensor, q_hat: torch.Tensor, cache: AquaKVCache, c: Case, N: int) -> float:
    """Largest relative error over batch elements 0 and B-1; NaN anywhere is an error of inf."""
    if torch.isnan(out).any():
        return float("inf")
    errs = []
    for b in sorted({0, c.B - 1}):
        keys = td._dense_keys(cache.keys[0][b : b + 1], N)
        want = reference(
            q_hat[b : b + 1],
            keys,
            cache.values[0, b : b + 1, :, :N],
            k_keep=c.k,
            selection=c.selection,
            g=c.g,
        )
        errs.append(rel_err(out[b : b + 1], want))
    return max(errs)


# ------------------------------------------------------------------------------------- SDPA


def sdpa_backends() -> list[tuple[str, object]]:
    from torch.nn.attention import SDPBackend

    return [
        (n.lower(), getattr(SDPBackend, n))
        for n in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")
        if hasattr(SDPBackend, n)
    ]


def sdpa_fn(q4, k, v, g: int, backend) -> Callable[[], torch.Tensor]:
    from torch.nn.attention import sdpa_kernel

    def fn():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q4, k, v, enable_gqa=g > 1)

    return fn


def fastest_sdpa(clock: Clock, q4, k, v, g: int) -> tuple[str, object, dict[str, float | str]]:
    trials: dict[str, float | str] = {}
    best = None
    for name, be in sdpa_backends():
        fn = sdpa_fn(q4, k, v, g, be)
        try:
            fn()
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - a backend that refuses these inputs
            trials[name] = f"unsupported: {str(exc).splitlines()[0][:80]}"
            continue
        try:  # the backend that is fastest the way it is then timed: CUDA-graph replays
            t = clock.bench(clock.graph(fn).replay if clock.cuda else fn, QUICK_MS)[0]
        except Exception as exc:  # noqa: BLE001 - a backend that refuses graph capture: its eager time
            trials[name + " (graph capture failed: eager time)"] = str(exc).splitlines()[0][:80]
            t = clock.bench(fn, QUICK_MS)[0]
        trials[name] = t
        if best is None or t < best[2]:
            best = (name, be, t)
    if best is None:
        raise RuntimeError(f"no SDPA backend ran: {trials}")
    return best[0], best[1], trials


# ------------------------------------------------------------------------------------- warm-up


def _warm_one(task: tuple) -> str:
    """Compile one variant on tiny inputs of the same compile signature (runs in a worker)."""
    kind, d, m, dv, g, k, selection, cfg, splits, page = task
    dev = torch.device("cuda")
    dt = torch.bfloat16
    cfg = td.DecodeConfig(block_n=cfg[0], num_warps=cfg[1], num_stages=cfg[2], num_splits=splits)
    N = splits * cfg.block_n
    cache = AquaKVCache(
        batch=1,
        heads_kv=1,
        head_dim=d,
        capacity=N + 1,
        projection=torch.eye(d),
        key_dims=m,
        value_dim=dv,
        page_tokens=page or 64,
        dtype=dt,
        device=dev,
    )
    cache.keys.normal_()
    cache.lengths[0] = N
    q = torch.randn(1, g, d, device=dev, dtype=dt)
    t0 = time.perf_counter()
    if kind == "kernel":
        keys = cache.keys[0] if page else torch.randn(1, 1, d, cache.capacity, device=dev, dtype=dt)
        td.aqua_decode(q, keys, cache.values[0], k_keep=k, selection=selection, length=N, config=cfg)
    else:  # the decode step: the launcher picks its config by rule, so splits come from the rule too
        cache.decode_step(
            q,
            torch.randn(1, 1, d, device=dev, dtype=dt),
            torch.randn(1, 1, dv, device=dev, dtype=dt),
            k_keep=k,
            selection=selection,
        )
    torch.cuda.synchronize()
    return f"{task}: {time.perf_counter() - t0:.1f} s"


def warm(tasks: list[tuple], workers: int) -> None:
    tasks = sorted(set(tasks))
    if not tasks:
        return
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as ex:
        for _ in ex.map(_warm_one, tasks):
            pass
    log(f"warm-up: {len(tasks)} variants compiled by {workers} workers in {time.perf_counter() - t0:.1f} s")


def kernel_task(c: Case, cfg: td.DecodeConfig, page: int) -> tuple:
    """The compile signature of the kernel-alone call of c (page 0: the unpaged layout)."""
    splits, _ = td.plan_splits(programs=c.B * c.hkv, context=c.N, config=cfg, device=torch.device("cuda"))
    return (
        "kernel",
        c.d,
        c.d,
        c.d,
        c.g,
        c.k,
        c.selection,
        (cfg.block_n, cfg.num_warps, cfg.num_stages),
        splits,
        page,
    )


def rule_config(c: Case, page: int) -> td.DecodeConfig:
    mode = td._SEL_GROUP if c.selection == "group" else td._SEL_HEAD
    rows = td.tile_rows(m=c.d, k_keep=c.k, group=c.g, mode=mode, shared=c.selection == "group")
    return td.choose_config(rows=rows, value_dim=c.d, page=page)


# ------------------------------------------------------------------------------------- rows


def union_expected(d: int, k: int, g: int) -> float:
    """Expected distinct coordinates of g independent uniform k-subsets of d (the cost model's)."""
    return d * (1 - (1 - k / d) ** g)


def measure_case(
    clock: Clock, c: Case, dev: torch.device, dtype: torch.dtype, *, step: bool = True, page: int = 64
) -> dict:
    esize = torch.finfo(dtype).bits // 8
    t_alloc = time.perf_counter()
    inp = make_inputs(c, dev, dtype, page_tokens=page, seed=hash((c.B, c.hq, c.N, c.k)) & 0xFFFF)
    cache: AquaKVCache = inp["cache"]
    N = c.N
    q4 = inp["q"].unsqueeze(2)
    k_dense = inp["k_dense"]
    v_all = cache.values[0]
    row: dict[str, object] = {
        "schema_version": SCHEMA_VERSION,
        **dataclasses.asdict(c),
        "g": c.g,
        "dtype": str(dtype).replace("torch.", ""),
    }
    # SDPA on the first N tokens (views of capacity N + 1 buffers)
    kd, vd = k_dense[:, :, :N], v_all[:, :, :N]
    name, be, trials = fastest_sdpa(clock, q4, kd, vd, c.g)
    sd = clock.all(sdpa_fn(q4, kd, vd, c.g, be))
    row.update(sdpa_backend=name, sdpa_trials_s=trials, **{f"sdpa_{k}": v for k, v in sd.items()})
    # the AQUA kernel alone: q^ given, paged keys, length N
    out = torch.full((c.B, c.hq, c.d), float("nan"), dtype=dtype, device=dev)
    keys = cache.keys[0]

    def kern():
        return td.aqua_decode(inp["q_hat"], keys, v_all, k_keep=c.k, selection=c.selection, length=N, out=out)

    kern()
    torch.cuda.synchronize()
    la = td.last_launcher()
    rows_read = int(la.cnt.sum().item())
    err = check_rows(out, inp["q_hat"], cache, c, N)
    ka = clock.all(kern)
    row.update(
        **{f"aqua_{k}": v for k, v in ka.items()},
        rel_err_aqua=err,
        aqua_config=dataclasses.asdict(la.st.config),
        aqua_splits=la.splits_for(N)[0],
        aqua_tile_rows=list(la.parts),
    )
    dense_bytes = c.B * c.hkv * N * 2 * c.d * esize
    aqua_bytes = (rows_read + c.B * c.hkv * c.d) * N * esize
    row.update(
        dense_useful_bytes=dense_bytes,
        aqua_useful_bytes=aqua_bytes,
        aqua_key_rows_read=rows_read,
        aqua_key_rows_per_group=rows_read / (c.B * c.hkv),
        byte_ceiling=dense_bytes / aqua_bytes,
    )
    if c.g > 1 and c.selection == "per-head":
        u = union_expected(c.d, c.k, c.g)
        row["union_rows_expected"] = u
        row["union_byte_ceiling"] = 2 * c.d / (u + c.d)
    row["speedup_graph"] = sd["graph_s"] / ka["graph_s"]
    row["speedup_eager"] = sd["eager_latency_s"] / ka["eager_latency_s"]
    row["sdpa_useful_bytes_per_s"] = dense_bytes / sd["graph_s"]
    row["aqua_useful_bytes_per_s"] = aqua_bytes / ka["graph_s"]
    row["aqua_bandwidth_vs_sdpa"] = row["aqua_useful_bytes_per_s"] / row["sdpa_useful_bytes_per_s"]
    if step:
        pos = N  # both steps write position N and attend over N + 1 tokens; replays rewrite it
        sout = torch.full_like(out, float("nan"))

        def aqua_step():
            return cache.decode_step(
                inp["q"],
                inp["k_new"],
                inp["v_new"],
                k_keep=c.k,
                selection=c.selection,
                out=sout,
                position=pos,
            )

        aqua_step()
        torch.cuda.synchronize()
        # the step's output: attention of q^ over N + 1 tokens including the appended k^ (its rotation
        # by P checked against the fp32 rotation of k_new)
        k_hat_new = torch.matmul(inp["k_new"].float().unsqueeze(2), inp["P"].unsqueeze(0)).squeeze(2)
        got_k = td._dense_keys(cache.keys[0], N + 1)[:, :, N].float()
        row["rel_err_appended_key"] = rel_err(got_k, k_hat_new)
        row["rel_err_step"] = check_rows(sout, inp["q_hat"], cache, c, N + 1)
        st = clock.all(aqua_step)
        q_new = q4

        def sdpa_step():
            k_dense[:, :, pos].copy_(inp["k_new"])
            v_all[:, :, pos].copy_(inp["v_new"])
            return sdpa_fn(q_new, k_dense[:, :, : pos + 1], v_all[:, :, : pos + 1], c.g, be)()

        ss = clock.all(sdpa_step)
        row.update(
            **{f"aqua_step_{k}": v for k, v in st.items()}, **{f"sdpa_step_{k}": v for k, v in ss.items()}
        )
        row["step_speedup_graph"] = ss["graph_s"] / st["graph_s"]
        row["step_speedup_eager"] = ss["eager_latency_s"] / st["eager_latency_s"]
    row["row_seconds"] = time.perf_counter() - t_alloc
    del inp, cache, k_dense, v_all, out
    torch.cuda.empty_cache()
    return row


# ------------------------------------------------------------------------------------- modes


TUNE_CONFIGS = [(64, 4, 3), (64, 4, 4), (64, 8, 3), (64, 8, 4), (32, 4, 4), (128, 8, 3), (128, 4, 2)]
TUNE_PPS = [4, 16, 32]
TUNE_SHAPES = [
    Case(8, 32, 32, 16384, 128, 96, "per-head", "tune"),
    Case(8, 32, 32, 16384, 128, 32, "per-head", "tune"),
    Case(8, 32, 8, 65536, 128, 32, "per-head", "tune"),
    Case(8, 32, 8, 16384, 128, 96, "group", "tune"),
    Case(1, 32, 8, 4096, 128, 32, "group", "tune"),
    Case(32, 32, 32, 4096, 128, 64, "per-head", "tune"),
]


def tune_mode(args, clock: Clock, dev: torch.device, fh) -> None:
    dt = torch.bfloat16
    tasks = []
    for c in TUNE_SHAPES:
        for bn, nw, ns in TUNE_CONFIGS:
            for page in ((64,) if bn <= 64 else ()) + (128, 0):
                cfg = td.DecodeConfig(block_n=bn, num_warps=nw, num_stages=ns)
                tasks.append(kernel_task(c, cfg, page))
    warm(tasks, args.workers)
    for c in TUNE_SHAPES:
        inp = make_inputs(c, dev, dt, page_tokens=64)
        inp128 = make_inputs(c, dev, dt, page_tokens=128, seed=1)
        q4 = inp["q"].unsqueeze(2)
        name, be, trials = fastest_sdpa(
            clock, q4, inp["k_dense"][:, :, : c.N], inp["cache"].values[0][:, :, : c.N], c.g
        )
        sd = clock.bench(
            sdpa_fn(q4, inp["k_dense"][:, :, : c.N], inp["cache"].values[0][:, :, : c.N], c.g, be)
        )
        out = torch.empty(c.B, c.hq, c.d, dtype=dt, device=dev)
        results = []

        def timed(cfg, page, layout):
            src = inp if page == 64 else inp128
            cache = src["cache"]
            if layout == "paged":
                keys = cache.keys[0]
            else:  # unpaged aligned: a [B, H, d, cap] dim-major view of the same bytes is not the same
                keys = src.setdefault(
                    "flat", torch.randn(c.B, c.hkv, c.d, cache.capacity, device=dev, dtype=dt)
                )
            fn = lambda: td.aqua_decode(  # noqa: E731
                src["q_hat"],
                keys,
                cache.values[0],
                k_keep=c.k,
                selection=c.selection,
                length=c.N,
                out=out,
                config=cfg,
            )
            g = clock.graph(fn)
            t = clock.bench(g.replay, QUICK_MS)[0]
            del g
            return t

        for bn, nw, ns in TUNE_CONFIGS:
            for page, layout in (((64, "paged"),) if bn <= 64 else ()) + ((128, "paged"), (64, "flat")):
                cfg = td.DecodeConfig(block_n=bn, num_warps=nw, num_stages=ns)
                try:
                    t = timed(cfg, page, layout)
                except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory
                    log(f"  {c} {cfg} {layout}{page}: failed {str(exc).splitlines()[0][:100]}")
                    continue
                results.append((t, cfg, page, layout))
        best = min(results, key=lambda r: r[0])
        for pps in TUNE_PPS:
            cfg = dataclasses.replace(best[1], programs_per_sm=pps)
            try:
                results.append((timed(cfg, best[2], best[3]), cfg, best[2], best[3]))
            except Exception as exc:  # noqa: BLE001
                log(f"  pps {pps} failed: {exc}")
        for t, cfg, page, layout in results:
            row = {
                "schema_version": SCHEMA_VERSION,
                "mode": "tune",
                **dataclasses.asdict(c),
                "config": dataclasses.asdict(cfg),
                "page_tokens": page,
                "layout": layout,
                "aqua_graph_s": t,
                "sdpa_graph_s": sd[0],
                "sdpa_backend": name,
                "speedup_graph": sd[0] / t,
            }
            fh.write(json.dumps(row) + "\n")
        fh.flush()
        ranked = sorted(results, key=lambda r: r[0])[:4]
        log(
            f"{c.B}x{c.hq}/{c.hkv} N={c.N} k={c.k} {c.selection}: sdpa {sd[0] * 1e6:.1f} us ({name}); best "
            + "; ".join(
                f"{t * 1e6:.1f} us bn{cf.block_n}w{cf.num_warps}s{cf.num_stages}p{cf.programs_per_sm} {lay}{pg} ({sd[0] / t:.3f}x)"
                for t, cf, pg, lay in ranked
            )
        )
        del inp, inp128
        torch.cuda.empty_cache()
    dump_resources(fh)
    cliff_and_overhead(clock, dev, fh)


def dump_resources(fh) -> None:
    """Registers, spills and shared memory of every compiled split / prologue kernel so far."""
    seen = set()
    for la in list(td._LAUNCHERS.values()):
        for name, kern in (("prologue", la.prologue), ("split", la.split)):
            ck = kern.compiled
            if ck is None:
                continue
            key = (name, tuple(kern.consts.items()), tuple(kern.options.items()))
            if key in seen:
                continue
            seen.add(key)
            row = {
                "schema_version": SCHEMA_VERSION,
                "mode": "resources",
                "kernel": name,
                "consts": {k: v for k, v in kern.consts.items()},
                "options": kern.options,
                "n_regs": getattr(ck, "n_regs", None),
                "n_spills": getattr(ck, "n_spills", None),
                "shared_bytes": getattr(ck.metadata, "shared", None),
            }
            fh.write(json.dumps(row) + "\n")
    fh.flush()


def cliff_and_overhead(clock: Clock, dev: torch.device, fh) -> None:
    """The alignment cliff (issue 15's shapes) and eager host overhead at small shapes."""
    dt = torch.bfloat16
    for N in (12345, 12344, 12352):
        B, H, d, k = 7, 40, 128, 96
        q = torch.randn(B, H, d, device=dev, dtype=dt)
        kT = torch.randn(B, H, d, N, device=dev, dtype=dt)  # contiguous: row stride N
        v = torch.randn(B, H, N, d, device=dev, dtype=dt)
        cache = AquaKVCache(batch=B, heads_kv=H, head_dim=d, capacity=N, dtype=dt, device=dev)
        cache.keys[0].normal_()
        cache.values[0].normal_()
        kd = torch.randn(B, H, N, d, device=dev, dtype=dt)
        name, be, _ = fastest_sdpa(clock, q.unsqueeze(2), kd, v, 1)
        sd = clock.bench(clock.graph(sdpa_fn(q.unsqueeze(2), kd, v, 1, be)).replay)[0]
        out = torch.empty(B, H, d, device=dev, dtype=dt)
        raw = clock.bench(clock.graph(lambda: td.aqua_decode(q, kT, v, k_keep=k, out=out)).replay)[0]
        cac = clock.bench(
            clock.graph(
                lambda: td.aqua_decode(q, cache.keys[0], cache.values[0], k_keep=k, length=N, out=out)
            ).replay
        )[0]
        row = {
            "schema_version": SCHEMA_VERSION,
            "mode": "cliff",
            "B": B,
            "hq": H,
            "hkv": H,
            "N": N,
            "d": d,
            "k": k,
            "sdpa_graph_s": sd,
            "aqua_contiguous_graph_s": raw,
            "aqua_cache_graph_s": cac,
            "speedup_contiguous": sd / raw,
            "speedup_cache": sd / cac,
        }
        fh.write(json.dumps(row) + "\n")
        log(
            f"cliff N={N}: sdpa {sd * 1e6:.1f} us, contiguous K^T {raw * 1e6:.1f} us ({sd / raw:.2f}x), cache {cac * 1e6:.1f} us ({sd / cac:.2f}x)"
        )
        del q, kT, v, cache, kd
        torch.cuda.empty_cache()
    for c in (
        Case(1, 32, 8, 1000, 128, 32, "group", "overhead"),
        Case(1, 32, 8, 1000, 128, 32, "per-head", "overhead"),
        Case(16, 32, 8, 8192, 128, 64, "group", "overhead"),
        Case(3, 40, 8, 50000, 128, 40, "per-head", "overhead"),
    ):
        row = measure_case(clock, c, dev, dt)
        row["mode"] = "overhead"
        fh.write(json.dumps(row) + "\n")
        log(summary(row))
    fh.flush()


def summary(r: dict) -> str:
    s = (
        f"{r['B']:>2}x{r['hq']:>2}/{r['hkv']:<2} N={r['N']:>6} d={r['d']:>3} k={r['k']:>3} {r['selection']:>8}: "
        f"sdpa {r['sdpa_graph_s'] * 1e6:8.1f} us, aqua {r['aqua_graph_s'] * 1e6:8.1f} us ({r['speedup_graph']:.3f}x, "
        f"ceil {r['byte_ceiling']:.3f}{', union ceil ' + format(r['union_byte_ceiling'], '.3f') if 'union_byte_ceiling' in r else ''}; "
        f"bw {r['aqua_bandwidth_vs_sdpa']:.2f} of sdpa); eager {r['aqua_eager_latency_s'] * 1e6:.1f} vs replay "
        f"{r['aqua_graph_latency_s'] * 1e6:.1f} us; err {r['rel_err_aqua']:.1e}"
    )
    if "step_speedup_graph" in r:
        s += f"; step {r['aqua_step_graph_s'] * 1e6:.1f} vs sdpa step {r['sdpa_step_graph_s'] * 1e6:.1f} us ({r['step_speedup_graph']:.3f}x)"
    return s


def final_mode(args, clock: Clock, dev: torch.device, fh) -> int:
    dt = torch.bfloat16
    rng = random.Random(SEED)
    grid = [] if args.no_grid else grid_cases()
    rnd, redraws = random_cases(args.random, rng)
    n_first = sum(1 for c in grid if c.N >= 16384 and c.B == 8 and c.k in (32, 96))
    cases = grid[:n_first] + rnd + grid[n_first:]  # targets, then the held-out shapes, then the rest
    log(
        f"{len(cases)} cases ({len(grid)} grid, {len(rnd)} random from {args.random} shapes; {redraws} redraws)"
    )
    page = td_page_tokens()
    tasks = []
    for c in cases:
        tasks.append(kernel_task(c, rule_config(c, page), page))
        tasks.append(("step", c.d, c.d, c.d, c.g, c.k, c.selection, (0, 0, 0), 1, page))
    warm(tasks, args.workers)
    failures = 0
    t_start = time.perf_counter()
    for i, c in enumerate(cases):
        if time.perf_counter() - t_start > args.budget_s:
            log(f"time budget of {args.budget_s} s spent: stopping after {i} of {len(cases)} cases")
            break
        try:
            row = measure_case(clock, c, dev, dt, page=page, step=c.source == "grid")
        except torch.cuda.OutOfMemoryError as exc:
            row = {
                "schema_version": SCHEMA_VERSION,
                **dataclasses.asdict(c),
                "error": f"OOM: {str(exc)[:100]}",
            }
            torch.cuda.empty_cache()
        row["random_redraws"] = redraws if c.source == "random" else None
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        if "error" in row:
            log(f"{c}: {row['error']}")
            failures += 1
            continue
        bad = [k for k in ("rel_err_aqua", "rel_err_step") if not row.get(k, 0) <= TOL]
        if bad or row.get("rel_err_appended_key", 0) > TOL:
            failures += 1
            log(
                "CHECK FAILED:",
                {k: row.get(k) for k in ("rel_err_aqua", "rel_err_step", "rel_err_appended_key")},
            )
        log(f"[{i + 1}/{len(cases)} {row['row_seconds']:.1f}s] " + summary(row))
    return 1 if failures else 0


def check_mode(args, clock: Clock, dev: torch.device, fh) -> None:
    page = td_page_tokens()
    cases = [dataclasses.replace(c, source="check") for c in TUNE_SHAPES]
    tasks = [kernel_task(c, rule_config(c, page), page) for c in cases]
    tasks += [("step", c.d, c.d, c.d, c.g, c.k, c.selection, (0, 0, 0), 1, page) for c in cases]
    warm(tasks, args.workers)
    for c in cases:
        row = measure_case(clock, c, dev, torch.bfloat16, page=page)
        row["mode"] = "check"
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        log(summary(row))
    cliff_and_overhead(clock, dev, fh)


def td_page_tokens() -> int:
    from aqua_model.kernels import kv_cache

    return kv_cache.DEFAULT_PAGE_TOKENS


def smoke() -> int:
    """Tiny shapes through measure_case on whatever device (checks the script, not the GPU)."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    clock = Clock()
    global fastest_sdpa
    if dev.type == "cpu":

        def fastest_sdpa(clock, q4, k, v, g):  # noqa: F811 - CPU: the default backend only
            return "math", None, {}

        def _sdpa(q4, k, v, g, be):
            return lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=g > 1)

        globals()["sdpa_fn"] = _sdpa
        torch.cuda.synchronize = lambda: None  # type: ignore[assignment]
    worst = 0.0
    for c in (Case(2, 4, 2, 200, 32, 7, "per-head", "smoke"), Case(1, 6, 2, 300, 32, 12, "group", "smoke")):
        row = measure_case(clock, c, dev, dt, step=True, page=16)
        log(summary(row))
        worst = max(worst, row["rel_err_aqua"], row["rel_err_step"], row["rel_err_appended_key"])
    log(f"smoke: worst relative error {worst:.2e}")
    return 0 if worst <= TOL else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tune", metavar="OUT")
    ap.add_argument("--final", metavar="OUT")
    ap.add_argument(
        "--check",
        metavar="OUT",
        help="the shipped rule on the tuning shapes, the cliff and the overhead shapes",
    )
    ap.add_argument("--random", type=int, default=50)
    ap.add_argument("--no-grid", action="store_true")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument(
        "--budget-s", type=float, default=1e9, help="stop timing new cases after this many seconds"
    )
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        return smoke()
    if not torch.cuda.is_available() or not td.HAS_TRITON:
        log("needs a CUDA GPU and triton (or --smoke)")
        return 2
    dev = torch.device("cuda")
    info = env_info()
    log("env:", json.dumps(info))
    clock = Clock()
    x = torch.empty(2**31 // 2, dtype=torch.bfloat16, device=dev).normal_()
    y = torch.empty_like(x)
    copy_s = clock.bench(lambda: y.copy_(x), 100)[0]
    info["copy_bytes_per_s"] = 2 * x.numel() * 2 / copy_s
    log(f"copy bandwidth (read + write): {info['copy_bytes_per_s'] / 1e12:.3f} TB/s")
    del x, y
    out_path = args.tune or args.final or args.check
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    rc = 0
    with open(out_path, "w") as fh:
        fh.write(
            json.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "mode": "env",
                    **info,
                    "seed": SEED,
                    "timing": "do_bench of CUDA-graph replays (L2 flushed by a 256 MB memset before every call); "
                    "latencies of single calls after a synchronised flush",
                }
            )
            + "\n"
        )
        if args.tune:
            tune_mode(args, clock, dev, fh)
        elif args.check:
            check_mode(args, clock, dev, fh)
        else:
            rc = final_mode(args, clock, dev, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
