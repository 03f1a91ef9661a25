"""``aqua-model breakeven``: the FLOP break-even context and its closed form."""

from __future__ import annotations

import argparse

from ..costs.flop_breakeven import breakeven
from ..costs.flops import PHASES
from ._common import add_convention_args, convention_from, integer, print_json, set_run


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="FLOP break-even context of AQUA vs dense attention")
    p.add_argument("--d", type=integer, default=128, help="head dimension (default: %(default)s)")
    p.add_argument("--k", type=integer, default=96, help="kept dims per query (default: %(default)s)")
    p.add_argument("--g", type=integer, default=1, help="query heads per KV head (default: %(default)s)")
    p.add_argument(
        "--phase",
        choices=PHASES,
        default="decode",
        help="decode (N cached keys) or causal prefill (T new tokens) (default: %(default)s)",
    )
    p.add_argument(
        "--selection-tile",
        type=integer,
        default=None,
        metavar="M",
        help="prefill only: M queries of a tile share one selection (default: per-query selection)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output with a schema version (default: a text summary)",
    )
    add_convention_args(p)
    set_run(p, run)


def run(args: argparse.Namespace) -> int:
    result = breakeven(
        d=args.d,
        k=args.k,
        g=args.g,
        phase=args.phase,
        selection_tile=args.selection_tile,
        convention=convention_from(args),
    )
    if args.json:
        print_json({"breakeven": result.to_dict()})
    else:
        print(result)
        print(f"  LaTeX: {result.latex()}")
    return 0
