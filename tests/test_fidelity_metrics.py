"""Tests of the fidelity metrics and of the methods' selection, without calibration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.special import rel_entr, softmax

from aqua_model.fidelity.methods import METHODS, keep_mask, selection_ranks, to_method_basis
from aqua_model.fidelity.metrics import (
    METRICS,
    compare_scores,
    fidelity_metrics,
    kept_energy,
    segment_stats,
    top_set_overlap,
)
from aqua_model.fidelity.study import decode_byte_ratio
from aqua_model.fidelity.synthetic import make_head, random_orthogonal

EXACT_TOL = 1e-9


def _head(seed: int, d: int = 8, n: int = 12):
    head = make_head(n_queries=n, n_keys=n + 3, d=d, kind="power", n_outliers=1, seed=seed)
    proj = random_orthogonal(d=d, rng=np.random.default_rng(seed + 100))
    return head, proj


def test_identical_inputs_give_zero_error_and_full_agreement():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((7, 11))
    stats = compare_scores(exact=scores, approx=scores.copy(), values=rng.standard_normal((11, 4)))
    stats.energy_sum = 7.0
    m = stats.finalize()
    assert m["score_rel_err"] == 0 and m["output_rel_err"] == 0 and m["kl_nats"] == 0
    assert m["top1_agreement"] == 1 and m["top8_agreement"] == 1 and m["energy"] == 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.sampled_from([2, 4, 8, 16]), method=st.sampled_from(METHODS))
def test_k_equal_d_is_exact_for_every_method(seed, d, method):
    head, proj = _head(seed, d=d)
    m = fidelity_metrics(
        queries=head.queries,
        keys=head.keys,
        values=head.values,
        projection=proj,
        method=method,
        k=d,
        seed=seed,
    )
    assert m["energy"] == pytest.approx(1.0, abs=EXACT_TOL)
    assert m["score_rel_err"] < EXACT_TOL and m["output_rel_err"] < EXACT_TOL and m["kl_nats"] < EXACT_TOL
    assert m["top1_agreement"] == 1.0 and m["top8_agreement"] == 1.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), method=st.sampled_from(METHODS))
def test_energy_is_monotone_non_decreasing_in_k(seed, method):
    d = 16
    head, proj = _head(seed, d=d)
    stats = segment_stats(
        queries=head.queries,
        keys=head.keys,
        values=head.values,
        projection=proj,
        method=method,
        ks=tuple(range(1, d + 1)),
        rng=np.random.default_rng(seed),
    )
    energy = [stats[k].finalize()["energy"] for k in range(1, d + 1)]
    assert all(b >= a - 1e-12 for a, b in zip(energy, energy[1:]))


def test_aqua_and_sparq_keep_the_largest_coordinates_brute_force():
    head, proj = _head(5, d=8)
    for method, basis in (("aqua", head.queries @ proj), ("sparq", head.queries)):
        q_b, _ = to_method_basis(queries=head.queries, keys=head.keys, projection=proj, method=method)
        mask = keep_mask(ranks=selection_ranks(queries=q_b, method=method), k=3)
        for row, m in zip(basis, mask):
            assert set(np.flatnonzero(m)) == set(np.argsort(-np.abs(row))[:3])
        expected = np.sort(basis**2, axis=1)[:, ::-1][:, :3].sum(axis=1) / (basis**2).sum(axis=1)
        assert np.allclose(kept_energy(queries=q_b, mask=mask), expected)


def test_loki_keeps_a_static_prefix_and_random_k_distinct_dims():
    head, proj = _head(2, d=8)
    loki = keep_mask(ranks=selection_ranks(queries=head.queries, method="loki"), k=3)
    assert loki[:, :3].all() and not loki[:, 3:].any()
    rnd = keep_mask(
        ranks=selection_ranks(queries=head.queries, method="random", rng=np.random.default_rng(0)), k=3
    )
    assert (rnd.sum(axis=1) == 3).all() and len({tuple(r) for r in rnd}) > 1


def test_random_needs_a_generator():
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        selection_ranks(queries=np.ones((2, 4)), method="random")


def test_compare_scores_matches_brute_force():
    rng = np.random.default_rng(3)
    exact = rng.standard_normal((5, 10))
    approx = exact + 0.3 * rng.standard_normal((5, 10))
    values = rng.standard_normal((10, 3))
    stats = compare_scores(exact=exact, approx=approx, values=values)
    stats.energy_sum = 5.0
    m = stats.finalize()
    p, q = softmax(exact, axis=1), softmax(approx, axis=1)
    assert m["kl_nats"] == pytest.approx(rel_entr(p, q).sum(axis=1).mean())
    assert m["score_rel_err"] == pytest.approx(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
    assert m["output_rel_err"] == pytest.approx(
        np.linalg.norm(q @ values - p @ values) / np.linalg.norm(p @ values)
    )
    assert m["top1_agreement"] == pytest.approx(np.mean(exact.argmax(1) == approx.argmax(1)))
    overlap = [len(set(np.argsort(-e)[:8]) & set(np.argsort(-a)[:8])) / 8 for e, a in zip(exact, approx)]
    assert m["top8_agreement"] == pytest.approx(np.mean(overlap))


def test_top_set_is_capped_at_the_number_of_keys():
    scores = np.array([[3.0, 2.0, 1.0]])
    assert top_set_overlap(exact=scores, approx=scores[:, ::-1].copy())[0] == 1.0


def test_metric_names_are_the_finalized_keys():
    head, proj = _head(0)
    m = fidelity_metrics(
        queries=head.queries, keys=head.keys, values=head.values, projection=proj, method="aqua", k=2
    )
    assert tuple(m) == METRICS


@pytest.mark.parametrize(
    ("k", "d", "expected"), [(32, 32, 1.0), (16, 32, 0.75), (96, 128, 0.875), (0, 8, 0.5)]
)
def test_byte_ratio_is_the_cost_models(k, d, expected):
    assert decode_byte_ratio(k, d) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"method": "quest"}, ValueError, "method must be one of"),
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": 9}, ValueError, "k must be <= 8"),
        ({"projection": np.eye(4)}, ValueError, "projection must have shape"),
        ({"queries": [[1.0]]}, TypeError, "queries must be a numpy array"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, needle):
    head, proj = _head(0)
    base = {
        "queries": head.queries,
        "keys": head.keys,
        "values": head.values,
        "projection": proj,
        "method": "aqua",
        "k": 2,
    }
    with pytest.raises(exc, match=needle):
        fidelity_metrics(**{**base, **kwargs})
