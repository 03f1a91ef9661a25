"""Every number of docs/decoder.md (the README's decoder page) comes from the committed decoder study."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analysis" / "results"
PAGE = ROOT / "docs" / "decoder.md"


def _readme() -> str:
    return " ".join(PAGE.read_text().split())


def _summary() -> dict[tuple[str, str], dict[str, str]]:
    with (RESULTS / "decoder_summary.csv").open(newline="") as fh:
        return {(r["dataset"], r["config"]): r for r in csv.DictReader(fh)}


def _inc(row: dict[str, str]) -> str:
    return f"{100 * float(row['ppl_increase']):+.2f}%"


def _ci(row: dict[str, str]) -> str:
    return f"{_inc(row)} [{100 * float(row['ppl_increase_lo']):+.2f}, {100 * float(row['ppl_increase_hi']):+.2f}]"


def test_the_sweep_table_is_the_committed_one():
    table = (RESULTS / "decoder_sweep.md").read_text().split("\n\n")[1].strip()
    assert table in PAGE.read_text()


def test_sizes_and_time_come_from_the_run_record():
    run = json.loads((RESULTS / "decoder_run.json").read_text())
    s = _summary()
    text = _readme()
    assert f"keys on {run['calibration_tokens']['en']} calibration tokens" in text
    tokens = int(s[("en", "aqua-k48-per-head-cal_en")]["tokens"])
    assert (
        f"({run['heldout_segments']} segments of {run['segment_tokens']} tokens per language, {tokens} predicted tokens each)"
        in text
    )
    assert f"{run['wall_time_s_last_invocation']:.0f} s here with one torch thread" in text
    assert run["wall_time_s_last_invocation"] < 15 * 60  # the budget for the default size


def test_the_quoted_perplexity_increases_are_the_committed_ones():
    s = _summary()
    text = _readme()
    en, de = s[("en", "aqua-k48-per-head-cal_en")], s[("de", "aqua-k48-per-head-cal_en")]
    assert f"rises by {_ci(en)} on English and {_ci(de)} on German: within noise" in text
    for row in (en, de):  # "within noise": both paired intervals include 0
        assert float(row["ppl_increase_lo"]) <= 0 <= float(row["ppl_increase_hi"])
    assert f"KL {float(en['kl_nats']):.4f} and {float(de['kl_nats']):.4f} nats" in text
    assert (
        f"{100 * float(en['top1_agreement']):.1f}% and {100 * float(de['top1_agreement']):.1f}% of tokens"
        in text
    )
    for label, key in (
        ("AQUA costs", "aqua-k32-per-head-cal_en"),
        ("rotation", "sparq-k32-per-head"),
        ("Loki-style prefix", "loki-k32-per-head-cal_en"),
        ("random dims", "random-k32-per-head"),
        ("costs more:", "aqua-k48-group-cal_en"),
        ("half of the 128 tokens costs", "dense-h2o64"),
        ("same KV budget,", "aqua-k48-per-head-h2o64-cal_en"),
        ("at equal KV bytes,", "aqua-k40-per-head-m48-h2o73-cal_en"),
        ("(KV cache 0.875x) costs", "loki-k48-per-head-cal_en"),
    ):
        assert f"{label} {_inc(s[('en', key)])} / {_inc(s[('de', key)])}" in text, key


def test_the_swap_losses_are_the_committed_ones():
    s = _summary()
    text = _readme()

    def loss(test: str, other: str, k: int) -> str:
        crossed = float(s[(test, f"aqua-k{k}-per-head-cal_{other}")]["ppl_increase"])
        matched = float(s[(test, f"aqua-k{k}-per-head-cal_{test}")]["ppl_increase"])
        return f"{100 * (crossed - matched):.2f}"

    en = ", ".join(loss("en", "de", k) for k in (48, 32)) + f" and {loss('en', 'de', 16)}"
    de = ", ".join(loss("de", "en", k) for k in (48, 32)) + f" and {loss('de', 'en', 16)}"
    assert f"adds {en} percentage points on English" in text
    assert f"English P costs German {de} points" in text


def test_the_frontier_sentence_is_the_committed_frontier():
    with (RESULTS / "decoder_frontier.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    by = {(r["target"], r["config"]): r for r in rows}
    text = _readme()
    group = by[("Llama-3.1-8B", "aqua-k48-group-cal_en")]
    worst = max(float(group["ppl_increase_pct_en"]), float(group["ppl_increase_pct_de"]))
    assert (
        f"at no more than {worst:.1f}% perplexity increase, AQUA buys {float(group['predicted_speedup']):.2f}x on an H200"
        in text
    )
    # it is the best AQUA buys under that limit (group or per-head, any k)
    best = max(
        float(r["predicted_speedup"])
        for r in rows
        if r["target"] == "Llama-3.1-8B"
        and r["method"] == "aqua"
        and max(float(r["ppl_increase_pct_en"]), float(r["ppl_increase_pct_de"])) <= worst
    )
    assert best == float(group["predicted_speedup"])
    per_head = by[("Llama-3.1-8B", "aqua-k48-per-head-cal_en")]
    assert f"buys {float(per_head['predicted_speedup']):.2f}x there" in text
    small = [
        float(r["predicted_speedup"]) for r in rows if r["target"] == "SmolLM2-135M" and r["method"] == "aqua"
    ]
    # the one-launch plan (issue 22) has no launch of its own beyond the one kernel, so the
    # datasheet profile predicts every SmolLM2 setting faster than dense ...
    assert min(small) > 1 and f"faster than dense ({min(small):.2f}x to {max(small):.2f}x)" in text
    # ... while the H200 measured that shape slower: the page quotes the measured range at 8K, batch 8
    # (the long-context trade-off's reading: SDPA baselines checked against the round's other call)
    spec = importlib.util.spec_from_file_location(
        "longctx_tradeoff", ROOT / "analysis" / "longctx_tradeoff.py"
    )
    lt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lt)
    measured = lt.read_measured(lt.MEASURED, lt.MEASURED_SDPA_ALSO)
    smol = [
        r["speedup_graph"]
        for r in measured
        if (r["heads_q"], r["heads_kv"], r["d"], r["context"], r["batch"]) == (9, 3, 64, 8192, 8)
    ]
    assert len(smol) == 6 and f"runs at\n{min(smol):.2f}-{max(smol):.2f}x of SDPA".replace("\n", " ") in text
    assert (
        f"H2O at half the tokens is predicted at {float(by[('Llama-3.1-8B', 'dense-h2o64')]['predicted_speedup']):.2f}x"
        in text
    )


def test_the_committed_frontier_speedups_are_the_simulators_current_ones():
    """The frontier's speedups are predictions: when the simulator changes they must be re-derived
    (``python analysis/decoder_study.py --tables-only``, no model needed)."""
    from fractions import Fraction

    import aqua_model

    with (RESULTS / "decoder_frontier.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["predicted_plan"] == "aqua-fused"]
    assert rows
    shapes = {
        "SmolLM2-135M": ({"heads_q": 9, "heads_kv": 3, "d": 64, "layers": 30}, 64),
        "Llama-3.1-8B": ({"model": "llama-3.1-8b"}, 128),
    }
    for r in rows[:: max(1, len(rows) // 8)] + rows[-1:]:
        shape, d = shapes[r["target"]]
        k = int(Fraction(r["k_over_d"]) * d)
        now = aqua_model.simulate(
            gpu="h200",
            context=int(r["context"]),
            batch=int(r["batch"]),
            k=k,
            plan="fused",
            selection=r["selection"],
            **shape,
        )
        assert abs(float(now.speedup) / float(r["predicted_speedup"]) - 1) < 1e-9, (
            f"{r['target']} {r['config']}: committed {r['predicted_speedup']}, simulator now {float(now.speedup)}; "
            "rerun python analysis/decoder_study.py --tables-only"
        )
