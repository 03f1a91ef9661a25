"""``aqua-model report``: the main job's summary, no GPU needed."""

from __future__ import annotations

import argparse

from ..studies import PAPER_D, PAPER_K, REPORT_SPEEDUP_BATCH, breakdown_rows, breakeven_rows, speedup_rows
from ..tables import to_text

#: Context of the cost breakdown in the report (a common serving context).
REPORT_CONTEXT = 4096


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="break-even table and cost breakdown at the paper's operating point")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("FLOP break-even of AQUA vs dense attention (per query head, g = 1, default convention)")
    print("N*: decode context where costs are equal; T*: causal prompt length; *_min: first integer where AQUA is cheaper\n")
    print(to_text(breakeven_rows()))
    print(f"Cost breakdown at the paper's operating point d={PAPER_D}, k={PAPER_K}, decode, N={REPORT_CONTEXT}:\n")
    print(to_text(breakdown_rows(d=PAPER_D, k=PAPER_K, context=REPORT_CONTEXT)))
    print(f"Predicted decode speedup of fused AQUA (dim-major keys) over dense fused attention, Llama-3.1-8B on H200, "
          f"batch {REPORT_SPEEDUP_BATCH} (roofline, datasheet profile; 'ceiling' = 2d/(k+d)):\n")
    print(to_text(speedup_rows()))
    return 0
