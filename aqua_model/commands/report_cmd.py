"""``aqua-model report``: the main job's summary, no GPU needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..simulator.report_rows import PAPER_D, PAPER_K, REPORT_SPEEDUP_BATCH, breakdown_rows, breakeven_rows, speedup_rows
from ..table_render import to_text

#: Context of the cost breakdown in the report (a common serving context).
REPORT_CONTEXT = 4096
#: The calibrated H200 profile committed with the validation results (present in a checkout).
COMMITTED_PROFILE = Path(__file__).resolve().parents[2] / "validation" / "results" / "h200" / "h200-calibrated.toml"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="break-even table, cost breakdown and predicted H200 speedups")
    p.add_argument("--profile", default=None,
                   help="calibrated profile for a second speedup table (default: the committed H200 one, if present)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("FLOP break-even of AQUA vs dense attention (per query head, g = 1, default convention)")
    print("N*: decode context where costs are equal; T*: causal prompt length; *_min: first integer where AQUA is cheaper\n")
    print(to_text(breakeven_rows()))
    print(f"Cost breakdown at the paper's operating point d={PAPER_D}, k={PAPER_K}, decode, N={REPORT_CONTEXT}:\n")
    print(to_text(breakdown_rows(d=PAPER_D, k=PAPER_K, context=REPORT_CONTEXT)))
    profiles = ["h200"]
    calibrated = args.profile or (str(COMMITTED_PROFILE) if COMMITTED_PROFILE.is_file() else None)
    if calibrated:
        profiles.append(calibrated)
    for gpu in profiles:
        rows = speedup_rows(gpu=gpu)
        print(f"Predicted decode speedup of the AQUA decode step (plan aqua-step-topk: q and the new key rotated, torch.topk, "
              f"the fused kernel on dim-major keys) over dense fused attention, Llama-3.1-8B, "
              f"batch {REPORT_SPEEDUP_BATCH}, profile {rows[0]['mode']} ('ceiling' = 2d/(k+d)):\n")
        print(to_text(rows))
    if not calibrated:
        print("(no calibrated profile found: run `aqua-model validate calibrate` on a GPU, or pass --profile)")
    return 0
