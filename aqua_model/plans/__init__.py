"""Plans: each implementation as the kernels it launches, with symbolic FLOPs and bytes from
:mod:`aqua_model.costs`, an access pattern, a launch count and the runnable implementation it
describes (or "model-only"). Nothing here imports the simulator, hardware data or torch.

- :mod:`.kernel`: the Kernel, Plan and Implementation types;
- :mod:`.attention`: dense and AQUA plans (decode and prefill);
- :mod:`.peer_plans`: plans of AQUA's neighbours (SparQ, Loki, Quest, H2O, ...).
"""

from __future__ import annotations

from .attention import DECODE_PLANS, PREFILL_PLANS, build_plan, plan_names
from .kernel import INDEX_BYTES, MODEL_ONLY, Implementation, Kernel, Plan, describe
from .peer_plans import build_peer_plan

__all__ = [
    "DECODE_PLANS",
    "INDEX_BYTES",
    "MODEL_ONLY",
    "PREFILL_PLANS",
    "Implementation",
    "Kernel",
    "Plan",
    "build_peer_plan",
    "build_plan",
    "describe",
    "plan_names",
]
