"""The one-launch decode's L2 prefetches: configured by DecodeConfig, checked where they are set,
off under Triton's interpreter (no inline PTX there), and present in the compiled sm_90 PTX
ahead of the kernel's first global load (validation/fused_ptx_check.py; no GPU needed)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from aqua_model.costs import split_rule
from aqua_model.kernels import triton_decode as td

ROOT = Path(__file__).resolve().parents[1]
COMPILES = td.HAS_TRITON and os.environ.get("TRITON_INTERPRET") != "1"


def test_the_default_config_takes_the_split_rules_prefetch() -> None:
    cfg = td.DecodeConfig()
    assert cfg.prefetch_value_blocks == split_rule.FUSED_PREFETCH_VALUE_BLOCKS
    assert cfg.prefetch_keys is split_rule.FUSED_PREFETCH_KEYS


@pytest.mark.parametrize("blocks", [-1, 3, 8, 2.0])
def test_value_blocks_must_be_a_listed_power_of_two(blocks) -> None:
    with pytest.raises(ValueError, match=r"prefetch_value_blocks must be one of \(0, 1, 2, 4\)"):
        td.DecodeConfig(prefetch_value_blocks=blocks)


@pytest.mark.parametrize("keys", [1, "yes", None])
def test_prefetch_keys_must_be_a_bool(keys) -> None:
    with pytest.raises(ValueError, match="prefetch_keys must be a bool"):
        td.DecodeConfig(prefetch_keys=keys)


def test_constexprs_follow_the_config_and_the_line_size(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = td.DecodeConfig(prefetch_value_blocks=2, prefetch_keys=True)
    # a bf16 value row of 128 elements is 256 bytes: two 128-byte L2 lines
    assert td.prefetch_consts(cfg, value_dim=128, dtype=torch.bfloat16) == dict(
        PREFETCH_V=2, V_LINES=2, PREFETCH_K=True
    )
    # fp32 rows of 64 elements are two lines too; a row shorter than a line is one
    assert td.prefetch_consts(cfg, value_dim=64, dtype=torch.float32)["V_LINES"] == 2
    assert td.prefetch_consts(cfg, value_dim=16, dtype=torch.float16)["V_LINES"] == 1


def test_the_interpreter_runs_without_prefetches(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cfg = td.DecodeConfig(prefetch_value_blocks=4, prefetch_keys=True)
    consts = td.prefetch_consts(cfg, value_dim=128, dtype=torch.bfloat16)
    assert consts["PREFETCH_V"] == 0 and consts["PREFETCH_K"] is False


def _ptx_check():
    spec = importlib.util.spec_from_file_location(
        "fused_ptx_check", ROOT / "validation" / "fused_ptx_check.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not COMPILES, reason="needs triton's compiler (not its interpreter)")
@pytest.mark.parametrize("blocks,keys", [(0, False), (2, False), (0, True), (4, True)])
def test_the_compiled_kernel_issues_each_threads_share_of_prefetches_first(blocks, keys) -> None:
    row = _ptx_check().count(blocks, keys)
    # 4 warps = 128 threads; V: blocks x 64 tokens x 2 lines; keys: 128 rows of one block
    want = -(-blocks * 64 * 2 // 128) + (1 if keys else 0)
    assert row["prefetch_instructions"] == row["expected_prefetch_instructions"] == want
    if want:
        assert row["prefetch_before_first_load"] is True
    # the prefetches add no loads: the streamed loads are the same
    assert row["global_loads"] == _ptx_check().count(0, False)["global_loads"]
