"""Which plans the held-out validation could not predict: "unvalidated", with the reason.

``validation/results/h200/plan_status.toml`` (written by ``aqua-model validate report ...
--status-out``, from a held-out run; shipped in a wheel with the other results) lists, per
(phase, plan), the held-out p90 of the absolute error of the calibrated prediction, the number
of held-out cases, the seed and the commit the model was frozen at, and the verdict: a plan whose
held-out p90 exceeds ``UNVALIDATED_P90`` is "unvalidated", with the reason. ``simulate`` and
``predict`` carry that verdict (``Simulation.statuses``, ``Prediction.status``) and
``aqua-model simulate`` prints it beside the prediction. A plan the held-out run did not measure
has no verdict ("").
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from .._datafiles import CHECKOUT_ROOT, SHIPPED_RESULTS_DIR, read_toml

#: Held-out p90 of |predicted / measured - 1| above which a plan is "unvalidated" (issue 12).
UNVALIDATED_P90 = 0.25
#: Where the verdicts live, relative to a results root (see aqua_model/results_manifest.txt).
STATUS_FILE = "validation/results/h200/plan_status.toml"
STATUS_SCHEMA_VERSION = 1


@lru_cache(maxsize=1)
def _statuses() -> dict[tuple[str, str], dict[str, Any]]:
    for root in (SHIPPED_RESULTS_DIR, CHECKOUT_ROOT):
        path = Path(root) / STATUS_FILE
        if path.is_file():
            doc = read_toml(path)
            if doc.get("schema_version") != STATUS_SCHEMA_VERSION:
                raise ValueError(
                    f"{path}: schema_version must be {STATUS_SCHEMA_VERSION}, got {doc.get('schema_version')!r}"
                )
            return {(e["phase"], e["plan"]): e for e in doc.get("plan", [])}
    return {}


def status_entry(phase: str, plan: str) -> dict[str, Any] | None:
    """The held-out record of ``phase``/``plan`` (p90, n, seed, commit, status, reason), or None."""
    return _statuses().get((phase, plan))


def plan_status(phase: str, plan: str) -> str:
    """ "unvalidated: <reason>" when the held-out run found the plan unpredictable, else ""."""
    e = status_entry(phase, plan)
    if not e or e.get("status") != "unvalidated":
        return ""
    return f"unvalidated: {e.get('reason', '')}".rstrip(": ")


__all__ = ["STATUS_FILE", "UNVALIDATED_P90", "plan_status", "status_entry"]
