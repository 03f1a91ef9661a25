"""Registry of CLI subcommands. Each module has ``add_parser(subparsers, name)`` that sets
``run`` (a function of the parsed args returning an exit code) as the parser default."""

from __future__ import annotations

from types import ModuleType

from . import (
    breakeven_cmd,
    compare_cmd,
    costs_cmd,
    figures_cmd,
    hardware_cmd,
    models_cmd,
    report_cmd,
    simulate_cmd,
    validate_cmd,
)

COMMANDS: dict[str, ModuleType] = {
    "report": report_cmd,
    "breakeven": breakeven_cmd,
    "costs": costs_cmd,
    "simulate": simulate_cmd,
    "hardware": hardware_cmd,
    "models": models_cmd,
    "compare": compare_cmd,
    "figures": figures_cmd,
    "validate": validate_cmd,
}
