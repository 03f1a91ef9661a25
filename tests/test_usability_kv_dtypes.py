"""fp8 and int4 KV caches: bytes per element (scales included, as named assumptions), KV-cache
bytes, decode bytes, the byte ceiling, the simulator and the device-memory check."""

from __future__ import annotations

import numpy as np
import pytest

import aqua_model
from aqua_model import models
from aqua_model.cli import main
from aqua_model.costs import dtypes


def test_element_sizes_and_their_derivation():
    assert dtypes.kv_element_bytes("bf16") == 2 and dtypes.kv_element_bytes("fp32") == 4
    assert dtypes.kv_element_bytes("fp8") == 1  # one byte; a per-tensor fp32 scale, counted as 0
    # int4: half a byte, plus a 2-byte scale and a 2-byte zero point per group of 32 elements
    assert dtypes.kv_element_bytes("int4") == 0.5 + (2 + 2) / 32 == 0.625
    assert dtypes.INT4_SCALE_BYTES_PER_GROUP / dtypes.INT4_GROUP_ELEMENTS == 0.125
    with pytest.raises(
        ValueError, match="kv_dtype must be one of 'bf16', 'fp16', 'fp32', 'fp8', 'int4'; got 'int3'"
    ):
        dtypes.kv_element_bytes("int3")


def test_kv_cache_bytes_per_head():
    # dense K and V: 2 * N * d * s; at N = 4096, d = 128: 1,048,576 elements
    elements = 2 * 4096 * 128
    for kv_dtype, s in (("bf16", 2), ("fp8", 1), ("int4", 0.625)):
        assert (
            aqua_model.kv_cache_bytes(method="dense", d=128, context=4096, kv_dtype=kv_dtype) == elements * s
        )
    assert aqua_model.kv_cache_bytes(method="dense", d=128, context=4096) == elements * 2  # bf16 by default
    with pytest.raises(ValueError, match="give dtype_bytes or kv_dtype, not both"):
        aqua_model.kv_cache_bytes(method="dense", d=128, context=4096, dtype_bytes=2, kv_dtype="fp8")


@pytest.mark.parametrize("kv_dtype", ["fp8", "int4"])
def test_decode_bytes_scale_and_the_ceiling_stays(kv_dtype):
    s = dtypes.kv_element_bytes(kv_dtype)
    kw = dict(d=128, k=32, context=8192)
    for method in ("dense", "aqua"):
        ratio = aqua_model.decode_read_bytes(
            method=method, kv_dtype=kv_dtype, **kw
        ) / aqua_model.decode_read_bytes(method=method, **kw)
        assert ratio == pytest.approx(s / 2, rel=1e-12)
    ceiling = aqua_model.decode_read_bytes(
        method="dense", kv_dtype=kv_dtype, **kw
    ) / aqua_model.decode_read_bytes(method="aqua", kv_dtype=kv_dtype, **kw)
    assert ceiling == pytest.approx(
        2 * 128 / (32 + 128), rel=1e-12
    )  # 2d/(k+d) = 1.6: the scales move with their rows


def test_int4_token_major_is_not_modelled():
    with pytest.raises(ValueError, match="token-major.*int4"):
        aqua_model.decode_read_bytes(
            method="aqua", d=128, k=32, context=4096, kv_dtype="int4", layout="token-major"
        )
    # fp8: 32 one-byte channels per 32-byte sector, a whole number
    fp8 = aqua_model.decode_read_bytes(
        method="aqua", d=128, k=32, context=4096, kv_dtype="fp8", layout="token-major", sector_bytes=32
    )
    assert np.isfinite(fp8)


def test_model_kv_bytes_per_token():
    cfg = models.load("llama-3.1-8b")
    assert cfg.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2  # bf16: 131,072 bytes
    assert cfg.kv_bytes_per_token("fp8") == 2 * 32 * 8 * 128
    assert cfg.kv_bytes_per_token("int4") == 2 * 32 * 8 * 128 * 0.625
    assert cfg.serving(kv_dtype="int4").kv_bytes_per_token() == cfg.kv_bytes_per_token("int4")
    with pytest.raises(ValueError, match="kv_dtype must be one of"):
        cfg.serving(kv_dtype="int2")


SHAPE = dict(gpu="h200", heads_q=32, heads_kv=8, d=128, k=32, batch=8)


@pytest.mark.parametrize("kv_dtype", ["fp8", "int4"])
def test_simulator_reads_fewer_kv_bytes(kv_dtype):
    s = dtypes.kv_element_bytes(kv_dtype)
    base = aqua_model.simulate(context=32768, **SHAPE)
    quant = aqua_model.simulate(context=32768, kv_dtype=kv_dtype, **SHAPE)
    assert quant.inputs["kv_dtype"] == kv_dtype and quant.shape.dtype == "bf16"  # compute stays bf16
    dense_bytes = {k["name"]: k["bytes"] for k in base.dense.table()}
    quant_bytes = {k["name"]: k["bytes"] for k in quant.dense.table()}
    # the dense fused plan reads K and V (2*B*H_kv*N*d elements) plus q and the output
    assert quant_bytes["attention"] < dense_bytes["attention"]
    kv_elements = 2 * 8 * 8 * 32768 * 128
    assert dense_bytes["attention"] - quant_bytes["attention"] == pytest.approx(
        kv_elements * (2 - s), rel=1e-3
    )
    assert float(quant.dense.time_s) < float(base.dense.time_s)
    assert float(quant.ceiling) == pytest.approx(float(base.ceiling))  # 2d/(k+d) either way


def test_quantised_cache_fits_where_bf16_does_not():
    # Llama-3.1-8B, batch 64 at 128K: 64 * 131072 tokens * 131,072 B = 1.10 TB in bf16, 0.34 TB in int4: neither
    # fits 141 GB; at batch 4 and 128K: 68.7 GB in bf16 fits, so use batch 16: 275 GB bf16 (no), 86 GB int4 (yes)
    kw = dict(gpu="h200", model="llama-3.1-8b", context=131072, k=32, batch=16)
    with pytest.raises(ValueError, match="the KV cache needs 274.9 GB"):
        aqua_model.simulate(**kw)
    sim = aqua_model.simulate(kv_dtype="int4", **kw)
    assert sim.inputs["kv_dtype"] == "int4"


def test_quantised_cache_is_decode_only():
    with pytest.raises(ValueError, match="kv_dtype 'fp8' is modelled for decode only"):
        aqua_model.simulate(context=0, prompt=512, phase="prefill", kv_dtype="fp8", **SHAPE)


def test_simulate_command_kv_dtype(capsys):
    argv = [
        "simulate",
        "--model",
        "llama-3.1-8b",
        "--context",
        "32768",
        "--k",
        "32",
        "--batch",
        "8",
        "--json",
    ]
    assert main(argv) == 0
    import json

    bf16 = json.loads(capsys.readouterr().out)
    assert main([*argv, "--kv-dtype", "fp8"]) == 0
    fp8 = json.loads(capsys.readouterr().out)
    assert fp8["inputs"]["kv_dtype"] == "fp8" and bf16["inputs"]["kv_dtype"] == "bf16"
    assert fp8["dense_time_s"] < bf16["dense_time_s"]
    assert fp8["end_to_end"]["dense_attention_s"] < bf16["end_to_end"]["dense_attention_s"]
    assert (
        main(
            [
                "simulate",
                "--heads-q",
                "32",
                "--heads-kv",
                "8",
                "--d",
                "128",
                "--context",
                "4096",
                "--k",
                "32",
                "--kv-dtype",
                "int4",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["inputs"]["kv_dtype"] == "int4"
