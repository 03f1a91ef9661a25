"""Tensor- and pipeline-parallel decode in the simulator: shards against a brute-force split of
every tensor, memory per GPU and the smallest t that fits, the latency parts, and bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import aqua_model
from aqua_model import hardware, models
from aqua_model._datafiles import read_toml, to_toml
from aqua_model.costs.collectives import all_reduce_s, point_to_point_s
from aqua_model.hardware.profile import DATA_DIR
from aqua_model.simulator import end_to_end
from aqua_model.simulator.parallel import (
    ALL_REDUCES_PER_LAYER,
    DoesNotFit,
    decode_step,
    memory_per_gpu,
    plan_layout,
    smallest_tensor_parallel,
    stage_params,
)

L70 = models.load("llama-3.1-70b")


def _tensors(cfg: models.ModelConfig) -> list[tuple[tuple[int, ...], str, str]]:
    """Every weight tensor of one layer and of the model ends: (shape, where, how it is split).

    ``how``: "heads" (split by query head along axis 0), "kv" (by KV head), "mlp" (by MLP channel),
    "vocab" (by vocabulary row), "none" (replicated). Written from the model's architecture, not
    from the module under test."""
    h, d = cfg.hidden_size, cfg.head_dim
    layer = [
        ((h,), "layer", "none"),
        ((cfg.heads * d, h), "layer", "heads"),
        ((cfg.kv_heads * d, h), "layer", "kv"),
        ((cfg.kv_heads * d, h), "layer", "kv"),
        ((cfg.heads * d, h), "layer", "heads"),
        ((h,), "layer", "none"),
        ((cfg.intermediate_size, h), "layer", "mlp"),
        ((cfg.intermediate_size, h), "layer", "mlp"),
        ((cfg.intermediate_size, h), "layer", "mlp"),
    ]
    ends = [((cfg.vocab_size, h), "first", "vocab"), ((h,), "last", "none")]
    if not cfg.tie_word_embeddings:
        ends.append(((cfg.vocab_size, h), "last", "vocab"))
    return layer * cfg.layers + ends


def _rank_params(cfg: models.ModelConfig, t: int, rank: int) -> int:
    """Parameters rank ``rank`` of t holds (p = 1), slicing each tensor the way Megatron does."""
    total = 0
    for shape, _, how in _tensors(cfg):
        rows, rest = shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if how == "none":
            total += rows * rest
        elif how == "kv" and t > cfg.kv_heads:  # one whole KV head per rank, replicated
            total += (rows // cfg.kv_heads) * rest
        elif how == "vocab":  # padded to a multiple of t, as Megatron pads the vocabulary
            total += -(-rows // t) * rest
        else:
            assert rows % t == 0, f"{how} rows {rows} do not split over {t} ranks"
            total += len(range(rank, rows, t)) * rest
    return total


@pytest.mark.parametrize(
    "key,t",
    [
        ("llama-3.1-70b", 1),
        ("llama-3.1-70b", 2),
        ("llama-3.1-70b", 8),
        ("llama-3.1-405b", 8),
        ("llama-3.1-8b", 4),
        ("llama-3.2-1b", 2),
    ],
)
def test_stage_params_match_a_tensor_by_tensor_split(key: str, t: int) -> None:
    cfg = models.load(key)
    layout = plan_layout(cfg, tensor_parallel=t, pipeline_parallel=1)
    (parts,) = stage_params(cfg, layout)
    assert sum(parts.values()) == _rank_params(cfg, t, 0) == _rank_params(cfg, t, t - 1)


def test_one_gpu_holds_the_whole_model() -> None:
    (parts,) = stage_params(L70, plan_layout(L70, tensor_parallel=1, pipeline_parallel=1))
    assert parts == L70.param_breakdown()


def test_kv_heads_are_replicated_beyond_h_kv() -> None:
    cfg = dataclasses.replace(models.load("llama-3.1-8b"), kv_heads=2)  # 32 query heads over 2 KV heads
    layout = plan_layout(cfg, tensor_parallel=4, pipeline_parallel=1)
    assert (layout.heads_q, layout.heads_kv, layout.kv_replicas) == (8, 1, 2)
    (parts,) = stage_params(cfg, layout)
    assert sum(parts.values()) == _rank_params(cfg, 4, 0)
    # KV cache per GPU: one KV head, K and V, N * d * 2 bytes each, every layer, every sequence
    mem = memory_per_gpu(hardware.load("h200"), cfg, layout, context=4096, batch=2)
    assert float(mem.kv_bytes) == 2 * 4096 * 128 * 2 * cfg.layers * 2


def test_pipeline_stages_split_layers_and_ends() -> None:
    cfg = models.load("llama-3.1-405b")
    layout = plan_layout(cfg, tensor_parallel=2, pipeline_parallel=4)
    assert layout.stage_layers == (32, 32, 31, 31) and sum(layout.stage_layers) == cfg.layers
    stages = stage_params(cfg, layout)
    assert stages[0]["embedding"] > 0 and stages[-1]["lm_head"] > 0
    assert all(s["embedding"] == 0 for s in stages[1:]) and all(s["lm_head"] == 0 for s in stages[:-1])
    # t x p GPUs together hold the model once, plus the replicated norm vectors (t - 1 copies)
    norms = cfg.layers * 2 * cfg.hidden_size + cfg.hidden_size
    assert 2 * sum(sum(s.values()) for s in stages) == cfg.param_count + norms
    assert layout.bubble_fraction == pytest.approx(3 / 4)


def test_tied_lm_head_is_copied_to_the_last_stage() -> None:
    cfg = models.load("llama-3.2-1b")  # tie_word_embeddings = true
    one = stage_params(cfg, plan_layout(cfg, tensor_parallel=1, pipeline_parallel=1))[0]
    two = stage_params(cfg, plan_layout(cfg, tensor_parallel=1, pipeline_parallel=2))
    assert one["lm_head"] == 0 and two[1]["lm_head"] == cfg.vocab_size * cfg.hidden_size


# -- memory -------------------------------------------------------------------------------------


def test_70b_does_not_fit_one_h200_and_the_error_names_the_smallest_t() -> None:
    # 70,553,706,496 parameters x 2 bytes = 141.1 GB of weights > the 141 GB of the H200 datasheet
    with pytest.raises(
        DoesNotFit,
        match=r"141\.1 GB of weights.*smallest tensor_parallel that fits with pipeline_parallel=1 is 2",
    ):
        decode_step(gpu="h200", model=L70, context=4096, k=32, batch=1, tensor_parallel=1)
    assert issubclass(DoesNotFit, ValueError)


def test_smallest_tensor_parallel() -> None:
    # 405B: 811.7 GB of bf16 weights. t = 4 needs 202.9 GB per H200 for weights alone; t = 8 needs
    # 101.5 GB + KV (126 layers x 1 KV head x 2 x 32768 x 128 x 2 B x batch 8 = 16.9 GB) = 118.4 GB <= 141.
    assert smallest_tensor_parallel(gpu="h200", model="llama-3.1-405b", context=32768, batch=8) == 8
    # on 80 GB H100s even t = 8 needs 101.5 GB of weights per GPU
    assert smallest_tensor_parallel(gpu="h100", model="llama-3.1-405b", context=1, batch=1) is None
    # 70B at 128K, batch 8: KV = 80 x 8 x 2 x 131072 x 128 x 2 x 8 = 343.6 GB over t GPUs, weights 141.1 / t:
    # t = 2: 242 GB, t = 4: 121.2 GB <= 141
    assert smallest_tensor_parallel(gpu="h200", model=L70, context=131072, batch=8) == 4
    assert smallest_tensor_parallel(gpu="h200", model=L70, context=131072, batch=8, pipeline_parallel=2) == 2


def test_no_layout_on_one_node_fits_says_so() -> None:
    with pytest.raises(DoesNotFit, match="no tensor_parallel up to the 8 devices of one node fits"):
        decode_step(gpu="h100", model="llama-3.1-405b", context=4096, k=32, tensor_parallel=8)


# -- latency parts ------------------------------------------------------------------------------


def test_one_gpu_layout_reproduces_the_single_gpu_model() -> None:
    kw = dict(gpu="h200", model="llama-3.1-8b", context=32768, k=32, batch=8)
    legacy = end_to_end(**kw)
    one = end_to_end(tensor_parallel=1, **kw)
    assert float(one.weights_s) == float(legacy.weights_s)
    assert float(one.dense_attention_s) == float(legacy.dense_attention_s)
    assert float(one.aqua_attention_s) == float(legacy.aqua_attention_s)
    assert float(one.all_reduce_s) == 0.0 and float(one.point_to_point_s) == 0.0
    assert float(one.speedup) == float(legacy.speedup)


def test_all_reduce_part_is_two_per_layer_of_the_hidden_state() -> None:
    ic = hardware.load("h200").interconnect
    for algorithm in ("ring", "tree"):
        step = decode_step(
            gpu="h200", model=L70, context=8192, k=32, batch=8, tensor_parallel=8, all_reduce=algorithm
        )
        message = 8 * 8192 * 2  # batch x hidden x bf16 bytes
        one = float(
            all_reduce_s(
                algorithm=algorithm,
                devices=8,
                message_bytes=message,
                bandwidth_bytes_per_s=450e9 * 0.80,
                step_latency_s=ic.step_latency_s,
                fixed_latency_s=ic.fixed_latency_s,
            )
        )
        assert float(step.message_bytes) == message
        assert float(step.all_reduce_s) == pytest.approx(80 * ALL_REDUCES_PER_LAYER * one)
        assert float(step.point_to_point_s) == 0.0


def test_tensor_parallel_splits_weights_and_attention_time() -> None:
    steps = {
        t: decode_step(gpu="h200", model=L70, context=32768, k=32, batch=8, tensor_parallel=t)
        for t in (2, 4, 8)
    }
    launches_s = 80 * hardware.load("h200").launch_overhead_s  # one per layer, whatever t
    for t in (4, 8):  # memory-bound reads of 1/t of the bytes (norms replicated): t/2 times faster than t = 2
        ratio = float((steps[2].weights_s - launches_s) / (steps[t].weights_s - launches_s))
        assert ratio == pytest.approx(t / 2, rel=0.01)
        assert float(steps[t].dense_attention_s) < float(steps[2].dense_attention_s)
    # and the all-reduce grows with t: more steps around the ring
    assert float(steps[2].all_reduce_s) < float(steps[4].all_reduce_s) < float(steps[8].all_reduce_s)
    # the per-GPU simulation is the plan on H_q / t query heads over H_kv / t KV heads
    assert (steps[8].simulation.shape.heads_q, steps[8].simulation.shape.heads_kv) == (8, 1)


def test_pipeline_adds_one_transfer_per_boundary_and_no_speed() -> None:
    ic = hardware.load("h200").interconnect
    one = decode_step(
        gpu="h200", model=L70, context=4096, k=32, batch=1, tensor_parallel=2, pipeline_parallel=1
    )
    four = decode_step(
        gpu="h200", model=L70, context=4096, k=32, batch=1, tensor_parallel=2, pipeline_parallel=4
    )
    hop = float(
        point_to_point_s(
            message_bytes=8192 * 2,
            bandwidth_bytes_per_s=ic.achieved_bandwidth_bytes_per_s,
            step_latency_s=ic.step_latency_s,
            fixed_latency_s=ic.fixed_latency_s,
        )
    )
    assert float(four.point_to_point_s) == pytest.approx(3 * hop)
    # stages run in turn: attention and all-reduces are the same sum; the weights nearly so (each
    # stage streams its own quarter, at the efficiency of a quarter of the bytes)
    assert float(four.dense_attention_s) == pytest.approx(float(one.dense_attention_s))
    assert float(four.all_reduce_s) == pytest.approx(float(one.all_reduce_s))
    assert float(four.weights_s) == pytest.approx(float(one.weights_s), rel=0.02)
    assert float(four.memory.weight_bytes) < float(one.memory.weight_bytes) / 3


def test_end_to_end_with_parallel_keywords_adds_communication_to_both_plans() -> None:
    e = aqua_model.end_to_end(
        gpu="h200", model="llama-3.1-70b", context=32768, k=32, batch=8, tensor_parallel=4
    )
    comm = float(e.all_reduce_s + e.point_to_point_s)
    assert comm > 0 and e.parallel is not None and e.parallel.layout.tensor_parallel == 4
    assert float(e.dense_s) == pytest.approx(float(e.weights_s + e.dense_attention_s) + comm)
    assert float(e.aqua_s) == pytest.approx(float(e.weights_s + e.aqua_attention_s) + comm)
    # Amdahl with the communication in the part AQUA does not touch
    f = float(e.attention_fraction)
    kernel = float(e.simulation.speedup)
    assert float(e.speedup) == pytest.approx(1 / ((1 - f) + f / kernel))


def test_sweeps_broadcast() -> None:
    e = decode_step(
        gpu="h200",
        model=L70,
        context=np.array([4096, 32768]),
        k=32,
        batch=np.array([[1], [8]]),
        tensor_parallel=4,
    )
    assert np.shape(e.all_reduce_s) == (2, 1) and np.shape(e.dense_attention_s) == (2, 2)
    assert np.shape(e.memory.total_bytes) == (2, 2)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"tensor_parallel": 3}, "must divide the 64 query heads"),
        ({"tensor_parallel": 0}, "tensor_parallel must be >= 1"),
        ({"tensor_parallel": 8, "pipeline_parallel": 2}, "exceeds the 8 devices one node"),
        ({"pipeline_parallel": 81}, "pipeline_parallel must be <= 80"),
        ({"tensor_parallel": 2, "all_reduce": "butterfly"}, "all_reduce must be one of"),
        ({"tensor_parallel": 1.5}, "tensor_parallel must be an integer"),
    ],
)
def test_bad_layout_is_reported(kwargs: dict, fragment: str) -> None:
    base = dict(gpu="h200", model=L70, context=4096, k=32, batch=1, tensor_parallel=2)
    with pytest.raises((ValueError, TypeError), match=fragment):
        decode_step(**{**base, **kwargs})


def test_kv_heads_that_t_neither_divides_nor_multiplies_are_refused() -> None:
    cfg = dataclasses.replace(models.load("llama-3.1-8b"), kv_heads=8, heads=48)
    with pytest.raises(ValueError, match="must be a multiple of 8"):
        plan_layout(cfg, tensor_parallel=12, pipeline_parallel=1)


def test_profile_without_interconnect_cannot_run_parallel(tmp_path: Path) -> None:
    raw = read_toml(DATA_DIR / "h200-sxm.toml")
    del raw["interconnect"]
    path = tmp_path / "bare.toml"
    path.write_text(to_toml(raw))
    with pytest.raises(ValueError, match=r"no \[interconnect\] table"):
        decode_step(gpu=str(path), model=L70, context=4096, k=32, tensor_parallel=2)
    # one GPU needs no interconnect
    assert float(decode_step(gpu=str(path), model="llama-3.1-8b", context=4096, k=32).all_reduce_s) == 0.0
