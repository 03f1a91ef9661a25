"""CI runs exactly the README's test command, and the README's numbers match the model."""

import re
from pathlib import Path

import aqua_model

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_quickstart_has_exactly_two_commands():
    assert len(quickstart_commands()) == 2


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert quickstart_commands()[1] in ci.splitlines()


def test_readme_break_even_numbers_come_from_the_model():
    text = (ROOT / "README.md").read_text()
    r = aqua_model.breakeven(d=128, k=96)
    assert f"N* = 66432/64 = {r.n_star:.0f}" in text and f"N = {r.n_min}" in text
    assert f"T* = {aqua_model.breakeven(d=128, k=96, phase='prefill').n_star:.0f}" in text
    assert f">>> aqua_model.max_k(d=128, context=4096)\n{aqua_model.max_k(d=128, context=4096)}" in text


def test_readme_simulator_numbers_come_from_the_model():
    from aqua_model.simulate import end_to_end, simulate, time_breakeven

    text = (ROOT / "README.md").read_text()
    kw = dict(gpu="h200", model="llama-3.1-8b", batch=8, k=32)
    s = simulate(context=32768, plan="fused", **kw)
    assert f"({float(s.speedup):.3f}, {float(s.ceiling)}, '{s.mode}')" in text
    assert f"FLOP\nbreak-even is N = {s.flop_breakeven}" in text
    assert f"time break-even is N = {time_breakeven(**kw)}" in text
    assert f"which is {float(end_to_end(context=32768, **kw).speedup):.2f}x end to end" in text
