"""Cross-check: torch's FlopCounterMode on the reference == the symbolic cost model.

The counter counts matmuls only (2 FLOPs per multiply-add), so the matmul components are
compared exactly: q_proj, k_proj, scores, value (per query head in the model, times B * H_q).
Selection and softmax must count 0 matmul FLOPs, and the whole pipeline counted at once must
equal the sum of the four parts. Prefill is compared with causal=False: the eager reference
computes the full query x key rectangle and masks it afterwards.
"""

from __future__ import annotations

import pytest

from aqua_model.costs import component_flops
from aqua_model.kernels.flop_counter import MATMUL_COMPONENTS, reference_flops

CASES = [
    # (method, phase, batch, heads_q, heads_kv, d, k, context, prompt)
    ("aqua", "decode", 2, 4, 2, 16, 5, 37, None),
    ("aqua", "decode", 1, 6, 6, 8, 8, 11, None),
    ("aqua", "decode", 3, 8, 2, 32, 1, 20, None),
    ("aqua", "prefill", 2, 4, 2, 16, 7, 13, 6),
    ("aqua", "prefill", 1, 3, 1, 8, 3, 0, 9),
    ("dense", "decode", 2, 4, 2, 16, None, 37, None),
    ("dense", "prefill", 2, 6, 3, 8, None, 5, 4),
]


@pytest.mark.parametrize("method,phase,batch,heads_q,heads_kv,d,k,context,prompt", CASES)
def test_counted_matmul_flops_equal_the_cost_model(
    method, phase, batch, heads_q, heads_kv, d, k, context, prompt
):
    counted = reference_flops(
        method=method,
        phase=phase,
        batch=batch,
        heads_q=heads_q,
        heads_kv=heads_kv,
        d=d,
        k=k,
        context=context,
        prompt=prompt,
        causal=False,
    )
    model = component_flops(
        method=method,
        phase=phase,
        d=d,
        k=d if k is None else k,
        context=context,
        prompt=prompt,
        g=heads_q // heads_kv,
        causal=False,
    )
    per_step = {name: float(model[name]) * batch * heads_q for name in MATMUL_COMPONENTS}
    assert {name: float(counted[name]) for name in MATMUL_COMPONENTS} == per_step
    assert counted["select"] == 0 and counted["softmax"] == 0
    assert counted["total"] == sum(counted[name] for name in MATMUL_COMPONENTS)


def test_group_selection_counts_the_same_matmuls() -> None:
    a = reference_flops(method="aqua", phase="decode", batch=1, heads_q=4, heads_kv=1, d=8, k=3, context=9)
    b = reference_flops(
        method="aqua", phase="decode", batch=1, heads_q=4, heads_kv=1, d=8, k=3, context=9, selection="group"
    )
    assert a == b


def test_scores_scale_with_k_not_d() -> None:
    """The reference's scores really cost 2 * N * k per query (the gather is not a matmul)."""
    small = reference_flops(
        method="aqua", phase="decode", batch=1, heads_q=1, heads_kv=1, d=16, k=2, context=10
    )
    large = reference_flops(
        method="aqua", phase="decode", batch=1, heads_q=1, heads_kv=1, d=16, k=8, context=10
    )
    assert small["scores"] == 2 * 10 * 2 and large["scores"] == 2 * 10 * 8


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="prompt"):
        reference_flops(method="aqua", phase="prefill", batch=1, heads_q=1, heads_kv=1, d=4, k=2, context=3)
    with pytest.raises(ValueError, match="multiple of heads_kv"):
        reference_flops(method="aqua", phase="decode", batch=1, heads_q=3, heads_kv=2, d=4, k=2, context=3)
    with pytest.raises(ValueError, match="k must be <= 4"):
        reference_flops(method="aqua", phase="decode", batch=1, heads_q=1, heads_kv=1, d=4, k=5, context=3)
