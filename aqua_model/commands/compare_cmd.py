"""``aqua-model compare``: AQUA and its neighbours (SparQ, Loki, Quest, H2O, combinations)
at matched settings: byte and memory ratios, FLOP break-even, ceiling, predicted speedup."""

from __future__ import annotations

import argparse

from ..costs import peers
from ..costs.memory import GQA_SELECTIONS
from ..simulator.comparison import BASELINES, compare
from ..table_render import to_text
from ._common import add_convention_args, convention_from, integer, print_json, set_run

#: API arguments of :func:`aqua_model.compare` whose names differ from their flags.
FLAGS = {
    "k_t": "--tokens",
    "p": "--page",
    "b": "--budget",
    "w": "--window",
    "k": "--aqua-k",
    "aqua_k": "--aqua-k",
    "layouts": "--loki-layout",
}


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="compare AQUA with SparQ, Loki, Quest, H2O and combinations at matched settings"
    )
    p.add_argument("--d", type=integer, default=128, help="head dimension (default: %(default)s)")
    p.add_argument("--context", type=integer, default=32768, help="cached keys N (default: %(default)s)")
    p.add_argument("--gpu", default="h200", help="device name or profile TOML path (default: %(default)s)")
    p.add_argument(
        "--batch", type=integer, default=8, help="sequences decoded together (default: %(default)s)"
    )
    p.add_argument("--heads-q", type=integer, default=32, help="query heads (default: %(default)s)")
    p.add_argument("--heads-kv", type=integer, default=8, help="KV heads (default: %(default)s)")
    p.add_argument(
        "--r",
        type=integer,
        default=None,
        help="approximate-score dims of SparQ/Loki/AQUA+top-k stage (default: d/8)",
    )
    p.add_argument(
        "--tokens", type=integer, default=None, help="tokens kept k_t (top-k, Quest budget) (default: N/16)"
    )
    p.add_argument("--page", type=integer, default=None, help="Quest page size (default: 16)")
    p.add_argument("--budget", type=integer, default=None, help="H2O budget b in tokens (default: N/16)")
    p.add_argument("--window", type=integer, default=None, help="H2O recent window w (default: b/2)")
    p.add_argument("--aqua-k", type=integer, default=None, help="AQUA kept dims k (default: 3d/4)")
    p.add_argument(
        "--loki-layout",
        choices=peers.LAYOUTS["loki"],
        default=None,
        help="Loki key layout (default: token-major)",
    )
    p.add_argument(
        "--selection", choices=GQA_SELECTIONS, default="group", help="GQA selection (default: %(default)s)"
    )
    p.add_argument(
        "--baseline",
        choices=BASELINES,
        default="dense-fused",
        help="plan every method is compared with (default: %(default)s)",
    )
    p.add_argument(
        "--json", action="store_true", help="machine-readable output with a schema version (default: a table)"
    )
    add_convention_args(p)
    set_run(p, run, FLAGS)


def run(args: argparse.Namespace) -> int:
    layouts = {"loki": args.loki_layout} if args.loki_layout else None
    result = compare(
        d=args.d,
        context=args.context,
        gpu=args.gpu,
        batch=args.batch,
        heads_q=args.heads_q,
        heads_kv=args.heads_kv,
        r=args.r,
        k_t=args.tokens,
        page=args.page,
        budget=args.budget,
        window=args.window,
        aqua_k=args.aqua_k,
        selection=args.selection,
        layouts=layouts,
        baseline=args.baseline,
        convention=convention_from(args),
    )
    if args.json:
        payload = result.to_dict()
        payload.pop("schema_version")  # print_json adds the CLI schema version
        print_json(payload)
        return 0
    inp = result.inputs
    print(
        f"{result.gpu} ({result.mode}), d={inp['d']}, N={inp['context']}, batch={inp['batch']}, H_q={inp['heads_q']}, "
        f"H_kv={inp['heads_kv']}, {inp['dtype']}, selection={inp['selection']}, baseline {result.baseline} "
        f"{result.baseline_time_s * 1e6:.1f} us per layer, convention {result.convention.label()}"
    )
    rows = [
        {
            "method": r.method,
            "settings": " ".join(f"{k}={v}" for k, v in r.settings.items()) or "-",
            "bytes/dense": r.bytes_ratio,
            "KV mem/dense": r.kv_memory_ratio,
            "ceiling": r.ceiling,
            "predicted": r.predicted_speedup,
            "FLOP break-even N": r.flop_breakeven_context,
        }
        for r in result.rows
    ]
    print(to_text(rows))
    print(
        "Closed forms (bytes per KV head per decode step; ratios to dense; FLOPs per query head; FLOP break-even N*):"
    )
    for r in result.rows:
        forms = r.closed_forms
        print(f"\n{r.method}:")
        print(f"  bytes      = {forms['bytes_per_kv_head']}")
        print(f"  bytes/dense = {forms['bytes_ratio']}")
        print(f"  KV memory/dense = {forms['kv_memory_ratio']}")
        print(f"  FLOPs      = {forms['flops_per_query_head']}")
        print(
            f"  N*         = {r.flop_breakeven_closed_form or 'no closed form (exact search)'}; smallest winning N = {r.flop_breakeven_context}"
        )
    print("\nSymbols: " + "; ".join(f"{sym} = {meaning}" for sym, meaning in peers.MEANING.items()))
    return 0
