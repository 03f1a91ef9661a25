"""``aqua-model models list|show``: the bundled LLM configs, or any model TOML or Hugging Face
config.json by path."""

from __future__ import annotations

import argparse
import json

from .. import models
from ._common import set_run


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="list or show model configs (bundled, a model TOML, or a Hugging Face config.json)"
    )
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_run(msub.add_parser("list", help="the bundled models: shape, parameters and source"), _list)
    show = msub.add_parser("show", help="one model with every field's source and the derived sizes")
    show.add_argument(
        "model", help="model name or alias, a model TOML, a config.json, or a folder holding one"
    )
    show.add_argument("--json", action="store_true", help="machine-readable output (default: a text summary)")
    set_run(show, _show, {"name_or_path": "MODEL"})


def _list(args: argparse.Namespace) -> int:
    print(
        f"{'key':18s} {'name':18s} {'params':>8s} {'layers':>6s} {'heads':>9s} {'d':>4s} {'max ctx':>8s} {'window':>13s}  source"
    )
    for key in models.list_models():
        cfg = models.load(key)
        window = (
            "-"
            if cfg.sliding_window_pattern == "none"
            else (
                f"{cfg.sliding_window}"
                + (
                    ""
                    if cfg.sliding_window_pattern == "all"
                    else f" ({cfg.sliding_window_layers}/{cfg.layers})"
                )
            )
        )
        print(
            f"{key:18s} {cfg.name:18s} {cfg.param_count / 1e9:7.2f}B {cfg.layers:6d} {cfg.heads:>4d}/{cfg.kv_heads:<4d} "
            f"{cfg.head_dim:4d} {cfg.max_context:8d} {window:>13s}  {cfg.source}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    cfg = models.load(args.model)
    print(json.dumps(cfg.to_dict(), indent=2) if args.json else cfg.describe())
    return 0
