"""docs/validation.md's third held-out run (issue 12, round 3: the prologue/combine table) quotes its
committed results, and the plan verdicts come from it."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"
SEED, COMMIT = 898775459, "359239a3e4862941fef9c3345e653da97ad81742"
TABLES = ROOT / "analysis" / "results" / f"heldout_validation-{SEED}.md"
PAGE = ROOT / "docs" / "validation.md"  # the held-out runs' page (the README links to it)

pytestmark = pytest.mark.skipif(
    not (H200 / f"heldout-{SEED}.jsonl").is_file(), reason="no third held-out run committed"
)


def _script():
    spec = importlib.util.spec_from_file_location("heldout_tables_3", ROOT / "analysis" / "heldout_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["heldout_tables_3"] = module
    spec.loader.exec_module(module)
    return module


def _readme() -> str:
    return " ".join(PAGE.read_text().split())


def test_the_tables_file_is_what_the_script_gives():
    script = _script()
    assert script.out_path(SEED) == TABLES
    assert script.tables(SEED) == TABLES.read_text()


def test_readme_quotes_the_third_run():
    text = PAGE.read_text()
    for block in TABLES.read_text().split("\n\n"):
        if block.startswith("|"):
            assert block.strip() in text, block.splitlines()[0]
    from aqua_model.validate.sampling import seed_from_commit

    assert seed_from_commit(COMMIT) == SEED
    flat = _readme()
    assert f"frozen at commit `{COMMIT}`" in flat
    rows = [r for r in (H200 / f"heldout-{SEED}.jsonl").read_text().splitlines() if r.strip()]
    assert f"then the {len(rows)} held-out cases" in flat
    meta = json.loads((H200 / f"heldout-{SEED}-cases.jsonl").read_text().splitlines()[0])
    assert f"drew {meta['cases']} cases from {meta['shapes']} shapes" in flat


def test_every_row_records_the_frozen_model_and_the_profile_has_the_table():
    from aqua_model.hardware import load
    from aqua_model.validate.runner import read_rows

    rows = read_rows(H200 / f"heldout-{SEED}.jsonl")
    assert len(rows) >= 200 and all(r["model_commit"] == COMMIT and r["heldout_seed"] == SEED for r in rows)
    assert len({r["model_sha256"] for r in rows}) == 1
    meta = (H200 / f"heldout-{SEED}-cases.jsonl").read_text().splitlines()[0]
    assert f'"model_commit": "{COMMIT}"' in meta
    small = load(H200 / f"h200-heldout-{SEED}.toml").terms.small_kernels
    assert small is not None and small.source.startswith("measured:")
    # the brief's calibration shapes: both kernels, both selections, g in {1, 4, 8}, d in {64, 128}
    assert {k for k in small.grids} == {
        (k, s) for k in ("prologue", "combine") for s in ("per-head", "group")
    }
    assert all(gs == (1.0, 4.0, 8.0) and ds == (64.0, 128.0) for gs, ds, _ in small.grids.values())


def test_the_quoted_over_prediction_is_the_combine_at_few_units():
    """The page's worst over-prediction: predicted and measured from the rows, its combine from
    the run's profile through the plan."""
    from aqua_model.costs import Sizes
    from aqua_model.hardware import load
    from aqua_model.plans import build_plan
    from aqua_model.simulator.roofline import plan_time
    from aqua_model.validate.runner import read_rows

    fused = [
        r
        for r in read_rows(H200 / f"heldout-{SEED}.jsonl")
        if r.get("status") == "ok" and r["plan"] == "aqua-fused"
    ]
    worst = max(fused, key=lambda r: r["predicted_calibrated_s"] / r["measured_s"])
    sizes = Sizes(
        heads_q=worst["heads_q"],
        heads_kv=worst["heads_kv"],
        d=worst["d"],
        context=worst["context"],
        batch=worst["batch"],
        k=worst["k"],
        dtype=worst["dtype"],
    )
    _, kts = plan_time(
        build_plan(
            "aqua-fused-3launch", selection=worst["selection"]
        ),  # the run measured the three-launch path
        load(H200 / f"h200-heldout-{SEED}.toml"),
        sizes,
    )
    combine = next(kt for kt in kts if kt.name == "combine")
    err = worst["predicted_calibrated_s"] / worst["measured_s"] - 1
    text = _readme()
    assert (
        f"(+{err:.0%}, B = {worst['batch']}, H_q/H_kv = {worst['heads_q']}/{worst['heads_kv']}, N = {worst['context']}, "
        f"d = {worst['d']}: {worst['predicted_calibrated_s'] * 1e6:.1f} us predicted, of it "
        f"{float(combine.time_s - combine.overhead_s) * 1e6:.1f} us combine, against {worst['measured_s'] * 1e6:.1f} us measured)"
    ) in text


def test_plan_verdicts_come_from_the_third_run_and_the_readme_quotes_them():
    entries = tomllib.loads((H200 / "plan_status.toml").read_text())["plan"]
    # the core plans' verdicts are the fit protocol's (issue 21, seed 2324754193); the others the third run's
    core = {("decode", "aqua-fused"), ("decode", "dense-fused"), ("prefill", "dense-fused")}
    assert entries and all(
        (e["seed"], e["model_commit"])
        == (
            (2324754193, "8a90ef11967c18936b2827b2176b7c5aea16181a")
            if (e["phase"], e["plan"]) in core
            else (SEED, COMMIT)
        )
        for e in entries
    )
    text = _readme()
    assert f"`validation/results/h200/plan_status.toml`, from the third run, seed {SEED}" in text
    for e in entries:
        assert f"`{e['phase']}/{e['plan']}` ({e['heldout_p90_abs']:.0%})" in text
