"""Tensor- and pipeline-parallel decode on one node: what each GPU holds, whether it fits, and
the per-token latency split into weights, attention, all-reduce and point-to-point.

Tensor parallel degree t (Megatron-LM's split; Shoeybi et al., arXiv 1909.08053): each GPU holds
H_q/t query heads and the q, o projection columns/rows of those heads, the MLP's gate/up columns
and down rows of I/t of its I channels, and a 1/t slice of the embedding and LM head rows
(vocab-parallel, ceil(V/t) rows). KV heads are split when t <= H_kv (H_kv/t per GPU, with their
k, v projections) and replicated when t > H_kv (one KV head per GPU, each held by t/H_kv GPUs).
Norm weights are replicated. Each layer then needs two all-reduces of the hidden state of the
batch, B * hidden * s bytes: after the attention's output projection and after the MLP's down
projection. The simulated attention of a GPU is the plan run on its own heads (H_q/t query heads
over its KV heads), so AQUA's attention saving per GPU is the single-GPU one at that shape; under
replication a GPU's group-shared selection covers only its H_q/t heads of the group.

Pipeline parallel degree p: layers split into p consecutive stages (the first L mod p stages one
layer longer), the embedding on the first stage, the final norm and LM head on the last (a tied
LM head is copied there). Decode runs one micro-batch (the whole batch) through the stages in
turn, so the per-token latency is the sum of the stages plus one point-to-point transfer of the
hidden state per stage boundary; at batch 1 a stage is busy 1/p of the time (the bubble,
(p-1)/p of each GPU's time idle). Both on one node: t * p <= the node's devices.

Memory per GPU: its weights plus its KV cache (dense K and V: AQUA's fused plan stores the full
rotated keys, so the same bytes) for context x batch on its layers and KV heads, against the
device memory. Left out, by name: activations and workspaces (small in decode), the runtime's
reserve, the embedding's all-reduce and the logits gather of a vocab-parallel LM head (one of
each per step against 2L all-reduces), and overlap of communication with compute.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import check_choice, check_int, check_int_array
from ..costs import kv_cache_bytes
from ..costs.collectives import ALGORITHMS, all_reduce_s, point_to_point_s
from ..costs.convention import Convention
from ..costs.dtypes import dtype_bytes
from ..hardware import HardwareProfile, resolve_profile
from ..models import ModelConfig, load as load_model
from .roofline import weights_time_s  # the roofline time has one home
from .simulation import Simulation, simulate

#: All-reduces of the hidden state per layer under tensor parallelism (Megatron-LM): after the
#: attention's output projection and after the MLP's down projection.
ALL_REDUCES_PER_LAYER = 2
#: Point-to-point transfers of the hidden state per pipeline-stage boundary and decode step.
TRANSFERS_PER_STAGE_BOUNDARY = 1


class DoesNotFit(ValueError):
    """The weights and KV cache of a layout exceed one GPU's memory."""


@dataclass(frozen=True)
class Layout:
    """What each GPU of a tensor x pipeline layout holds."""

    tensor_parallel: int
    pipeline_parallel: int
    heads_q: int  # query heads per GPU
    heads_kv: int  # KV heads per GPU
    kv_replicas: int  # GPUs holding a copy of each KV head (1: split, no copy)
    intermediate: int  # MLP channels per GPU
    vocab_rows: int  # embedding (and LM head) rows per GPU
    stage_layers: tuple[int, ...]  # layers of each pipeline stage

    @property
    def devices(self) -> int:
        """GPUs the layout uses, t * p."""
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def bubble_fraction(self) -> float:
        """Share of each GPU's time idle in a decode step of one micro-batch, (p - 1) / p."""
        return (self.pipeline_parallel - 1) / self.pipeline_parallel

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            **dataclasses.asdict(self),
            "stage_layers": list(self.stage_layers),
            "devices": self.devices,
            "bubble_fraction": self.bubble_fraction,
        }


def _allowed_t(cfg: ModelConfig, limit: int) -> list[int]:
    out = []
    for t in range(1, limit + 1):
        try:
            plan_layout(cfg, tensor_parallel=t, pipeline_parallel=1)
        except ValueError:
            continue
        out.append(t)
    return out


def plan_layout(cfg: ModelConfig, *, tensor_parallel: int, pipeline_parallel: int) -> Layout:
    """The shard of ``cfg`` each GPU holds; raises ValueError naming a degree that does not
    divide the model (query heads, KV heads, MLP channels) or exceeds its layers."""
    t = check_int("tensor_parallel", tensor_parallel, minimum=1)
    p = check_int("pipeline_parallel", pipeline_parallel, minimum=1, maximum=cfg.layers)
    hq, hkv = cfg.heads, cfg.kv_heads
    if hq % t:
        ok = [x for x in range(1, hq + 1) if hq % x == 0]
        raise ValueError(
            f"tensor_parallel={t} must divide the {hq} query heads of {cfg.name}; divisors: {ok}"
        )
    if t <= hkv and hkv % t:
        raise ValueError(
            f"tensor_parallel={t} must divide the {hkv} KV heads of {cfg.name} (or be a multiple of {hkv})"
        )
    if t > hkv and t % hkv:
        raise ValueError(
            f"tensor_parallel={t} exceeds the {hkv} KV heads of {cfg.name}, so it must be a multiple of {hkv} "
            "(each KV head then replicated on t / H_kv GPUs)"
        )
    if cfg.intermediate_size % t:
        raise ValueError(
            f"tensor_parallel={t} must divide the {cfg.intermediate_size} MLP channels of {cfg.name}"
        )
    base, extra = divmod(cfg.layers, p)
    stages = tuple(base + (1 if i < extra else 0) for i in range(p))
    return Layout(
        t,
        p,
        hq // t,
        max(hkv // t, 1),
        max(t // hkv, 1),
        cfg.intermediate_size // t,
        math.ceil(cfg.vocab_size / t),
        stages,
    )


def layer_params(cfg: ModelConfig, layout: Layout) -> dict[str, int]:
    """Parameters of one decoder layer on one GPU: attention (q, k, v, o and their biases),
    SwiGLU MLP (gate, up, down) and the two replicated norm vectors."""
    h, d = cfg.hidden_size, cfg.head_dim
    q_cols, kv_cols = layout.heads_q * d, layout.heads_kv * d
    attn = (
        h * q_cols + 2 * h * kv_cols + q_cols * h + ((q_cols + 2 * kv_cols) if cfg.attention_qkv_bias else 0)
    )
    return {"attention": attn, "mlp": 3 * h * layout.intermediate, "norms": 2 * h}


def stage_params(cfg: ModelConfig, layout: Layout) -> list[dict[str, int]]:
    """Parameters one GPU of each pipeline stage holds, by part (sums to ``cfg.param_count``
    at t = p = 1; see :meth:`ModelConfig.param_breakdown` for the parts)."""
    h = cfg.hidden_size
    per_layer = layer_params(cfg, layout)
    last = layout.pipeline_parallel - 1
    out = []
    for i, n_layers in enumerate(layout.stage_layers):
        lm_head = layout.vocab_rows * h if (not cfg.tie_word_embeddings or (last > 0)) else 0
        out.append(
            {
                "embedding": layout.vocab_rows * h if i == 0 else 0,
                "attention": n_layers * per_layer["attention"],
                "mlp": n_layers * per_layer["mlp"],
                "norms": n_layers * per_layer["norms"] + (h if i == last else 0),
                "lm_head": lm_head if i == last else 0,
            }
        )
    return out


def shard_config(cfg: ModelConfig, layout: Layout) -> ModelConfig:
    """The model as one GPU of the longest stage sees it (heads, KV heads, MLP channels, layers)."""
    if layout.devices == 1:
        return cfg
    return dataclasses.replace(
        cfg,
        heads=layout.heads_q,
        kv_heads=layout.heads_kv,
        intermediate_size=layout.intermediate,
        vocab_size=layout.vocab_rows,
        layers=max(layout.stage_layers),
        name=f"{cfg.name} (one GPU of TP{layout.tensor_parallel} x PP{layout.pipeline_parallel})",
    )


@dataclass(frozen=True)
class MemoryPerGPU:
    """Bytes one GPU of the fullest stage needs; ``kv_bytes`` broadcasts over context and batch."""

    weight_bytes: float
    kv_bytes: np.ndarray
    capacity_bytes: float

    @property
    def total_bytes(self) -> np.ndarray:
        return self.weight_bytes + self.kv_bytes

    @property
    def fits(self) -> bool:
        """Every swept point fits the device memory."""
        return bool(np.all(self.total_bytes <= self.capacity_bytes))


def memory_per_gpu(
    profile: HardwareProfile, cfg: ModelConfig, layout: Layout, *, context: Any, batch: Any
) -> MemoryPerGPU:
    """Weights plus KV cache of the fullest GPU of ``layout`` (vectorised over context, batch)."""
    s = dtype_bytes(cfg.dtype)
    tokens = cfg.attended_tokens(context)
    b = check_int_array("batch", batch, minimum=1)
    stage_weights = [float(sum(parts.values()) * s) for parts in stage_params(cfg, layout)]
    per_head_layer = np.asarray(
        kv_cache_bytes(method="dense", d=cfg.head_dim, context=tokens, kv_dtype=cfg.cache_dtype), dtype=float
    )
    kv_per_layer = per_head_layer * layout.heads_kv * b
    # the fullest stage (the same at every point: the KV cache grows with context and batch alike)
    at_max = [w + float(np.max(kv_per_layer)) * n for w, n in zip(stage_weights, layout.stage_layers)]
    i = int(np.argmax(at_max))
    return MemoryPerGPU(stage_weights[i], kv_per_layer * layout.stage_layers[i], profile.memory_bytes)


def _devices_per_node(profile: HardwareProfile) -> int:
    return profile.interconnect.devices_per_node if profile.interconnect is not None else 1


def smallest_tensor_parallel(
    *,
    gpu: str | HardwareProfile,
    model: str | ModelConfig,
    context: Any,
    batch: Any = 1,
    pipeline_parallel: int = 1,
) -> int | None:
    """Smallest t whose weights and KV cache fit each GPU at ``context`` and ``batch`` with
    ``pipeline_parallel`` stages on one node; None when no t up to the node's devices fits."""
    profile = resolve_profile(gpu)
    cfg = model if isinstance(model, ModelConfig) else load_model(model)
    p = check_int("pipeline_parallel", pipeline_parallel, minimum=1, maximum=cfg.layers)
    for t in _allowed_t(cfg, max(_devices_per_node(profile) // p, 1)):
        layout = plan_layout(cfg, tensor_parallel=t, pipeline_parallel=p)
        if memory_per_gpu(profile, cfg, layout, context=context, batch=batch).fits:
            return t
    return None


def one_gpu_fit(
    *, gpu: str | HardwareProfile, model: str | ModelConfig, context: Any, batch: Any = 1
) -> dict[str, Any]:
    """Whether ``model``'s weights and KV cache fit one GPU, the bytes, and the smallest t that does."""
    profile = resolve_profile(gpu)
    cfg = model if isinstance(model, ModelConfig) else load_model(model)
    mem = memory_per_gpu(
        profile, cfg, plan_layout(cfg, tensor_parallel=1, pipeline_parallel=1), context=context, batch=batch
    )
    return {
        "fits": mem.fits,
        "memory_bytes": float(np.max(mem.total_bytes)),
        "device_memory_bytes": mem.capacity_bytes,
        "smallest_tensor_parallel": 1
        if mem.fits
        else smallest_tensor_parallel(gpu=profile, model=cfg, context=context, batch=batch),
    }


def check_fits(
    profile: HardwareProfile, cfg: ModelConfig, layout: Layout, *, context: Any, batch: Any
) -> MemoryPerGPU:
    """The memory per GPU, or DoesNotFit naming the bytes needed and the smallest t that fits."""
    mem = memory_per_gpu(profile, cfg, layout, context=context, batch=batch)
    if mem.fits:
        return mem
    kv = float(np.max(mem.kv_bytes))
    t_min = smallest_tensor_parallel(
        gpu=profile, model=cfg, context=context, batch=batch, pipeline_parallel=layout.pipeline_parallel
    )
    hint = (
        f"the smallest tensor_parallel that fits with pipeline_parallel={layout.pipeline_parallel} is {t_min}"
        if t_min is not None
        else f"no tensor_parallel up to the {_devices_per_node(profile)} devices of one node fits with "
        f"pipeline_parallel={layout.pipeline_parallel}"
    )
    raise DoesNotFit(
        f"{cfg.name} with tensor_parallel={layout.tensor_parallel}, pipeline_parallel={layout.pipeline_parallel} needs "
        f"{(mem.weight_bytes + kv) / 1e9:.1f} GB per GPU ({mem.weight_bytes / 1e9:.1f} GB of weights + {kv / 1e9:.1f} GB "
        f"of KV cache at the largest context and batch given) but {profile.name} has {profile.memory_bytes / 1e9:.1f} GB; {hint}"
    )


@dataclass(frozen=True)
class DecodeStep:
    """One decode step of a layout: per-token latency parts (seconds, over all stages)."""

    layout: Layout
    algorithm: str
    weights_s: np.ndarray
    dense_attention_s: np.ndarray
    aqua_attention_s: np.ndarray
    all_reduce_s: np.ndarray
    point_to_point_s: np.ndarray
    one_all_reduce_s: np.ndarray  # one all-reduce of the hidden state
    message_bytes: np.ndarray  # hidden state of the batch, B * hidden * s
    memory: MemoryPerGPU
    simulation: Simulation  # one GPU, one layer

    @property
    def communication_s(self) -> np.ndarray:
        return self.all_reduce_s + self.point_to_point_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the layout, the memory per GPU and the communication parts."""
        return {
            "layout": self.layout.to_dict(),
            "all_reduce": self.algorithm,
            "all_reduces_per_layer": ALL_REDUCES_PER_LAYER,
            "message_bytes": _scalar(self.message_bytes),
            "one_all_reduce_s": _scalar(self.one_all_reduce_s),
            "weight_bytes_per_gpu": self.memory.weight_bytes,
            "kv_bytes_per_gpu": _scalar(self.memory.kv_bytes),
            "memory_bytes_per_gpu": _scalar(self.memory.total_bytes),
            "device_memory_bytes": self.memory.capacity_bytes,
        }


def _scalar(x: Any) -> Any:
    arr = np.asarray(x)
    return arr.item() if arr.ndim == 0 else arr.tolist()


def _interconnect_args(profile: HardwareProfile) -> dict[str, float]:
    ic = profile.interconnect
    assert ic is not None  # both callers raise ValueError first when the profile has no [interconnect]
    return {
        "bandwidth_bytes_per_s": ic.achieved_bandwidth_bytes_per_s,
        "step_latency_s": ic.step_latency_s,
        "fixed_latency_s": ic.fixed_latency_s,
    }


def decode_step(
    *,
    gpu: str | HardwareProfile,
    model: str | ModelConfig,
    context: Any,
    k: Any,
    batch: Any = 1,
    plan: str = "fused",
    selection: str = "group",
    convention: Convention | None = None,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    all_reduce: str = "ring",
) -> DecodeStep:
    """Per-token decode latency of ``model`` on t x p GPUs of one node, dense fused and AQUA.

    Raises ValueError for a layout the model or node does not allow, a profile without an
    ``[interconnect]`` table (when t * p > 1), and DoesNotFit when a GPU's memory is too small.
    """
    profile = resolve_profile(gpu)
    cfg = model if isinstance(model, ModelConfig) else load_model(model)
    algorithm = check_choice("all_reduce", all_reduce, ALGORITHMS)
    layout = plan_layout(cfg, tensor_parallel=tensor_parallel, pipeline_parallel=pipeline_parallel)
    if layout.devices > 1:
        if profile.interconnect is None:
            raise ValueError(
                f"profile {profile.path} has no [interconnect] table; tensor_parallel * pipeline_parallel > 1 "
                "needs one (see aqua_model.hardware.interconnect)"
            )
        if layout.devices > profile.interconnect.devices_per_node:
            raise ValueError(
                f"tensor_parallel * pipeline_parallel = {layout.devices} exceeds the "
                f"{profile.interconnect.devices_per_node} devices one node of {profile.name} links "
                f"({profile.interconnect.quantities['devices_per_node'].source})"
            )
    mem = check_fits(profile, cfg, layout, context=context, batch=batch)
    sim = simulate(
        gpu=profile,
        model=shard_config(cfg, layout),
        context=context,
        k=k,
        batch=batch,
        plan=plan,
        selection=selection,
        convention=convention,
    )
    b = np.asarray(sim.inputs["batch"], dtype=float)
    s = dtype_bytes(cfg.dtype)
    weights = np.zeros(())
    for parts, n_layers in zip(stage_params(cfg, layout), layout.stage_layers):
        params = float(sum(parts.values()))
        weights = weights + weights_time_s(
            profile, weight_bytes=params * s, params=params, batch=b, dtype=cfg.dtype, layers=n_layers
        )
    message = b * cfg.hidden_size * s
    if layout.devices > 1:
        ic = _interconnect_args(profile)
        one = np.asarray(
            all_reduce_s(algorithm=algorithm, devices=layout.tensor_parallel, message_bytes=message, **ic)
        )
        p2p = (
            (layout.pipeline_parallel - 1)
            * TRANSFERS_PER_STAGE_BOUNDARY
            * np.asarray(point_to_point_s(message_bytes=message, **ic))
        )
    else:
        one = p2p = np.zeros_like(message)
    return DecodeStep(
        layout,
        algorithm,
        weights,
        cfg.layers * sim.dense.time_s,
        cfg.layers * sim.aqua.time_s,
        cfg.layers * ALL_REDUCES_PER_LAYER * one,
        p2p,
        one,
        message,
        mem,
        sim,
    )


def layer_step(
    *,
    gpu: str | HardwareProfile,
    model: str | ModelConfig,
    context: Any,
    k: Any,
    batch: Any = 1,
    tensor_parallel: int = 1,
    plan: str = "fused",
    selection: str = "group",
    convention: Convention | None = None,
    all_reduce: str = "ring",
) -> dict[str, np.ndarray]:
    """One decoder layer on one GPU of a t-way tensor-parallel group (what
    ``validation/parallel_decode_layer.py`` times): its weights, its attention (dense fused and
    AQUA), its two all-reduces, and the layer's totals (seconds). No memory check: one layer."""
    profile = resolve_profile(gpu)
    cfg = model if isinstance(model, ModelConfig) else load_model(model)
    algorithm = check_choice("all_reduce", all_reduce, ALGORITHMS)
    layout = plan_layout(cfg, tensor_parallel=tensor_parallel, pipeline_parallel=1)
    one_layer = dataclasses.replace(shard_config(cfg, layout), layers=1)
    sim = simulate(
        gpu=profile,
        model=one_layer,
        context=context,
        k=k,
        batch=batch,
        plan=plan,
        selection=selection,
        convention=convention,
    )
    b = np.asarray(sim.inputs["batch"], dtype=float)
    s = dtype_bytes(cfg.dtype)
    params = float(sum(layer_params(cfg, layout).values()))
    weights = weights_time_s(
        profile, weight_bytes=params * s, params=params, batch=b, dtype=cfg.dtype, layers=1
    )
    message = b * cfg.hidden_size * s
    if layout.tensor_parallel > 1:
        if profile.interconnect is None:
            raise ValueError(
                f"profile {profile.path} has no [interconnect] table; tensor_parallel > 1 needs one"
            )
        one = np.asarray(
            all_reduce_s(
                algorithm=algorithm,
                devices=layout.tensor_parallel,
                message_bytes=message,
                **_interconnect_args(profile),
            )
        )
    else:
        one = np.zeros_like(message)
    reduces = ALL_REDUCES_PER_LAYER * one
    return {
        "weights_s": weights,
        "dense_attention_s": np.asarray(sim.dense.time_s),
        "aqua_attention_s": np.asarray(sim.aqua.time_s),
        "one_all_reduce_s": one,
        "all_reduces_s": reduces,
        "message_bytes": message,
        "dense_layer_s": weights + sim.dense.time_s + reduces,
        "aqua_layer_s": weights + sim.aqua.time_s + reduces,
    }
