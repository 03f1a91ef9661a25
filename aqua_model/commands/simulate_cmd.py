"""``aqua-model simulate``: predicted time and speedup of an AQUA plan vs dense fused."""

from __future__ import annotations

import argparse

from ..costs.flops import PHASES
from ..costs.memory import GQA_SELECTIONS
from ..costs.collectives import ALGORITHMS
from ..simulator import AQUA_PLAN_ALIASES, end_to_end, simulate, time_breakeven
from ..simulator.parallel import one_gpu_fit
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
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel degree: GPUs sharing each layer (needs --model, decode)")
    p.add_argument("--pp", type=int, default=None, help="pipeline-parallel degree: stages of consecutive layers (needs --model, decode)")
    p.add_argument("--all-reduce", choices=ALGORITHMS, default="ring", help="all-reduce algorithm under --tp (default: %(default)s)")
    p.add_argument("--json", action="store_true")
    add_convention_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    conv = convention_from(args)
    common = dict(gpu=args.gpu, model=args.model, heads_q=args.heads_q, heads_kv=args.heads_kv, d=args.d,
                  phase=args.phase, batch=args.batch, k=args.k, plan=args.plan, selection=args.selection, convention=conv)
    e2e = None
    parallel = args.tp is not None or args.pp is not None
    if parallel and (args.model is None or args.phase != "decode"):
        raise ValueError(f"--tp/--pp need --model and --phase decode, got model={args.model!r}, phase={args.phase!r}")
    if args.phase == "decode" and args.model is not None:  # the whole model: end-to-end latency too
        e2e = end_to_end(gpu=args.gpu, model=args.model, context=args.context, k=args.k, batch=args.batch,
                         plan=args.plan, selection=args.selection, convention=conv, tensor_parallel=args.tp,
                         pipeline_parallel=args.pp, all_reduce=args.all_reduce)
        sim = e2e.simulation
    else:
        sim = simulate(context=args.context, prompt=args.prompt, **common)
    payload = sim.to_dict()
    if args.phase == "decode":
        payload["time_breakeven_context"] = time_breakeven(**common)
    if e2e is not None:
        payload["end_to_end"] = {"dense_s": float(e2e.dense_s), "aqua_s": float(e2e.aqua_s), "speedup": float(e2e.speedup),
                                 "attention_fraction": float(e2e.attention_fraction), "weights_s": float(e2e.weights_s),
                                 "dense_attention_s": float(e2e.dense_attention_s), "aqua_attention_s": float(e2e.aqua_attention_s),
                                 "all_reduce_s": float(e2e.all_reduce_s), "point_to_point_s": float(e2e.point_to_point_s)}
        if e2e.parallel is not None:
            payload["end_to_end"]["parallel"] = e2e.parallel.to_dict()
        else:
            payload["end_to_end"]["one_gpu_fit"] = one_gpu_fit(gpu=args.gpu, model=args.model, context=args.context, batch=args.batch)
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
        print(f"  parts: weights {e['weights_s'] * 1e3:.3f} ms, attention dense {e['dense_attention_s'] * 1e3:.3f} / AQUA "
              f"{e['aqua_attention_s'] * 1e3:.3f} ms, all-reduce {e['all_reduce_s'] * 1e3:.3f} ms, point-to-point "
              f"{e['point_to_point_s'] * 1e3:.3f} ms")
        if "parallel" in e:
            par, lay = e["parallel"], e["parallel"]["layout"]
            print(f"  TP{lay['tensor_parallel']} x PP{lay['pipeline_parallel']} ({lay['devices']} GPUs; tables above: one GPU, one layer): "
                  f"{par['memory_bytes_per_gpu'] / 1e9:.1f} of {par['device_memory_bytes'] / 1e9:.1f} GB per GPU, "
                  f"{lay['heads_q']} query / {lay['heads_kv']} KV heads per GPU, {par['all_reduce']} all-reduce of "
                  f"{par['message_bytes'] / 1024:.0f} KiB {par['one_all_reduce_s'] * 1e6:.1f} us x {par['all_reduces_per_layer']} per layer, "
                  f"pipeline bubble {lay['bubble_fraction']:.0%}")
        elif not e["one_gpu_fit"]["fits"]:
            fit = e["one_gpu_fit"]
            print(f"  note: weights + KV cache need {fit['memory_bytes'] / 1e9:.1f} GB, more than the {fit['device_memory_bytes'] / 1e9:.1f} GB "
                  f"of one GPU; smallest --tp that fits: {fit['smallest_tensor_parallel']}")
    return 0
