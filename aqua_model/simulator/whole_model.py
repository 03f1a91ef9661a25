"""A whole model's per-token decode latency: weights plus every layer's attention, so that an
attention speedup becomes an end-to-end one through Amdahl's law."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..costs.convention import Convention
from ..hardware import HardwareProfile, resolve_profile
from ..models import ModelConfig, load as load_model
from .simulation import Simulation, simulate


@dataclass(frozen=True)
class EndToEnd:
    """Per-token decode latency of a whole model: weights + all layers' attention.

    The non-attention part is the larger of reading every weight once and doing 2 FLOPs
    per parameter per sequence (the matrix work of projections, MLP and LM head);
    norms, RoPE and sampling are left out (a few percent of a decode step).
    """

    weights_s: np.ndarray
    dense_attention_s: np.ndarray
    aqua_attention_s: np.ndarray
    mode: str
    simulation: Simulation

    @property
    def dense_s(self) -> np.ndarray:
        return self.weights_s + self.dense_attention_s

    @property
    def aqua_s(self) -> np.ndarray:
        return self.weights_s + self.aqua_attention_s

    @property
    def speedup(self) -> np.ndarray:
        """End-to-end speedup: Amdahl's law applied to the attention kernel speedup."""
        return self.dense_s / self.aqua_s

    @property
    def attention_fraction(self) -> np.ndarray:
        """Share of the dense step spent in attention (the part AQUA can speed up)."""
        return self.dense_attention_s / self.dense_s


def end_to_end(*, gpu: str | HardwareProfile, model: str | ModelConfig, context: Any, k: Any, batch: Any = 1,
               plan: str = "fused", selection: str = "group", convention: Convention | None = None) -> EndToEnd:
    """Per-token decode latency of ``model`` with dense fused and with an AQUA plan."""
    cfg = model if isinstance(model, ModelConfig) else load_model(model)
    profile = resolve_profile(gpu)
    sim = simulate(gpu=profile, model=cfg, context=context, k=k, batch=batch, plan=plan, selection=selection, convention=convention)
    weight_bytes = float(cfg.weight_bytes())
    read_s = weight_bytes / (profile.bandwidth_bytes_per_s * profile.memory_efficiency("contiguous", weight_bytes))
    flops = 2.0 * cfg.param_count * np.asarray(sim.inputs["batch"], dtype=float)
    compute_s = flops / (profile.peak_flops(cfg.dtype) * profile.compute_efficiency)
    weights_s = np.maximum(read_s, compute_s) + cfg.layers * profile.launch_overhead_s
    return EndToEnd(weights_s, cfg.layers * sim.dense.time_s, cfg.layers * sim.aqua.time_s, profile.mode, sim)
