"""Issue 23, items 1-6 and 8-11: no wrong answers. Each test here failed before its fix: a
result that looked right and was not, an input accepted silently, or a message that named the
wrong thing."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqua_model.cli import main

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"
INSAMPLE = H200 / "heldout-898775459-insample.jsonl"
HELDOUT = H200 / "heldout-898775459.jsonl"
SHAPE = ["--heads-q", "32", "--heads-kv", "8", "--d", "128"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the command line: (exit status, stdout, stderr); argparse's own errors exit 2."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, *fragments: str) -> str:
    """A single 'aqua-model ...: error: ...' line holding every fragment, and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- item 1: an empty held-out file met no target ----------------------------------------------------


def test_empty_heldout_is_refused_and_writes_no_status(capsys, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    status = tmp_path / "status.toml"
    argv = ["validate", "report", str(INSAMPLE), "--no-cases", "--heldout", str(empty)]
    code, out, err = cli(capsys, *argv, "--status-out", str(status))
    assert code == 2
    one_line_error(err, "--heldout", "no result rows")
    assert "all met" not in out
    assert not status.exists()


def test_targets_line_says_all_met_only_when_every_target_was_judged():
    from aqua_model.commands.validate_cmd import targets_line

    met = {"target": "a", "met": True}
    assert targets_line([met]) == "held-out targets: all met"
    line = targets_line([met, {"target": "b", "met": None}])
    assert "all met" not in line and "1 not evaluated" in line and "b" in line
    line = targets_line([{"target": "c", "met": False}, {"target": "b", "met": None}])
    assert "1 MISSED: c" in line and "1 not evaluated" in line


def test_heldout_rows_of_one_phase_only_leave_targets_not_evaluated(capsys, tmp_path):
    """A held-out file with decode rows only: the prefill targets have no cases, so not 'all met'."""
    decode_only = tmp_path / "decode.jsonl"
    lines = [ln for ln in HELDOUT.read_text().splitlines() if '"phase": "decode"' in ln]
    assert lines
    decode_only.write_text("\n".join(lines) + "\n")
    code, out, _ = cli(
        capsys, "validate", "report", str(INSAMPLE), "--no-cases", "--heldout", str(decode_only)
    )
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("held-out targets:") and "all met" not in last and "not evaluated" in last


# -- item 2: a config.json field left out takes transformers' default for that model_type -----------

HF = ROOT / "tests" / "data" / "hf_configs"
#: A config of each supported model_type, and the optional fields dropped from it in the tests.
HF_FILES = {
    "llama": "llama-3.2-3b.json",
    "mistral": "mistral-nemo-12b.json",
    "qwen2": "qwen2.5-14b.json",
    "gemma2": "gemma-2-9b.json",
}


def _hf(name: str, drop: tuple[str, ...] = (), **change) -> dict:
    import json

    raw = json.loads((HF / name).read_text())
    for field in drop:
        raw.pop(field, None)
    raw.update(change)
    return raw


def _gemma(drop: tuple[str, ...] = (), **change) -> dict:
    """A Gemma (1) config: Gemma-2-9B's fields under model_type gemma."""
    raw = _hf("gemma-2-9b.json", drop=("hidden_activation", "sliding_window", "sliding_window_size", *drop))
    raw.update(model_type="gemma", **change)
    return raw


@pytest.mark.parametrize("model_type", ["gemma", "gemma2"])
def test_gemma_without_head_dim_takes_256_not_hidden_over_heads(tmp_path, model_type):
    from aqua_model.models.hf_config import map_hf_config

    raw = _gemma() if model_type == "gemma" else _hf("gemma-2-9b.json")
    raw.pop("head_dim")
    assert raw["hidden_size"] // raw["num_attention_heads"] == 224  # what it was taken as before
    mapped = map_hf_config(raw, tmp_path / "config.json")
    assert mapped["head_dim"] == 256
    assert "default" in mapped["sources"]["head_dim"]


def test_defaults_table_matches_transformers_autoconfig():
    """The table read without transformers holds what transformers' config classes give."""
    pytest.importorskip("transformers")
    from aqua_model.models.hf_config import HF_DEFAULTS, hf_defaults

    for model_type in HF_DEFAULTS:
        raw = {"hidden_size": 4608, "num_attention_heads": 24}  # every optional field absent
        assert hf_defaults(model_type, raw, use_transformers=True) == hf_defaults(
            model_type, raw, use_transformers=False
        ), model_type


@pytest.mark.parametrize("name", [*HF_FILES.values(), "gemma"])
@pytest.mark.parametrize(
    "drop",
    [("head_dim",), ("num_key_value_heads",), ("sliding_window",), ("hidden_act", "hidden_activation")],
)
def test_mapped_shape_matches_autoconfig_for_each_dropped_field(tmp_path, name, drop):
    """Drop an optional field; the mapped head_dim, kv heads and window equal what
    transformers.AutoConfig builds from the same fields (the config it would run)."""
    transformers = pytest.importorskip("transformers")
    from aqua_model.models.hf_config import map_hf_config

    raw = _gemma(drop=drop) if name == "gemma" else _hf(name, drop=drop)
    for field in drop:
        raw.pop(field, None)
    given = {k: v for k, v in raw.items() if not k.startswith("_") and k != "model_type"}
    cfg = transformers.AutoConfig.for_model(raw["model_type"], **given)
    if cfg.num_attention_heads % cfg.num_key_value_heads:  # e.g. Qwen2's default of 32 kv heads for 40
        with pytest.raises(ValueError, match="num_key_value_heads.*default"):
            map_hf_config(raw, tmp_path / "config.json")
        return
    mapped = map_hf_config(raw, tmp_path / "config.json")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert mapped["head_dim"] == head_dim
    assert mapped["kv_heads"] == cfg.num_key_value_heads
    window = getattr(cfg, "sliding_window", None)
    if raw["model_type"] in ("mistral", "gemma2") and window and window < cfg.max_position_embeddings:
        assert mapped["sliding_window"] == window
    else:
        assert mapped["sliding_window"] in (0, window)


# -- item 3: a plan whose kernel cannot run the shape says it is model-only there --------------------


def test_triton_plan_at_a_head_dim_its_kernel_refuses_is_model_only(capsys):
    from aqua_model import simulate

    sim = simulate(gpu="h200", heads_q=32, heads_kv=8, d=100, context=32768, batch=8, k=32)
    assert sim.aqua.limit.startswith("model-only at d=100")
    assert "model-only at d=100" in sim.statuses["aqua-fused"]
    assert sim.dense.limit == ""  # torch SDPA runs any head dim
    argv = ["simulate", "--heads-q", "32", "--heads-kv", "8", "--d", "100", "--context", "32768"]
    code, out, _ = cli(capsys, *argv, "--batch", "8", "--k", "32")
    assert code == 0
    speedup_line = next(line for line in out.splitlines() if line.startswith("speedup"))
    assert "model-only at d=100" in speedup_line


@pytest.mark.parametrize("d,limited", [(64, False), (128, False), (100, True), (8, True), (96, True)])
def test_shape_limit_follows_the_triton_rule(d, limited):
    """The Triton decode kernel takes power-of-two head dims >= 16 (kernels/triton_decode.py)."""
    from aqua_model.plans import build_plan
    from aqua_model.plans.shape_limits import shape_limit

    plan = build_plan("aqua-fused", phase="decode", selection="group")
    assert bool(shape_limit(plan, d=d)) is limited
    assert shape_limit(build_plan("dense-fused", phase="decode", selection="group"), d=d) == ""


def test_prediction_status_names_the_limit():
    from aqua_model import predict

    p = predict(
        plan="aqua-fused",
        phase="decode",
        context=4096,
        batch=1,
        heads_q=8,
        heads_kv=8,
        d=48,
        k=16,
        gpu="h200",
    )
    assert p.status.startswith("model-only at d=48")


@pytest.mark.parametrize(
    "argv", [["simulate", "--d", "1", "--k", "1"], ["breakeven", "--d", "1", "--k", "1"]]
)
def test_head_dim_one_is_refused(capsys, argv):
    extra = ["--heads-q", "8", "--heads-kv", "8", "--context", "4096"] if argv[0] == "simulate" else []
    code, _, err = cli(capsys, *argv, *extra)
    assert code == 2
    one_line_error(err, "--d", ">= 2", "got 1")


# -- item 4: element sizes the sector model cannot count are refused ---------------------------------


@pytest.mark.parametrize("size", ["3", "5", "64", "16"])
def test_costs_refuses_element_sizes_that_do_not_exist(capsys, size):
    code, _, err = cli(capsys, "costs", "--dtype-bytes", size, "--json")
    assert code == 2
    one_line_error(err, "--dtype-bytes", size)


@pytest.mark.parametrize("size", [3, 5, 64])
def test_api_refuses_element_sizes_that_do_not_exist(size):
    from aqua_model.costs import decode_read_bytes, kv_cache_bytes
    from aqua_model.costs.peers import decode_bytes

    with pytest.raises(ValueError, match="dtype_bytes must be one of 1, 2, 4, 8"):
        decode_read_bytes(method="aqua", d=128, k=96, context=4096, dtype_bytes=size, layout="token-major")
    with pytest.raises(ValueError, match="dtype_bytes"):
        kv_cache_bytes(method="dense", d=128, context=4096, dtype_bytes=size)
    with pytest.raises(ValueError, match="dtype_bytes"):
        decode_bytes(method="dense", d=128, context=4096, dtype_bytes=size)


def test_sector_must_hold_whole_elements():
    from aqua_model.costs import decode_read_bytes

    with pytest.raises(ValueError, match="sector_bytes must be a multiple"):
        decode_read_bytes(
            method="aqua", d=128, k=96, context=64, dtype_bytes=4, layout="token-major", sector_bytes=6
        )


def test_token_major_bytes_between_dim_major_and_dense_for_every_accepted_size():
    """Property: a token-major read of k of d channels moves at least the k*N*s bytes of a
    dim-major read (whole sectors hold the selected channels) and at most all of K (dense)."""
    from hypothesis import given, settings, strategies as st

    from aqua_model.costs import decode_read_bytes
    from aqua_model.costs.dtypes import ELEMENT_BYTES

    @settings(max_examples=80, deadline=None, derandomize=True)
    @given(
        d=st.integers(2, 512),
        frac=st.floats(0.0, 1.0),
        s=st.sampled_from(ELEMENT_BYTES),
        sectors=st.sampled_from([1, 2, 4]),
        pattern=st.sampled_from(["random", "prefix"]),
    )
    def check(d, frac, s, sectors, pattern):
        k = max(1, round(frac * d))
        sector = 32 * sectors
        kw = {"d": d, "k": k, "context": 1000, "dtype_bytes": s}
        dim = float(decode_read_bytes(method="aqua", **kw))
        tok = float(
            decode_read_bytes(method="aqua", layout="token-major", pattern=pattern, sector_bytes=sector, **kw)
        )
        dense = float(decode_read_bytes(method="dense", **kw))
        values = 1000 * d * s  # V, read in full by both layouts
        keys_all = dense - values
        # prefix: whole sectors from the row start; a row shorter than a sector still costs one sector
        upper = keys_all if pattern == "random" else max(keys_all, 1000 * sector * -(-k * s // sector))
        assert dim <= tok * (1 + 1e-9) and tok <= (upper + values) * (1 + 1e-9), (
            d,
            k,
            s,
            sector,
            dim,
            tok,
            dense,
        )

    check()


# -- item 5: shapes that cannot fit the device are refused or flagged --------------------------------


def test_predict_refuses_a_kv_cache_beyond_the_device():
    from aqua_model import predict

    with pytest.raises(ValueError, match="KV cache needs"):
        predict(
            plan="dense-fused",
            phase="decode",
            context=2**62,
            batch=1,
            heads_q=8,
            heads_kv=8,
            d=128,
            k=128,
            gpu="h200",
        )


def test_end_to_end_flags_a_model_that_does_not_fit_one_gpu():
    from aqua_model import end_to_end
    from aqua_model.models import load

    e2e = end_to_end(gpu="rtx4090", model="llama-3.1-70b", context=4096, k=32)
    weights_bytes = float(load("llama-3.1-70b").weight_bytes())
    assert weights_bytes > 24e9  # 70B parameters in bf16 against the 4090's 24 GB
    assert e2e.fits is False
    assert e2e.one_gpu_fit["memory_bytes"] >= weights_bytes
    assert e2e.one_gpu_fit["smallest_tensor_parallel"] != 1  # None: no tensor_parallel of one node fits
    assert end_to_end(gpu="h200", model="llama-3.1-8b", context=4096, k=32).fits is True


# -- item 6: explicit input that was silently ignored, or parsed as something else ------------------


def test_simulate_refuses_a_model_and_an_explicit_shape(capsys):
    argv = ["simulate", "--model", "llama-3.1-8b", "--heads-q", "7", "--heads-kv", "3", "--d", "64"]
    code, out, err = cli(capsys, *argv, "--context", "4096", "--k", "32")
    assert code == 2 and not out
    one_line_error(err, "--model", "--heads-q", "not both")


@pytest.mark.parametrize("layers", ["x", -1, float("nan"), 1, 32])
@pytest.mark.parametrize("fn", ["simulate", "speedup"])
def test_layers_with_a_model_is_refused(fn, layers):
    import aqua_model

    with pytest.raises((ValueError, TypeError), match="layers"):
        getattr(aqua_model, fn)(gpu="h200", model="llama-3.1-8b", context=4096, k=32, layers=layers)


@pytest.mark.parametrize("layers", ["x", -1, float("nan")])
def test_bad_layers_with_an_explicit_shape_is_refused(layers):
    from aqua_model import simulate

    with pytest.raises((ValueError, TypeError), match="layers"):
        simulate(gpu="h200", heads_q=8, heads_kv=8, d=128, context=4096, k=32, layers=layers)


def test_all_reduce_without_tp_is_refused(capsys):
    argv = ["simulate", "--model", "llama-3.1-8b", "--context", "4096", "--k", "32", "--all-reduce", "tree"]
    code, _, err = cli(capsys, *argv)
    assert code == 2
    one_line_error(err, "--all-reduce", "--tp")


def test_flag_prefixes_are_not_expanded(capsys):
    code, _, err = cli(capsys, "costs", "--cont", "4096")
    assert code == 2
    one_line_error(err, "--cont")
    code, _, err = cli(capsys, "breakeven", "--d", "128", "--k", "32", "--proj", "folded")
    assert code == 2


def test_every_parser_of_the_package_refuses_abbreviations():
    """allow_abbrev=False on every argparse parser in aqua_model/ (the CLI's Parser sets it)."""
    import re

    for path in (ROOT / "aqua_model").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"argparse\.ArgumentParser\(", text):
            call = text[m.end() : m.end() + 200].split("\n\n")[0]
            assert "allow_abbrev=False" in call, (path, call)


@pytest.mark.parametrize("text", ["1_024", "\u0661\u0662\u0668", "+64", " 64", "64 ", "0x40", "6.4e1", ""])
@pytest.mark.parametrize("flag", ["--d", "--context"])
def test_integer_flags_take_plain_ascii_digits_only(capsys, flag, text):
    code, _, err = cli(capsys, "costs", flag, text)
    assert code == 2
    one_line_error(err, flag, "plain integer", repr(text))


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1_0", " 1", "+1", "\u0661"])
def test_number_flags_take_finite_ascii_decimals_only(capsys, text):
    code, _, err = cli(capsys, "costs", "--softmax-flops", text)
    assert code == 2
    # argparse reads '-inf' as an option, not a value: "expected one argument"
    one_line_error(err, "--softmax-flops", *([] if text.startswith("-") else [repr(text)]))


def test_plain_numbers_still_parse(capsys):
    code, out, _ = cli(
        capsys, "costs", "--d", "64", "--k", "16", "--context", "1024", "--softmax-flops", "5.0"
    )
    assert code == 0 and "d=64" in out


# -- item 8: validate and figures accepted nonsense ---------------------------------------------------


def test_validate_report_refuses_rows_of_an_unknown_plan(capsys, tmp_path):
    import json

    rows = [json.loads(line) for line in INSAMPLE.read_text().splitlines() if line.strip()]
    first = next(r for r in rows if r.get("phase") == "decode")
    first["case_id"] = first["case_id"].replace(f"decode/{first['plan']}/", "decode/foo/", 1)
    first["plan"] = "foo"
    bad = tmp_path / "foo.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli(capsys, "validate", "report", str(bad), "--no-cases")
    assert code == 2
    one_line_error(err, "decode/foo", "unknown plan")
    assert "decode/foo" not in out
    code, _, err = cli(capsys, "validate", "report", str(INSAMPLE), "--no-cases", "--heldout", str(bad))
    assert code == 2
    one_line_error(err, "--heldout", "decode/foo")


@pytest.mark.parametrize("value", ["nan", "-5", "0"])
@pytest.mark.parametrize("step", ["run", "calibrate"])
def test_deadline_must_be_a_positive_number_of_seconds(capsys, tmp_path, step, value):
    argv = ["validate", step, "--out", str(tmp_path / "out.x"), "--device", "cpu", f"--deadline-s={value}"]
    if step == "run":
        argv += ["--profile", str(H200 / "h200-calibrated.toml")]
    code, _, err = cli(capsys, *argv)
    assert code == 2
    one_line_error(err, "--deadline-s", value)
    assert not (tmp_path / "out.x").exists()


@pytest.mark.parametrize("commit", ["notahash", "abc", "ABCDEF1", "g" * 40, "a" * 41])
def test_model_commit_must_be_a_hash(capsys, tmp_path, commit):
    out = tmp_path / "cases.jsonl"
    code, _, err = cli(
        capsys, "validate", "sample", "--seed", "1", "--n", "5", "--out", str(out), "--model-commit", commit
    )
    assert code == 2
    one_line_error(err, "--model-commit", repr(commit))
    assert not out.exists()
    argv = [
        "validate",
        "run",
        "--profile",
        str(H200 / "h200-calibrated.toml"),
        "--out",
        str(tmp_path / "r.jsonl"),
    ]
    code, _, err = cli(capsys, *argv, "--device", "cpu", "--model-commit", commit)
    assert code == 2
    one_line_error(err, "--model-commit")


def test_model_commit_takes_a_short_or_full_hash(tmp_path):
    from aqua_model.commands.validate_cmd import _check_commit

    _check_commit("--model-commit", "359239a")
    _check_commit("--model-commit", "359239a3e4" * 4)


@pytest.mark.parametrize("argv", [["figures", "--out", ""], ["figures", "--out", " "]])
def test_figures_out_empty_is_refused(capsys, monkeypatch, tmp_path, argv):
    monkeypatch.chdir(tmp_path)  # where '' wrote before the fix
    code, _, err = cli(capsys, *argv, "--only", "kv_memory")
    assert code == 2
    one_line_error(err, "--out", "must name a path")
    assert not list(tmp_path.iterdir())


def test_report_profile_must_be_calibrated(capsys):
    code, out, err = cli(capsys, "report", "--profile", "h200")
    assert code == 2 and not out  # refused before any table is printed
    one_line_error(err, "--profile", "calibrated", "datasheet")


# -- item 9: validate sample --n is bounded -----------------------------------------------------------


def test_sample_n_is_bounded_and_the_bound_is_in_the_help(capsys, tmp_path):
    from aqua_model.cli import build_parser
    from aqua_model.commands.validate_cmd import MAX_SAMPLE_CASES

    out = tmp_path / "cases.jsonl"
    code, _, err = cli(capsys, "validate", "sample", "--seed", "1", "--n", "100000000000", "--out", str(out))
    assert code == 2
    one_line_error(err, "--n", str(MAX_SAMPLE_CASES), "100000000000")
    assert not out.exists()
    sample = build_parser()._subparsers._group_actions[0].choices["validate"]
    sample = sample._subparsers._group_actions[0].choices["sample"]
    assert f"{MAX_SAMPLE_CASES:,}" in sample.format_help()


# -- item 10: messages that named the wrong thing, or nothing ----------------------------------------


def test_compare_at_a_short_context_takes_a_page_no_longer_than_it(capsys):
    code, _out, err = cli(capsys, "compare", "--context", "8")
    assert code == 0, err
    from aqua_model.simulator.comparison import default_settings

    assert default_settings(d=128, context=8)["p"] == 8
    assert default_settings(d=128, context=4096)["p"] == 16


def test_prefill_beyond_the_model_names_prompt_and_context(capsys):
    argv = [
        "simulate",
        "--model",
        "llama-3.1-8b",
        "--phase",
        "prefill",
        "--context",
        "1",
        "--prompt",
        "131072",
    ]
    code, _, err = cli(capsys, *argv, "--k", "32")
    assert code == 2
    one_line_error(err, "131073", "prompt up to 131072", "context up to 1")


def test_time_breakeven_says_decode_only():
    from aqua_model import time_breakeven

    with pytest.raises(ValueError, match="decode only"):
        time_breakeven(gpu="h200", heads_q=8, heads_kv=8, d=128, k=32, phase="prefill")


@pytest.mark.parametrize("path,fragment", [("/tmp", "is a folder"), ("/dev/null", "not a regular file")])
def test_gpu_path_that_is_not_a_file_says_what_it_is(capsys, path, fragment):
    code, _, err = cli(capsys, "simulate", "--gpu", path, *SHAPE, "--context", "4096", "--k", "32")
    assert code == 2
    one_line_error(err, path, fragment)


def _huge_config(tmp_path, **change) -> Path:
    import json

    raw = json.loads((HF / "llama-3.2-3b.json").read_text())
    raw.update(change)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


def test_config_size_beyond_any_model_names_the_file_and_field(capsys, tmp_path):
    folder = _huge_config(tmp_path, hidden_size=10**400)
    for argv in (
        ["models", "show", str(folder)],
        ["simulate", "--model", str(folder), "--context", "64", "--k", "32"],
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 2, err
        line = one_line_error(err, "config.json", "'hidden_size'")
        assert "--d" not in line and "OverflowError" not in line


def test_derived_head_dim_beyond_the_cost_model_names_the_config(capsys, tmp_path):
    folder = _huge_config(
        tmp_path, hidden_size=2**39, num_attention_heads=1, num_key_value_heads=1, head_dim=None
    )
    code, _, err = cli(capsys, "simulate", "--model", str(folder), "--context", "64", "--k", "32")
    assert code == 2
    line = one_line_error(err, "config.json", "head_dim")
    assert "--d" not in line


def test_unwritable_output_is_refused_before_any_work(capsys):
    code, _, err = cli(capsys, "validate", "sample", "--seed", "1", "--n", "5", "--out", "/proc/x/y.jsonl")
    assert code == 2
    one_line_error(err, "--out", "/proc/x/y.jsonl", "cannot be written")


def test_calibrate_refuses_an_unwritable_output_before_benchmarking(capsys, monkeypatch):
    import aqua_model.validate.microbench as mb

    def boom(**_):
        raise AssertionError("benchmarks ran before the output was checked")

    monkeypatch.setattr(mb, "calibrate_profile", boom)
    code, _, err = cli(
        capsys, "validate", "calibrate", "--out", "/proc/x/p.toml", "--device", "cpu", "--quick"
    )
    assert code == 2
    one_line_error(err, "--out", "cannot be written")


@pytest.mark.parametrize("kind", ["toml", "cases", "results"])
def test_binary_input_file_is_named(capsys, tmp_path, kind):
    binary = tmp_path / ("x.toml" if kind == "toml" else "x.jsonl")
    binary.write_bytes(b"\x00\x01\xff\xfe binary")
    if kind == "toml":
        argv = ["simulate", "--gpu", str(binary), *SHAPE, "--context", "64", "--k", "32"]
    elif kind == "cases":
        argv = ["validate", "run", "--profile", str(H200 / "h200-calibrated.toml"), "--cases", str(binary)]
        argv += ["--out", str(tmp_path / "r.jsonl"), "--device", "cpu"]
    else:
        argv = ["validate", "report", str(binary)]
    code, _, err = cli(capsys, *argv)
    assert code == 2
    one_line_error(err, str(binary), "UTF-8")


def test_empty_results_file_is_refused(capsys, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = cli(capsys, "validate", "report", str(empty))
    assert code == 2
    one_line_error(err, "no result rows")


@pytest.mark.parametrize(
    "call,fragment",
    [
        (
            lambda a, np: a.simulate(gpu=["h200"], heads_q=8, heads_kv=8, d=128, context=64, k=32),
            "gpu must be",
        ),
        (
            lambda a, np: a.predict(
                plan="dense-fused",
                phase="decode",
                context=64,
                batch=(8,),
                heads_q=8,
                heads_kv=8,
                d=128,
                k=32,
                gpu="h200",
            ),
            "batch",
        ),
        (
            lambda a, np: a.time_breakeven(gpu="h200", heads_q=8, heads_kv=8, d=128, k=np.array([16, 32])),
            "k must be an integer",
        ),
        (lambda a, np: a.compare(d=128, context=4096, layouts=["x"]), "layouts must be a dict"),
        (lambda a, np: a.compare(d=128, context=4096, methods="aqua"), "methods must be a non-empty list"),
        (lambda a, np: a.compare(d=128, context=4096, layouts={"foo": "dim-major"}), "layouts names 'foo'"),
    ],
)
def test_api_errors_name_the_argument(call, fragment):
    import numpy as np

    import aqua_model

    with pytest.raises((ValueError, TypeError), match=fragment):
        call(aqua_model, np)


# -- item 11: lost output and unwritable figure files -----------------------------------------------


def test_stdout_closed_at_start_is_reported(capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "stdout", None)  # what Python sets when started with `>&-`
    code, _, err = cli(capsys, "costs")
    assert code == 1
    one_line_error(err, "standard output is closed")


def test_figures_refuse_an_output_file_that_is_a_folder(capsys, tmp_path):
    (tmp_path / "kv_memory.png").mkdir()
    code, _, err = cli(capsys, "figures", "--out", str(tmp_path), "--only", "kv_memory")
    assert code == 2
    one_line_error(err, "--out", "kv_memory.png", "is a folder")
    assert not (tmp_path / "kv_memory.pdf").exists()  # refused before any figure is written


# -- found by the fuzz test (item 15): a control character in an argument broke the one-line error --


@pytest.mark.parametrize("junk", ["a\nb", "x\x1ey", "p\u2028q"])
def test_parser_error_with_a_control_character_stays_one_line(capsys, junk):
    code, _, err = cli(capsys, "hardware", "list", junk)
    assert code == 2
    one_line_error(err, "unrecognized arguments")


def test_report_checks_its_heldout_outputs_before_printing(capsys):
    argv = ["validate", "report", str(INSAMPLE), "--no-cases", "--heldout", str(HELDOUT)]
    code, out, err = cli(capsys, *argv, "--status-out", "/proc/x/status.toml")
    assert code == 2 and not out
    one_line_error(err, "--status-out", "cannot be written")
