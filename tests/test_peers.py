"""Peer methods: byte formulas against brute-force counts of what each algorithm reads,
validation, reductions, ceilings and the compare CLI."""

import json

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from aqua_model.commands import compare_cmd
from aqua_model.costs import memory, peers
from aqua_model.costs.convention import Convention
from aqua_model.costs.flops import flop_terms as base_flop_terms
from aqua_model.costs.numeric import evaluate
from aqua_model.plans import build_peer_plan
from aqua_model.simulator.comparison import compare

S_BYTES = 2  # bf16
SECTOR = 32


def topk(values, count):
    return set(np.argsort(-values, kind="stable")[:count].tolist())


def formula(method, values, **kw):
    return float(evaluate(peers.decode_read_bytes(method, **kw), {"s": S_BYTES, "S": SECTOR, **values}))


# -- brute force: run each algorithm on random data and record every element it reads ------


def sparq_reads(rng, n, d_, r_, kt, heads):
    """(K dim-major copy elements, token rows of K and V, mean-V elements) read by a KV group."""
    K = rng.standard_normal((n, d_))
    dim_major, rows = set(), set()
    for _ in range(heads):
        q = rng.standard_normal(d_)
        dims = topk(np.abs(q), r_)
        dim_major |= {(i, t) for i in dims for t in range(n)}
        approx = K[:, sorted(dims)] @ q[sorted(dims)]
        rows |= topk(approx, kt)
    elements = len(dim_major) + 2 * len(rows) * d_ + d_
    return elements * S_BYTES


@pytest.mark.parametrize("n,d_,r_,kt", [(40, 16, 4, 5), (64, 8, 8, 64), (17, 12, 1, 1)])
def test_sparq_bytes_equal_brute_force(n, d_, r_, kt):
    got = sparq_reads(np.random.default_rng(0), n, d_, r_, kt, heads=1)
    assert formula("sparq", {"N": n, "d": d_, "r": r_, "k_t": kt, "g": 1}) == got


def test_sparq_per_head_union_matches_monte_carlo():
    n, d_, r_, kt, g_ = 48, 16, 4, 6, 4
    rng = np.random.default_rng(1)
    mean = np.mean([sparq_reads(rng, n, d_, r_, kt, heads=g_) for _ in range(400)])
    expected = formula("sparq", {"N": n, "d": d_, "r": r_, "k_t": kt, "g": g_}, selection="per-head")
    # random data makes the per-head selections near-independent and uniform
    assert expected == pytest.approx(mean, rel=0.03)


@pytest.mark.parametrize("layout", ["token-major", "dim-major"])
@pytest.mark.parametrize("n,d_,r_,kt", [(30, 32, 5, 4), (30, 32, 16, 30), (9, 16, 17 - 1, 2)])
def test_loki_bytes_equal_brute_force(layout, n, d_, r_, kt):
    rng = np.random.default_rng(2)
    K, q = rng.standard_normal((n, d_)), rng.standard_normal(d_)
    per_sector = SECTOR // S_BYTES
    if layout == "token-major":  # whole sectors of each row's first r channels
        approx = len({(t, c // per_sector) for t in range(n) for c in range(r_)}) * SECTOR
    else:
        approx = len({(c, t) for c in range(r_) for t in range(n)}) * S_BYTES
    rows = topk(K[:, :r_] @ q[:r_], kt)
    got = approx + 2 * len(rows) * d_ * S_BYTES
    assert formula("loki", {"N": n, "d": d_, "r": r_, "k_t": kt, "g": 1}, layout=layout) == got


@pytest.mark.parametrize("n,p_,kt", [(64, 16, 16), (70, 16, 20), (10, 3, 4), (33, 1, 7)])
def test_quest_bytes_equal_brute_force(n, p_, kt):
    d_ = 8
    rng = np.random.default_rng(3)
    K, q = rng.standard_normal((n, d_)), rng.standard_normal(d_)
    pages = [range(start, min(start + p_, n)) for start in range(0, n, p_)]
    metadata = {(j, kind, c) for j in range(len(pages)) for kind in ("min", "max") for c in range(d_)}
    bound = np.array([np.maximum(q * K[list(pg)].min(0), q * K[list(pg)].max(0)).sum() for pg in pages])
    chosen = topk(bound, -(-kt // p_))
    rows = {t for j in chosen for t in range(j * p_, j * p_ + p_)}  # whole pages are read
    got = (len(metadata) + 2 * len(rows) * d_) * S_BYTES
    assert formula("quest", {"N": n, "d": d_, "p": p_, "k_t": kt, "g": 1}) == got


def h2o_reads(n_steps, b_, w_, d_, rng, dims=None):
    """Run H2O decode for n_steps past a full cache; return the reads of the last step."""
    kept = list(range(b_))
    acc = dict.fromkeys(kept, 0.0)
    reads = None
    for step in range(n_steps):
        new = b_ + step
        probs = rng.random(len(kept))
        kv = {(t, "K", c) for t in kept for c in (range(d_) if dims is None else dims)} | {
            (t, "V", c) for t in kept for c in range(d_)
        }
        acc_reads = len(kept)  # read to accumulate
        acc_writes = len(kept)  # write back (counted as traffic)
        for t, pr in zip(kept, probs):
            acc[t] += pr
        recent = set(sorted(kept)[-w_:]) if w_ else set()
        candidates = [t for t in kept if t not in recent]
        evict_reads = len(candidates)
        victim = min(candidates, key=acc.get)
        kept.remove(victim)
        acc.pop(victim)
        kept.append(new)
        acc[new] = 0.0
        reads = len(kv) * S_BYTES + (acc_reads + acc_writes + evict_reads) * peers.SCORE_BYTES
    return reads


@pytest.mark.parametrize("b_,w_", [(12, 4), (8, 0), (10, 9)])
def test_h2o_bytes_equal_brute_force(b_, w_):
    d_ = 8
    got = h2o_reads(5, b_, w_, d_, np.random.default_rng(4))
    assert formula("h2o", {"N": 100, "d": d_, "b": b_, "w": w_, "g": 1}) == got


def test_aqua_h2o_bytes_equal_brute_force():
    d_, k_, b_, w_ = 16, 5, 12, 4
    got = h2o_reads(3, b_, w_, d_, np.random.default_rng(5), dims=range(k_))
    assert formula("aqua-h2o", {"N": 100, "d": d_, "k": k_, "b": b_, "w": w_, "g": 1}) == got


def test_aqua_topk_bytes_equal_brute_force():
    n, d_, k_, kt = 40, 16, 4, 6
    rng = np.random.default_rng(6)
    Kr, qr = rng.standard_normal((n, d_)), rng.standard_normal(d_)
    dims = topk(np.abs(qr), k_)
    approx = {(c, t) for c in dims for t in range(n)}
    rows = topk(Kr[:, sorted(dims)] @ qr[sorted(dims)], kt)
    got = (len(approx) + 2 * len(rows) * d_) * S_BYTES
    assert formula("aqua-topk", {"N": n, "d": d_, "k": k_, "k_t": kt, "g": 1}) == got


# -- reductions ---------------------------------------------------------------------------------


def test_aqua_h2o_reduces_to_h2o_at_k_equal_d():
    combo = peers.byte_terms("aqua-h2o")
    plain = peers.byte_terms("h2o")
    from aqua_model.costs.symbols import d, k

    for term in peers.BYTE_TERMS:
        assert sp.simplify(combo[term].subs(k, d) - plain[term]) == 0
    ft_combo, ft_plain = peers.flop_terms("aqua-h2o"), peers.flop_terms("h2o")
    for name in ("scores", "softmax", "value", "bookkeeping"):
        assert sp.simplify(ft_combo[name].subs(k, d) - ft_plain[name]) == 0
    # what remains is AQUA's fixed prologue
    aqua = base_flop_terms("aqua", "decode", Convention())
    for name in ("q_proj", "k_proj", "select"):
        assert sp.simplify(ft_combo[name] - aqua[name]) == 0


def test_aqua_h2o_reduces_to_aqua_at_full_budget():
    from aqua_model.costs.symbols import N

    combo = peers.decode_read_bytes("aqua-h2o").subs(peers.b, N)
    assert (
        sp.simplify(combo - peers.h2o_bookkeeping_bytes().subs(peers.b, N) - memory.decode_read_bytes("aqua"))
        == 0
    )
    terms = peers.flop_terms("aqua-h2o")
    aqua = base_flop_terms("aqua", "decode", Convention())
    for name in aqua:
        assert sp.simplify(terms[name].subs(peers.b, N) - aqua[name]) == 0


def test_sparq_memory_is_one_and_a_half_dense_plus_mean_v():
    from aqua_model.costs.symbols import N, d, s

    assert sp.simplify(peers.kv_cache_bytes("sparq") - (3 * N * d * s + d * s)) == 0
    assert (
        sp.simplify(peers.kv_cache_bytes("quest") - (2 * N * d * s + 2 * sp.ceiling(N / peers.p) * d * s))
        == 0
    )


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,params,exc,fragment",
    [
        ("sparq", {"r": 0, "k_t": 4}, ValueError, "r must be >= 1"),
        ("sparq", {"r": 200, "k_t": 4}, ValueError, "r must be <= d"),
        ("loki", {"r": 4, "k_t": 5000}, ValueError, "k_t must be <= context"),
        ("quest", {"p": 16, "k_t": 1009}, ValueError, "whole pages"),
        ("h2o", {"b": 10, "w": 11}, ValueError, "w (recent window) must be <= b"),
        ("h2o", {"b": 10}, ValueError, "needs parameter(s) ['w']"),
        ("sparq", {"r": 4, "k_t": 4, "p": 2}, ValueError, "unknown ['p']"),
        ("sparq", {"r": 4.5, "k_t": 4}, ValueError, "r must be an integer"),
        ("sparq", {"r": "4", "k_t": 4}, TypeError, "r must be an integer"),
        ("nope", {}, ValueError, "method must be one of"),
    ],
)
def test_parameters_are_validated(method, params, exc, fragment):
    with pytest.raises(exc) as err:
        peers.check_params(method, d=128, context=1010, params=params)
    assert fragment in str(err.value)


def test_layout_only_for_methods_that_have_one():
    with pytest.raises(ValueError, match="layout is only used by"):
        peers.decode_read_bytes("quest", layout="dim-major")


def test_numeric_entry_points_broadcast():
    out = peers.decode_bytes(method="sparq", d=128, context=np.array([4096, 8192]), r=16, k_t=256)
    assert out.shape == (2,) and np.all(np.diff(out) > 0)
    flops = peers.decode_flops(method="h2o", d=128, context=4096, g=4, b=512, w=256)
    assert flops["total"] == pytest.approx(sum(v for name, v in flops.items() if name != "total"))


# -- break-even, ceilings, predictions ------------------------------------------------------


def test_closed_form_breakeven_agrees_with_exact_search():
    conv = Convention(selection="select")
    values = {"d": 128, "g": 4, "b": 2048, "w": 1024}
    closed = float(evaluate(peers.breakeven_closed_form("h2o", conv), values))
    exact = peers.breakeven_exact("h2o", convention=conv, **values)
    assert exact == max(2048, int(np.floor(closed)) + 1)


def test_sort_topk_over_context_has_no_closed_form_but_an_exact_breakeven():
    assert peers.breakeven_closed_form("sparq") is None
    n_min = peers.breakeven_exact("sparq", d=128, g=1, r=16, k_t=256)
    diff = peers.flop_difference("sparq")

    def at(n: int) -> float:
        return float(evaluate(diff, {"d": 128, "g": 1, "r": 16, "k_t": 256, "N": n}))

    assert at(n_min) < 0 <= at(n_min - 1)


@pytest.mark.parametrize("context", [4096, 32768, 131072])
@pytest.mark.parametrize("gpu", ["h200", "rtx-4090"])
def test_ceiling_bounds_prediction(context, gpu):
    result = compare(d=128, context=context, gpu=gpu, batch=1, heads_q=32, heads_kv=8)
    for row in result.rows:
        assert row.predicted_speedup <= row.ceiling * (1 + 1e-9), row.method
        assert row.ceiling == pytest.approx(1 / row.bytes_ratio)


@settings(max_examples=25, deadline=None)
@given(r_=st.integers(1, 128), kt=st.integers(1, 4096))
def test_sparq_byte_ratio_is_r_over_2d_plus_kt_over_n_plus_mean(r_, kt):
    n = 4096
    ratio = float(evaluate(peers.byte_ratio("sparq"), {"N": n, "d": 128, "r": r_, "k_t": kt, "s": 2, "g": 1}))
    assert ratio == pytest.approx(r_ / 256 + kt / n + 1 / (2 * n))


def test_plan_bytes_contain_the_cost_model_bytes():

    values = {
        "B": 2,
        "H_q": 8,
        "H_kv": 2,
        "g": 4,
        "N": 4096,
        "d": 128,
        "s": 2,
        "S": 32,
        "r": 16,
        "k_t": 256,
        "p": 16,
        "b": 256,
        "w": 128,
        "k": 96,
    }
    for method in peers.PEER_METHODS:
        plan = build_peer_plan(method)
        plan_bytes = float(evaluate(plan.bytes, values))
        kv = float(evaluate(peers.decode_read_bytes(method), values)) * values["B"] * values["H_kv"]
        assert plan_bytes >= kv, method


@pytest.mark.parametrize("method", peers.PEER_METHODS)
def test_prefill_plans_exist(method):
    assert build_peer_plan(method, phase="prefill").kernels


# -- CLI ----------------------------------------------------------------------------------------


def run_compare(capsys, *argv):
    import argparse

    parser = argparse.ArgumentParser()
    compare_cmd.add_parser(parser.add_subparsers(), "compare")
    args = parser.parse_args(["compare", *argv])
    code = args.run(args)
    return code, capsys.readouterr().out


def test_cli_json_has_schema_version(capsys):
    code, out = run_compare(capsys, "--d", "128", "--context", "32768", "--json")
    data = json.loads(out)
    assert code == 0 and data["schema_version"] == 1
    methods = {row["method"]: row for row in data["methods"]}
    assert set(methods) == set(peers.METHODS)
    assert methods["quest"]["bytes_ratio"] == pytest.approx(0.125)
    assert methods["sparq"]["kv_memory_ratio"] == pytest.approx(1.5, abs=1e-4)


def test_cli_text_prints_closed_forms(capsys):
    code, out = run_compare(capsys, "--d", "128", "--context", "32768")
    assert code == 0 and "s*(N*r + 2*d*k_t + d)" in out and "N*" in out


def test_published_table_rows_match_where_the_model_should():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "peers_published", Path(__file__).parents[1] / "analysis" / "peers_published.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {row["method"]: row for row in module.build_rows()}
    assert rows["SparQ"]["model"] == pytest.approx(8.0, rel=1e-3)
    assert rows["Quest"]["model"] == pytest.approx(7.03, rel=0.15)
    assert rows["H2O"]["model"] == pytest.approx(5.0, rel=0.02)
    assert rows["Loki"]["model_ceiling"] == pytest.approx(8 / 3)
    assert all(row["notes"] and row["source"].startswith(("https://", "project")) for row in rows.values())


def test_peers_figure_is_registered_and_builds(tmp_path):
    from aqua_model.plots import load_figures

    entry = load_figures()["peers"]
    paths = entry.build(tmp_path, tmp_path)
    assert all(path.exists() and path.stat().st_size > 0 for path in paths)
