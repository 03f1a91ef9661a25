"""The committed H200 results are consistent with the current model and with each other."""

import json
from pathlib import Path

import pytest

from aqua_model.hardware import load
from aqua_model.validate.runner import merge_runs, read_rows, repredict_rows

H200 = Path(__file__).resolve().parents[1] / "validation" / "results" / "h200"
RAW, CURRENT = H200 / "validation.jsonl", H200 / "validation_current_model.jsonl"
TOKEN_MAJOR = H200 / "validation_token_major.jsonl"
PREFILL_EAGER = H200 / "validation_prefill_eager.jsonl"


@pytest.mark.skipif(not CURRENT.is_file(), reason="no committed H200 validation results")
def test_committed_predictions_are_the_current_models():
    # If this fails, the model changed: rerun
    #   aqua-model validate report validation/results/h200/validation.jsonl \
    #     validation/results/h200/validation_token_major.jsonl \
    #     validation/results/h200/validation_prefill_eager.jsonl \
    #     --repredict validation/results/h200/h200-calibrated.toml \
    #     --out validation/results/h200/validation_current_model.jsonl \
    #     --markdown validation/results/h200/summary_current_model.md
    committed = [r for r in read_rows(CURRENT) if r["status"] == "ok"][::25]
    fresh = repredict_rows(committed, datasheet=load("h200"), calibrated=load(H200 / "h200-calibrated.toml"))
    for old, new in zip(committed, fresh):
        assert new["predicted_calibrated_s"] == pytest.approx(old["predicted_calibrated_s"], rel=1e-9), old[
            "case_id"
        ]
        assert new["predicted_datasheet_s"] == pytest.approx(old["predicted_datasheet_s"], rel=1e-9), old[
            "case_id"
        ]


@pytest.mark.skipif(not CURRENT.is_file(), reason="no committed H200 validation results")
def test_repredicted_file_keeps_every_measurement():
    raw = merge_runs([read_rows(RAW), read_rows(TOKEN_MAJOR), read_rows(PREFILL_EAGER)])
    current = read_rows(CURRENT)
    assert [r["case_id"] for r in raw] == [r["case_id"] for r in current]
    assert all(
        a.get("measured_s") == b.get("measured_s") and a["status"] == b["status"]
        for a, b in zip(raw, current)
    )


@pytest.mark.skipif(
    not (H200 / "decode_kernels.jsonl").is_file(), reason="no committed decode-kernel results"
)
def test_decode_kernel_rows_record_their_environment():
    for line in (H200 / "decode_kernels.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert row["gpu"] and row["driver"] and row["torch"] and row["triton"]
        assert row["dense_sdpa_s"] > 0 and row["aqua_fused_s"] > 0


def test_a_later_measured_row_replaces_an_earlier_row_of_the_same_case():
    first = [{"case_id": "a", "status": "unsupported"}, {"case_id": "b", "status": "ok", "measured_s": 1.0}]
    later = [
        {"case_id": "a", "status": "ok", "measured_s": 2.0},
        {"case_id": "b", "status": "error"},
        {"case_id": "c", "status": "skipped"},
    ]
    merged = merge_runs([first, later])
    assert [r["case_id"] for r in merged] == ["a", "b", "c"]
    assert merged[0]["measured_s"] == 2.0  # measured now
    assert merged[1]["measured_s"] == 1.0  # an error never replaces a measurement
