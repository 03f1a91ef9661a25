"""The plan of the fused tile-shared prefill kernel (``aqua-tile-fused``): its FLOPs are the kernel's
multiplied blocks, it names the callable it describes, and its roofline is compute-bound."""

from __future__ import annotations

import pytest

import aqua_model
from aqua_model.costs import component_flops
from aqua_model.costs.numeric import evaluate
from aqua_model.plans import build_plan, plan_names, prefill_fused as pf

SHAPE = dict(phase="prefill", context=0, batch=2, heads_q=32, heads_kv=8, d=128, gpu="h200")


def _values(T: int, k: int, *, B: int = 2, hq: int = 32, hkv: int = 8, d: int = 128) -> dict[str, int]:
    return {"B": B, "H_q": hq, "H_kv": hkv, "g": hq // hkv, "N": 0, "T": T, "d": d, "k": k, "s": 2}


def test_registered_as_a_prefill_plan_naming_its_kernel() -> None:
    assert "aqua-tile-fused" in plan_names("prefill") and "aqua-tile-fused" not in plan_names("decode")
    plan = build_plan("aqua-tile-fused", phase="prefill")
    assert not plan.model_only and plan.key_layout == "rotated-dim-major"
    assert [kern.name for kern in plan.kernels] == ["attention"] and plan.launches == 1
    from aqua_model.kernels import triton_prefill as tp

    assert plan.implementation.resolve() is tp.aqua_prefill
    assert plan.launch_names() == tp.KERNELS  # the CUDA kernel name patterns are the kernel names


def test_flops_are_the_multiplied_blocks() -> None:
    # T = 1024 in tiles of 128 with 64-key blocks: tile j takes 2(j + 1) blocks of 128 x 64, so
    # 128 * 64 * 2 * (1 + ... + 8) = 589,824 pairs per head (vs 524,800 visible). Per pair at
    # k = 96: 2*96 + 2*128 + 5 = 453 FLOPs; selection per head: 8 tiles of 127*128*2 + 896.
    kern = pf.build().kernels[0]
    got = float(evaluate(kern.flops, _values(1024, 96, B=1, hq=1, hkv=1)))
    assert got == 589_824 * 453 + 8 * (127 * 128 * 2 + 896)
    # k is padded to the kernel's 16-dim operand edge: k = 40 costs what k = 48 does
    assert evaluate(kern.flops, _values(1024, 40)) == evaluate(kern.flops, _values(1024, 48))


def test_flops_approach_the_cost_model_at_long_prompts() -> None:
    # the cost model counts visible pairs; the kernel's blocks exceed them by < 0.3% at 64K
    T = 65536
    kern = pf.build().kernels[0]
    for k in (32, 96, 128):
        c = component_flops(
            method="aqua", phase="prefill", d=128, k=k, context=0, prompt=T, selection_tile=128
        )
        model = 2 * 32 * float(c["scores"] + c["value"] + c["softmax"] + c["select"])
        assert 1.0 < float(evaluate(kern.flops, _values(T, k))) / model < 1.003


def test_predicted_compute_bound_with_the_ceiling_2d_over_d_plus_k() -> None:
    for k in (32, 64, 96):
        p = aqua_model.predict(plan="aqua-tile-fused", prompt=32768, k=k, **SHAPE)
        assert p.kernels[0]["bound"] == "compute"
        dense = aqua_model.predict(plan="aqua-tile-fused", prompt=32768, k=128, **SHAPE)
        ratio = dense.total_s / p.total_s
        # per pair (4d + 5) / (2k + 2d + 5) FLOPs at one efficiency: below 2d/(d + k), close to it
        assert ratio == pytest.approx((4 * 128 + 5) / (2 * k + 256 + 5), rel=2e-3)
        assert ratio < 2 * 128 / (128 + k)


def test_block_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        pf.build(block_m=48)
    with pytest.raises(ValueError, match="block_n must be <= block_m"):
        pf.build(block_m=64, block_n=128)
    with pytest.raises(ValueError, match="plan must be one of"):
        pf.build("aqua-tile")
