"""Small helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..costs.convention import SELECTION_MODELS, KEY_PROJECTION_MODELS, PROJECTION_PLACEMENTS, Convention

JSON_SCHEMA_VERSION = 1


def add_convention_args(parser: argparse.ArgumentParser) -> None:
    """The convention fields as options (defaults are the documented Convention defaults)."""
    c = Convention()
    parser.add_argument("--topk-cost", choices=SELECTION_MODELS, default=c.selection, help="convention: cost model of the top-k selection (default: %(default)s)")
    parser.add_argument("--key-projection", choices=KEY_PROJECTION_MODELS, default=c.key_projection, help="(default: %(default)s)")
    parser.add_argument("--projection", choices=PROJECTION_PLACEMENTS, default=c.projection, help="(default: %(default)s)")
    parser.add_argument("--softmax-flops", type=float, default=c.softmax_flops_per_score, help="FLOPs per score in softmax (default: %(default)s)")


def convention_from(args: argparse.Namespace) -> Convention:
    """Build the Convention the options describe."""
    return Convention(selection=args.topk_cost, key_projection=args.key_projection, projection=args.projection, softmax_flops_per_score=args.softmax_flops)


def print_json(payload: dict[str, Any]) -> None:
    """Print a JSON document that carries the CLI schema version."""
    print(json.dumps({"schema_version": JSON_SCHEMA_VERSION, **payload}, indent=2, default=float))


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand. Bad arguments exit 2 with a one-line
    message, never a traceback; a closed output pipe ends quietly."""
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"aqua-model {args.command}: error: {message}", file=sys.stderr)
        return 2
