"""The attention shape of one layer (heads, head dim, layers, storage dtype), from a model
config or given explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._checks import check_int
from .config import ModelConfig, load as load_model


@dataclass(frozen=True)
class Shape:
    """Attention shape of one layer: heads, head dim, layers, storage dtype."""

    heads_q: int
    heads_kv: int
    d: int
    layers: int
    dtype: str
    max_context: int | None = None
    name: str = "explicit shape"
    sliding_window: int = 0

    @property
    def g(self) -> int:
        return self.heads_q // self.heads_kv


def resolve_shape(model: str | ModelConfig | None, *, heads_q: Any = None, heads_kv: Any = None, d: Any = None,
                  layers: Any = 1, dtype: str | None = None) -> Shape:
    """Shape from a model config (by name) or from explicit heads, head dim and layers."""
    if model is not None:
        cfg = model if isinstance(model, ModelConfig) else load_model(model)
        if any(v is not None for v in (heads_q, heads_kv, d)):
            raise ValueError("give either model or an explicit shape (heads_q, heads_kv, d), not both")
        return Shape(cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.layers, dtype or cfg.dtype, cfg.max_context, cfg.name, cfg.sliding_window)
    missing = [n for n, v in (("heads_q", heads_q), ("heads_kv", heads_kv), ("d", d)) if v is None]
    if missing:
        raise ValueError(f"without a model, the shape needs {missing}")
    hq, hkv = check_int("heads_q", heads_q, minimum=1), check_int("heads_kv", heads_kv, minimum=1)
    if hq % hkv:
        raise ValueError(f"heads_q ({hq}) must be a multiple of heads_kv ({hkv})")
    return Shape(hq, hkv, check_int("d", d, minimum=1), check_int("layers", layers, minimum=1), dtype or "bf16")
