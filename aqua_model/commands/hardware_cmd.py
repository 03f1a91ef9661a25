"""``aqua-model hardware list|show``: the device database."""

from __future__ import annotations

import argparse
import json

from .. import hardware
from ._common import set_run


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="list or show hardware profiles")
    hsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_run(hsub.add_parser("list", help="known devices"), _list)
    show = hsub.add_parser("show", help="one device with every number's unit and source")
    show.add_argument("device", help="device name, alias or profile TOML path")
    show.add_argument("--json", action="store_true", help="machine-readable output (default: a text summary)")
    set_run(show, _show)


def _list(args: argparse.Namespace) -> int:
    for key in hardware.list_devices():
        prof = hardware.load(key)
        print(
            f"{key:16s} {prof.name:28s} {prof.bandwidth_bytes_per_s / 1e12:6.2f} TB/s  {prof.peak_flops('fp32') / 1e12:7.1f} TFLOP/s fp32"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    prof = hardware.load(args.device)
    print(json.dumps(prof.to_dict(), indent=2) if args.json else prof.describe())
    return 0
