"""docs/longctx.md quotes the committed long-context results: its generated sections are current,
the figure it shows exists, and its k = d claims match the exactness records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analysis" / "results"
DOCS = ROOT / "docs" / "longctx.md"

if not (RESULTS / "longctx_tradeoff.md").is_file():
    pytest.skip("the long-context results are not committed", allow_module_level=True)


def _module():
    spec = importlib.util.spec_from_file_location(
        "longctx_tradeoff", ROOT / "analysis" / "longctx_tradeoff.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_generated_section_of_the_page_is_current():
    mod = _module()
    text = DOCS.read_text(encoding="utf-8")
    for name, body in mod.docs_sections(RESULTS).items():
        assert mod.replace_section(text, name, body) == text, (
            f"section {name!r} of docs/longctx.md is stale: run python analysis/longctx_tradeoff.py"
        )


def test_the_page_shows_the_committed_figure():
    assert "../figures/longctx_frontier.png" in DOCS.read_text(encoding="utf-8")
    assert (ROOT / "figures" / "longctx_frontier.png").is_file()


def test_the_exactness_targets_hold_on_every_model_measured():
    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("longctx_exactness_*.json"))]
    assert records, "run analysis/longctx_exactness.py"
    for r in records:
        assert r["kl_fp32_aqua_kd_vs_fp32"] < r["fp32_target_nats"] == 1e-6
        assert r["kl_bf16_aqua_kd_vs_fp32"] <= r["kl_bf16_vs_fp32_noise_floor"]
        assert r["bf16_within_noise_floor"] and r["fp32_exact"]


def test_replace_section_refuses_a_page_without_its_markers():
    mod = _module()
    with pytest.raises(ValueError, match="markers"):
        mod.replace_section("no markers here", "tradeoff", "x")
    page = "a\n<!-- t:begin -->\nold\n<!-- t:end -->\nb"
    assert mod.replace_section(page, "t", "new") == "a\n<!-- t:begin -->\nnew\n<!-- t:end -->\nb"
