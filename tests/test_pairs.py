"""The visible (query, key) pair counts equal brute-force counts of boolean masks."""

import numpy as np
import pytest
import sympy as sp

from aqua_model.costs.pairs import visible_pairs
from aqua_model.costs.symbols import N, T


def mask_pairs(new: int, cached: int, causal: bool) -> int:
    """Count the True entries of the attention mask of `new` queries after `cached` keys."""
    q_pos = cached + np.arange(new)[:, None]  # absolute position of each new query
    k_pos = np.arange(cached + new)[None, :]  # absolute position of each key
    mask = (k_pos <= q_pos) if causal else np.ones((new, cached + new), dtype=bool)
    return int(mask.sum())


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("new,cached", [(1, 0), (1, 7), (5, 0), (16, 0), (13, 31), (64, 100)])
def test_closed_form_matches_mask(new, cached, causal):
    expr = visible_pairs(causal=causal)
    assert expr.subs({T: new, N: cached}) == mask_pairs(new, cached, causal)


def test_square_causal_case_is_triangular_number():
    assert sp.simplify(visible_pairs(causal=True).subs(N, 0) - T * (T + 1) / 2) == 0
