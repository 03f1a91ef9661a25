"""The time break-even measured (issue 21 item 5): the smallest aligned context N at which the
default ``aqua_decode`` call beats SDPA on the GPU, by CUDA-graph device time.

For each setting (a model's layer shape, a batch, k in d/4, d/2, 3d/4): time the ``aqua-fused``
plan with the call's default selection (per-head) and the ``dense-fused`` plan (torch SDPA) at the
grid ``GRID_CONTEXTS`` until AQUA first wins, then bisect on multiples of ``ALIGN_TOKENS``
between the last losing and the first winning grid context. Both plans run on the validation
workloads (the same inputs, aligned dim-major key rows, checked against a float32 reference at the
first context of each setting). Rows are streamed to a JSONL file: one ``point`` row per timed
context, one ``result`` row per setting (the break-even, its bracket, or None when AQUA never wins
up to the grid's end). The speedup is assumed to rise with N (it does across every measured grid:
AQUA's fixed costs are larger, its bytes fewer); a bracket whose ends disagree with that is marked.

    python validation/breakeven_time.py --out breakeven.jsonl [--deadline-s 90] [--rep-ms 20]
    python validation/breakeven_time.py --out x.jsonl --device cpu --settings smoke   (plumbing only)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The settings of issue 21 item 5: (label, H_q, H_kv, d), batches, and k as fractions of d.
MODELS: tuple[tuple[str, int, int, int], ...] = (
    ("llama-3.1-8b", 32, 8, 128),
    ("smollm2-135m", 9, 3, 64),
)
BATCHES: tuple[int, ...] = (1, 8)
K_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
#: Contexts are multiples of this (the key-row alignment of aqua_model.simulator.roofline).
ALIGN_TOKENS = 16
#: The coarse grid (powers of two from 256 to 256K); bisection then runs between two of its points.
GRID_CONTEXTS: tuple[int, ...] = tuple(256 * 2**i for i in range(11))
#: The default aqua_decode call selects per head (aqua_model.kernels.triton_decode.aqua_decode).
DEFAULT_SELECTION = "per-head"
DTYPE = "bf16"


def settings(name: str) -> list[dict[str, Any]]:
    """The settings: "issue" (item 5's twelve) or "smoke" (two tiny ones for the CPU path)."""
    if name == "smoke":
        return [
            {"model": "smoke", "heads_q": 4, "heads_kv": 2, "d": 64, "batch": 1, "k": 16, "dtype": "fp16"},
            {"model": "smoke", "heads_q": 4, "heads_kv": 2, "d": 64, "batch": 2, "k": 32, "dtype": "fp16"},
        ]
    return [
        {"model": m, "heads_q": hq, "heads_kv": hkv, "d": d, "batch": b, "k": int(d * f), "dtype": DTYPE}
        for m, hq, hkv, d in MODELS
        for b in BATCHES
        for f in K_FRACTIONS
    ]


def bisect_breakeven(
    wins: Callable[[int], bool], grid: tuple[int, ...], align: int = ALIGN_TOKENS
) -> tuple[int | None, tuple[int, int] | None]:
    """(smallest aligned N with ``wins(N)``, the (losing, winning) grid bracket it was found in), or
    (None, None) when no grid point wins. Assumes ``wins`` is monotone in N; below the first grid
    point the search starts from ``align``."""
    prev = 0
    for n in grid:
        if wins(n):
            lo, hi = prev, n  # lo loses (or is 0), hi wins
            bracket = (lo, hi)
            while hi - lo > align:
                mid = (lo + hi) // 2 // align * align
                if mid <= lo:
                    mid = lo + align
                if mid >= hi:
                    break
                if wins(mid):
                    hi = mid
                else:
                    lo = mid
            return hi, bracket
        prev = n
    return None, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--settings", default="issue", choices=("issue", "smoke"))
    ap.add_argument("--deadline-s", type=float, default=120.0, help="no new setting starts after this")
    ap.add_argument("--rep-ms", type=float, default=20.0)
    ap.add_argument("--warmup-ms", type=float, default=5.0)
    args = ap.parse_args(argv)
    if not args.deadline_s > 0:
        raise SystemExit(f"--deadline-s must be > 0, got {args.deadline_s}")

    from aqua_model.validate import workloads as wl
    from aqua_model.validate.cases import Case
    from aqua_model.validate.runner import Measurer, environment
    from aqua_model.validate.timing import time_fn

    grid = GRID_CONTEXTS if args.settings == "issue" else (64, 128)
    measurer = Measurer(args.device, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms)
    env = environment(args.device)
    t0 = time.monotonic()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:

        def emit(row: dict[str, Any]) -> None:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

        for st in settings(args.settings):
            if time.monotonic() - t0 > args.deadline_s:
                emit({"kind": "skipped", **st, "reason": f"deadline {args.deadline_s} s"})
                continue
            checked = False

            def timed(n: int, st: dict[str, Any] = st) -> dict[str, float]:
                nonlocal checked
                common = dict(
                    phase="decode",
                    context=n,
                    batch=st["batch"],
                    heads_q=st["heads_q"],
                    heads_kv=st["heads_kv"],
                    d=st["d"],
                    dtype=st["dtype"],
                )
                times = {}
                for plan, k, sel in (
                    ("aqua-fused", st["k"], DEFAULT_SELECTION),
                    ("dense-fused", st["d"], "group"),
                ):
                    case = Case(plan=plan, k=k, selection=sel, **common)
                    if not checked:  # the measurer checks the output against float32 first
                        times[plan] = measurer(case)["measured_s"]
                        continue
                    work = wl.build(case, measurer._inputs_for(case))
                    t = time_fn(
                        work.total,
                        device=args.device,
                        warmup_ms=args.warmup_ms,
                        rep_ms=args.rep_ms,
                        graph=True,
                    )
                    times[plan] = t.median_s
                checked = True
                return times

            def wins(n: int, st: dict[str, Any] = st) -> bool:
                t = timed(n)
                speedup = t["dense-fused"] / t["aqua-fused"]
                emit(
                    {
                        "kind": "point",
                        **st,
                        "context": n,
                        "aqua_s": t["aqua-fused"],
                        "sdpa_s": t["dense-fused"],
                        "speedup": speedup,
                    }
                )
                return speedup > 1.0

            try:
                n_be, bracket = bisect_breakeven(wins, grid)
                emit(
                    {
                        "kind": "result",
                        **st,
                        "selection": DEFAULT_SELECTION,
                        "breakeven_context": n_be,
                        "bracket": list(bracket) if bracket else None,
                        "grid_max": grid[-1],
                        "timing": "CUDA-graph replays, do_bench median, L2 flushed"
                        if args.device == "cuda"
                        else "cpu perf_counter (plumbing only)",
                        "env": env,
                    }
                )
            except Exception as exc:  # noqa: BLE001 - one setting's failure is a row, not the end
                emit({"kind": "error", **st, "error": f"{type(exc).__name__}: {exc}"[:500]})
            measurer.release()
            print(f"[{time.monotonic() - t0:.0f} s] {st} done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
