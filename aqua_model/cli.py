"""``aqua-model`` command line: one subcommand module per job (:mod:`aqua_model.commands`),
errors as one line that names the flag."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .commands import COMMANDS
from .commands._common import Parser, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = Parser(
        prog="aqua-model", description="Cost models, predictions and measurements for AQUA attention."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"aqua-model {__version__}",
        help="print the package version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Bad arguments exit 2 with a one-line message, never a traceback."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
