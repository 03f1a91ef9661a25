"""The report's speedup table says, per row, whether the configuration fits one GPU."""

from __future__ import annotations

import pytest

from aqua_model.models import load
from aqua_model.simulator.report_rows import speedup_rows


def test_rows_beyond_one_gpu_say_so_with_the_bytes_and_the_smallest_t() -> None:
    cfg = load("llama-3.1-8b")
    rows = {r["context"]: r for r in speedup_rows(gpu="h200", contexts=(4096, 131072), ks=(32,), batch=8)}
    # KV cache of all layers: 2 (K and V) x N x H_kv x d x 2 bytes (bf16) x layers x batch
    kv_128k = 2 * 131072 * cfg.kv_heads * cfg.head_dim * 2 * cfg.layers * 8
    weights = cfg.weight_bytes()
    assert rows[131072]["memory_GB"] == pytest.approx((kv_128k + weights) / 1e9, abs=0.05)
    # 16.1 GB of weights + 137.4 GB of KV cache > the H200's 141 GB: two GPUs are needed
    assert rows[131072]["fits_one_gpu"] == "no (t >= 2)"
    assert rows[4096]["fits_one_gpu"] == "yes"
