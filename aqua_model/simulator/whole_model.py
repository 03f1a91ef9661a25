"""A whole model's per-token decode latency: weights plus every layer's attention (plus, on
several GPUs, the all-reduces and point-to-point transfers of :mod:`.parallel`), so that an
attention speedup becomes an end-to-end one through Amdahl's law."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import check_choice
from ..costs.collectives import ALGORITHMS
from ..costs.convention import Convention
from ..hardware import HardwareProfile, resolve_profile
from ..models import ModelConfig, load as load_model
from .parallel import DecodeStep, decode_step, one_gpu_fit, weights_time_s
from .simulation import Simulation, simulate


@dataclass(frozen=True)
class EndToEnd:
    """Per-token decode latency of a whole model: weights + all layers' attention.

    The non-attention part is the larger of reading every weight once and doing 2 FLOPs
    per parameter per sequence (the matrix work of projections, MLP and LM head);
    norms, RoPE and sampling are left out (a few percent of a decode step). A model whose
    layers mix windowed and global attention (Gemma-2) sums each kind: ``simulation`` is a
    global layer's. On several GPUs
    (``parallel`` set) every part is per GPU and summed over the pipeline stages, and the
    all-reduce and point-to-point times of the layout are added to both plans.
    """

    weights_s: np.ndarray
    dense_attention_s: np.ndarray
    aqua_attention_s: np.ndarray
    mode: str
    simulation: Simulation
    all_reduce_s: Any = 0.0
    point_to_point_s: Any = 0.0
    parallel: DecodeStep | None = None
    #: Single GPU: whether weights + KV cache fit it, the bytes, and the smallest tensor_parallel
    #: that does (:func:`.parallel.one_gpu_fit`); None on several GPUs, whose layout is checked.
    one_gpu_fit: dict[str, Any] | None = None

    @property
    def fits(self) -> bool:
        """False when the latency is of a model that does not fit the device (see ``one_gpu_fit``)."""
        return self.one_gpu_fit is None or bool(self.one_gpu_fit["fits"])

    @property
    def dense_s(self) -> np.ndarray:
        return self.weights_s + self.dense_attention_s + self.all_reduce_s + self.point_to_point_s

    @property
    def aqua_s(self) -> np.ndarray:
        return self.weights_s + self.aqua_attention_s + self.all_reduce_s + self.point_to_point_s

    @property
    def speedup(self) -> np.ndarray:
        """End-to-end speedup: Amdahl's law applied to the attention kernel speedup."""
        return self.dense_s / self.aqua_s

    @property
    def attention_fraction(self) -> np.ndarray:
        """Share of the dense step spent in attention (the part AQUA can speed up)."""
        return self.dense_attention_s / self.dense_s


def end_to_end(
    *,
    gpu: str | HardwareProfile,
    model: str | ModelConfig,
    context: Any,
    k: Any,
    batch: Any = 1,
    plan: str = "fused",
    selection: str = "group",
    convention: Convention | None = None,
    tensor_parallel: int | None = None,
    pipeline_parallel: int | None = None,
    all_reduce: str = "ring",
) -> EndToEnd:
    """Per-token decode latency of ``model`` with dense fused and with an AQUA plan.

    ``tensor_parallel`` / ``pipeline_parallel`` (t, p; see :mod:`.parallel`) spread the model over
    t * p GPUs of one node, add the all-reduces (``all_reduce``: "ring" or "tree") and transfers,
    and check weights plus KV cache per GPU against the device (DoesNotFit, a ValueError, names
    the smallest t that fits). Left at None, the single-GPU model refuses a KV cache larger
    than the device and flags weights + KV cache that do not fit in the result (``fits`` False,
    ``one_gpu_fit`` with the bytes and the smallest t that fits).
    """
    cfg = model if isinstance(model, ModelConfig) else load_model(model)
    profile = resolve_profile(gpu)
    check_choice("all_reduce", all_reduce, ALGORITHMS)
    if tensor_parallel is not None or pipeline_parallel is not None:
        step = decode_step(
            gpu=profile,
            model=cfg,
            context=context,
            k=k,
            batch=batch,
            plan=plan,
            selection=selection,
            convention=convention,
            tensor_parallel=1 if tensor_parallel is None else tensor_parallel,
            pipeline_parallel=1 if pipeline_parallel is None else pipeline_parallel,
            all_reduce=all_reduce,
        )
        return EndToEnd(
            step.weights_s,
            step.dense_attention_s,
            step.aqua_attention_s,
            profile.mode,
            step.simulation,
            step.all_reduce_s,
            step.point_to_point_s,
            step,
        )
    sim = simulate(
        gpu=profile,
        model=cfg,
        context=context,
        k=k,
        batch=batch,
        plan=plan,
        selection=selection,
        convention=convention,
    )
    weights_s = weights_time_s(
        profile,
        weight_bytes=float(cfg.weight_bytes()),
        params=float(cfg.param_count),
        batch=np.asarray(sim.inputs["batch"], dtype=float),
        dtype=cfg.dtype,
        layers=cfg.layers,
    )
    dense_s, aqua_s = cfg.layers * sim.dense.time_s, cfg.layers * sim.aqua.time_s
    local_layers = sim.shape.local_layers
    if local_layers:  # mixed windows (Gemma-2): the windowed layers attend to min(N, window) keys
        local = simulate(
            gpu=profile,
            model=cfg,
            context=np.minimum(sim.inputs["context"], sim.shape.local_window),
            k=k,
            batch=batch,
            plan=plan,
            selection=selection,
            convention=convention,
        )
        full_layers = cfg.layers - local_layers
        dense_s = full_layers * sim.dense.time_s + local_layers * local.dense.time_s
        aqua_s = full_layers * sim.aqua.time_s + local_layers * local.aqua.time_s
    fit = one_gpu_fit(gpu=profile, model=cfg, context=context, batch=batch)
    return EndToEnd(weights_s, dense_s, aqua_s, profile.mode, sim, one_gpu_fit=fit)
