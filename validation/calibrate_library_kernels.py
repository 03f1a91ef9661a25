"""Calibrate the two library kernels whose cost a byte/FLOP roofline cannot see, and add them
to an existing calibrated profile:

* torch.softmax over bf16 rows, against row length (read + write bytes over time, as a
  fraction of the profile's bandwidth): long rows are normalised in several passes;
* torch SDPA's causal prefill kernel at ONE calibration shape (B=2, 32 heads, T=4096, d=128,
  bf16; not a shape of the validation grid): its FLOPs over visible pairs over time, as a
  fraction of the bf16 peak.

Usage (on the GPU): python validation/calibrate_library_kernels.py PROFILE.toml --out NEW.toml
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqua_model._datafiles import read_toml, to_toml  # noqa: E402
from aqua_model.hardware import load  # noqa: E402
from aqua_model.validate.timing import time_fn  # noqa: E402

#: Softmax row lengths (keys per query row) and the total bytes of each softmax input.
SOFTMAX_LENGTHS = (128, 512, 2048, 8192, 32768)
SOFTMAX_INPUT_BYTES = 1 << 30
#: The SDPA calibration shape (outside the validation grid's T in {512, 2048, 8192}, B in {1, 4}).
SDPA_BATCH, SDPA_HEADS, SDPA_T, SDPA_D = 2, 32, 4096, 128
#: FLOPs per visible (query, key) pair of dense attention: q.k and p.v, 2 per multiply-add.
FLOPS_PER_PAIR_PER_DIM = 4


def main() -> None:
    import torch
    import torch.nn.functional as F

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    prof = load(args.profile)
    doc = read_toml(Path(args.profile))
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(7)

    softmax_rows = []
    for length in SOFTMAX_LENGTHS:
        rows = SOFTMAX_INPUT_BYTES // (2 * length)
        x = torch.randn((rows, length), device=dev, generator=gen, dtype=torch.float32).to(torch.bfloat16)
        t = time_fn(lambda: torch.softmax(x, dim=-1), device="cuda", graph=True).median_s
        moved = 2 * x.numel() * 2
        eff = moved / max(t - prof.launch_overhead_s, 1e-12) / prof.bandwidth_bytes_per_s
        softmax_rows.append([float(length), float(moved), t, eff])
        print(
            f"softmax length {length:6d}: {t * 1e3:8.3f} ms, {moved / t / 1e12:.2f} TB/s, efficiency {eff:.3f}",
            flush=True,
        )
        del x
        torch.cuda.empty_cache()

    shape = (SDPA_BATCH, SDPA_HEADS, SDPA_T, SDPA_D)
    q, k, v = (
        torch.randn(shape, device=dev, generator=gen, dtype=torch.float32).to(torch.bfloat16)
        for _ in range(3)
    )
    t = time_fn(
        lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), device="cuda", graph=True
    ).median_s
    pairs = SDPA_T * (SDPA_T + 1) // 2
    flops = FLOPS_PER_PAIR_PER_DIM * SDPA_D * pairs * SDPA_BATCH * SDPA_HEADS
    attn_eff = flops / t / prof.peak_flops("bf16")
    print(
        f"SDPA causal prefill {shape}: {t * 1e3:.3f} ms, {flops / t / 1e12:.1f} TFLOP/s, efficiency {attn_eff:.3f}"
    )

    cal = doc["calibration"]
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    cal["softmax_length_bytes_s_efficiency"] = softmax_rows
    cal["attention_compute_efficiency"] = attn_eff
    cal["library_kernels_method"] = (
        f"validation/calibrate_library_kernels.py, {date}, torch {torch.__version__}: torch.softmax over bf16 rows "
        f"({SOFTMAX_INPUT_BYTES} input bytes per length), efficiency = (read + write bytes) / (time - launch) / bandwidth; "
        f"SDPA is_causal=True at B={SDPA_BATCH}, H={SDPA_HEADS}, T={SDPA_T}, d={SDPA_D}, efficiency = "
        f"{FLOPS_PER_PAIR_PER_DIM}*d FLOPs per visible pair / time / bf16 peak; do_bench of CUDA-graph replays, L2 flushed, median"
    )
    assert all(math.isfinite(r[3]) and r[3] > 0 for r in softmax_rows) and 0 < attn_eff < 1
    Path(args.out).write_text(
        to_toml(
            doc, header="Calibrated profile; library kernels added by validation/calibrate_library_kernels.py"
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
