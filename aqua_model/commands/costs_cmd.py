"""``aqua-model costs``: per-component FLOPs and bytes at one shape, with the closed forms."""

from __future__ import annotations

import argparse

from ..costs.convention import resolve
from ..costs.dtypes import ELEMENT_BYTES
from ..costs.flops import flop_terms
from ..costs.memory import decode_read_bytes
from ..simulator.report_rows import breakdown_rows
from ..table_render import to_text
from ._common import add_convention_args, convention_from, integer, print_json, set_run


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="per-component decode FLOPs and bytes, dense vs AQUA")
    p.add_argument("--d", type=integer, default=128, help="head dimension (default: %(default)s)")
    p.add_argument("--k", type=integer, default=96, help="kept dims per query (default: %(default)s)")
    p.add_argument("--g", type=integer, default=1, help="query heads per KV head (default: %(default)s)")
    p.add_argument("--context", type=integer, default=4096, help="cached keys N (default: %(default)s)")
    p.add_argument(
        "--dtype-bytes",
        type=integer,
        default=2,
        help=f"bytes per element, one of {', '.join(map(str, ELEMENT_BYTES))}: fp8/int8, bf16/fp16, fp32, fp64 "
        "(default: %(default)s, bf16)",
    )
    p.add_argument(
        "--json", action="store_true", help="machine-readable output with a schema version (default: a table)"
    )
    add_convention_args(p)
    set_run(p, run)


def closed_forms(convention=None) -> dict[str, str]:
    """Per-component decode FLOP expressions and the byte expressions, as text."""
    conv = resolve(convention)
    forms = {f"{m}.{c}": str(e) for m in ("dense", "aqua") for c, e in flop_terms(m, "decode", conv).items()}
    forms["dense.kv_read_bytes"] = str(decode_read_bytes("dense"))
    forms["aqua.kv_read_bytes.dim-major"] = str(decode_read_bytes("aqua"))
    forms["aqua.kv_read_bytes.token-major"] = str(decode_read_bytes("aqua", layout="token-major"))
    return forms


def run(args: argparse.Namespace) -> int:
    conv = convention_from(args)
    rows = breakdown_rows(
        d=args.d, k=args.k, context=args.context, g=args.g, dtype_bytes=args.dtype_bytes, convention=conv
    )
    forms = closed_forms(conv)
    if args.json:
        print_json(
            {
                "shape": {
                    "d": args.d,
                    "k": args.k,
                    "g": args.g,
                    "context": args.context,
                    "dtype_bytes": args.dtype_bytes,
                },
                "rows": rows,
                "closed_forms": forms,
                "convention": conv.to_dict(),
            }
        )
        return 0
    print(
        f"Decode costs at d={args.d}, k={args.k}, g={args.g}, N={args.context} (convention: {conv.label()})"
    )
    print(to_text(rows))
    print("Closed forms (per query head for FLOPs, per KV head for bytes; S = sector bytes):")
    for name, form in forms.items():
        print(f"  {name:32s} {form}")
    return 0
