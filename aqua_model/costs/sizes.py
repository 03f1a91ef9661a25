"""The sizes of one evaluation as one typed, validated value: :class:`Sizes`.

Heads, head dimension, context, prompt, batch, kept dims k, storage dtype (and a peer
method's parameters) are checked once, when a :class:`Sizes` is made, and passed down as it
is; :meth:`Sizes.values` gives the symbol-name -> value mapping the numeric evaluation
(:func:`aqua_model.costs.numeric.evaluate`) needs, so no symbol-keyed dict travels through a
public signature. The rules themselves (k <= d, decode and prefill contexts) live here once:
:func:`check_kept_dims` and :func:`check_context`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .._checks import check_choice, check_int, check_int_array
from .dtypes import KV_DTYPES, STORAGE_DTYPES, kv_element_bytes
from .flops import PHASES

#: Smallest head dim a shape may have: AQUA keeps k of d rotated coordinates, and with d = 1 there
#: is nothing to choose (k = d = 1 is dense attention, and the break-even divides by d - k).
MIN_HEAD_DIM = 2


def check_kept_dims(k: Any, d: Any, *, name: str = "k") -> np.ndarray:
    """``k`` as an int array with 1 <= k <= d (kept dims out of d), else ValueError."""
    d_a = check_int_array("d", d, minimum=1)
    k_a = check_int_array(name, k, minimum=1)
    if np.any(k_a > d_a):
        bound = f"; with d = {int(d_a)}, {name} must be <= {int(d_a)}" if d_a.ndim == 0 else f", d={d!r}"
        raise ValueError(f"{name} must be <= d (kept dims out of d){bound}, got {name}={k!r}")
    return k_a


def check_context(phase: str, context: Any, prompt: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, T): decode needs context >= 1 and no prompt; prefill a prompt T >= 1 after
    context >= 0 cached keys."""
    check_choice("phase", phase, PHASES)
    ctx = check_int_array("context", context, minimum=0 if phase == "prefill" else 1)
    if phase == "prefill":
        if prompt is None:
            raise ValueError("prompt (new tokens T) is required when phase='prefill'")
        return ctx, check_int_array("prompt", prompt, minimum=1)
    if prompt is not None:
        raise ValueError(
            f"prompt is only used when phase='prefill', got prompt={prompt!r} with phase='decode'"
        )
    return ctx, None


#: Peer-method parameters a Sizes may carry: field name -> symbol of :mod:`.symbols`.
PEER_FIELDS: dict[str, str] = {
    "approx_dims": "r",
    "kept_tokens": "k_t",
    "page_tokens": "p",
    "budget_tokens": "b",
    "window_tokens": "w",
}


@dataclass(frozen=True)
class Sizes:
    """One layer's sizes, validated on construction; context, prompt, batch and k may be numpy
    arrays (they broadcast). ``k`` defaults to ``d`` (dense). ``context`` is the keys a query
    attends to (N); ``prompt`` the new tokens of a prefill (T). The optional peer parameters
    are SparQ/Loki's approximate dims r, the tokens kept k_t, Quest's page size p and H2O's
    budget b and recent window w."""

    heads_q: int
    heads_kv: int
    d: int
    context: Any
    batch: Any = 1
    k: Any = None
    dtype: str = "bf16"
    phase: str = "decode"
    prompt: Any = None
    approx_dims: Any = None
    kept_tokens: Any = None
    page_tokens: Any = None
    budget_tokens: Any = None
    window_tokens: Any = None
    #: KV-cache dtype (None: ``dtype``): sets ``s``, the bytes per element (:func:`.dtypes.kv_element_bytes`).
    kv_dtype: str | None = None

    def __post_init__(self) -> None:
        hq = check_int("heads_q", self.heads_q, minimum=1)
        hkv = check_int("heads_kv", self.heads_kv, minimum=1)
        if hq % hkv:
            raise ValueError(f"heads_q ({hq}) must be a multiple of heads_kv ({hkv})")
        d = check_int("d", self.d, minimum=1)
        ctx, prompt = check_context(self.phase, self.context, self.prompt)
        set_ = object.__setattr__
        set_(self, "heads_q", hq)
        set_(self, "heads_kv", hkv)
        set_(self, "d", d)
        set_(self, "context", ctx)
        set_(self, "prompt", prompt)
        set_(self, "batch", check_int_array("batch", self.batch, minimum=1))
        set_(self, "k", check_kept_dims(d if self.k is None else self.k, d))
        check_choice("dtype", self.dtype, STORAGE_DTYPES)
        if self.kv_dtype is not None:
            check_choice("kv_dtype", self.kv_dtype, KV_DTYPES)
        for name in PEER_FIELDS:
            value = getattr(self, name)
            if value is not None:
                set_(self, name, check_int_array(name, value, minimum=0 if name == "window_tokens" else 1))

    @property
    def g(self) -> int:
        """Query heads per KV head."""
        return self.heads_q // self.heads_kv

    def values(self) -> dict[str, Any]:
        """Symbol name -> value, for :func:`aqua_model.costs.numeric.evaluate`."""
        out: dict[str, Any] = {
            "B": self.batch,
            "H_q": self.heads_q,
            "H_kv": self.heads_kv,
            "g": self.g,
            "N": self.context,
            "d": self.d,
            "k": self.k,
            "s": kv_element_bytes(self.kv_dtype or self.dtype),
        }
        if self.prompt is not None:
            out["T"] = self.prompt
        out.update(
            {sym: getattr(self, name) for name, sym in PEER_FIELDS.items() if getattr(self, name) is not None}
        )
        return out

    def with_(self, **changes: Any) -> Sizes:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (scalars where a field is a single point)."""

        def plain(x: Any) -> Any:
            arr = np.asarray(x)
            return arr.item() if arr.ndim == 0 else arr.tolist()

        return {
            f.name: (
                plain(getattr(self, f.name))
                if isinstance(getattr(self, f.name), np.ndarray)
                else getattr(self, f.name)
            )
            for f in fields(self)
        }


__all__ = ["PEER_FIELDS", "Sizes", "check_context", "check_kept_dims"]
