"""Benchmark the analytical model (not a timed test): a warm breakeven() call, the decode cost
model at 10^6 (N, k) points, and the roofline of one plan at 10^6 (context, k, batch)
configurations on the H200 profile. Writes analysis/results/bench_model.json.

Usage: python analysis/bench_model.py
"""

from __future__ import annotations

import json
import platform
import timeit
from pathlib import Path

import numpy as np

import aqua_model
from aqua_model import breakeven, component_flops
from aqua_model.costs import Sizes
from aqua_model.hardware import load
from aqua_model.plans import build_plan
from aqua_model.simulator.roofline import plan_time

POINTS = 1_000_000
REPEATS = 7


def main() -> None:
    rng = np.random.default_rng(0)
    context = rng.integers(1, 131_072, POINTS)
    k = rng.integers(1, 129, POINTS)
    breakeven(d=128, k=96)  # warm: derive and cache the closed form once
    warm = timeit.repeat(lambda: breakeven(d=128, k=96), number=10_000, repeat=REPEATS)
    cold_k = iter(range(1, 10_000))
    uncached = timeit.repeat(lambda: breakeven(d=4096, k=next(cold_k)), number=100, repeat=REPEATS)
    sweep = timeit.repeat(
        lambda: component_flops(method="aqua", phase="decode", d=128, k=k, context=context),
        number=1,
        repeat=REPEATS,
    )
    batch = rng.integers(1, 65, POINTS)
    h200, plan = load("h200"), build_plan("aqua-step-topk")
    sizes = Sizes(heads_q=32, heads_kv=8, d=128, context=context, batch=batch, k=k)
    roofline = timeit.repeat(lambda: plan_time(plan, h200, sizes), number=1, repeat=REPEATS)
    result = {
        "schema_version": 1,
        "warm_breakeven_s": {"median": float(np.median(warm)) / 10_000, "min": min(warm) / 10_000},
        "new_shape_breakeven_s": {"median": float(np.median(uncached)) / 100, "min": min(uncached) / 100},
        "decode_cost_1e6_points_s": {"median": float(np.median(sweep)), "min": min(sweep)},
        "roofline_one_plan_1e6_configs_s": {"median": float(np.median(roofline)), "min": min(roofline)},
        "points": POINTS,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "aqua_model": aqua_model.__version__,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, 2 cores",
    }
    out = Path(__file__).parent / "results" / "bench_model.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
