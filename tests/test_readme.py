"""CI runs exactly the README's test command, and the numbers of the README and of its pages under
docs/ match the model and the committed results."""

import re
from pathlib import Path

import aqua_model

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def page(name: str) -> str:
    """The text of a page under docs/ (the README links to each)."""
    return (DOCS / name).read_text()


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_quickstart_has_exactly_two_commands():
    assert len(quickstart_commands()) == 2


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert quickstart_commands()[1] in ci.splitlines()


def test_the_test_command_lints_and_type_checks_before_the_tests():
    """Issue 23 item 12: ruff (check, format --check) and mypy run in CI, at pinned versions."""
    import tomllib

    command = quickstart_commands()[1]
    steps = command.split(" && ")
    lint = ["ruff check .", "ruff format --check .", "mypy"]
    assert all(s in steps for s in lint), steps
    assert max(steps.index(s) for s in lint) < steps.index("python -m pytest -q")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    test_extra = project["project"]["optional-dependencies"]["test"]
    assert {r.split("==")[0] for r in test_extra if "==" in r} >= {"ruff", "mypy"}
    assert project["tool"]["mypy"]["files"] == ["aqua_model"]


def test_break_even_numbers_come_from_the_model():
    text = page("costs.md")
    r = aqua_model.breakeven(d=128, k=96)
    assert f"N* = 66432/64 = {r.n_star:.0f}" in text and f"N = {r.n_min}" in text
    assert f"T* = {aqua_model.breakeven(d=128, k=96, phase='prefill').n_star:.0f}" in text
    readme = (ROOT / "README.md").read_text()
    assert f">>> aqua_model.max_k(d=128, context=4096)\n{aqua_model.max_k(d=128, context=4096)}" in readme


def test_readme_simulator_numbers_come_from_the_model():
    from aqua_model.simulator import end_to_end, simulate, time_breakeven

    text = page("simulator.md")
    kw = dict(gpu="h200", model="llama-3.1-8b", batch=8, k=32, plan="aqua-step-topk")
    s = simulate(context=32768, **kw)
    assert f"({float(s.speedup):.3f}, {float(s.ceiling)}, '{s.mode}')" in (ROOT / "README.md").read_text()
    assert f"FLOP\nbreak-even is N = {s.flop_breakeven}" in text
    assert f"time break-even is N = {time_breakeven(**kw)}" in text
    assert f"which is {float(end_to_end(context=32768, **kw).speedup):.2f}x end to end" in text
    fused = {**kw, "plan": "fused"}
    assert (
        f"is predicted at {float(simulate(context=32768, **fused).speedup):.2f}x (time break-even N = "
        f"{time_breakeven(**fused)}, {float(end_to_end(context=32768, **fused).speedup):.2f}x end to end)"
    ) in " ".join(text.split())


def _table(path: Path) -> str:
    """The Markdown table of a generated results file (between its title and its note)."""
    return path.read_text().split("\n\n")[1].strip()


def test_page_tables_are_the_committed_results():
    for name, where in (("decode_kernels_targets.md", "kernels.md"), ("peers_compare.md", "peers.md")):
        assert _table(ROOT / "analysis" / "results" / name) in page(where), name


def test_readme_validation_headline_comes_from_the_committed_results():
    from aqua_model.validate.report import build_report
    from aqua_model.validate.runner import read_rows

    rows = read_rows(ROOT / "validation" / "results" / "h200" / "validation_current_model.jsonl")
    rep = build_report(rows)
    text = page("validation.md")
    fused = rep.stats[("decode/aqua-step-topk", "calibrated")]
    overall = rep.stats[("all", "calibrated")]
    ratio = rep.ratio_stats[("all", "calibrated")]
    line = f"| all cases | {overall.n} | {overall.median_abs:.1%} | {overall.p90_abs:.1%} | {ratio.median_abs:.1%} | {overall.spearman:.3f} |"
    assert line in text
    assert (
        f"| decode, AQUA step: torch.topk + fused Triton kernel (`aqua-step-topk`) | {fused.n} | {fused.median_abs:.1%} | {fused.p90_abs:.1%} |"
        in text
    )


def test_readme_speed_figures_are_the_committed_benchmark():
    import json

    bench = json.loads((ROOT / "analysis" / "results" / "bench_model.json").read_text())
    text = " ".join(page("simulator.md").split())
    assert f"a warm `breakeven()` call takes {bench['warm_breakeven_s']['median'] * 1e6:.1f} µs" in text
    assert f"`lambdify`, {bench['decode_cost_1e6_points_s']['median'] * 1e3:.0f} ms" in text
    assert f"configurations, {bench['roofline_one_plan_1e6_configs_s']['median']:.2f} s" in text


def test_readme_measured_speedups_come_from_the_committed_results():
    from aqua_model.validate.runner import read_rows

    rows = read_rows(ROOT / "validation" / "results" / "h200" / "validation_current_model.jsonl")
    by = {
        (r["plan"], r["context"], r["k"]): r
        for r in rows
        if r["status"] == "ok" and r["phase"] == "decode" and r["batch"] == 8 and r["heads_kv"] == 32
    }
    text = " ".join(page("validation.md").split())
    for k in (16, 32, 96):
        fused, dense = by[("aqua-step-topk", 131072, k)], by[("dense-fused", 131072, 128)]
        measured = dense["measured_s"] / fused["measured_s"]
        predicted = dense["predicted_calibrated_s"] / fused["predicted_calibrated_s"]
        assert f"{measured:.2f}x at k = {k} ({predicted:.2f}x)" in text


def test_readme_fidelity_numbers_come_from_the_committed_study():
    import csv

    summary = {
        (r["dataset"], r["method"], int(r["k"])): r
        for r in csv.DictReader((ROOT / "analysis" / "results" / "fidelity_summary.csv").open())
    }
    text = " ".join(page("fidelity.md").split())
    aqua_en, aqua_de = summary[("heldout_en", "aqua", 16)], summary[("heldout_de", "aqua", 16)]
    assert (
        f"{float(aqua_en['output_rel_err']):.1%} on held-out English and {float(aqua_de['output_rel_err']):.1%} on German"
        in text
    )
    assert f"kept {float(aqua_en['energy']):.1%} of the query energy" in text
    assert f"top-1 key for {float(aqua_en['top1_agreement']):.1%} of queries" in text
    for method in ("sparq", "loki", "random"):
        en, de = summary[("heldout_en", method, 16)], summary[("heldout_de", method, 16)]
        assert (
            f"{float(en['output_rel_err']) * 100:.1f}% / {float(de['output_rel_err']) * 100:.1f}%" in text
        ), method


def test_python_examples_run():
    """Every ```python block of the README and of its pages is a doctest that passes as written."""
    import doctest

    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        blocks = re.findall(r"```python\n(.+?)\n```", path.read_text(), flags=re.S)
        assert blocks or path.name != "README.md", "the README has no python example"
        for i, block in enumerate(blocks):
            test = parser.get_doctest(block, {}, f"{path.name} block {i}", str(path), 0)
            assert test.examples, f"{path.name} python block {i} has no >>> example"
            result = runner.run(test, out=lambda s: None)
            assert result.failed == 0, f"{path.name} python block {i} fails as a doctest:\n{block}"
