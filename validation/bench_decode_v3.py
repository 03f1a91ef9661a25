#!/usr/bin/env python3
"""Decode attention on one GPU, third version: the one-launch AQUA decode (``_fused_kernel``,
the default of ``aqua_decode``) against the three-launch path and torch SDPA.

One process, one JSONL file per mode under OUT_DIR (rows streamed and flushed), one log:

``check``     correctness on the GPU: the one-launch call against a float32 reference and the
              three-launch call (per-head / group / given selections, g in {1, 2, 4, 7, 8}, d 64 and
              128, one and several splits, misaligned N, paged cache step), repeated eager calls and
              CUDA-graph replays (the arrival counters must reset), outputs poisoned with NaN first.
``tune``      the launch parameters of the one-launch kernel at the issue's target shapes:
              (block_n, warps, stages) x split counts (the rule's, and multiples of it), CUDA-graph
              time, beside the three-launch path and SDPA.
``waves``     explicit split and stage counts at long-context shapes (the split rule against the
              kernel's occupancy).
``prefetch``  the one-launch kernel's L2 prefetches before its selection (``DecodeConfig``'s
              prefetch_value_blocks x prefetch_keys) at the target shapes, variants interleaved
              over rounds, each output compared bit for bit with the no-prefetch call's.
``warps``     the one-launch kernel's (num_warps, num_stages) at blocks of 64 tokens, at the
              prefetch mode's shapes, variants interleaved, outputs compared bit for bit.
``headrank``  per-head selection by rank against the tile sort (``HEAD_RANK_MAX_GROUP`` 0-3) at groups
              of 1-3 heads (MHA, 16 / 8 and SmolLM2's 9 / 3), variants interleaved over rounds.
``merge``     the one-launch merge's tile (``split_rule.MERGE_TILE_VALUES``: partial values the last
              split loads at once, so how many round trips to L2 its merge takes) at shapes
              with many splits, variants interleaved over rounds, outputs compared bit for bit.
``targets``   the issue's target shapes with the shipped rule (``measure_case`` of
              bench_decode_v2: SDPA's fastest backend, the kernel alone on the cache's paged keys,
              the cache step against an SDPA step, CUDA-graph and eager times).
``longctx``   the [longctx] helper's model shapes (SmolLM2-135M 9/3 d64, Qwen2.5-Coder-0.5B 14/2 d64,
              Llama-3.1-8B 32/8 d128) at contexts 1K-8K, batch 1 and 8, k = d/4, d/2, 3d/4, both
              selections: one row per shape with both times, the speedup and the config fields.
``tables``    the re-measured kernel tables: the grid and random aligned shapes of bench_decode_v2
              (bf16 and fp16, d 64 and 128).

Timing is bench_decode_v2's ``Clock``: ``triton.testing.do_bench`` of CUDA-graph replays (CUDA
events, L2 flushed by a 256 MB memset before every call; median and quartiles), and single-call
latencies after a synchronised flush (eager calls with the host's launch time inside).

Usage: PYTHONPATH=. python3 validation/bench_decode_v3.py OUT_DIR --modes check,tune,targets
       [--budget-s 400] [--random 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_decode_v2 as v2  # noqa: E402

from aqua_model.kernels import (
    reference as ref,  # noqa: E402
    triton_decode as td,  # noqa: E402
)
from aqua_model.kernels.kv_cache import AquaKVCache  # noqa: E402

SCHEMA_VERSION = 3
#: Relative error of a bf16/fp16 output against the float32 reference (as bench_decode_v2).
TOL = v2.TOL
#: Graph replays of one captured call in the counter-reset check.
REPLAYS = 5
#: Kernel cases drawn (each at the rule's split count and at 3 splits).
CHECK_CASES = 8
T0 = time.perf_counter()


def log(*args: object) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s]", *args, flush=True)


class Sink:
    """One JSONL file, each row written and flushed as it comes."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("w")

    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row, default=str) + "\n")
        self.fh.flush()


# ------------------------------------------------------------------------------------- check


def _ref(q_hat, kT, v, k_keep, selection, g, N, given=None):
    """float32 AQUA decode of q^ [B, H_q, d] over dim-major keys [B, H_kv, m, >= N]."""
    if given is not None:
        return ref.aqua_attention_rotated(
            q_hat.float().unsqueeze(2),
            kT[..., :N].transpose(-1, -2).float(),
            v[:, :, :N].float(),
            k_keep=k_keep,
            selection=selection,
            causal=True,
        )[:, :, 0]
    return v2.reference(
        q_hat, kT[..., :N].transpose(-1, -2), v[:, :, :N], k_keep=k_keep, selection=selection, g=g
    )


def check_mode(sink: Sink, dev: torch.device) -> int:
    """Correctness rows; returns the number of failures."""
    fails = 0
    cases = []
    for dt in (torch.bfloat16, torch.float16):
        for d in (64, 128):
            for g in (1, 2, 4, 7, 8):
                for frac in (4, 2, 1):
                    k = d // frac if frac != 1 else 3 * d // 4
                    for sel in ("per-head", "group"):
                        if g == 1 and sel == "group":
                            continue
                        cases.append((dt, d, g, k, sel))
    rng = random.Random(7)
    rng.shuffle(cases)
    for i, (dt, d, g, k, sel) in enumerate(cases[:CHECK_CASES]):
        B, hkv = rng.choice((1, 3)), rng.choice((1, 2))
        N = rng.choice((1, 5, 63, 200, 1000, 4099))
        cap = -(-N // 16) * 16 + 16  # aligned capacity, N itself misaligned
        torch.manual_seed(i)
        q = torch.randn(B, hkv * g, d, device=dev, dtype=dt)
        kT = torch.randn(B, hkv, d, cap, device=dev, dtype=dt)
        v = torch.randn(B, hkv, cap, d, device=dev, dtype=dt)
        want = _ref(q, kT, v, k, sel, g, N)
        for splits in (None, 3):
            cfg = (
                None
                if splits is None
                else dataclasses.replace(td.choose_config(rows=min(d, g * k), value_dim=d), num_splits=splits)
            )
            out = torch.full((B, hkv * g, d), float("nan"), device=dev, dtype=dt)
            for _ in range(3):  # repeated calls: the counters reset
                td.aqua_decode(q, kT, v, k_keep=k, selection=sel, length=N, out=out, config=cfg)
            torch.cuda.synchronize()
            err = v2.rel_err(out, want) if not torch.isnan(out).any() else float("inf")
            out3 = td.aqua_decode(
                q,
                kT,
                v,
                k_keep=k,
                selection=sel,
                length=N,
                config=dataclasses.replace(
                    cfg or td.choose_config(rows=min(d, g * k), value_dim=d), launches=3
                ),
            )
            diff3 = (out.float() - out3.float()).abs().max().item()
            ok = err <= TOL
            fails += not ok
            sink.write(
                dict(
                    kind="kernel",
                    dtype=str(dt),
                    B=B,
                    hq=hkv * g,
                    hkv=hkv,
                    d=d,
                    k=k,
                    selection=sel,
                    N=N,
                    splits=splits or "rule",
                    rel_err=err,
                    max_abs_diff_vs_3launch=diff3,
                    ok=ok,
                )
            )
    # CUDA-graph replays of a several-split call: the counter must be back at 0 after each replay
    for sel, g in (("group", 4), ("per-head", 8)):
        B, hkv, d, k, N = 2, 4, 128, 32, 8192
        q = torch.randn(B, hkv * g, d, device=dev, dtype=torch.bfloat16)
        kT = torch.randn(B, hkv, d, N, device=dev, dtype=torch.bfloat16)
        v = torch.randn(B, hkv, N, d, device=dev, dtype=torch.bfloat16)
        out = torch.empty(B, hkv * g, d, device=dev, dtype=torch.bfloat16)
        fn = lambda: td.aqua_decode(q, kT, v, k_keep=k, selection=sel, out=out)  # noqa: E731
        gr = v2.Clock().graph(fn)
        la = td.last_launcher()
        errs = []
        for _ in range(REPLAYS):
            q.normal_()
            out.fill_(float("nan"))
            gr.replay()
            torch.cuda.synchronize()
            errs.append(
                v2.rel_err(out, _ref(q, kT, v, k, sel, g, N)) if not torch.isnan(out).any() else float("inf")
            )
        counters = int(la.count.abs().sum().item())
        ok = max(errs) <= TOL and counters == 0
        fails += not ok
        sink.write(
            dict(
                kind="graph-replays",
                selection=sel,
                B=B,
                hq=hkv * g,
                hkv=hkv,
                d=d,
                k=k,
                N=N,
                splits=la.splits_for(N)[0],
                rel_errs=errs,
                counters_after=counters,
                ok=ok,
            )
        )
    # the paged cache step (rotate, append, attend) against the float32 reference
    for sel, g, N in (("group", 4, 1000), ("per-head", 2, 77), ("per-head", 1, 4096)):
        B, hkv, d, k = 2, 2, 128, 48
        P = torch.linalg.qr(torch.randn(hkv, d, d, device=dev)).Q.contiguous()
        cache = AquaKVCache(
            batch=B,
            heads_kv=hkv,
            head_dim=d,
            capacity=N + 8,
            projection=P,
            page_tokens=64,
            dtype=torch.bfloat16,
            device=dev,
        )
        kk = torch.randn(B, hkv, N, d, device=dev, dtype=torch.bfloat16)
        vv = torch.randn(B, hkv, N, d, device=dev, dtype=torch.bfloat16)
        cache.append(kk, vv)
        q = torch.randn(B, hkv * g, d, device=dev, dtype=torch.bfloat16)
        kn = torch.randn(B, hkv, d, device=dev, dtype=torch.bfloat16)
        vn = torch.randn(B, hkv, d, device=dev, dtype=torch.bfloat16)
        out = cache.decode_step(q, kn, vn, k_keep=k, selection=sel)
        torch.cuda.synchronize()
        q_hat = (
            torch.matmul(q.float().view(B, hkv, g, d), P.unsqueeze(0)).view(B, hkv * g, d).to(torch.bfloat16)
        )
        keys = td._dense_keys(cache.keys[0], N + 1)
        want = v2.reference(q_hat, keys, cache.values[0, :, :, : N + 1], k_keep=k, selection=sel, g=g)
        err = v2.rel_err(out, want)
        k_err = v2.rel_err(
            keys[:, :, N].float(), torch.matmul(kn.float().unsqueeze(2), P.unsqueeze(0)).squeeze(2)
        )
        ok = err <= TOL and k_err <= TOL
        fails += not ok
        sink.write(
            dict(
                kind="cache-step",
                selection=sel,
                B=B,
                hq=hkv * g,
                hkv=hkv,
                d=d,
                k=k,
                N=N + 1,
                rel_err=err,
                rel_err_appended_key=k_err,
                ok=ok,
            )
        )
    log(f"check: {fails} failures")
    return fails


# ------------------------------------------------------------------------------------- tune

#: Target shapes of issue 22 for the sweep: (B, H_q, H_kv, N, d, k, selection).
TUNE_SHAPES = [
    (1, 32, 8, 1024, 128, 32, "group"),
    (8, 32, 8, 1024, 128, 32, "group"),
    (8, 32, 8, 2048, 128, 64, "group"),
    (1, 32, 8, 32768, 128, 32, "group"),
    (8, 32, 8, 16384, 128, 32, "group"),
    (8, 32, 32, 16384, 128, 32, "per-head"),
    (8, 32, 8, 16384, 128, 96, "per-head"),
]
#: (block_n, num_warps, num_stages) of the one-launch sweep, and its programs per SM.
TUNE_CONFIGS = [(128, 8, 3), (64, 4, 3), (64, 4, 4)]
TUNE_PPS = (1, 2, 4, 8, 16)


def _case_inputs(B, hq, hkv, N, d, dev, dt=torch.bfloat16):
    torch.manual_seed(N + B)
    cap = N + 64
    return (
        torch.randn(B, hq, d, device=dev, dtype=dt),
        torch.randn(B, hkv, d, cap, device=dev, dtype=dt),
        torch.randn(B, hkv, cap, d, device=dev, dtype=dt),
        torch.randn(B, hkv, N, d, device=dev, dtype=dt),
    )


def _shape_with_sdpa(B, hq, hkv, N, d, dev, clock):
    """The inputs of one tune / waves shape, an output buffer, and SDPA's fastest backend with its
    CUDA-graph time on the same keys and values."""
    g = hq // hkv
    q, kT, v, kd = _case_inputs(B, hq, hkv, N, d, dev)
    q4 = q.unsqueeze(2)
    name, be, _ = v2.fastest_sdpa(clock, q4, kd, v[:, :, :N], g)
    sd = clock.bench(clock.graph(v2.sdpa_fn(q4, kd, v[:, :, :N], g, be)).replay)[0]
    out = torch.empty(B, hq, d, device=dev, dtype=q.dtype)
    return q, kT, v, kd, out, name, sd


def tune_mode(sink: Sink, dev: torch.device, clock: v2.Clock, late: Callable[[], bool]) -> None:
    for B, hq, hkv, N, d, k, sel in TUNE_SHAPES:
        if late():
            log("tune: out of time")
            return
        g = hq // hkv
        q, kT, v, kd, out, name, sd = _shape_with_sdpa(B, hq, hkv, N, d, dev, clock)
        rule = td.choose_config(
            rows=td.tile_rows(m=d, k_keep=k, group=g, mode=3 if sel == "group" else 2, shared=sel == "group"),
            value_dim=d,
        )
        base = dict(B=B, hq=hq, hkv=hkv, N=N, d=d, k=k, selection=sel, sdpa_backend=name, sdpa_graph_s=sd)
        for launches in (3, 1):
            cfg = dataclasses.replace(rule, launches=launches)
            fn = lambda: td.aqua_decode(q, kT, v, k_keep=k, selection=sel, length=N, out=out, config=cfg)  # noqa: E731
            t = clock.bench(clock.graph(fn).replay)[0]
            sink.write(
                dict(
                    base,
                    variant=f"rule-{launches}-launch",
                    config=dataclasses.asdict(cfg),
                    splits=td.last_launcher().splits_for(N)[0],
                    graph_s=t,
                    speedup=sd / t,
                )
            )
        for bn, w, s in TUNE_CONFIGS:
            blocks = math.ceil(N / bn)
            counts = sorted({max(1, min(blocks, math.ceil(p * 132 / (B * hkv)))) for p in TUNE_PPS})
            for ns in counts:
                cfg = td.DecodeConfig(block_n=bn, num_warps=w, num_stages=s, num_splits=ns)
                fn = lambda: td.aqua_decode(q, kT, v, k_keep=k, selection=sel, length=N, out=out, config=cfg)  # noqa: E731
                try:
                    t = clock.bench(clock.graph(fn).replay, v2.QUICK_MS)[0]
                except Exception as exc:  # noqa: BLE001 - recorded: a config that does not compile
                    sink.write(
                        dict(base, variant="sweep", config=dataclasses.asdict(cfg), error=str(exc)[:200])
                    )
                    continue
                sink.write(
                    dict(
                        base,
                        variant="sweep",
                        config=dataclasses.asdict(cfg),
                        programs=B * hkv * td.last_launcher().splits_for(N)[0],
                        splits=td.last_launcher().splits_for(N)[0],
                        graph_s=t,
                        speedup=sd / t,
                    )
                )
        log(f"tune {B}x{hq}/{hkv} N={N} d={d} k={k} {sel}: sdpa {sd * 1e6:.1f} us")
        del q, kT, v, kd
        torch.cuda.empty_cache()


#: The prefetch ablation (``prefetch`` mode): the tune shapes plus batch 1 at the short and long ends.
PREFETCH_SHAPES = [
    (1, 32, 8, 256, 128, 32, "group"),
    *TUNE_SHAPES,
    (1, 32, 8, 65536, 128, 64, "group"),
]
#: (prefetch_value_blocks, prefetch_keys) variants; the first is the baseline the others are
#: compared with, bit for bit.
PREFETCH_VARIANTS = [(0, False), (1, False), (2, False), (4, False), (0, True), (2, True)]
#: Interleaved rounds of every ablation mode (prefetch, warps, merge, headrank); rows report medians.
ABLATION_ROUNDS = 3


def _ablation(
    sink: Sink,
    dev: torch.device,
    clock: v2.Clock,
    late: Callable[[], bool],
    *,
    label: str,
    shapes: list[tuple],
    variants: list[dict],
) -> None:
    """Each shape's call under each variant (``DecodeConfig`` fields replacing the rule's, the
    first the baseline), CUDA graphs timed in ABLATION_ROUNDS interleaved rounds (medians), each
    output compared bit for bit with the baseline's."""
    for B, hq, hkv, N, d, k, sel in shapes:
        if late():
            log(f"{label}: out of time")
            return
        g = hq // hkv
        q, kT, v, kd, out, name, sd = _shape_with_sdpa(B, hq, hkv, N, d, dev, clock)
        rule = td.choose_config(
            rows=td.tile_rows(m=d, k_keep=k, group=g, mode=3 if sel == "group" else 2, shared=sel == "group"),
            value_dim=d,
        )
        graphs, outs, splits = [], [], []
        for fields in variants:
            cfg = dataclasses.replace(rule, **fields)
            o = torch.full_like(out, float("nan"))
            fn = lambda cfg=cfg, o=o: td.aqua_decode(  # noqa: E731
                q, kT, v, k_keep=k, selection=sel, length=N, out=o, config=cfg
            )
            graphs.append(clock.graph(fn))
            outs.append(o)
            splits.append(td.last_launcher().splits_for(N)[0])
        base_out = outs[0].clone()
        times: list[list[float]] = [[] for _ in variants]
        for _ in range(ABLATION_ROUNDS):
            for i, gr in enumerate(graphs):
                times[i].append(clock.bench(gr.replay, v2.QUICK_MS)[0])
        med = [sorted(t)[ABLATION_ROUNDS // 2] for t in times]
        base = dict(B=B, hq=hq, hkv=hkv, N=N, d=d, k=k, selection=sel, sdpa_backend=name, sdpa_graph_s=sd)
        for i, fields in enumerate(variants):
            sink.write(
                dict(
                    base,
                    variant=label,
                    **fields,
                    splits=splits[i],
                    graph_s=med[i],
                    graph_s_rounds=times[i],
                    speedup=sd / med[i],
                    over_baseline=med[0] / med[i],
                    bitwise_equal_to_baseline=bool(torch.equal(outs[i], base_out)),
                )
            )
        best = min(range(len(variants)), key=lambda i: med[i])
        log(
            f"{label} {B}x{hq}/{hkv} N={N} k={k} {sel}: sdpa {sd * 1e6:.1f} us, baseline {med[0] * 1e6:.1f} us, "
            f"best {variants[best]} {med[best] * 1e6:.1f} us"
        )
        del q, kT, v, kd, graphs, outs
        torch.cuda.empty_cache()


def prefetch_mode(sink: Sink, dev: torch.device, clock: v2.Clock, late: Callable[[], bool]) -> None:
    variants = [dict(prefetch_value_blocks=pv, prefetch_keys=pk) for pv, pk in PREFETCH_VARIANTS]
    _ablation(sink, dev, clock, late, label="prefetch", shapes=PREFETCH_SHAPES, variants=variants)


#: The warps ablation (``warps`` mode): (num_warps, num_stages) of the one-launch kernel at blocks of
#: 64 tokens, the first the shipped rule's.
WARPS_VARIANTS = [(4, 3), (8, 3), (8, 4), (4, 4), (2, 3)]


def warps_mode(sink: Sink, dev: torch.device, clock: v2.Clock, late: Callable[[], bool]) -> None:
    variants = [dict(num_warps=w, num_stages=st) for w, st in WARPS_VARIANTS]
    _ablation(sink, dev, clock, late, label="warps", shapes=PREFETCH_SHAPES, variants=variants)


#: The merge ablation (``merge`` mode): shapes with many splits per (batch, KV head), and tiles.
MERGE_SHAPES = [
    (1, 32, 8, 1024, 128, 32, "group"),
    (1, 32, 8, 32768, 128, 32, "group"),
    (1, 32, 8, 65536, 128, 64, "group"),
    (8, 32, 8, 16384, 128, 32, "group"),
]
MERGE_TILES = (2048, 4096, 8192, 16384, 32768)


def _constant_ablation(
    sink: Sink,
    dev: torch.device,
    clock: v2.Clock,
    late: Callable[[], bool],
    *,
    label: str,
    shapes: list[tuple],
    module: object,
    name: str,
    values: tuple,
    extra: Callable[[object, td.DecodeLauncher, int], dict],
) -> None:
    """Each shape's default call with the module constant ``module.name`` set to each of ``values``
    (a fresh launcher compiles each), CUDA graphs timed in ABLATION_ROUNDS interleaved rounds
    (medians), each output checked against the float32 reference and compared bit for bit with
    the shipped value's; ``extra(value, launcher, N)`` adds fields while the value is set."""
    shipped = getattr(module, name)
    field = name.lower()
    for B, hq, hkv, N, d, k, sel in shapes:
        if late():
            log(f"{label}: out of time")
            return
        g = hq // hkv
        q, kT, v, kd, out, sdpa_name, sd = _shape_with_sdpa(B, hq, hkv, N, d, dev, clock)
        graphs, outs, keep, fields = {}, {}, [], {}
        try:
            for value in values:
                setattr(module, name, value)
                td._LAUNCHERS.clear()  # a fresh launcher compiles the kernel for this value
                td._FAST.clear()
                o = torch.full_like(out, float("nan"))
                fn = lambda o=o: td.aqua_decode(q, kT, v, k_keep=k, selection=sel, length=N, out=o)  # noqa: E731
                graphs[value] = clock.graph(fn)
                outs[value] = o
                la = td.last_launcher()
                keep.append(la)  # its workspaces outlive the cache: the graph uses them
                fields[value] = extra(value, la, N)
        finally:
            setattr(module, name, shipped)
            td._LAUNCHERS.clear()
            td._FAST.clear()
        times: dict[object, list[float]] = {x: [] for x in values}
        for _ in range(ABLATION_ROUNDS):
            for value in values:
                times[value].append(clock.bench(graphs[value].replay, v2.QUICK_MS)[0])
        base = dict(
            B=B, hq=hq, hkv=hkv, N=N, d=d, k=k, selection=sel, sdpa_backend=sdpa_name, sdpa_graph_s=sd
        )
        want = _ref(q, kT, v, k, sel, g, N)
        ref_out = outs[shipped] if shipped in outs else outs[values[0]]
        med = {x: sorted(times[x])[ABLATION_ROUNDS // 2] for x in values}
        for value in values:
            sink.write(
                dict(
                    base,
                    variant=label,
                    **{field: value},
                    **fields[value],
                    graph_s=med[value],
                    graph_s_rounds=times[value],
                    speedup=sd / med[value],
                    rel_err=v2.rel_err(outs[value], want),
                    bitwise_equal_to_shipped=bool(torch.equal(outs[value], ref_out)),
                )
            )
        log(
            f"{label} {B}x{hq}/{hkv} N={N} k={k}: sdpa {sd * 1e6:.1f} us; "
            + ", ".join(f"{x}: {med[x] * 1e6:.1f}" for x in values)
        )
        del q, kT, v, kd, graphs, outs, keep
        torch.cuda.empty_cache()


def merge_mode(sink: Sink, dev: torch.device, clock: v2.Clock, late: Callable[[], bool]) -> None:
    from aqua_model.costs import split_rule

    def extra(tile, la, N):
        splits = la.splits_for(N)[0]
        g = la.st.group
        return dict(
            splits=splits,
            merge_rounds=int(split_rule.merge_rounds(group=g, splits=splits, value_dim=la.st.dv)),
        )

    _constant_ablation(
        sink,
        dev,
        clock,
        late,
        label="merge",
        shapes=MERGE_SHAPES,
        module=split_rule,
        name="MERGE_TILE_VALUES",
        values=MERGE_TILES,
        extra=extra,
    )


#: The head-rank ablation (``headrank`` mode): per-head shapes with g = 1, 2, 3, and the caps tried.
HEADRANK_SHAPES = [
    (1, 9, 3, 4096, 64, 16, "per-head"),
    (1, 9, 3, 8192, 64, 48, "per-head"),
    (8, 9, 3, 4096, 64, 32, "per-head"),
    (1, 16, 8, 4096, 128, 32, "per-head"),
    (8, 32, 16, 8192, 128, 32, "per-head"),
    (1, 32, 32, 4096, 128, 32, "per-head"),
    (8, 32, 32, 16384, 128, 32, "per-head"),
]
HEADRANK_CAPS = (3, 2, 1, 0)


def headrank_mode(sink: Sink, dev: torch.device, clock: v2.Clock, late: Callable[[], bool]) -> None:
    def extra(cap, la, N):
        return dict(selection_by="rank" if la.st.group <= cap else "sort")

    _constant_ablation(
        sink,
        dev,
        clock,
        late,
        label="headrank",
        shapes=HEADRANK_SHAPES,
        module=td,
        name="HEAD_RANK_MAX_GROUP",
        values=HEADRANK_CAPS,
        extra=extra,
    )


#: The wave sweep (``waves`` mode): long-context and batch-8 shapes at explicit split counts and
#: stage counts, to place the one-launch split rule against the kernel's occupancy (programs that
#: fit in one wave of resident CTAs against more).
WAVE_SHAPES = [
    ((8, 32, 8, 16384, 128, 32, "group"), (2, 3, 4, 5, 6, 8)),
    ((8, 32, 8, 16384, 128, 96, "group"), (2, 3, 4, 5, 6, 8)),
    ((8, 32, 8, 16384, 128, 32, "per-head"), (2, 3, 4, 5, 6, 8)),
    ((8, 32, 32, 16384, 128, 32, "per-head"), (1, 2, 3)),
    ((1, 32, 8, 32768, 128, 32, "group"), (12, 16, 24, 32, 48)),
    ((8, 32, 8, 4096, 128, 32, "group"), (2, 3, 4, 5, 6, 8)),
]
WAVE_STAGES = (3, 4)


def waves_mode(sink: Sink, dev: torch.device, clock: v2.Clock, late: Callable[[], bool]) -> None:
    for (B, hq, hkv, N, d, k, sel), counts in WAVE_SHAPES:
        if late():
            log("waves: out of time")
            return
        q, kT, v, kd, out, name, sd = _shape_with_sdpa(B, hq, hkv, N, d, dev, clock)
        base = dict(B=B, hq=hq, hkv=hkv, N=N, d=d, k=k, selection=sel, sdpa_backend=name, sdpa_graph_s=sd)
        units = B * hkv
        for stages in WAVE_STAGES:
            for ns in counts:
                cfg = td.DecodeConfig(block_n=64, num_warps=4, num_stages=stages, num_splits=ns)
                fn = lambda: td.aqua_decode(q, kT, v, k_keep=k, selection=sel, length=N, out=out, config=cfg)  # noqa: E731
                try:
                    t = clock.bench(clock.graph(fn).replay, v2.QUICK_MS)[0]
                except Exception as exc:  # noqa: BLE001 - recorded: a config that does not compile
                    sink.write(
                        dict(base, variant="waves", config=dataclasses.asdict(cfg), error=str(exc)[:200])
                    )
                    continue
                la = td.last_launcher()
                kern = next(iter(la.fused.values())) if la.fused else None
                ck = getattr(kern, "compiled", None)
                sink.write(
                    dict(
                        base,
                        variant="waves",
                        config=dataclasses.asdict(cfg),
                        splits=la.splits_for(N)[0],
                        programs=units * la.splits_for(N)[0],
                        n_regs=getattr(ck, "n_regs", None),
                        shared_bytes=getattr(getattr(ck, "metadata", None), "shared", None),
                        graph_s=t,
                        speedup=sd / t,
                    )
                )
        log(f"waves {B}x{hq}/{hkv} N={N} d={d} k={k} {sel}: sdpa {sd * 1e6:.1f} us")
        del q, kT, v, kd
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------- shapes


def target_cases() -> list[v2.Case]:
    cs = []
    for N in (256, 512, 1024):
        cs.append(v2.Case(1, 32, 8, N, 128, 32, "group", "target-short"))
    for k in (32, 64):
        for N in (256, 512, 768, 1024, 1536, 2048, 3072, 4096):
            cs.append(v2.Case(8, 32, 8, N, 128, k, "group", "target-breakeven-b8"))
    for k in (32, 96):
        cs.append(v2.Case(8, 32, 32, 16384, 128, k, "per-head", "target-long-mha"))
        cs.append(v2.Case(8, 32, 8, 16384, 128, k, "group", "target-long-gqa-group"))
        cs.append(v2.Case(8, 32, 8, 16384, 128, k, "per-head", "target-long-gqa-head"))
    for k in (32, 64):
        for N in (32768, 65536):
            cs.append(v2.Case(1, 32, 8, N, 128, k, "group", "target-b1-long"))
    return cs


LONGCTX_MODELS = [("SmolLM2-135M", 9, 3, 64), ("Qwen2.5-Coder-0.5B", 14, 2, 64), ("Llama-3.1-8B", 32, 8, 128)]


def longctx_cases() -> list[tuple[str, v2.Case]]:
    cs = []
    for model, hq, hkv, d in LONGCTX_MODELS:
        for N in (1024, 2048, 4096, 8192):
            for B in (1, 8):
                for k in (d // 4, d // 2, 3 * d // 4):
                    for sel in ("per-head", "group"):
                        cs.append((model, v2.Case(B, hq, hkv, N, d, k, sel, "longctx")))
    return cs


def table_cases(n_random: int) -> list[v2.Case]:
    """The kernel tables' shapes: every third grid shape, then ``n_random`` draws of the held-out
    distribution (bench_decode_v2's seed; both selections for GQA draws)."""
    rnd, _ = v2.random_cases(n_random, random.Random(v2.SEED))
    return v2.grid_cases()[::3] + rnd


def shapes_mode(sink: Sink, cases, dev, clock, late, *, dtype=torch.bfloat16, step=True, label=None) -> None:
    for c in cases:
        model = None
        if isinstance(c, tuple):
            model, c = c
        if late():
            log(f"{label}: out of time before {c}")
            return
        try:
            row = v2.measure_case(clock, c, dev, dtype, step=step)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            row = dict(dataclasses.asdict(c), error=f"{type(exc).__name__}: {str(exc)[:300]}")
            torch.cuda.empty_cache()
        row["schema_version"] = SCHEMA_VERSION
        row["head_rank_max_group"] = td.HEAD_RANK_MAX_GROUP
        if model is not None:
            row.update(model=model, heads_q=c.hq, heads_kv=c.hkv, context=c.N, batch=c.B)
        sink.write(row)
        if "aqua_graph_s" in row:
            log(
                f"{label} {c}: aqua {row['aqua_graph_s'] * 1e6:.1f} us sdpa {row['sdpa_graph_s'] * 1e6:.1f} us "
                f"x{row['speedup_graph']:.3f} eager {row['aqua_eager_latency_s'] * 1e6:.1f} err {row['rel_err_aqua']:.1e}"
            )


def _warm_slice(task: tuple[list[tuple[v2.Case, bool, str]], int]) -> int:
    """Compile the Triton variants of some (case, cache step too, dtype name) triples (one call
    each at the real shape, so that the compile signature matches; runs in a worker: Triton's
    on-disk cache then serves the timed run) at the parent's HEAD_RANK_MAX_GROUP."""
    cases, head_rank_max_group = task
    td.HEAD_RANK_MAX_GROUP = head_rank_max_group
    dev = torch.device("cuda")
    n = 0
    for c, step, name in cases:
        dt = getattr(torch, name)
        try:
            inp = v2.make_inputs(c, dev, dt, page_tokens=64, seed=0)
            cache = inp["cache"]
            td.aqua_decode(
                inp["q_hat"],
                cache.keys[0],
                cache.values[0],
                k_keep=c.k,
                selection=c.selection,
                length=c.N,
            )
            if step:
                cache.decode_step(
                    inp["q"], inp["k_new"], inp["v_new"], k_keep=c.k, selection=c.selection, position=c.N
                )
            torch.cuda.synchronize()
            n += 1
            del inp, cache
        except Exception:  # noqa: BLE001 - the timed run reports it
            pass
    return n


def warm(cases: list[tuple[v2.Case, bool, str]], workers: int) -> None:
    import concurrent.futures as cf
    import multiprocessing as mp

    t0 = time.perf_counter()
    slices = [(cases[i::workers], td.HEAD_RANK_MAX_GROUP) for i in range(workers)]
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        done = sum(ex.map(_warm_slice, slices))
    log(f"warm-up: {done} case calls by {workers} workers in {time.perf_counter() - t0:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--modes", default="check,tune,targets")
    ap.add_argument("--budget-s", type=float, default=400.0)
    ap.add_argument("--random", type=int, default=30)
    ap.add_argument(
        "--table-dtypes",
        default="bfloat16,float16",
        help="dtypes of the tables mode, in order (default bfloat16,float16)",
    )
    ap.add_argument(
        "--warm-workers", type=int, default=0, help="compile every variant first, in this many processes"
    )
    ap.add_argument("--warm-only", action="store_true", help="compile and exit (run beside the GPU tests)")
    ap.add_argument(
        "--head-rank-max-group",
        type=int,
        default=None,
        help="run every mode with this td.HEAD_RANK_MAX_GROUP (an ablation; default: the shipped value)",
    )
    args = ap.parse_args(argv)
    if args.head_rank_max_group is not None:
        if args.head_rank_max_group < 0:
            raise SystemExit(f"--head-rank-max-group must be >= 0, got {args.head_rank_max_group}")
        td.HEAD_RANK_MAX_GROUP = args.head_rank_max_group
    log(f"HEAD_RANK_MAX_GROUP = {td.HEAD_RANK_MAX_GROUP}")
    # SDPA's backend trials explain each refusal in a UserWarning: kept out of the log
    warnings.filterwarnings(
        "ignore",
        category=UserWarning,
        message=r"(Memory efficient|Flash attention|cuDNN attention|For dense input)",
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    clock = v2.Clock()
    late = lambda: time.perf_counter() - T0 > args.budget_s  # noqa: E731
    (args.out_dir / "decode_v3_env.json").write_text(json.dumps(v2.env_info(), indent=1))
    fails = 0
    if args.warm_workers:
        todo: list[tuple[v2.Case, bool, str]] = []
        for mode in args.modes.split(","):
            if mode == "targets":
                todo += [(c, True, "bfloat16") for c in target_cases()]
            elif mode == "longctx":
                todo += [(c, False, "bfloat16") for _, c in longctx_cases()]
            elif mode == "tables":
                todo += [
                    (c, True, name) for name in args.table_dtypes.split(",") for c in table_cases(args.random)
                ]
        if todo:
            warm(todo, args.warm_workers)
        if args.warm_only:
            return 0
    for mode in args.modes.split(","):
        log(f"mode {mode}")
        sink = Sink(args.out_dir / f"decode_v3_{mode}.jsonl")
        if mode == "check":
            fails += check_mode(sink, dev)
        elif mode == "tune":
            tune_mode(sink, dev, clock, late)
        elif mode == "waves":
            waves_mode(sink, dev, clock, late)
        elif mode == "prefetch":
            prefetch_mode(sink, dev, clock, late)
        elif mode == "merge":
            merge_mode(sink, dev, clock, late)
        elif mode == "headrank":
            headrank_mode(sink, dev, clock, late)
        elif mode == "warps":
            warps_mode(sink, dev, clock, late)
        elif mode == "targets":
            shapes_mode(sink, target_cases(), dev, clock, late, label="target")
        elif mode == "longctx":
            shapes_mode(sink, longctx_cases(), dev, clock, late, step=False, label="longctx")
        elif mode == "tables":
            for dt in (getattr(torch, name) for name in args.table_dtypes.split(",")):
                shapes_mode(sink, table_cases(args.random), dev, clock, late, dtype=dt, label=f"tables-{dt}")
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    log(f"done; {fails} check failures")
    return 1 if fails else 0


if __name__ == "__main__":
    raise SystemExit(main())
