"""costs.alignment: the one aligned row stride, for ints and for the symbolic context."""

import numpy as np
import pytest
import sympy as sp

from aqua_model.costs.alignment import ALIGN_ELEMENTS, aligned_capacity
from aqua_model.costs.numeric import evaluate
from aqua_model.costs.symbols import N


def test_aligned_capacity_rounds_up_to_a_multiple_of_16():
    assert ALIGN_ELEMENTS == 16
    # 1..16 -> 16, 17 -> 32, 333 -> 336 (21 x 16), a multiple of 16 stays itself
    assert [aligned_capacity(n) for n in (1, 15, 16, 17, 333, 336, 65544)] == [
        16,
        16,
        16,
        32,
        336,
        336,
        65552,
    ]
    assert aligned_capacity(np.int64(333)) == 336 and type(aligned_capacity(np.int64(333))) is int


def test_the_symbolic_stride_evaluates_to_the_int_one():
    expr = aligned_capacity(N)
    assert isinstance(expr, sp.Expr)
    ns = np.array([1, 15, 16, 17, 333, 65544])
    assert list(evaluate(expr, {"N": ns}).astype(int)) == [aligned_capacity(int(n)) for n in ns]


@pytest.mark.parametrize("bad,err", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)])
def test_bad_tokens_are_refused(bad, err):
    with pytest.raises(err, match="tokens"):
        aligned_capacity(bad)
