"""k = d exactness on the real models, in float32 and in bf16 against the bf16 noise floor.

For each model: one segment of --tokens tokens of an evaluation text of the long-context study,
P calibrated as in that study (its saved projections), and KL divergences per token (nats, mean
over positions): float32 AQUA at k = d against the float32 model (target < 1e-6); the bf16 model
against the float32 model (the noise floor: what bf16 alone costs); bf16 AQUA at k = d against the
float32 model (within the noise floor when no larger than the floor: AQUA in bf16 is then as close
to the exact model as the unmodified bf16 model is); and, for reference, bf16 AQUA at k = d against
the bf16 model directly (two bf16 computations that round in different places, each about a floor
away from float32, can be up to about twice the floor apart). P is applied in float32 whatever the
model's dtype (aqua_model.integrations.transformers.rotation_dtype).

Usage: python analysis/longctx_exactness.py [--model KEY ...] [--tokens 256] [--out analysis/results]
Writes longctx_exactness_<model>.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from aqua_model.fidelity import stdlib_texts
from aqua_model.fidelity.decoder import run_environment
from aqua_model.integrations import models, transformers as aqua_tf
from aqua_model.integrations.calibrate import ModelProjections

STUDY_MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
TEXT = "typing.py"
"""The evaluation file the segment comes from (one of the study's EVAL_FILES, never calibration text)."""
FP32_TARGET_NATS = 1e-6
"""The issue's target for k = d in float32."""


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def check(key: str, *, tokens: int, out: Path) -> dict:
    start = time.perf_counter()
    model, tokenizer = models.load(key)
    name = models.MODELS[key].name
    proj = ModelProjections.load(out / f"longctx_projections_{key}.pt", model_name=name)
    (text,) = stdlib_texts.read_texts([TEXT])
    ids = torch.as_tensor(tokenizer(text.text)["input_ids"][:tokens])[None]
    d = aqua_tf.model_shape(model)[3]
    with torch.no_grad():
        aqua_tf.restore(model)
        base32 = model(input_ids=ids).logits[0]
        aqua_tf.apply(model, proj, k=d)
        aqua32 = model(input_ids=ids).logits[0]
        aqua_tf.restore(model)
        model.to(torch.bfloat16)
        try:
            base16 = model(input_ids=ids).logits[0]
            aqua_tf.apply(model, proj, k=d)
            aqua16 = model(input_ids=ids).logits[0]
            aqua_tf.restore(model)
        finally:
            model.to(torch.float32)  # the cached model goes back as it was loaded
    record = {
        "schema_version": 1,
        "model": name,
        "text": text.record(),
        "tokens": int(ids.shape[1]),
        "kl_fp32_aqua_kd_vs_fp32": kl(base32, aqua32),
        "kl_bf16_vs_fp32_noise_floor": kl(base32, base16),
        "kl_bf16_aqua_kd_vs_fp32": kl(base32, aqua16),
        "kl_bf16_aqua_kd_vs_bf16": kl(base16, aqua16),
        "fp32_target_nats": FP32_TARGET_NATS,
        "seconds": round(time.perf_counter() - start, 1),
        **run_environment(),
    }
    record["fp32_exact"] = record["kl_fp32_aqua_kd_vs_fp32"] < FP32_TARGET_NATS
    record["bf16_within_noise_floor"] = (
        record["kl_bf16_aqua_kd_vs_fp32"] <= record["kl_bf16_vs_fp32_noise_floor"]
    )
    (out / f"longctx_exactness_{key}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", choices=STUDY_MODELS)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for key in args.model or STUDY_MODELS:
        print(json.dumps(check(key, tokens=args.tokens, out=args.out), indent=2))


if __name__ == "__main__":
    main()
