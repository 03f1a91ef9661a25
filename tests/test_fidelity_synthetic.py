"""Tests of the synthetic query/key generator."""

from __future__ import annotations

import numpy as np
import pytest

from aqua_model.fidelity.synthetic import make_head, random_orthogonal, spectrum


def test_power_spectrum_decays_from_one():
    sigma = spectrum(d=8, kind="power", alpha=2.0)
    assert sigma[0] == 1.0
    assert np.allclose(sigma, 1.0 / np.arange(1, 9) ** 2)


def test_rank_spectrum_has_r_ones():
    sigma = spectrum(d=10, kind="rank", rank=3)
    assert sigma.tolist() == [1.0] * 3 + [0.0] * 7


def test_random_orthogonal_is_orthogonal():
    q = random_orthogonal(d=16, rng=np.random.default_rng(1))
    assert np.allclose(q.T @ q, np.eye(16), atol=1e-12)


def test_rank_head_lies_in_r_dim_subspace():
    head = make_head(n_queries=50, n_keys=60, d=16, kind="rank", rank=4, n_outliers=2, seed=3)
    stacked = np.vstack([head.queries, head.keys])
    sv = np.linalg.svd(stacked, compute_uv=False)
    assert sv[3] > 1e-3 and sv[4] < 1e-10


def test_outliers_dominate_the_variance_along_their_axes():
    head = make_head(
        n_queries=4000, n_keys=10, d=8, kind="flat", n_outliers=1, outlier_scale=10.0, rotate=False, seed=0
    )
    var = head.queries.var(axis=0)
    assert var.argmax() == 0 and var[0] > 50 * np.median(var)


def test_seeded_and_reproducible():
    a = make_head(n_queries=5, n_keys=6, d=4, seed=7)
    b = make_head(n_queries=5, n_keys=6, d=4, seed=7)
    c = make_head(n_queries=5, n_keys=6, d=4, seed=8)
    assert np.array_equal(a.queries, b.queries) and not np.array_equal(a.queries, c.queries)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"d": 0}, ValueError, "d must be >= 1"),
        ({"kind": "zipf"}, ValueError, "kind must be one of"),
        ({"kind": "rank"}, ValueError, "rank must be given"),
        ({"kind": "rank", "rank": 99}, ValueError, "rank must be <= 8"),
        ({"n_outliers": 9}, ValueError, "n_outliers must be <= 8"),
        ({"outlier_scale": 0.0}, ValueError, "outlier_scale must be > 0"),
        ({"rotate": 1}, TypeError, "rotate must be a bool"),
        ({"seed": 1.5}, ValueError, "seed must be an integer"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, needle):
    base = {"n_queries": 3, "n_keys": 3, "d": 8}
    with pytest.raises(exc, match=needle):
        make_head(**{**base, **kwargs})
