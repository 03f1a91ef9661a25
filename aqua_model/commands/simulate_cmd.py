"""``aqua-model simulate``: predicted time and speedup of an AQUA plan vs dense fused."""

from __future__ import annotations

import argparse

from ..costs.flops import PHASES
from ..costs.memory import GQA_SELECTIONS
from ..simulator import AQUA_PLAN_ALIASES, end_to_end, simulate, time_breakeven
from ..table_render import to_text
from ._common import add_convention_args, convention_from, print_json


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="roofline prediction of AQUA vs dense fused attention on a GPU")
    p.add_argument("--gpu", default="h200", help="device name or profile TOML path (see `aqua-model hardware list`)")
    p.add_argument("--model", default=None, help="model config name (see aqua_model.models.list_models())")
    p.add_argument("--heads-q", type=int, default=None, help="explicit shape instead of --model")
    p.add_argument("--heads-kv", type=int, default=None)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--phase", choices=PHASES, default="decode")
    p.add_argument("--context", type=int, required=True, help="cached keys N")
    p.add_argument("--prompt", type=int, default=None, help="new tokens T (prefill)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--plan", default="fused", help=f"AQUA plan: {', '.join(AQUA_PLAN_ALIASES)} (or a full plan name)")
    p.add_argument("--selection", choices=GQA_SELECTIONS, default="group", help="GQA selection (default: %(default)s)")
    p.add_argument("--json", action="store_true")
    add_convention_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    conv = convention_from(args)
    common = dict(gpu=args.gpu, model=args.model, heads_q=args.heads_q, heads_kv=args.heads_kv, d=args.d,
                  phase=args.phase, batch=args.batch, k=args.k, plan=args.plan, selection=args.selection, convention=conv)
    e2e = None
    if args.phase == "decode" and args.model is not None:  # the whole model: end-to-end latency too
        e2e = end_to_end(gpu=args.gpu, model=args.model, context=args.context, k=args.k, batch=args.batch,
                         plan=args.plan, selection=args.selection, convention=conv)
        sim = e2e.simulation
    else:
        sim = simulate(context=args.context, prompt=args.prompt, **common)
    payload = sim.to_dict()
    if args.phase == "decode":
        payload["time_breakeven_context"] = time_breakeven(**common)
    if e2e is not None:
        payload["end_to_end"] = {"dense_s": float(e2e.dense_s), "aqua_s": float(e2e.aqua_s), "speedup": float(e2e.speedup),
                                 "attention_fraction": float(e2e.attention_fraction)}
    if args.json:
        print_json(payload)
        return 0
    print(f"{sim.gpu} ({sim.mode}), {sim.shape.name}, {args.phase}, N={args.context}, batch={args.batch}, k={args.k}, "
          f"g={sim.shape.g}, per layer, convention {conv.label()}")
    for label, result in (("dense", sim.dense), ("aqua", sim.aqua)):
        print(f"\n{label}: {result.plan}, {float(result.time_s) * 1e6:.1f} us per layer\n  {result.description}")
        print(to_text(result.table()))
    line = f"speedup {float(sim.speedup):.3f}x"
    if sim.ceiling is not None:
        line += f" (byte ceiling of dimension-only sparsity 2d/(k+d) = {float(sim.ceiling):.3f}x)"
    print(line)
    print(f"FLOP break-even context: {sim.flop_breakeven}; time break-even context on {sim.gpu}: {payload.get('time_breakeven_context')}")
    if "end_to_end" in payload:
        e = payload["end_to_end"]
        print(f"end-to-end per token: dense {e['dense_s'] * 1e3:.3f} ms, AQUA {e['aqua_s'] * 1e3:.3f} ms, "
              f"speedup {e['speedup']:.3f}x (attention is {e['attention_fraction']:.0%} of the dense step)")
    return 0
