"""A tiny random Qwen2 for the tests (not a test module): q/k/v biases, GQA, RoPE, optional sliding window."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from aqua_model.integrations import transformers as aq

VOCAB = 97
"""Vocabulary of the tiny model."""


def tiny_qwen2(*, sliding: bool = False, layers: int = 3, seed: int = 0) -> Qwen2ForCausalLM:
    """A random Qwen2: 6 query / 2 KV heads of head dim 16, q/k/v biases (Qwen2's default)."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=96,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        use_sliding_window=sliding,
        sliding_window=5 if sliding else None,
        max_window_layers=1,
        tie_word_embeddings=True,
        initializer_range=0.2,  # larger than the default 0.02, so attention is far from uniform
        attn_implementation="eager",
    )
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # random biases: the default init sets them to zero, which would test nothing
        for mod in aq.attention_modules(model):
            for proj in (mod.q_proj, mod.k_proj, mod.v_proj):
                proj.bias.normal_(0.0, 0.5)
    return model.eval()
