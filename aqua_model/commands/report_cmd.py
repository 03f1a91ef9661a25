"""``aqua-model report``: the main job's summary, no GPU needed."""

from __future__ import annotations

import argparse

from .._datafiles import results_file
from ..hardware import load as load_hardware
from ..simulator.report_rows import (
    PAPER_D,
    PAPER_K,
    REPORT_SPEEDUP_BATCH,
    breakdown_rows,
    breakeven_rows,
    speedup_rows,
)
from ..table_render import to_text
from ._common import check_input_file, set_run

#: Context of the cost breakdown in the report (a common serving context).
REPORT_CONTEXT = 4096
#: The calibrated H200 profile committed with the validation results (shipped in a wheel too).
COMMITTED_PROFILE = "validation/results/h200/h200-calibrated.toml"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="break-even table, cost breakdown and predicted H200 speedups")
    p.add_argument(
        "--profile",
        default=None,
        help=f"calibrated profile for the second speedup table (default: {COMMITTED_PROFILE} under --results)",
    )
    p.add_argument(
        "--results",
        default=None,
        metavar="ROOT",
        help="folder holding the committed results, laid out as the repository (default: the copy shipped "
        "in the package, else the checkout it runs from)",
    )
    set_run(p, run)


def run(args: argparse.Namespace) -> int:
    # the data files first: a missing one is an error before any output
    if args.profile is not None:  # a profile TOML (checked here) or a device name (checked by the loader)
        is_path = args.profile.endswith(".toml") or "/" in args.profile
        calibrated = str(check_input_file("--profile", args.profile)) if is_path else args.profile
        try:
            profile = load_hardware(calibrated)
        except ValueError as exc:
            raise ValueError(f"--profile {args.profile!r}: {exc}") from None
        if profile.calibration is None:  # the datasheet table is printed already: it would come twice
            raise ValueError(
                f"--profile must be a calibrated profile (for the second table; the first is the h200 datasheet), "
                f"got {args.profile!r} in mode {profile.mode!r}"
            )
    else:
        calibrated = str(results_file(COMMITTED_PROFILE, args.results))
    print("FLOP break-even of AQUA vs dense attention (per query head, g = 1, default convention)")
    print(
        "N*: decode context where costs are equal; T*: causal prompt length; *_min: first integer where AQUA is cheaper\n"
    )
    print(to_text(breakeven_rows()))
    print(
        f"Cost breakdown at the paper's operating point d={PAPER_D}, k={PAPER_K}, decode, N={REPORT_CONTEXT}:\n"
    )
    print(to_text(breakdown_rows(d=PAPER_D, k=PAPER_K, context=REPORT_CONTEXT)))
    profiles = ["h200", calibrated]
    for gpu in profiles:
        rows = speedup_rows(gpu=gpu)
        print(
            f"Predicted decode speedup of the AQUA decode step (plan aqua-step-topk: q and the new key rotated, torch.topk, "
            f"the fused kernel on dim-major keys) over dense fused attention, Llama-3.1-8B, "
            f"batch {REPORT_SPEEDUP_BATCH}, profile {rows[0]['mode']} ('ceiling' = 2d/(k+d)):\n"
        )
        print(to_text(rows))
    return 0
