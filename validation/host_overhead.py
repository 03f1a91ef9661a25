#!/usr/bin/env python3
"""Host time of one eager decode call, and where it goes (issue 22's eager-gap target).

On a CUDA machine: for a few shapes, back-to-back calls with no synchronisation in between (the
GPU work of each is shorter than its host time, so the loop measures the host's enqueue time),
of ``aqua_decode``'s fast path, of its parts (the signature key and its lookup, the launcher's
``run``, the stream query), and of torch SDPA's fastest backend on the same shape; then a cProfile
of the ``aqua_decode`` loop (its top functions by own time). Medians over ROUNDS rounds of CALLS
calls each. The launch by integer addresses (``LAUNCH_BY_ADDRESS``) is compared with the launch
by tensors in the same process, rounds interleaved: host time per call, and the issue's eager
gap (single-call latency of the eager call minus that of its CUDA-graph replay, bench_decode_v2's
``Clock.latency``), beside SDPA's. The host's speed differs between device calls (the same SDPA
call's host time has measured 33 and 64 us), so only a comparison inside one call says what a
host-path change is worth. Writes one JSON file.

Usage: PYTHONPATH=. python3 validation/host_overhead.py OUT.json
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_decode_v2 as v2  # noqa: E402

from aqua_model.kernels import triton_decode as td  # noqa: E402

CALLS, ROUNDS = 400, 7
#: Interleaved rounds of the address / tensor comparison.
AB_ROUNDS = 5
SHAPES = [
    v2.Case(1, 32, 8, 256, 128, 32, "group", "host"),
    v2.Case(8, 32, 8, 4096, 128, 32, "group", "host"),
    v2.Case(8, 32, 8, 4096, 128, 32, "per-head", "host"),
]


def per_call_s(fn) -> float:
    """Median over rounds of the mean host seconds of one call in a loop of CALLS calls."""
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        out.append((time.perf_counter() - t0) / CALLS)
        torch.cuda.synchronize()
    return statistics.median(out)


def address_ab(aqua, sdpa, clock: v2.Clock) -> dict:
    """Launch by integer addresses against launch by tensors (``td.LAUNCH_BY_ADDRESS``), rounds
    interleaved: host microseconds per call and the eager gap of each, SDPA's eager gap beside."""
    g_aqua, g_sdpa = clock.graph(aqua), clock.graph(sdpa)
    host: dict[bool, list[float]] = {True: [], False: []}
    gap: dict[bool, list[float]] = {True: [], False: []}
    sdpa_gap = []
    try:
        for _ in range(AB_ROUNDS):
            for flag in (True, False):
                td.LAUNCH_BY_ADDRESS = flag
                host[flag].append(per_call_s(aqua) * 1e6)
                gap[flag].append((clock.latency(aqua) - clock.latency(g_aqua.replay)) * 1e6)
            sdpa_gap.append((clock.latency(sdpa) - clock.latency(g_sdpa.replay)) * 1e6)
    finally:
        td.LAUNCH_BY_ADDRESS = True
    med = statistics.median
    return dict(
        ab_rounds=AB_ROUNDS,
        host_by_address_us=med(host[True]),
        host_by_tensor_us=med(host[False]),
        eager_gap_by_address_us=med(gap[True]),
        eager_gap_by_tensor_us=med(gap[False]),
        sdpa_eager_gap_us=med(sdpa_gap),
        eager_gap_by_address_rounds_us=gap[True],
        eager_gap_by_tensor_rounds_us=gap[False],
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    dev = torch.device("cuda")
    clock = v2.Clock()
    rows = []
    for c in SHAPES:
        inp = v2.make_inputs(c, dev, torch.bfloat16)
        cache = inp["cache"]
        q, keys, vals = inp["q_hat"], cache.keys[0], cache.values[0]
        out = torch.empty(c.B, c.hq, c.d, device=dev, dtype=q.dtype)

        def aqua(q=q, keys=keys, vals=vals, out=out, c=c):
            return td.aqua_decode(q, keys, vals, k_keep=c.k, selection=c.selection, length=c.N, out=out)

        aqua()
        la = td.last_launcher()
        hit = next(iter(v for k, v in td._FAST.items() if v[0] is la))
        _, cap, ks, s, _, static = hit
        kern = next(iter(la.fused.values()))
        key_args = (q, keys, vals, None, None, out, c.k, c.selection, "prepass", None, None, c.N, None)
        q4 = q.unsqueeze(2)
        kd = inp["k_dense"][:, :, : c.N]
        vd = vals[:, :, : c.N]
        name, be, _ = v2.fastest_sdpa(clock, q4, kd, vd, c.g)
        sdpa = v2.sdpa_fn(q4, kd, vd, c.g, be)
        parts = {
            "aqua_decode": aqua,
            "fast_key_and_lookup": lambda: td._FAST.get(td._fast_key(*key_args)),
            "launcher_run": lambda: la.run(
                q=q, k=keys, k_strides=ks, v=vals, N=c.N, scale=s, out=out, static=static
            ),
            "get_stream": lambda: td._get_stream(torch.cuda.current_device()),
            "launch_hooks_set": td._launch_hooks_set,
            "sdpa_" + name: sdpa,
        }
        row = dict(case=str(c), sdpa_backend=name, calls=CALLS, rounds=ROUNDS)
        for label, fn in parts.items():
            row[label + "_us"] = per_call_s(fn) * 1e6
        row.update(address_ab(aqua, sdpa, clock))
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(CALLS):
            aqua()
        pr.disable()
        torch.cuda.synchronize()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(14)
        row["cprofile_top"] = buf.getvalue().splitlines()[-24:]
        row["kernel"] = type(kern).__name__
        rows.append(row)
        print(
            {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if k != "cprofile_top"}
        )
    env = v2.env_info()
    Path(argv[0]).write_text(json.dumps(dict(env=env, rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
