"""The parallel results files are what the current model gives, and docs/parallel.md (the README's
parallel page) quotes them exactly."""

from __future__ import annotations

import csv
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analysis" / "results"


def _table_script():
    spec = importlib.util.spec_from_file_location("parallel_table", ROOT / "analysis" / "parallel_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["parallel_table"] = module
    spec.loader.exec_module(module)
    return module


def _csv(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader((RESULTS / f"{name}.csv").open()))


def _section() -> str:
    return (ROOT / "docs" / "parallel.md").read_text()


def _same(a: dict, b: dict[str, str]) -> bool:
    return all(str(a[k]) == b[k] or (a[k] is None and b[k] == "") for k in b)


def test_results_files_are_current():
    script = _table_script()
    rows = _csv("parallel_decode")
    want = [
        (r["model"], int(r["context"]), int(r["batch"]), int(r["tp"]), int(r["pp"]), r["all_reduce"])
        for r in rows
    ]
    # every layout that fits is in the file, and none that does not
    computed = {
        (m, c, b, t, 1, "ring"): script.row(m, c, b, t, 1, "ring")
        for m in script.MODELS
        for c in script.CONTEXTS
        for b in script.BATCHES
        for t in script.TENSOR_PARALLEL
    }
    assert want == [key for key, r in computed.items() if r is not None]
    for key, committed in zip(want, rows):
        assert _same(computed[key], committed), key
    for committed in _csv("parallel_layouts"):
        key = (
            committed["model"],
            int(committed["context"]),
            int(committed["batch"]),
            int(committed["tp"]),
            int(committed["pp"]),
            committed["all_reduce"],
        )
        assert _same(script.row(*key), committed), key


def test_readme_table_quotes_the_results():
    by_key = {
        (r["model"], r["context"], r["batch"], r["tp"]): r for r in _csv("parallel_decode") if r["pp"] == "1"
    }
    lines = [ln for ln in _section().splitlines() if ln.startswith("| llama-3.1-")]
    assert len(lines) == 6
    for ln in lines:
        model, ctx, batch, t, gb, w, attn, ar, e2e = [c.strip() for c in ln.strip("|").split("|")]
        r = by_key[(model, ctx, batch, t)]
        assert (gb, w, ar, e2e) == (
            r["GB_per_gpu"],
            r["weights_ms"],
            r["all_reduce_ms"],
            r["end_to_end_speedup"],
        )
        assert attn == f"{r['attention_dense_ms']} / {r['attention_aqua_ms']}"


def test_readme_prose_quotes_the_results():
    text = " ".join(_section().split())
    d = {(r["model"], r["context"], r["batch"], r["tp"]): r for r in _csv("parallel_decode")}
    lay = {(r["model"], r["batch"], r["tp"], r["pp"], r["all_reduce"]): r for r in _csv("parallel_layouts")}
    l70, l405 = "llama-3.1-70b", "llama-3.1-405b"
    long4, long8 = d[(l70, "131072", "8", "4")], d[(l70, "131072", "8", "8")]
    assert f"({long4['end_to_end_speedup']}x on 4 GPUs, {long8['end_to_end_speedup']}x on 8)" in text
    assert (
        f"reaches {long4['fused_end_to_end_speedup']}x and {long8['fused_end_to_end_speedup']}x at 128K"
        in text
    )
    assert f"({d[(l405, '32768', '8', '8')]['end_to_end_speedup']}x at 32K, batch 8)" in text
    ring, tree = d[(l70, "32768", "8", "8")], lay[(l70, "8", "8", "1", "tree")]
    assert f"from {ring['all_reduce_ms']} to {tree['all_reduce_ms']} ms per token" in text
    assert (
        f"(2; {long4['smallest_tp']} at 128K tokens and batch 8)" in text
        and d[(l70, "8192", "1", "2")]["smallest_tp"] == "2"
    )
    # every 405B layout that fits uses all 8 GPUs of the node
    assert {r["tp"] for r in _csv("parallel_decode") if r["model"] == l405} == {
        "8"
    } and "405B needs all 8" in text
    # batch 1 loses everywhere in the table, as the prose says
    assert all(float(r["end_to_end_speedup"]) < 1 for r in _csv("parallel_decode") if r["batch"] == "1")
    assert re.search(r"141\.1 GB of bf16 weights\) does not fit one 141 GB H200", text)
