"""``aqua-model report``: the main job's summary, no GPU needed."""

from __future__ import annotations

import argparse

from ..studies import PAPER_D, PAPER_K, breakdown_rows, breakeven_rows
from ..tables import to_text

#: Context of the cost breakdown in the report (a common serving context).
REPORT_CONTEXT = 4096
#: Extra report sections contributed by later layers (simulator, peers), each a function
#: returning text. Registered by the command modules that own them.
SECTIONS: list = []


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="break-even table and cost breakdown at the paper's operating point")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("FLOP break-even of AQUA vs dense attention (per query head, g = 1, default convention)")
    print("N*: decode context where costs are equal; T*: causal prompt length; *_min: first integer where AQUA is cheaper\n")
    print(to_text(breakeven_rows()))
    print(f"Cost breakdown at the paper's operating point d={PAPER_D}, k={PAPER_K}, decode, N={REPORT_CONTEXT}:\n")
    print(to_text(breakdown_rows(d=PAPER_D, k=PAPER_K, context=REPORT_CONTEXT)))
    for section in SECTIONS:
        print(section())
    return 0
