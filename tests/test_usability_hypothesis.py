"""Property tests over every public function and command: whatever is passed (huge integers,
numpy scalars, arrays with extreme values, junk), nothing but ValueError / TypeError escapes a
function, and a command exits 0 or 2 with at most a one-line error, never a traceback."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import aqua_model
from aqua_model._checks import INT64_MAX, check_int, check_int_array, check_real
from aqua_model.cli import main

# integers of every size: small, around 2**53 and 2**63, and far beyond a float (10**400)
integers = st.one_of(
    st.integers(-5, 300),
    st.integers(2**53 - 2, 2**53 + 2),
    st.integers(2**63 - 2, 2**63 + 2),
    st.integers(-(2**63) - 2, -(2**63) + 2),
    st.sampled_from([10**19, 10**30, 10**308, 10**400, -(10**400)]),
)
numpy_scalars = st.one_of(
    integers.filter(lambda v: -(2**63) <= v < 2**63).map(np.int64),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.floats(width=32, allow_nan=True, allow_infinity=True).map(np.float32),
    st.sampled_from([np.int8(-3), np.uint8(200), np.float16(65504), np.bool_(True), np.float64(2.0**63)]),
)
extreme_arrays = st.one_of(
    st.lists(
        st.sampled_from([1, 4096, 1e30, -1e30, np.inf, np.nan, 2.0**63, 2.0**53 + 1, 0.5, 2**63 - 1]),
        min_size=1,
        max_size=4,
    ).map(np.array),
    st.lists(integers, min_size=1, max_size=3),  # Python ints: an object array once one is beyond int64
    st.sampled_from(
        [
            np.array([], dtype=np.int64),
            np.zeros((2, 0)),
            np.array([[1, 2], [3]], dtype=object),
            np.array([2**64 - 1], dtype=np.uint64),
            np.array(["4096"]),
            np.array([1 + 2j]),
        ]
    ),
)
junk = st.one_of(
    integers,
    numpy_scalars,
    extreme_arrays,
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.just([[1, 2], [3]]),
    st.just({"a": 1}),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_value_or_type_errors(fn, *args, **kwargs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow or invalid-cast warning either
        try:
            fn(*args, **kwargs)
        except (ValueError, TypeError):
            pass


@FAST
@given(value=junk, lo=st.sampled_from([None, 0, 1]), hi=st.sampled_from([None, 128, 2**62]))
def test_checks(value, lo, hi):
    for check in (check_int, check_int_array):
        _only_value_or_type_errors(check, "x", value, minimum=lo, maximum=hi)
    _only_value_or_type_errors(check_real, "x", value, minimum=lo, maximum=hi)


@FAST
@given(value=junk)
def test_checked_arrays_are_int64_within_range(value):
    try:
        out = check_int_array("x", value, minimum=0)
    except (ValueError, TypeError):
        return
    assert out.dtype == np.int64 and int(out.min()) >= 0 and int(out.max()) <= INT64_MAX


@FAST
@given(d=junk, k=junk, g=junk, context=junk)
def test_breakeven_and_max_k(d, k, g, context):
    _only_value_or_type_errors(aqua_model.breakeven, d=d, k=k, g=g)
    _only_value_or_type_errors(aqua_model.max_k, d=d, context=context, g=g)


@FAST
@given(d=junk, k=junk, context=junk, prompt=junk, phase=st.sampled_from(["decode", "prefill"]))
def test_component_flops(d, k, context, prompt, phase):
    _only_value_or_type_errors(
        aqua_model.component_flops,
        method="aqua",
        phase=phase,
        d=d,
        k=k,
        context=context,
        prompt=prompt if phase == "prefill" else None,
    )


@FAST
@given(
    d=junk, k=junk, context=junk, dtype_bytes=junk, kv_dtype=st.sampled_from([None, "fp8", "int4", "int3", 4])
)
def test_byte_counts(d, k, context, dtype_bytes, kv_dtype):
    _only_value_or_type_errors(
        aqua_model.decode_read_bytes, method="aqua", d=d, k=k, context=context, kv_dtype=kv_dtype
    )
    _only_value_or_type_errors(
        aqua_model.kv_cache_bytes, method="dense", d=d, context=context, dtype_bytes=dtype_bytes
    )
    _only_value_or_type_errors(
        aqua_model.kv_cache_bytes, method="aqua", d=d, context=context, key_dims=k, kv_dtype=kv_dtype
    )


@FAST
@given(
    context=junk,
    k=junk,
    batch=junk,
    plan=st.one_of(st.sampled_from(["fused", "eager", "x"]), st.just(["fused"]), st.none()),
    kv_dtype=st.sampled_from([None, "fp8", "int4", "nope"]),
)
def test_simulate_and_speedup(context, k, batch, plan, kv_dtype):
    shape = dict(gpu="h200", heads_q=32, heads_kv=8, d=128)
    _only_value_or_type_errors(
        aqua_model.simulate, context=context, k=k, batch=batch, plan=plan, kv_dtype=kv_dtype, **shape
    )
    _only_value_or_type_errors(aqua_model.speedup, context=context, k=32, batch=batch, **shape)
    _only_value_or_type_errors(
        aqua_model.simulate, gpu="h200", model="llama-3.1-8b", context=context, k=k, batch=batch
    )


@FAST
@given(context=junk, k=junk, batch=junk, d=junk)
def test_predict_and_end_to_end(context, k, batch, d):
    _only_value_or_type_errors(
        aqua_model.predict,
        plan="aqua-fused",
        phase="decode",
        context=context,
        batch=batch,
        heads_q=32,
        heads_kv=8,
        d=d,
        k=k,
        gpu="h200",
    )
    _only_value_or_type_errors(
        aqua_model.end_to_end, gpu="h200", model="llama-3.2-1b", context=context, k=k, batch=batch
    )


@settings(max_examples=25, deadline=None)
@given(
    limit=st.one_of(junk, st.sampled_from([1, 64, 2**62])), batch=junk, gpu=st.sampled_from(["h200", None, 3])
)
def test_time_breakeven(limit, batch, gpu):
    kwargs = dict(heads_q=32, heads_kv=8, d=128, k=32, batch=batch, limit=limit)
    if gpu is not None:
        kwargs["gpu"] = gpu
    _only_value_or_type_errors(aqua_model.time_breakeven, **kwargs)


@settings(max_examples=25, deadline=None)
@given(d=junk, context=junk, batch=junk, page=junk)
def test_compare(d, context, batch, page):
    _only_value_or_type_errors(aqua_model.compare, d=d, context=context, batch=batch, page=page)


@FAST
@given(
    convention=st.fixed_dictionaries(
        {},
        optional={
            "flops_per_mac": junk,
            "softmax_flops_per_score": junk,
            "select_flops_per_dim": junk,
            "selection": st.sampled_from(["sort", "select", "none", 1]),
        },
    )
)
def test_convention(convention):
    def build_and_use():
        conv = aqua_model.Convention(**convention)
        aqua_model.breakeven(convention=conv)

    _only_value_or_type_errors(build_and_use)


# -- commands ----------------------------------------------------------------------------------------

as_text = st.one_of(
    integers.map(str), st.sampled_from(["0", "-1", "1e400", "nan", "inf", "abc", "", "4096.5", "9" * 400])
)


def _command(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusing a value: exit 2 with one line
            code = exc.code
    assert code in (0, 2), (argv, code, err.getvalue())
    if code == 2:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err.getvalue(), (
            argv,
            err.getvalue(),
        )


@settings(max_examples=40, deadline=None)
@given(d=as_text, k=as_text, g=as_text)
def test_breakeven_command(d, k, g):
    _command(["breakeven", "--d", d, "--k", k, "--g", g])


@settings(max_examples=40, deadline=None)
@given(d=as_text, k=as_text, context=as_text, dtype_bytes=as_text)
def test_costs_command(d, k, context, dtype_bytes):
    _command(["costs", "--d", d, "--k", k, "--context", context, "--dtype-bytes", dtype_bytes, "--json"])


@settings(max_examples=25, deadline=None)
@given(context=as_text, batch=as_text, k=as_text)
def test_simulate_command(context, batch, k):
    _command(
        [
            "simulate",
            "--heads-q",
            "32",
            "--heads-kv",
            "8",
            "--d",
            "128",
            "--context",
            context,
            "--batch",
            batch,
            "--k",
            k,
            "--json",
        ]
    )


@settings(max_examples=15, deadline=None)
@given(d=as_text, context=as_text, tokens=as_text)
def test_compare_command(d, context, tokens):
    _command(["compare", "--d", d, "--context", context, "--tokens", tokens, "--json"])
