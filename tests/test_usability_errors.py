"""Issue 14: every bad input is a one-line error that names the flag or argument, its value and
what is allowed, from the command line (exit 2, no traceback) and from the Python API
(ValueError / TypeError). Each case here failed before its fix (a traceback, or a silent result)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import aqua_model
from aqua_model import Convention, breakeven, max_k, simulate
from aqua_model._checks import INT64_MAX, check_int, check_int_array
from aqua_model.cli import build_parser, main
from aqua_model.hardware import load as load_hardware

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"
HUGE = "9" * 400  # an integer beyond any float (float(int(HUGE)) overflows)
BEYOND_INT64 = str(2**63)  # one past int64 ("Python int too large to convert to C long" before)
SHAPE = ["--heads-q", "32", "--heads-kv", "8", "--d", "128"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, *fragments: str) -> None:
    """A single 'aqua-model ...: error: ...' line holding every fragment, and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# -- tracebacks before: integers beyond a float or beyond int64 -------------------------------------


@pytest.mark.parametrize(
    "argv,fragments",
    [
        (["breakeven", "--d", HUGE], ("--d", "<=")),
        (["costs", "--d", HUGE], ("--d",)),
        (["costs", "--context", HUGE], ("--context", "int64")),
        (["costs", "--context", BEYOND_INT64], ("--context", str(INT64_MAX))),
        (["simulate", "--context", BEYOND_INT64, "--k", "32", *SHAPE], ("--context", "int64")),
        (
            ["simulate", "--context", "4096", "--batch", BEYOND_INT64, "--k", "32", *SHAPE],
            ("--batch", "int64"),
        ),
        (["simulate", "--context", HUGE, "--k", "32", *SHAPE], ("--context",)),
        (["compare", "--context", HUGE], ("--context",)),
    ],
)
def test_huge_integers_are_one_line_errors(capsys, argv, fragments):
    code, _, err = cli(capsys, *argv)
    assert code == 2
    one_line_error(err, *fragments)


def test_huge_integers_from_python():
    with pytest.raises(ValueError, match=r"d must be <= 1048576"):
        breakeven(d=10**400)
    with pytest.raises(ValueError, match="context must be <="):
        max_k(d=128, context=10**400)
    with pytest.raises(ValueError, match="int64"):
        aqua_model.kv_cache_bytes(method="dense", d=128, context=2**63)
    with pytest.raises(ValueError, match="batch must be <="):
        simulate(gpu="h200", heads_q=32, heads_kv=8, d=128, context=4096, batch=2**63, k=32)


def test_integers_above_2_53_are_integers_not_non_integral():
    # 2**53 + 1 is the first integer a float cannot hold; before, float(v) != int(v) called it non-integral
    assert check_int("context", 2**53 + 1) == 2**53 + 1
    with pytest.raises(ValueError) as err:
        breakeven(d=2**53 + 1)
    assert "non-integral" not in str(err.value) and "<= 1048576" in str(err.value)
    assert int(check_int_array("context", [2**53 + 1])[0]) == 2**53 + 1


def test_array_with_an_extreme_value_is_refused_not_wrapped():
    # before: numpy warned about the cast and the context became negative
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="context must be <= 9223372036854775807"):
            simulate(gpu="h200", heads_q=32, heads_kv=8, d=128, context=np.array([4096, 1e30]), k=32)
        with pytest.raises(ValueError, match="int64"):
            check_int_array("context", np.array([1, 2**64 - 1], dtype=np.uint64))
        with pytest.raises(ValueError, match="context"):
            check_int_array("context", [4096, 10**30])  # a list of Python ints: an object array


def test_convention_with_an_overflowing_count_is_refused():
    # before: Convention(flops_per_mac=1e308) was accepted and breakeven raised OverflowError
    with pytest.raises(ValueError, match=r"flops_per_mac must be <= 1000000.0, got 1e\+308"):
        Convention(flops_per_mac=1e308)
    with pytest.raises(ValueError, match="select_flops_per_dim must be <="):
        Convention(selection="select", select_flops_per_dim=1e308)
    # the largest allowed counts still give a finite break-even at the largest head dimension
    result = breakeven(
        d=1 << 20, k=1, g=1 << 20, convention=Convention(flops_per_mac=1e6, softmax_flops_per_score=1e6)
    )
    assert np.isfinite(result.n_star) and result.n_min >= 1


def test_plan_of_the_wrong_type_names_plan():
    # before: "unhashable type: 'list'"
    with pytest.raises(TypeError, match="plan must be one of .*got \\['fused'\\]"):
        simulate(gpu="h200", heads_q=32, heads_kv=8, d=128, context=4096, k=32, plan=["fused"])


def test_time_breakeven_without_gpu_names_gpu():
    # before: KeyError: 'gpu'
    with pytest.raises(TypeError, match="gpu"):
        aqua_model.time_breakeven(model="llama-3.1-8b", k=32, batch=8)


# -- silent results before ---------------------------------------------------------------------------


def test_prompt_in_decode_is_refused_on_the_command_line(capsys):
    # before: `simulate --model ... --prompt 512` in decode ignored --prompt (exit 0)
    code, out, err = cli(
        capsys, "simulate", "--model", "llama-3.1-8b", "--context", "4096", "--k", "32", "--prompt", "512"
    )
    assert code == 2 and not out
    one_line_error(err, "--prompt 512", "--phase prefill")
    with pytest.raises(ValueError, match="prompt is only used when phase='prefill'"):
        simulate(gpu="h200", model="llama-3.1-8b", context=4096, k=32, prompt=512)


def _calibrated(tmp_path: Path, **calibration: object) -> Path:
    text = (H200 / "h200-calibrated.toml").read_text()
    out, section = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip()
        key = line.split("=", 1)[0].strip()
        if section == "[calibration]" and key in calibration:
            value = calibration[key]
            if value is None:
                continue
            line = f"{key} = {json.dumps(value)}"
        out.append(line)
    path = tmp_path / "cal.toml"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"base": "nope"}, "calibration.base' is 'nope', which names no datasheet profile"),
        ({"base": None}, "missing required field 'calibration.base'"),
        (
            {"launch_overhead_s": -3.5e-06},
            "calibration.launch_overhead_s' must be a finite number of seconds > 0",
        ),
        (
            {"dispatch_interval_s": 0.0},
            "calibration.dispatch_interval_s' must be a finite number of seconds > 0",
        ),
    ],
)
def test_bad_calibrated_profile_is_refused_on_loading(tmp_path, capsys, change, fragment):
    # before: accepted, and `validate run` / `--repredict` failed later elsewhere
    path = _calibrated(tmp_path, **change)
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_hardware(path)
    code, _, err = cli(capsys, "hardware", "show", str(path))
    assert code == 2
    one_line_error(err, fragment)


def test_the_committed_calibrated_profile_loads_with_its_base():
    assert load_hardware(H200 / "h200-calibrated.toml").calibration["base"] == "h200-sxm"


# -- validate: paths -----------------------------------------------------------------------------------


def test_validate_report_of_a_folder(capsys, tmp_path):
    code, _, err = cli(capsys, "validate", "report", str(tmp_path))  # before: IsADirectoryError
    assert code == 2
    one_line_error(err, "is a folder")


def test_validate_report_markdown_below_a_file(capsys, tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    code, out, err = cli(
        capsys,
        "validate",
        "report",
        str(H200 / "validation_token_major.jsonl"),
        "--markdown",
        str(blocker / "x.md"),
    )  # before: FileExistsError after the report was printed
    assert code == 2 and not out
    one_line_error(err, "--markdown", "is a file, not a folder")


def test_validate_calibrate_checks_out_before_measuring(capsys, tmp_path, monkeypatch):
    import aqua_model.validate.microbench as microbench

    def measuring(**kwargs):  # before: 3 s of benchmarks, then IsADirectoryError
        raise AssertionError("the benchmarks ran before --out was checked")

    monkeypatch.setattr(microbench, "calibrate_profile", measuring)
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    for out in (tmp_path, blocker / "x.toml"):
        code, _, err = cli(capsys, "validate", "calibrate", "--out", str(out), "--device", "cpu", "--quick")
        assert code == 2
        one_line_error(err, "--out")
    code, _, err = cli(
        capsys,
        "validate",
        "calibrate",
        "--out",
        str(tmp_path / "p.toml"),
        "--device",
        "cpu",
        "--base",
        "nope",
    )
    assert code == 2
    one_line_error(err, "--base 'nope'")


def test_validate_run_checks_out(capsys, tmp_path):
    code, _, err = cli(
        capsys,
        "validate",
        "run",
        "--profile",
        str(H200 / "h200-calibrated.toml"),
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
    )
    assert code == 2
    one_line_error(err, "--out", "is a folder")


@pytest.mark.parametrize("target", ["file", "below-file"])
def test_figures_out_must_be_a_folder(capsys, tmp_path, target):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    out = blocker if target == "file" else blocker / "sub"
    code, _, err = cli(
        capsys, "figures", "--out", str(out), "--only", "breakeven"
    )  # before: FileExistsError / NotADirectoryError
    assert code == 2
    one_line_error(err, "--out")


def test_figures_root_that_does_not_exist(capsys, tmp_path):
    code, _, err = cli(
        capsys, "figures", "--out", str(tmp_path), "--root", str(tmp_path / "nonexistent"), "--only", "parity"
    )
    assert code == 2  # before: accepted, and the figures drew "no measurements committed"
    one_line_error(err, "--results", "is not a folder")
    assert not list(tmp_path.glob("*.pdf"))


# -- usability -----------------------------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"aqua-model {aqua_model.__version__}"


def _options(parser, path=()):
    """(command path, action) for every option of every (sub)command."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, path + (name,))
        elif action.option_strings and not isinstance(
            action, (argparse._HelpAction, argparse._VersionAction)
        ):
            yield path, action


def test_every_option_says_its_default():
    missing = [
        f"{' '.join(path)} {action.option_strings[0]}"
        for path, action in _options(build_parser())
        if not action.required and "default" not in (action.help or "")
    ]
    assert not missing, missing
    required = [f"{' '.join(p)} {a.option_strings[0]}" for p, a in _options(build_parser()) if a.required]
    assert required  # and a required option says so or says what it is
    assert all(a.help for _, a in _options(build_parser()) if a.required)


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--gpu GPU device name or profile TOML path, see `aqua-model hardware list` (default: h200)" in text
    )
    assert "sequences decoded together (default: 1)" in text


def test_compare_defaults_d_like_breakeven_and_costs(capsys):
    code, out, _ = cli(capsys, "compare", "--json")
    assert code == 0
    inputs = json.loads(out)["inputs"]
    assert inputs["d"] == 128 and inputs["context"] == 32768  # the README's example settings


@pytest.mark.parametrize(
    "argv,flag,internal",
    [
        (["compare", "--page", "0"], "--page", "p"),
        (["compare", "--tokens", "0"], "--tokens", "k_t"),
        (["compare", "--budget", "0"], "--budget", "b"),
        (["compare", "--window", "99999"], "--window", "w"),
        (["compare", "--heads-q", "3"], "--heads-q", "heads_q"),
        (["compare", "--aqua-k", "999"], "--aqua-k", "k"),
        (
            ["simulate", "--context", "4096", "--k", "32", "--heads-q", "3", "--heads-kv", "2", "--d", "128"],
            "--heads-q",
            "heads_q",
        ),
        (
            ["simulate", "--context", "4096", "--k", "32", "--heads-q", "32", "--d", "128"],
            "--heads-kv",
            "heads_kv",
        ),
        (["costs", "--dtype-bytes", "0"], "--dtype-bytes", "dtype_bytes"),
        (["breakeven", "--softmax-flops", "-1"], "--softmax-flops", "softmax_flops_per_score"),
    ],
)
def test_errors_name_the_flags_not_the_internals(capsys, argv, flag, internal):
    code, _, err = cli(capsys, *argv)
    assert code == 2
    one_line_error(err, flag)
    message = err.split("error:", 1)[1]
    assert f" {internal} " not in f" {message} " and f"{internal}=" not in message.replace(flag + "=", "")


def test_parser_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--k", "32"])  # --context missing
    assert exit_.value.code == 2
    one_line_error(capsys.readouterr().err, "--context")
    with pytest.raises(SystemExit):
        main(["breakeven", "--d", "abc"])
    one_line_error(capsys.readouterr().err, "--d", "'abc'")
