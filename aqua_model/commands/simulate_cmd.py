"""``aqua-model simulate``: predicted time and speedup of an AQUA plan vs dense fused."""

from __future__ import annotations

import argparse

from ..costs.collectives import ALGORITHMS
from ..costs.dtypes import KV_DTYPES, STORAGE_DTYPES
from ..costs.flops import PHASES
from ..costs.memory import GQA_SELECTIONS
from ..models import load as load_model
from ..simulator import AQUA_PLAN_ALIASES, end_to_end, simulate, time_breakeven
from ..simulator.intervals import fmt_interval
from ..table_render import to_text
from ._common import add_convention_args, convention_from, integer, print_json, set_run


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="roofline prediction of AQUA vs dense fused attention on a GPU")
    p.add_argument(
        "--gpu",
        default="h200",
        help="device name or profile TOML path, see `aqua-model hardware list` (default: %(default)s)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model name (see `aqua-model models list`), a model TOML, a Hugging Face config.json or a folder "
        "holding one (default: none; give --heads-q, --heads-kv and --d instead)",
    )
    p.add_argument(
        "--heads-q",
        type=integer,
        default=None,
        help="query heads of an explicit shape (default: none; use --model)",
    )
    p.add_argument(
        "--heads-kv",
        type=integer,
        default=None,
        help="KV heads of an explicit shape (default: none; use --model)",
    )
    p.add_argument(
        "--d",
        type=integer,
        default=None,
        help="head dimension of an explicit shape (default: none; use --model)",
    )
    p.add_argument("--phase", choices=PHASES, default="decode", help="(default: %(default)s)")
    p.add_argument("--context", type=integer, required=True, help="cached keys N (required)")
    p.add_argument(
        "--prompt", type=integer, default=None, help="new tokens T, with --phase prefill only (default: none)"
    )
    p.add_argument(
        "--batch", type=integer, default=1, help="sequences decoded together (default: %(default)s)"
    )
    p.add_argument("--k", type=integer, required=True, help="kept dims per query, 1 <= k <= d (required)")
    p.add_argument(
        "--plan",
        default="fused",
        help=f"AQUA plan: {', '.join(AQUA_PLAN_ALIASES)} or a full plan name (default: %(default)s)",
    )
    p.add_argument(
        "--dtype",
        choices=STORAGE_DTYPES,
        default=None,
        help="storage and compute dtype of weights and attention (default: the model's, bf16 for an explicit shape)",
    )
    p.add_argument(
        "--kv-dtype",
        choices=KV_DTYPES,
        default=None,
        help="KV-cache dtype; fp8 is 1 byte, int4 0.5 byte plus its group scales (decode only; default: --dtype)",
    )
    p.add_argument(
        "--selection", choices=GQA_SELECTIONS, default="group", help="GQA selection (default: %(default)s)"
    )
    p.add_argument(
        "--tp",
        type=integer,
        default=None,
        help="tensor-parallel degree: GPUs sharing each layer, needs --model and decode (default: one GPU)",
    )
    p.add_argument(
        "--pp",
        type=integer,
        default=None,
        help="pipeline-parallel degree: stages of consecutive layers, needs --model and decode (default: one stage)",
    )
    p.add_argument(
        "--all-reduce",
        choices=ALGORITHMS,
        default=None,
        help="all-reduce algorithm, with --tp only (default: ring)",
    )
    p.add_argument(
        "--json", action="store_true", help="machine-readable output with a schema version (default: tables)"
    )
    add_convention_args(p)
    set_run(p, run)


def run(args: argparse.Namespace) -> int:
    conv = convention_from(args)
    if args.prompt is not None and args.phase != "prefill":
        raise ValueError(
            f"--prompt {args.prompt} is only used with --phase prefill (decode attends to --context cached keys)"
        )
    model = args.model
    explicit = [
        f
        for f, v in (("--heads-q", args.heads_q), ("--heads-kv", args.heads_kv), ("--d", args.d))
        if v is not None
    ]
    if model is not None and explicit:
        raise ValueError(
            f"give --model or an explicit shape (--heads-q, --heads-kv, --d), not both; got --model {model!r} and "
            f"{', '.join(explicit)}"
        )
    if args.all_reduce is not None and args.tp is None:
        raise ValueError(
            f"--all-reduce {args.all_reduce} is only used with --tp (the all-reduces of tensor parallelism)"
        )
    if model is not None:  # one loaded config, served in the dtypes asked for, for every step below
        model = load_model(model).serving(dtype=args.dtype, kv_dtype=args.kv_dtype)
        shape_args = dict(model=model)
    else:
        shape_args = dict(heads_q=args.heads_q, heads_kv=args.heads_kv, d=args.d, dtype=args.dtype)
        if args.kv_dtype is not None:
            shape_args["kv_dtype"] = args.kv_dtype
    common = dict(
        gpu=args.gpu,
        phase=args.phase,
        batch=args.batch,
        k=args.k,
        plan=args.plan,
        selection=args.selection,
        convention=conv,
        **shape_args,
    )
    e2e = None
    parallel = args.tp is not None or args.pp is not None
    if parallel and (args.model is None or args.phase != "decode"):
        raise ValueError(
            f"--tp/--pp need --model and --phase decode, got model={args.model!r}, phase={args.phase!r}"
        )
    if args.phase == "decode" and args.model is not None:  # the whole model: end-to-end latency too
        e2e = end_to_end(
            gpu=args.gpu,
            model=model,
            context=args.context,
            k=args.k,
            batch=args.batch,
            plan=args.plan,
            selection=args.selection,
            convention=conv,
            tensor_parallel=args.tp,
            pipeline_parallel=args.pp,
            all_reduce=args.all_reduce or "ring",
        )
        sim = e2e.simulation
    else:
        sim = simulate(context=args.context, prompt=args.prompt, **common)
    payload = sim.to_dict()
    if args.phase == "decode":
        payload["time_breakeven_context"] = time_breakeven(**common)
    if e2e is not None:
        payload["end_to_end"] = {
            "dense_s": float(e2e.dense_s),
            "aqua_s": float(e2e.aqua_s),
            "speedup": float(e2e.speedup),
            "attention_fraction": float(e2e.attention_fraction),
            "weights_s": float(e2e.weights_s),
            "dense_attention_s": float(e2e.dense_attention_s),
            "aqua_attention_s": float(e2e.aqua_attention_s),
            "all_reduce_s": float(e2e.all_reduce_s),
            "point_to_point_s": float(e2e.point_to_point_s),
        }
        if e2e.parallel is not None:
            payload["end_to_end"]["parallel"] = e2e.parallel.to_dict()
        else:
            payload["end_to_end"]["one_gpu_fit"] = e2e.one_gpu_fit
    if args.json:
        print_json(payload)
        return 0
    print(
        f"{sim.gpu} ({sim.mode}), {sim.shape.name}, {args.phase}, N={args.context}, batch={args.batch}, k={args.k}, "
        f"g={sim.shape.g}, per layer, convention {conv.label()}, {sim.shape.dtype} (KV cache {sim.shape.cache_dtype})"
    )
    if sim.shape.local_layers:
        print(
            f"note: {sim.shape.local_layers} of the {sim.shape.layers} layers attend through a {sim.shape.local_window}-token "
            "sliding window; the tables are a global layer's, the end-to-end latency sums both kinds"
        )
    statuses = sim.statuses
    for label, result in (("dense", sim.dense), ("aqua", sim.aqua)):
        time_text = fmt_interval(
            float(result.time_s), sim.time_interval(label), unit=" us", scale=1e6, digits=1
        )
        print(f"\n{label}: {result.plan}, {time_text} per layer\n  {result.description}")
        if statuses.get(result.plan):
            print(f"  {result.plan}: {statuses[result.plan]}")
        print(to_text(result.table()))
    line = f"speedup {fmt_interval(float(sim.speedup), sim.speedup_interval, digits=3)}"
    if sim.ceiling is not None:
        line += f" (byte ceiling of dimension-only sparsity 2d/(k+d) = {float(sim.ceiling):.3f}x)"
    if sim.aqua.limit:
        line += f"; {sim.aqua.plan} is {sim.aqua.limit.split(':', 1)[0]} (no kernel runs this shape)"
    print(line)
    print(f"interval: 80%, {payload['intervals']['source']}")
    counted = (
        "--projection online: rotating q and the new key counted"
        if conv.projection == "online"
        else "--projection folded: the rotation folded into the weights"
    )
    print(
        f"FLOP break-even context: {sim.flop_breakeven} [{counted}; set by the convention, not by the plan]; "
        f"time break-even context on {sim.gpu}: {payload.get('time_breakeven_context')}"
    )
    if "end_to_end" in payload:
        e = payload["end_to_end"]
        print(
            f"end-to-end per token: dense {e['dense_s'] * 1e3:.3f} ms, AQUA {e['aqua_s'] * 1e3:.3f} ms, "
            f"speedup {e['speedup']:.3f}x (attention is {e['attention_fraction']:.0%} of the dense step)"
        )
        print(
            f"  parts: weights {e['weights_s'] * 1e3:.3f} ms, attention dense {e['dense_attention_s'] * 1e3:.3f} / AQUA "
            f"{e['aqua_attention_s'] * 1e3:.3f} ms, all-reduce {e['all_reduce_s'] * 1e3:.3f} ms, point-to-point "
            f"{e['point_to_point_s'] * 1e3:.3f} ms"
        )
        if "parallel" in e:
            par, lay = e["parallel"], e["parallel"]["layout"]
            print(
                f"  TP{lay['tensor_parallel']} x PP{lay['pipeline_parallel']} ({lay['devices']} GPUs; tables above: one GPU, one layer): "
                f"{par['memory_bytes_per_gpu'] / 1e9:.1f} of {par['device_memory_bytes'] / 1e9:.1f} GB per GPU, "
                f"{lay['heads_q']} query / {lay['heads_kv']} KV heads per GPU, {par['all_reduce']} all-reduce of "
                f"{par['message_bytes'] / 1024:.0f} KiB {par['one_all_reduce_s'] * 1e6:.1f} us x {par['all_reduces_per_layer']} per layer, "
                f"pipeline bubble {lay['bubble_fraction']:.0%}"
            )
        elif not e["one_gpu_fit"]["fits"]:
            fit = e["one_gpu_fit"]
            print(
                f"  note: weights + KV cache need {fit['memory_bytes'] / 1e9:.1f} GB, more than the {fit['device_memory_bytes'] / 1e9:.1f} GB "
                f"of one GPU; smallest --tp that fits: {fit['smallest_tensor_parallel']}"
            )
    return 0
