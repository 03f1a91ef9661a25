"""Whole-model totals and the closed-form decode sum over G generated tokens."""

import sympy as sp

from aqua_model.costs import memory
from aqua_model.costs.aggregate import STEP, decode_sum, per_layer_bytes, per_layer_flops, per_model
from aqua_model.costs.convention import DEFAULT, Convention
from aqua_model.costs.flops import flop_terms, total
from aqua_model.costs.symbols import B, G, H_kv, H_q, L, N, T, d, g, k, s

SHAPE = {d: 128, k: 96, g: 4, s: 2, B: 3, H_q: 32, H_kv: 8, L: 2}


def loop_sum(per_step, prompt, generated):
    """Decode step i (1-based) attends to the prompt plus i tokens."""
    return sum(per_step.subs(N, prompt + i) for i in range(1, generated + 1))


def test_flop_and_byte_sums_equal_loops_with_the_same_bounds():
    flops = per_model(per_layer_flops(total(flop_terms("aqua", "decode", DEFAULT)))).subs(SHAPE)
    nbytes = per_model(per_layer_bytes(memory.decode_read_bytes("aqua"))).subs(SHAPE)
    for prompt, generated in [(1, 1), (10, 5), (1000, 37)]:
        at = {T: prompt, G: generated}
        assert sp.simplify(decode_sum(flops).subs(at) - loop_sum(flops, prompt, generated)) == 0
        assert sp.simplify(decode_sum(nbytes).subs(at) - loop_sum(nbytes, prompt, generated)) == 0
        # same bounds: the first step sees T + 1 keys, the last T + G, for both sums
        dense_bytes_per_key = 2 * 128 * 2 * 3 * 8 * 2
        keys_seen = sum(prompt + i for i in range(1, generated + 1))
        assert (
            per_model(per_layer_bytes(memory.decode_read_bytes("dense"))).subs(SHAPE).subs(N, 1)
            == dense_bytes_per_key
        )
        assert (
            decode_sum(per_model(per_layer_bytes(memory.decode_read_bytes("dense"))).subs(SHAPE)).subs(at)
            == dense_bytes_per_key * keys_seen
        )


def test_decode_sum_is_closed_form():
    expr = decode_sum(total(flop_terms("dense", "decode", DEFAULT)))
    assert not expr.has(sp.Sum) and STEP not in expr.free_symbols


def test_per_step_key_projection_sum_is_quadratic_in_generated_tokens():
    conv = Convention(key_projection="per-step")
    expr = decode_sum(total(flop_terms("aqua", "decode", conv)))
    assert sp.degree(sp.expand(expr), G) == 2


def test_model_scaling():
    per_head = total(flop_terms("dense", "decode", DEFAULT))
    assert per_model(per_layer_flops(per_head)) == L * B * H_q * per_head
    assert per_model(per_layer_bytes(memory.kv_cache_bytes("dense"))) == L * B * H_kv * 2 * N * d * s
