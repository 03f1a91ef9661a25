"""Issue 23 item 15: a fuzz test (hypothesis) over the command line and the public functions.

Whatever is passed, a command exits 0, or 2 with one line on stderr; a function returns or
raises ValueError / TypeError. And every success is physical: times finite and positive and
never below the roofline floor (FLOPs at the datasheet peak, bytes at the datasheet bandwidth,
no launch cost), a decode speedup never above its byte ceiling 2d/(k+d) where memory-bound or
the ratio of launches where launch-bound (whichever is larger), an end-to-end speedup
between 1 and the attention speedup (Amdahl), break-evens and kept dims in their ranges.

One fixed, derandomized profile (CI reproducible) with modest example counts: the whole file
runs in well under a minute on one core.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from hypothesis import HealthCheck, event, given, settings, strategies as st

import aqua_model
from aqua_model.cli import main
from aqua_model.hardware import list_devices, load
from aqua_model.plans import plan_names

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    # capsys is read (and so emptied) by every example itself
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
#: Relative slack of the floor and ceiling checks (float rounding only, no modelling slack).
RTOL = 1e-9
#: Devices the checks run on: every datasheet profile and the committed calibrated H200 one.
CALIBRATED = "validation/results/h200/h200-calibrated.toml"
GPUS = (*list_devices(), CALIBRATED)

# -- values: mostly sensible, sometimes hostile ---------------------------------------------------

hostile = st.sampled_from(
    [0, -1, 2**63, 10**400, 1.5, float("nan"), float("inf"), None, True, "64", [64], (8,), np.array([1, 2])]
)
heads_kv = st.sampled_from([1, 2, 8])
groups = st.sampled_from([1, 2, 4, 8])
head_dims = st.sampled_from([2, 16, 48, 64, 100, 128, 256])
contexts = st.one_of(st.sampled_from([1, 7, 64, 1000, 4096, 65536, 2**20, 2**40]), st.integers(1, 10**6))
batches = st.sampled_from([1, 3, 8, 64])
decode_aqua_plans = st.sampled_from(
    sorted(
        {"fused", "eager", "token-major", "step", *(p for p in plan_names("decode") if p.startswith("aqua"))}
    )
)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """``strategy`` nine times in ten, a hostile value otherwise (one_of would pick each half the time)."""
    return st.integers(0, 9).flatmap(lambda i: hostile if i == 0 else strategy)


def _kept(frac: float, d) -> int:
    """k = frac * d (at least 1) for a sensible d, else 1 (d itself is then what is refused)."""
    sensible = isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20
    return max(1, round(frac * d)) if sensible else 1


def _call(fn, **kwargs):
    """``fn(**kwargs)``, or None where it refused with ValueError / TypeError (nothing else may
    escape, and no numeric warning either)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            out = fn(**kwargs)
        except (ValueError, TypeError) as exc:
            event(f"refused: {str(exc)[:50]}")
            return None
    event("returned")  # the statistics (--hypothesis-show-statistics) say how many results were checked
    return out


def _floor_s(kernels, profile, dtype: str) -> np.ndarray:
    """Sum over kernels of max(FLOPs / peak, bytes / bandwidth): the datasheet roofline with
    perfect efficiency and no launch cost (peak at the storage dtype, the fastest unit);
    elementwise over a sweep."""
    peak = profile.peak_flops(dtype)
    total = np.asarray(0.0)
    for kern in kernels:
        flops = np.asarray(kern["flops"] if isinstance(kern, dict) else kern.flops, dtype=float)
        nbytes = np.asarray(kern["bytes"] if isinstance(kern, dict) else kern.bytes, dtype=float)
        total = total + np.maximum(flops / peak, nbytes / profile.bandwidth_bytes_per_s)
    return total


def _positive_finite(*values) -> None:
    for v in values:
        arr = np.asarray(v, dtype=float)
        assert np.all(np.isfinite(arr)) and np.all(arr > 0), values


# -- the public functions --------------------------------------------------------------------------


def _speedup_bound(sim) -> float:
    """The most a plan can gain over dense fused: its byte ceiling 2d/(k+d) where memory-bound, the
    ratio of launches where launch-bound (tiny contexts: the one-launch aqua-fused call against
    SDPA's two kernels gives 2x at d = 2, N = 64), whichever is larger."""
    dense = sum(k.launches for k in sim.dense.kernels)
    aqua = sum(k.launches for k in sim.aqua.kernels)
    return max(float(np.max(sim.ceiling)), dense / aqua)


@FUZZ
@given(
    gpu=st.sampled_from(GPUS),
    hkv=heads_kv,
    g=groups,
    d=maybe(head_dims),
    frac=st.floats(0.0, 1.0),
    context=maybe(contexts),
    batch=maybe(batches),
    plan=decode_aqua_plans,
    selection=st.sampled_from(["group", "per-head"]),
    kv_dtype=st.sampled_from([None, "fp8", "int4"]),
    layers=st.sampled_from([None, None, 1, 4]),
)
def test_simulate_and_speedup(gpu, hkv, g, d, frac, context, batch, plan, selection, kv_dtype, layers):
    k = _kept(frac, d)
    kwargs = {
        "gpu": gpu,
        "heads_q": hkv * g,
        "heads_kv": hkv,
        "d": d,
        "k": k,
        "context": context,
        "batch": batch,
        "plan": plan,
    }
    kwargs.update(selection=selection, kv_dtype=kv_dtype, layers=layers)
    sim = _call(aqua_model.simulate, **kwargs)
    if sim is None:
        return
    profile = load(gpu)
    for res in (sim.dense, sim.aqua):
        _positive_finite(res.time_s)
        assert np.all(res.time_s >= _floor_s(res.kernels, profile, sim.shape.dtype) * (1 - RTOL)), res.plan
    _positive_finite(sim.speedup, sim.ceiling)
    assert np.all(sim.speedup <= _speedup_bound(sim) * (1 + RTOL))
    assert np.all(sim.ceiling < 2.0)  # 2d/(k+d) < 2 for every k >= 1
    np.testing.assert_allclose(aqua_model.speedup(**kwargs), sim.speedup, rtol=1e-12)


@FUZZ
@given(
    gpu=st.sampled_from(GPUS),
    phase=st.sampled_from(["decode", "prefill"]),
    plan_index=st.integers(0, 20),
    hkv=heads_kv,
    g=groups,
    d=maybe(head_dims),
    frac=st.floats(0.0, 1.0),
    context=maybe(contexts),
    batch=maybe(batches),
    prompt=st.sampled_from([1, 128, 4096]),
    wrong_prompt=st.integers(0, 9),
)
def test_predict(gpu, phase, plan_index, hkv, g, d, frac, context, batch, prompt, wrong_prompt):
    if (phase == "decode") == (wrong_prompt > 0):  # a prompt with prefill only, one time in ten not
        prompt = None
    names = plan_names(phase)
    plan = names[plan_index % len(names)]
    k = _kept(frac, d)
    pred = _call(
        aqua_model.predict,
        plan=plan,
        phase=phase,
        context=context,
        batch=batch,
        heads_q=hkv * g,
        heads_kv=hkv,
        d=d,
        k=k,
        gpu=gpu,
        prompt=prompt,
    )
    if pred is None:
        return
    _positive_finite(pred.total_s)
    assert pred.total_s >= _floor_s(pred.kernels, load(gpu), "bf16") * (1 - RTOL), plan
    if pred.low_s is not None:
        assert 0 < pred.low_s <= pred.total_s <= pred.high_s


@settings(FUZZ, max_examples=60)
@given(
    gpu=st.sampled_from(GPUS),
    model=st.sampled_from(["llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "gemma-2-9b", "nope"]),
    context=maybe(st.sampled_from([1, 512, 4096, 32768, 131072, 2**30])),
    k=maybe(st.sampled_from([1, 32, 96, 128])),
    batch=maybe(batches),
    tp=st.sampled_from([None, None, 1, 2, 3, 8]),
)
def test_end_to_end(gpu, model, context, k, batch, tp):
    e2e = _call(
        aqua_model.end_to_end, gpu=gpu, model=model, context=context, k=k, batch=batch, tensor_parallel=tp
    )
    if e2e is None:
        return
    _positive_finite(e2e.dense_s, e2e.aqua_s, e2e.weights_s)
    attention = np.asarray(e2e.dense_attention_s / e2e.aqua_attention_s, dtype=float)
    lo, hi = np.minimum(1.0, attention), np.maximum(1.0, attention)
    speedup = np.asarray(e2e.speedup, dtype=float)
    assert np.all(lo * (1 - RTOL) <= speedup) and np.all(speedup <= hi * (1 + RTOL))  # Amdahl
    assert np.all(speedup <= _speedup_bound(e2e.simulation) * (1 + RTOL))
    if e2e.one_gpu_fit is not None and not e2e.fits:
        assert e2e.one_gpu_fit["memory_bytes"] > e2e.one_gpu_fit["device_memory_bytes"]


@settings(FUZZ, max_examples=30)
@given(
    gpu=st.sampled_from(GPUS),
    hkv=heads_kv,
    g=groups,
    d=maybe(st.sampled_from([16, 64, 128])),
    k=maybe(st.sampled_from([1, 16, 32, 96])),
    limit=st.sampled_from([64, 4096, 65536]),
)
def test_time_breakeven(gpu, hkv, g, d, k, limit):
    kwargs = {"gpu": gpu, "heads_q": hkv * g, "heads_kv": hkv, "d": d, "k": k, "batch": 8, "limit": limit}
    n = _call(aqua_model.time_breakeven, **kwargs)
    if n is None:
        return
    assert isinstance(n, int) and 1 <= n <= limit
    kwargs.pop("limit")
    assert float(aqua_model.speedup(context=n, **kwargs)) > 1.0  # it wins there...
    if n > 1:
        assert float(aqua_model.speedup(context=n - 1, **kwargs)) <= 1.0  # ...and not one token before


@FUZZ
@given(
    d=maybe(st.integers(2, 512)),
    frac=st.floats(0.0, 1.0),
    g=maybe(groups),
    phase=st.sampled_from(["decode", "prefill", "x"]),
    context=maybe(contexts),
)
def test_breakeven_and_max_k(d, frac, g, phase, context):
    k = _kept(frac, d)
    be = _call(aqua_model.breakeven, d=d, k=k, g=g, phase=phase)
    if be is not None:
        assert be.never or (math.isfinite(be.n_star) and be.n_star > 0 and be.n_min >= 1)
        assert be.n_min is None or be.n_min >= be.n_star * (1 - RTOL)
    best = _call(aqua_model.max_k, d=d, context=context, g=g, phase=phase)
    if best is not None:
        assert isinstance(best, int) and 1 <= best < d


@settings(FUZZ, max_examples=8)  # about 1 s a call (sympy closed forms, break-even searches)
@given(
    gpu=st.sampled_from(GPUS),
    d=maybe(st.sampled_from([16, 64, 100, 128])),
    context=maybe(st.sampled_from([1, 8, 100, 4096, 65536])),
    batch=maybe(batches),
    methods=st.one_of(
        st.just(None),
        st.lists(st.sampled_from(["aqua", "sparq", "loki", "quest", "h2o", "x"]), min_size=1, max_size=3),
    ),
    page=st.sampled_from([None, None, 1, 16, 10**6]),
)
def test_compare(gpu, d, context, batch, methods, page):
    kwargs = {"gpu": gpu, "d": d, "context": context, "batch": batch, "page": page}
    if methods is not None:
        kwargs["methods"] = tuple(methods)
    cmp = _call(aqua_model.compare, **kwargs)
    if cmp is None:
        return
    from aqua_model.plans import build_plan
    from aqua_model.plans.peer_plans import build_peer_plan

    base_launches = build_plan("dense-fused", phase="decode", selection="group").launches
    for row in cmp.rows:
        _positive_finite(row.bytes_per_step, row.ceiling, row.predicted_speedup, row.time_s)
        # memory-bound, a method is at most its byte ceiling faster; launch-bound (tiny contexts),
        # at most the ratio of launches (H2O's one kernel against SDPA's two at N = 1, d = 16)
        launches = build_peer_plan(row.method, selection="group").launches  # default layouts, as compared
        bound = max(row.ceiling, base_launches / launches)
        assert row.predicted_speedup <= bound * (1 + RTOL), (row.method, row.predicted_speedup, bound)


# -- the command line ------------------------------------------------------------------------------

#: Subcommands that neither write files nor run benchmarks, and the flags each takes (compare,
#: about 1 s a call, is fuzzed through its function above).
FLAGS = {
    "breakeven": ["--d", "--k", "--g", "--phase", "--context", "--json", "--softmax-flops"],
    "costs": ["--d", "--k", "--g", "--context", "--dtype-bytes", "--json", "--topk-cost"],
    "simulate": [
        "--gpu",
        "--model",
        "--heads-q",
        "--heads-kv",
        "--d",
        "--context",
        "--batch",
        "--k",
        "--plan",
    ]
    + ["--phase", "--prompt", "--kv-dtype", "--tp", "--all-reduce", "--json"],
    "hardware": ["list", "show", "h200", "--json"],
    "models": ["list", "show", "llama-3.1-8b", "--json"],
}
tokens = st.one_of(
    st.sampled_from(
        ["1", "8", "32", "128", "4096", "65536", "0", "-1", "1_024", "+64", " 64", "\u0663\u0662"]
    ),
    st.sampled_from(
        ["1e400", "nan", "h200", "llama-3.1-8b", "prefill", "decode", "aqua", "--", "--cont", "-x"]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=4),
)


#: A runnable command line per subcommand, which the fuzzer then adds to (or not).
BASE = {
    "breakeven": ["--d", "128", "--k", "32"],
    "costs": ["--d", "64", "--k", "16"],
    "simulate": ["--heads-q", "32", "--heads-kv", "8", "--d", "128", "--context", "4096", "--k", "32"],
    "hardware": ["show", "h200"],
    "models": ["show", "llama-3.1-8b"],
}


@st.composite
def argvs(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [command, *(BASE[command] if draw(st.integers(0, 3)) else [])]  # runnable three times in four
    for _ in range(draw(st.integers(0, 2))):
        argv.append(draw(st.sampled_from(FLAGS[command])))
        if draw(st.integers(0, 3)):
            argv.append(draw(tokens))
    return argv


@settings(FUZZ, max_examples=50)
@given(argv=argvs())
def test_cli_exits_0_or_2_with_one_line(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors, and --help
        code = exc.code
    out, err = capsys.readouterr()
    event(f"{argv[0]} exit {code}")
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "error:" in lines[0], (argv, err)
    elif argv[0] == "simulate" and "--json" not in argv:
        line = next((x for x in out.splitlines() if x.startswith("speedup ")), None)
        assert line is not None, (argv, out)
        speedup = float(line.split()[1].rstrip("x"))
        assert 0 < speedup <= 2, (argv, line)  # byte ceiling 2d/(k+d) < 2, or SDPA's 2 launches / 1
