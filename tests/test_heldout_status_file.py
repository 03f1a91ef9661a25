"""Plan verdicts of a held-out run outside a git checkout (no commit known) are still written."""

from __future__ import annotations

from aqua_model._datafiles import read_toml
from aqua_model.validate.report import build_report, status_entries, write_status


def test_a_run_without_a_commit_writes_its_verdicts_saying_so(tmp_path) -> None:
    rows = [
        {
            "case_id": f"decode/dense-fused/N{i}",
            "phase": "decode",
            "plan": "dense-fused",
            "status": "ok",
            "measured_s": 1e-4,
            "predicted_calibrated_s": 1e-4 * (1 + err),
            "context": i,
            "batch": 1,
            "heads_q": 8,
            "heads_kv": 8,
            "d": 128,
            "dtype": "bf16",
            "prompt": None,
        }
        for i, err in enumerate([0.5, -0.4, 0.3])
    ]
    entries = status_entries(build_report(rows), seed=7, commit=None)
    write_status(entries, tmp_path / "s.toml")  # TOML has no null: a None commit used to crash here
    (e,) = read_toml(tmp_path / "s.toml")["plan"]
    assert e["model_commit"] == "unknown (not a git checkout)" and e["status"] == "unvalidated"
