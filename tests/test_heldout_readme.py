"""docs/validation.md's first held-out run quotes the committed held-out results (issue 12)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "results" / "h200"
TABLES = ROOT / "analysis" / "results" / "heldout_validation.md"
PAGE = ROOT / "docs" / "validation.md"  # the held-out runs' page (the README links to it)
SEED, COMMIT = 173469101, "0a56edadbd825e84d433d82a88a76b3a01eb8d0f"

pytestmark = pytest.mark.skipif(
    not (H200 / f"heldout-{SEED}.jsonl").is_file(), reason="no held-out run committed"
)


def _script():
    spec = importlib.util.spec_from_file_location("heldout_tables", ROOT / "analysis" / "heldout_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["heldout_tables"] = module
    spec.loader.exec_module(module)
    return module


def _readme() -> str:
    return PAGE.read_text()


def test_the_tables_file_is_what_the_script_gives():
    assert _script().tables(SEED) == TABLES.read_text()


def test_readme_quotes_the_tables_the_commit_and_the_seed():
    text = _readme()
    for block in TABLES.read_text().split("\n\n"):
        if block.startswith("|"):
            assert block.strip() in text, block.splitlines()[0]
    assert f"frozen at commit `{COMMIT}`" in text and f"{SEED}" in text
    from aqua_model.validate.sampling import seed_from_commit

    assert seed_from_commit(COMMIT) == SEED
    rows = [r for r in (H200 / f"heldout-{SEED}.jsonl").read_text().splitlines() if r.strip()]
    assert f"then the {len(rows)} held-out cases" in " ".join(text.split())


def test_every_heldout_row_records_the_frozen_model():
    from aqua_model.validate.runner import read_rows

    rows = read_rows(H200 / f"heldout-{SEED}.jsonl")
    assert len(rows) >= 200 and all(r["model_commit"] == COMMIT and r["heldout_seed"] == SEED for r in rows)
    assert len({r["model_sha256"] for r in rows}) == 1


def test_readme_names_the_unvalidated_plans_and_the_interval_example():
    import aqua_model

    text = " ".join(_readme().split())
    for e in tomllib.loads((H200 / "plan_status.toml").read_text())["plan"]:
        assert f"`{e['phase']}/{e['plan']}` ({e['heldout_p90_abs']:.0%})" in text
    s = aqua_model.simulate(
        gpu=str(H200 / "h200-heldout.toml"), model="llama-3.1-8b", context=32768, batch=8, k=32, plan="fused"
    )
    lo, hi = s.speedup_interval
    assert f"prints `speedup {float(s.speedup):.3f}x [{float(lo):.3f}, {float(hi):.3f}]`" in text
