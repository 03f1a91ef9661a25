"""The attention shape of one layer (heads, head dim, layers, storage and KV-cache dtypes),
from a model config or given explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._checks import check_choice, check_int
from ..costs.dtypes import KV_DTYPES, STORAGE_DTYPES, kv_element_bytes
from ..costs.sizes import MIN_HEAD_DIM
from .config import ModelConfig, load as load_model


@dataclass(frozen=True)
class Shape:
    """Attention shape of one layer: heads, head dim, layers, storage dtype.

    ``sliding_window`` is the window every simulated layer attends through (0: full causal
    attention). A model whose layers mix windowed and global attention (Gemma-2) is simulated
    as a global layer (``sliding_window`` 0), with ``local_layers`` of its layers attending
    through ``local_window`` (see :func:`aqua_model.end_to_end`). ``kv_dtype`` is the KV-cache
    dtype (None: the storage dtype); it sets the bytes per element ``s`` of the byte model.
    """

    heads_q: int
    heads_kv: int
    d: int
    layers: int
    dtype: str
    max_context: int | None = None
    name: str = "explicit shape"
    sliding_window: int = 0
    kv_dtype: str | None = None
    local_window: int = 0
    local_layers: int = 0

    @property
    def g(self) -> int:
        return self.heads_q // self.heads_kv

    @property
    def cache_dtype(self) -> str:
        """The KV-cache dtype: ``kv_dtype``, else the storage dtype."""
        return self.kv_dtype or self.dtype

    @property
    def kv_element_bytes(self) -> float:
        """Bytes per KV-cache element, scales included (the symbol ``s``)."""
        return kv_element_bytes(self.cache_dtype)


def resolve_shape(
    model: str | ModelConfig | None,
    *,
    heads_q: Any = None,
    heads_kv: Any = None,
    d: Any = None,
    layers: Any = None,
    dtype: str | None = None,
    kv_dtype: str | None = None,
) -> Shape:
    """Shape from a model config (by name, path or object) or from explicit heads, head dim and
    layers (default 1); a model brings its own layers, so ``layers`` with a model is refused."""
    if dtype is not None:
        check_choice("dtype", dtype, STORAGE_DTYPES)
    if kv_dtype is not None:
        check_choice("kv_dtype", kv_dtype, KV_DTYPES)
    if model is not None:
        cfg = model if isinstance(model, ModelConfig) else load_model(model)
        given = [n for n, v in (("heads_q", heads_q), ("heads_kv", heads_kv), ("d", d)) if v is not None]
        if layers is not None:
            raise ValueError(
                f"layers is taken from the model ({cfg.key!r} has {cfg.layers}); give layers only with an explicit "
                f"shape, got layers={layers!r}"
            )
        if given:
            raise ValueError(
                f"give either model or an explicit shape (heads_q, heads_kv, d), not both; got model={cfg.key!r} "
                f"and {', '.join(given)}"
            )
        pattern = cfg.sliding_window_pattern
        return Shape(
            cfg.heads,
            cfg.kv_heads,
            cfg.head_dim,
            cfg.layers,
            dtype or cfg.dtype,
            cfg.max_context,
            cfg.name,
            cfg.sliding_window if pattern == "all" else 0,
            kv_dtype or cfg.kv_dtype,
            cfg.sliding_window if pattern == "mixed" else 0,
            cfg.sliding_window_layers if pattern == "mixed" else 0,
        )
    missing = [n for n, v in (("heads_q", heads_q), ("heads_kv", heads_kv), ("d", d)) if v is None]
    if missing:
        raise ValueError(
            f"give a model, or heads_q, heads_kv and d for an explicit shape; missing: {', '.join(missing)}"
        )
    hq, hkv = check_int("heads_q", heads_q, minimum=1), check_int("heads_kv", heads_kv, minimum=1)
    if hq % hkv:
        raise ValueError(f"heads_q ({hq}) must be a multiple of heads_kv ({hkv})")
    return Shape(
        hq,
        hkv,
        check_int("d", d, minimum=MIN_HEAD_DIM),
        check_int("layers", 1 if layers is None else layers, minimum=1),
        dtype or "bf16",
        kv_dtype=kv_dtype,
    )
