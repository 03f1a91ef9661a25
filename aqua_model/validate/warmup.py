"""Compile the Triton variants a run will need, in parallel worker processes, before it times.

Triton compiles one variant per constexpr and specialisation signature (head dim, row tile, query
rows, selection mode, dtype, the 16-divisibility of the key row stride, the combine's padded split
count), about a second each. The held-out distribution draws many; a worker pool compiles them
into Triton's on-disk cache at once, so the timed process only loads them. Each task runs a case's
own workload once, at a context that keeps the compile signature (the same key-row alignment, the
same split count by the launch rule) but at most ``MAX_WARM_KV_BYTES`` of keys and values.
Eager (torch-only) plans compile nothing and are skipped; a failing task is logged, never fatal.

``python -m aqua_model.validate.warmup CASES.jsonl [--grid reduced] [--calibration] [--workers 12]``
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import sys
import time
from typing import Any

from aqua_model.costs.split_rule import (
    DEFAULT_LAUNCHES,
    FUSED_MIN_BLOCKS_PER_SPLIT,
    MIN_BLOCKS_PER_SPLIT,
    launch_rule,
    padded_tile_rows,
    split_count,
    tile_rows,
)
from aqua_model.validate.cases import Case, kv_bytes

#: Plans whose implementation launches Triton kernels.
TRITON_PLANS = (
    "aqua-fused",
    "aqua-fused-exact",
    "aqua-token-major",
    "aqua-step-topk",
    "aqua-step-topk-token-major",
    "aqua-cache-step",
)
#: Largest dense K + V of one warm-up task (bytes).
MAX_WARM_KV_BYTES = 64 * 2**20
#: SMs of the device the split counts are planned for (an H200); the worker reads the real count.
DEFAULT_SM_COUNT = 132


def warm_case(case: Case, sm_count: int) -> Case:
    """``case`` at a context with the same compile signature and few bytes."""
    if case.phase != "decode" or kv_bytes(case) <= MAX_WARM_KV_BYTES:
        return case
    rows = tile_rows(d=case.d, k=case.k, g=case.g, selection=case.selection)
    page = 128 if case.plan == "aqua-cache-step" else None
    block_n = launch_rule(padded_tile_rows(rows, case.d), page=page)[0]
    units = case.batch * case.heads_kv
    splits, _ = split_count(programs=units, context=case.context, block_n=block_n, sm_count=sm_count)
    # the fewest blocks that keep the default (one-launch) rule's split count (the three-launch
    # path's minimum on the other plans)
    per_split = FUSED_MIN_BLOCKS_PER_SPLIT if DEFAULT_LAUNCHES == 1 else MIN_BLOCKS_PER_SPLIT
    # splits x per_split whole blocks, ending on the same N mod 16 (at most that many blocks' tokens)
    rem = case.context % 16
    small = int(splits) * per_split * block_n - (16 - rem if rem else 0)
    return dataclasses.replace(case, context=min(case.context, max(small, 16)))


def signature(case: Case, sm_count: int) -> tuple[Any, ...]:
    """What decides the compiled variants of a case (a coarse key: equal keys compile the same)."""
    w = warm_case(case, sm_count)
    rows = tile_rows(d=case.d, k=case.k, g=case.g, selection=case.selection)
    page = 128 if case.plan == "aqua-cache-step" else None
    block_n = launch_rule(padded_tile_rows(rows, case.d), page=page)[0]
    splits, _ = split_count(
        programs=case.batch * case.heads_kv, context=case.context, block_n=block_n, sm_count=sm_count
    )
    return (
        case.plan,
        case.d,
        case.g,
        padded_tile_rows(rows, case.d),
        case.k if case.selection == "group" else rows,
        case.selection,
        case.dtype,
        case.context % 16 == 0,
        max(2, 1 << (int(splits) - 1).bit_length()),
        w.context % 16 == 0,
    )


def _warm_one(task: tuple[dict[str, Any], int]) -> str:
    fields, sm = task
    case = Case(**fields)
    import torch

    from aqua_model.validate import workloads as wl

    t0 = time.perf_counter()
    try:
        small = warm_case(case, sm)
        inp = wl.make_inputs(small, device=torch.device("cuda"), seed=1, layouts=wl.layouts_for(small))
        wl.build(small, inp).total()
        torch.cuda.synchronize()
        return f"ok {time.perf_counter() - t0:.1f} s {small.case_id}"
    except Exception as exc:  # noqa: BLE001 - logged; the timed run compiles what is missing
        return f"FAILED {case.case_id}: {type(exc).__name__}: {str(exc)[:200]}"


def warm(cases: list[Case], *, workers: int, sm_count: int = DEFAULT_SM_COUNT, log: Any = print) -> int:
    """Compile every distinct Triton variant of ``cases`` in ``workers`` processes; returns the tasks run."""
    seen: dict[tuple[Any, ...], Case] = {}
    for c in cases:
        if c.plan in TRITON_PLANS and not c.skip_reason:
            seen.setdefault(signature(c, sm_count), c)
    tasks = [
        ({f.name: getattr(c, f.name) for f in dataclasses.fields(c) if f.name != "skip_reason"}, sm_count)
        for c in seen.values()
    ]
    if not tasks:
        return 0
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=max(1, min(workers, len(tasks))), mp_context=ctx) as ex:
        for msg in ex.map(_warm_one, tasks):
            if msg.startswith("FAILED"):
                log(msg)
    log(f"warm-up: {len(tasks)} Triton variants by {workers} workers in {time.perf_counter() - t0:.1f} s")
    return len(tasks)


def main(argv: list[str] | None = None) -> int:
    """Command line: warm the variants of a case file and/or a grid."""
    from aqua_model.validate.cases import grid
    from aqua_model.validate.sampling import read_cases

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("cases", nargs="*", help="case files from 'validate sample'")
    ap.add_argument(
        "--grid", default=None, choices=("gpu", "reduced", "cpu"), help="also the cases of this grid"
    )
    ap.add_argument("--workers", type=int, default=12)
    args = ap.parse_args(argv)
    todo: list[Case] = grid(args.grid) if args.grid else []
    for path in args.cases:
        todo += read_cases(path)[1]
    import torch

    sm = (
        torch.cuda.get_device_properties(0).multi_processor_count
        if torch.cuda.is_available()
        else DEFAULT_SM_COUNT
    )
    warm(todo, workers=args.workers, sm_count=sm, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
