"""AQUA in PyTorch: offline calibration, a readable reference, FLOP cross-check, Triton decode.

This subpackage needs torch (and, for the fused kernels, triton on a CUDA GPU). Nothing else
in :mod:`aqua_model` imports it at module level, so the analytical package works without torch.

Submodules:

- :mod:`aqua_model.kernels.calibration`: SVD projections P per (layer, KV group), save / load.
- :mod:`aqua_model.kernels.reference`: eager dense and AQUA attention, a projected-key cache.
- :mod:`aqua_model.kernels.eager`: the eager-torch implementations the plans declare
  (stage builders: each kernel of a plan as a callable).
- :mod:`aqua_model.kernels.flop_counter`: matmul FLOPs of the reference counted by torch's own
  ``FlopCounterMode``, per cost-model component.
- :mod:`aqua_model.kernels.performance`: :class:`PerformanceWarning`, the slow-path warning.
- :mod:`aqua_model.kernels.triton_decode`: fused split-N AQUA and dense decode kernels, with a
  reference fallback where triton or CUDA is missing.
"""

from __future__ import annotations

from aqua_model.kernels.calibration import (
    Calibration,
    calibrate,
    calibrate_projections,
    fit_projection,
    load_calibration,
    save_calibration,
)
from aqua_model.kernels.performance import PerformanceWarning
from aqua_model.kernels.reference import (
    ProjectedKVCache,
    aqua_attention,
    aqua_attention_rotated,
    dense_attention,
)

__all__ = [
    "Calibration",
    "PerformanceWarning",
    "ProjectedKVCache",
    "aqua_attention",
    "aqua_attention_rotated",
    "calibrate",
    "calibrate_projections",
    "dense_attention",
    "fit_projection",
    "load_calibration",
    "save_calibration",
]
