"""Readers for the committed measurements that the figures overlay on the model.

Every reader tolerates absent files (it returns an empty list or ``None``): a figure then
omits its measured layer and says "no measurements committed".

Files, under ``<root>/validation/results/<device>/``:

* ``validation.jsonl``: one row per case (``case_id``, ``status``, ``phase``, ``plan``,
  ``context``, ``batch``, ``heads_q``, ``heads_kv``, ``d``, ``k``, ``measured_s``,
  ``predicted_datasheet_s``, ``predicted_calibrated_s``, ``kernels`` [...]).
* ``decode_kernels.jsonl``: the fused decode kernels against SDPA (``context``, ``k``,
  ``batch``, ``heads_q``, ``heads_kv``, ``dense_sdpa_s``, ``aqua_fused_s``, ...).
* ``*.toml``: a calibrated hardware profile.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from aqua_model.hardware import HardwareProfile, load as load_hardware
from aqua_model.validate.runner import current_names

#: Device folder of the committed measurements.
DEFAULT_DEVICE = "h200"
#: Folder of the measurements, relative to the repository root.
RESULTS_DIR = Path("validation") / "results"
VALIDATION_FILE = "validation.jsonl"
#: The same measurements with predictions recomputed by the current model
#: (``aqua-model validate report --repredict ... --out``); preferred when present.
CURRENT_MODEL_FILE = "validation_current_model.jsonl"
DECODE_KERNELS_FILE = "decode_kernels.jsonl"
#: The runner's status of a measured case (aqua_model.validate.runner.STATUSES: ok, oom, unsupported, skipped, error).
OK_STATUS = "ok"
#: The note a figure shows when its measured layer is absent.
NO_MEASUREMENTS = "no measurements committed"


def results_dir(root: Path, device: str = DEFAULT_DEVICE) -> Path:
    """``<root>/validation/results/<device>``."""
    return Path(root) / RESULTS_DIR / device


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; [] when it does not exist. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno} is not valid JSON: {exc}") from exc
    return rows


def _positive(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def usable(row: Mapping[str, Any]) -> bool:
    """True when a validation row has status "ok" and a positive measured time."""
    return row.get("status") == OK_STATUS and _positive(row.get("measured_s"))


def validation_rows(root: Path, device: str = DEFAULT_DEVICE) -> list[dict[str, Any]]:
    """Usable rows of the current-model re-prediction, else of ``validation.jsonl`` ([] when absent)."""
    folder = results_dir(root, device)
    path = (
        folder / CURRENT_MODEL_FILE if (folder / CURRENT_MODEL_FILE).is_file() else folder / VALIDATION_FILE
    )
    return [current_names(r) for r in read_jsonl(path) if usable(r)]


def decode_kernel_rows(root: Path, device: str = DEFAULT_DEVICE) -> list[dict[str, Any]]:
    """Rows of ``decode_kernels.jsonl`` with positive SDPA and fused-AQUA times ([] when absent)."""
    rows = read_jsonl(results_dir(root, device) / DECODE_KERNELS_FILE)
    return [r for r in rows if _positive(r.get("dense_sdpa_s")) and _positive(r.get("aqua_fused_s"))]


def fused_kernel_time(row: Mapping[str, Any]) -> float:
    """The fused AQUA kernel time of a decode_kernels row matching the model's default GQA
    selection ("group": the g heads of a KV group share k dims) when measured, else per-head."""
    group = row.get("aqua_fused_group_s")
    return float(group) if _positive(group) else float(row["aqua_fused_s"])


def calibrated_profile(root: Path, device: str = DEFAULT_DEVICE) -> HardwareProfile | None:
    """The calibrated profile committed with the measurements, or None (first ``*.toml`` by name)."""
    folder = results_dir(root, device)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.toml")):
        profile = load_hardware(str(path))
        if profile.mode.startswith("calibrated"):
            return profile
    return None


def matches(row: Mapping[str, Any], **shape: Any) -> bool:
    """True when the row has every given field equal to the given value."""
    return all(row.get(key) == value for key, value in shape.items())


def measured_speedups(
    rows: Iterable[Mapping[str, Any]],
    *,
    aqua_plan: str = "aqua-step-topk",
    dense_plan: str = "dense-fused",
    phase: str = "decode",
) -> list[dict[str, Any]]:
    """Measured dense/AQUA speedups from validation rows paired on the shape (all but plan and k)."""
    rows = [r for r in rows if r.get("phase") == phase]
    shape_keys = ("context", "prompt", "batch", "heads_q", "heads_kv", "d", "dtype")
    dense = {tuple(r.get(c) for c in shape_keys): r for r in rows if r.get("plan") == dense_plan}
    out = []
    for r in rows:
        if r.get("plan") != aqua_plan:
            continue
        base = dense.get(tuple(r.get(c) for c in shape_keys))
        if base is None:
            continue
        out.append(
            {
                **{c: r.get(c) for c in shape_keys},
                "k": r["k"],
                "speedup": base["measured_s"] / r["measured_s"],
            }
        )
    return out


__all__ = [
    "NO_MEASUREMENTS",
    "calibrated_profile",
    "decode_kernel_rows",
    "matches",
    "measured_speedups",
    "read_jsonl",
    "results_dir",
    "usable",
    "validation_rows",
]
