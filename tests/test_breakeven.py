"""breakeven() and max_k(): golden values with their derivation, brute force, properties."""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

import aqua_model
from aqua_model import Convention, breakeven, component_flops, max_k
from aqua_model.costs.symbols import T, d, g, k, log2


def brute_force_n_min(d_: int, k_: int, g_: int, phase: str, limit: int = 200_000) -> int | None:
    """Scan integer contexts, comparing total FLOPs of the two methods numerically."""
    ctx = np.arange(1, limit)
    if phase == "decode":
        a = component_flops(method="aqua", phase="decode", d=d_, k=k_, context=ctx, g=g_)["total"]
        b = component_flops(method="dense", phase="decode", d=d_, k=None, context=ctx, g=g_)["total"]
    else:
        a = component_flops(method="aqua", phase="prefill", d=d_, k=k_, context=0, prompt=ctx, g=g_)["total"]
        b = component_flops(method="dense", phase="prefill", d=d_, k=None, context=0, prompt=ctx, g=g_)[
            "total"
        ]
    wins = np.nonzero(a < b)[0]
    return int(ctx[wins[0]]) if wins.size else None


def test_paper_operating_point_decode():
    # Overhead per step: rotate q (2d^2) + rotate the new key (2d^2/g) + sort |q^| (d log2 d)
    # = 32768 + 32768 + 896 = 66432 FLOPs; saving per key: 2(d - k) = 64 FLOPs.
    # N* = 66432 / 64 = 1038 exactly; AQUA is strictly cheaper from N = 1039.
    r = breakeven(d=128, k=96)
    assert r.n_star == 1038
    assert r.n_min == 1039
    assert r.reduction == 0.25
    assert not r.never


def test_closed_forms_match_the_specification():
    spec_decode = (2 * d**2 * (1 + 1 / g) + d * log2(d)) / (2 * (d - k))
    spec_prefill = (2 * d**2 * (1 + 1 / g) + d * log2(d)) / (d - k) - 1
    assert sp.simplify(breakeven(128, 96).expr - spec_decode) == 0
    assert sp.simplify(breakeven(128, 96, phase="prefill").expr - spec_prefill) == 0


@pytest.mark.parametrize("phase", ["decode", "prefill"])
@pytest.mark.parametrize(
    "d_,k_,g_", [(128, 96, 1), (128, 32, 1), (128, 96, 4), (64, 48, 8), (256, 200, 1), (100, 80, 2)]
)
def test_n_min_matches_brute_force(phase, d_, k_, g_):
    assert breakeven(d_, k_, g=g_, phase=phase).n_min == brute_force_n_min(d_, k_, g_, phase)


def test_k_equal_d_never_wins_and_does_not_divide_by_zero():
    r = breakeven(d=128, k=128)
    assert r.never and r.n_min is None and math.isinf(r.n_star)
    assert "never" in str(r)
    assert r.to_dict()["n_star"] is None


def test_per_step_key_projection_never_wins():
    # Re-rotating all N cached keys costs 2 d^2 / g per key per query head, more than the
    # 2(d - k) saved per key whenever d^2/g > d - k.
    assert breakeven(128, 32, convention=Convention(key_projection="per-step")).never


def test_folded_projection_without_selection_cost_wins_at_once():
    conv = Convention(projection="folded", selection="none")
    assert breakeven(128, 96, convention=conv).n_min == 1


def test_result_is_documented_and_serialisable():
    r = breakeven(128, 96, g=4, phase="prefill")
    data = r.to_dict()
    assert data["schema_version"] == 1 and data["convention_label"] == "default"
    assert r.latex().startswith("T^* = ")
    # prefill of a plain prompt: 2 k FLOPs on each of T(T+1)/2 causal pairs
    assert sp.expand(r.terms["aqua.scores"] - 96 * T * (T + 1)) == 0
    assert r.terms["aqua.q_proj"] == 2 * 128**2 * T
    assert "break-even" in str(r)


def test_warm_call_returns_cached_result():
    assert breakeven(128, 96) is breakeven(128, 96)


@pytest.mark.parametrize("context", [1, 500, 1038, 1039, 4096, 10**6])
def test_max_k_is_the_inverse_of_breakeven(context):
    best = max_k(d=128, context=context)
    if best is None:
        assert breakeven(128, 1).n_min > context
        return
    assert breakeven(128, best).n_min <= context
    if best < 127:
        assert breakeven(128, best + 1).n_min > context


def test_max_k_at_paper_point():
    # AQUA at k = 96 is first cheaper at N = 1039, so the largest winning k there is 96.
    assert max_k(d=128, context=1039) == 96
    assert max_k(d=128, context=1038) == 95


@pytest.mark.parametrize(
    "kwargs,exc,fragment",
    [
        ({"d": 128, "k": 129}, ValueError, "k must be <= d"),
        ({"d": 128, "k": 0}, ValueError, "k must be >= 1"),
        ({"d": 128.5, "k": 96}, ValueError, "d must be an integer"),
        ({"d": float("nan"), "k": 96}, ValueError, "d must be a finite"),
        ({"d": "128", "k": 96}, TypeError, "d must be an integer"),
        ({"d": 128, "k": 96, "g": 0}, ValueError, "g must be >= 1"),
        ({"d": 128, "k": 96, "phase": "training"}, ValueError, "phase must be one of"),
        ({"d": 128, "k": 96, "convention": "paper"}, TypeError, "convention must be"),
        ({"d": True, "k": 96}, TypeError, "d must be an integer"),
    ],
)
def test_bad_input_names_argument_value_and_range(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        breakeven(**kwargs)


def test_bad_convention_values():
    with pytest.raises(ValueError, match="selection must be one of"):
        Convention(selection="heap")
    with pytest.raises(ValueError, match="flops_per_mac must be > 0"):
        Convention(flops_per_mac=0)


anything = st.one_of(
    st.integers(-5, 600), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans()
)


@settings(max_examples=150, deadline=None)
@given(d_=anything, k_=anything, g_=anything, phase=st.sampled_from(["decode", "prefill", "x"]))
def test_only_value_or_type_errors_escape(d_, k_, g_, phase):
    try:
        breakeven(d_, k_, g=g_, phase=phase)
    except (ValueError, TypeError):
        pass


@settings(max_examples=100, deadline=None)
@given(d_=st.integers(2, 512), data=st.data(), g_=st.integers(1, 16))
def test_break_even_grows_with_k(d_, data, g_):
    k1 = data.draw(st.integers(1, d_ - 1))
    k2 = data.draw(st.integers(k1, d_ - 1))
    assert breakeven(d_, k1, g=g_).n_star <= breakeven(d_, k2, g=g_).n_star


@settings(max_examples=100, deadline=None)
@given(d_=st.integers(2, 512), data=st.data(), g_=st.integers(1, 16))
def test_prefill_break_even_is_above_decode(d_, data, g_):
    k_ = data.draw(st.integers(1, d_ - 1))
    assert breakeven(d_, k_, g=g_, phase="prefill").n_star > breakeven(d_, k_, g=g_).n_star


@settings(max_examples=50, deadline=None)
@given(d_=st.integers(1, 512), ctx=st.integers(1, 10**6))
def test_k_equal_d_gives_identical_score_flops(d_, ctx):
    a = component_flops(method="aqua", phase="decode", d=d_, k=d_, context=ctx)
    b = component_flops(method="dense", phase="decode", d=d_, k=None, context=ctx)
    assert a["scores"] == b["scores"] and a["value"] == b["value"] and a["softmax"] == b["softmax"]


def test_public_api_is_exported():
    assert aqua_model.breakeven is breakeven and aqua_model.max_k is max_k
