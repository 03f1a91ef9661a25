"""Readable eager-torch reference of dense and AQUA attention (any device, small shapes).

Shapes: q [B, H_q, T, d]; k, v [B, H_kv, N, d] (v may have its own last dim d_v). Under GQA,
g = H_q / H_kv consecutive query heads share one KV head (query head h reads KV head h // g).
With ``causal=True`` the T queries are the last T of the N positions: query i sees keys
0 .. N - T + i.

AQUA: q^ = q @ P and k^ = k @ P with P orthogonal ([d, d], or [H_kv, d, d] per KV head; query
head h uses P of its KV head). Each query keeps the ``k_keep`` rotated coordinates with the
largest |q^| ("per-head"), or, with ``selection="group"``, the ``k_keep`` coordinates with the
largest sum of |q^| over the g query heads of its KV group at the same query position (all g
heads then read the same key rows). Scores use only those coordinates of q^ and k^; values and
the softmax are unchanged. ``key_dims=m`` keeps only the first m rotated key coordinates in the
cache (the KV-memory saving); selection is then among those m.

The scores are computed with a gather of the selected key columns followed by a batched
matmul, so the matmul FLOPs are exactly 2 * N * k_keep per query (what the cost model counts).
That gather materialises [B, H_q, T, N, k]: this module is for correctness and counting, not
speed (query blocks are processed in chunks to bound the memory).
"""

from __future__ import annotations

import math

import torch

from aqua_model._checks import check_choice, check_int

SELECTIONS = ("per-head", "group")
# Largest number of gathered key elements materialised at once by the reference.
_GATHER_BUDGET = 1 << 24


def _check_tensor(name: str, value: object, ndim: int, shape_doc: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {value.dtype}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc} ({ndim} dims), got shape {tuple(value.shape)}")
    return value


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> int:
    """Validate attention inputs and return the group size g."""
    _check_tensor("q", q, 4, "[B, H_q, T, d]")
    _check_tensor("k", k, 4, "[B, H_kv, N, d]")
    _check_tensor("v", v, 4, "[B, H_kv, N, d_v]")
    B, hq, T, d = q.shape
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"batch sizes differ: q {B}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[3] != d:
        raise ValueError(f"k head dim must equal q head dim d={d}, got {k.shape[3]}")
    if v.shape[1] != k.shape[1] or v.shape[2] != k.shape[2]:
        raise ValueError(f"v must match k in heads and length, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    return _group_size(hq, k.shape[1], causal=causal, T=T, N=k.shape[2])


def _group_size(heads_q: int, heads_kv: int, *, causal: bool, T: int, N: int) -> int:
    if heads_kv < 1 or heads_q % heads_kv != 0:
        raise ValueError(f"H_q must be a multiple of H_kv, got H_q={heads_q}, H_kv={heads_kv}")
    if T < 1 or N < 1:
        raise ValueError(f"need at least one query and one key, got T={T}, N={N}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if causal and T > N:
        raise ValueError(
            f"with causal=True the T queries are the last T of N keys, so T <= N; got T={T}, N={N}"
        )
    return heads_q // heads_kv


def _scale(scale: float | None, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
        or scale <= 0
    ):
        raise ValueError(f"scale must be a finite positive number or None (1/sqrt(d)), got {scale!r}")
    return float(scale)


def expand_kv(x: torch.Tensor, g: int) -> torch.Tensor:
    """Repeat each KV head g times along dim 1: [B, H_kv, ...] -> [B, H_kv * g, ...]."""
    return x if g == 1 else x.repeat_interleave(g, dim=1)


def causal_mask(T: int, N: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool [T, N], True where query i (position N - T + i) may see key j (j <= N - T + i)."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(N, device=device)[None, :]
    return j <= (N - T) + i


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """Softmax attention in q's dtype with an explicit visibility mask; returns [B, H_q, T, d_v].

    q [B, H_q, T, d]; k, v [B, H_kv, S, d] (GQA by repetition); mask bool [T, S], True where
    visible (e.g. rows of :func:`causal_mask`), or None. The validation suite's float32 check.
    """
    g = q.shape[1] // k.shape[1]
    scores = torch.matmul(q, expand_kv(k, g).transpose(-1, -2))
    if scale != 1.0:
        scores = scores * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), expand_kv(v, g))


def top_indices(mag: torch.Tensor, k_keep: int) -> torch.Tensor:
    """Indices of the k_keep largest entries along the last dim, largest first. Tie rule: among
    equal values the lower index wins (a stable descending sort; torch.topk leaves ties to the
    implementation). The Triton kernels select by the same rule."""
    return torch.sort(mag, dim=-1, descending=True, stable=True).indices[..., :k_keep]


def group_keep_mask(
    q_hat: torch.Tensor, *, k_keep: int, g: int, sum_dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Bool [B, H_q, T, d]: the k_keep coordinates of each query with the largest |q^| summed over
    the g heads of its KV group (the sum taken in ``sum_dtype``), the same for the g heads."""
    B, hq, T, d = q_hat.shape
    mag = q_hat.abs().to(sum_dtype).reshape(B, hq // g, g, T, d).sum(2).float()
    idx = top_indices(mag, k_keep)
    keep = torch.zeros_like(mag, dtype=torch.bool).scatter_(-1, idx, True)
    return keep.repeat_interleave(g, dim=1)


def _softmax_values(scores: torch.Tensor, v_q: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """softmax over keys (in float32 or wider) then probabilities @ values."""
    T, N = scores.shape[-2], scores.shape[-1]
    if causal:
        scores = scores.masked_fill(~causal_mask(T, N, device=scores.device), float("-inf"))
    work = torch.promote_types(scores.dtype, torch.float32)
    probs = torch.softmax(scores.to(work), dim=-1).to(v_q.dtype)
    return torch.matmul(probs, v_q)


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact softmax attention with GQA by repetition; returns [B, H_q, T, d_v]."""
    g = _check_qkv(q, k, v, causal=causal)
    s = _scale(scale, q.shape[-1])
    scores = torch.matmul(q, expand_kv(k, g).transpose(-1, -2)) * s
    return _softmax_values(scores, expand_kv(v, g), causal=causal)


def _check_projection(P: torch.Tensor | None, *, heads_kv: int, d: int) -> torch.Tensor | None:
    if P is None:
        return None
    if not isinstance(P, torch.Tensor) or not P.is_floating_point():
        raise TypeError(
            f"P must be None or a floating torch.Tensor [d, d] / [H_kv, d, d], got {type(P).__name__}"
        )
    if P.dim() == 2 and tuple(P.shape) == (d, d):
        return P
    if P.dim() == 3 and tuple(P.shape) == (heads_kv, d, d):
        return P
    raise ValueError(
        f"P must have shape [d, d]=({d}, {d}) or [H_kv, d, d]=({heads_kv}, {d}, {d}), got {tuple(P.shape)}"
    )


def rotate(x: torch.Tensor, P: torch.Tensor | None, *, g: int = 1) -> torch.Tensor:
    """x [B, H, T, d] @ P: P None (identity), [d, d], or [H_kv, d, d] with H = H_kv * g.

    For queries pass g = H_q / H_kv so that query head h uses P[h // g]; for keys g = 1.
    Costs 2 d^2 FLOPs per vector (one matmul).
    """
    if P is None:
        return x
    P = P.to(x.dtype)
    if P.dim() == 2:
        return torch.matmul(x, P)
    per_head = P.repeat_interleave(g, dim=0) if g > 1 else P  # [H, d, d]
    return torch.matmul(x, per_head)  # [B, H, T, d] @ [H, d, d] broadcasts over B


def select_dims(q_hat: torch.Tensor, *, k_keep: int, selection: str, g: int) -> torch.Tensor:
    """Indices [B, H_q, T, k_keep] of the kept coordinates of each query, largest first.

    "per-head": top-k of |q^| of each query; "group": top-k of the sum of |q^| over the g query
    heads of one KV group at the same query position (the same indices for all g heads).
    """
    mag = q_hat.abs()
    if selection == "group" and g > 1:
        B, hq, T, m = mag.shape
        mag = mag.reshape(B, hq // g, g, T, m).sum(dim=2, keepdim=True).expand(B, hq // g, g, T, m)
        mag = mag.reshape(B, hq, T, m)
    return top_indices(mag, k_keep)


def selected_scores(q_hat: torch.Tensor, k_hat_q: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Scores [B, H_q, T, N]: sum over the kept coordinates of q^ * k^ (unscaled).

    q_hat [B, H_q, T, m], k_hat_q [B, H_q, N, m] (KV heads already repeated), idx
    [B, H_q, T, k]. Gathers the selected key columns to [B, H_q, t, N, k] for a block of t
    queries, then one batched matmul: 2 * N * k FLOPs per query.
    """
    B, hq, T, m = q_hat.shape
    N = k_hat_q.shape[2]
    kk = idx.shape[-1]
    q_sel = torch.gather(q_hat, -1, idx)  # [B, H, T, k]
    block = max(1, _GATHER_BUDGET // max(1, B * hq * N * kk))
    out = []
    for t0 in range(0, T, block):
        t1 = min(T, t0 + block)
        t = t1 - t0
        keys = k_hat_q.unsqueeze(2).expand(B, hq, t, N, m)
        cols = idx[:, :, t0:t1, None, :].expand(B, hq, t, N, kk)
        k_sel = torch.gather(keys, -1, cols)  # [B, H, t, N, k]
        out.append(torch.matmul(k_sel, q_sel[:, :, t0:t1, :, None]).squeeze(-1))
    return torch.cat(out, dim=2) if len(out) > 1 else out[0]


def _check_k_keep(k_keep: int, m: int) -> int:
    return check_int("k_keep", k_keep, minimum=1, maximum=m)


def aqua_attention_rotated(
    q_hat: torch.Tensor,
    k_hat: torch.Tensor,
    v: torch.Tensor,
    *,
    k_keep: int,
    selection: str = "per-head",
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """AQUA attention on already rotated inputs; returns [B, H_q, T, d_v].

    q_hat [B, H_q, T, d]; k_hat [B, H_kv, N, m] with m <= d (a truncated cache holds only the
    first m rotated coordinates; selection is then among q^'s first m). The scale defaults to
    1/sqrt(d) with d the query head dim.
    """
    _check_tensor("q_hat", q_hat, 4, "[B, H_q, T, d]")
    _check_tensor("k_hat", k_hat, 4, "[B, H_kv, N, m]")
    _check_tensor("v", v, 4, "[B, H_kv, N, d_v]")
    B, hq, T, d = q_hat.shape
    m = k_hat.shape[3]
    if k_hat.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"batch sizes differ: q_hat {B}, k_hat {k_hat.shape[0]}, v {v.shape[0]}")
    if not 1 <= m <= d:
        raise ValueError(f"k_hat's last dim m must be in [1, d={d}], got {m}")
    if v.shape[1:3] != k_hat.shape[1:3]:
        raise ValueError(
            f"v must match k_hat in heads and length, got k_hat {tuple(k_hat.shape)}, v {tuple(v.shape)}"
        )
    g = _group_size(hq, k_hat.shape[1], causal=causal, T=T, N=k_hat.shape[2])
    k_keep = _check_k_keep(k_keep, m)
    selection = check_choice("selection", selection, SELECTIONS)
    s = _scale(scale, d)
    q_dom = q_hat[..., :m]
    idx = select_dims(q_dom, k_keep=k_keep, selection=selection, g=g)
    scores = selected_scores(q_dom, expand_kv(k_hat, g), idx) * s
    return _softmax_values(scores, expand_kv(v, g), causal=causal)


def aqua_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    P: torch.Tensor | None,
    *,
    k_keep: int,
    selection: str = "per-head",
    causal: bool = True,
    scale: float | None = None,
    key_dims: int | None = None,
) -> torch.Tensor:
    """AQUA attention from raw q, k, v; returns [B, H_q, T, d_v].

    P: [d, d] or [H_kv, d, d] orthogonal projection (None: inputs are already rotated).
    k_keep: coordinates kept per query (1 .. m). selection: "per-head" or "group".
    key_dims: keep only the first m rotated key coordinates (None: m = d).
    At k_keep = m = d this equals :func:`dense_attention` up to rounding.
    """
    g = _check_qkv(q, k, v, causal=causal)
    d = q.shape[-1]
    P = _check_projection(P, heads_kv=k.shape[1], d=d)
    m = d if key_dims is None else check_int("key_dims", key_dims, minimum=1, maximum=d)
    _check_k_keep(k_keep, m)
    q_hat = rotate(q, P, g=g)
    k_hat = rotate(k, P)[..., :m]
    return aqua_attention_rotated(
        q_hat, k_hat, v, k_keep=k_keep, selection=selection, causal=causal, scale=scale
    )


class ProjectedKVCache:
    """A KV cache holding keys already rotated by P (optionally only their first m coords).

    ``append(k_new, v_new)`` rotates and appends new keys [B, H_kv, t, d] and values
    [B, H_kv, t, d_v]; ``attend(q, ...)`` runs AQUA for queries that are the last T positions;
    ``decode_step(q)`` is the one-query case. Storage grows by concatenation (a reference, not
    a serving cache).
    """

    def __init__(self, P: torch.Tensor | None, *, key_dims: int | None = None) -> None:
        if P is not None:
            if not isinstance(P, torch.Tensor) or not P.is_floating_point() or P.dim() not in (2, 3):
                raise TypeError(f"P must be None or a floating tensor [d, d] / [H_kv, d, d], got {P!r:.60}")
            if P.shape[-1] != P.shape[-2]:
                raise ValueError(f"P must be square in its last two dims, got shape {tuple(P.shape)}")
        self.P = P
        self.key_dims = None if key_dims is None else check_int("key_dims", key_dims, minimum=1)
        self.keys: torch.Tensor | None = None  # [B, H_kv, N, m], rotated
        self.values: torch.Tensor | None = None  # [B, H_kv, N, d_v]
        self.d: int | None = None

    @property
    def length(self) -> int:
        """Number of cached positions N."""
        return 0 if self.keys is None else self.keys.shape[2]

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """Rotate k_new [B, H_kv, t, d] by P, keep its first m coordinates, append with v_new."""
        _check_tensor("k_new", k_new, 4, "[B, H_kv, t, d]")
        _check_tensor("v_new", v_new, 4, "[B, H_kv, t, d_v]")
        if v_new.shape[:3] != k_new.shape[:3]:
            raise ValueError(
                f"v_new must match k_new in batch, heads, length: {tuple(k_new.shape)} vs {tuple(v_new.shape)}"
            )
        d = k_new.shape[-1]
        if self.key_dims is not None and self.key_dims > d:
            raise ValueError(f"key_dims must be <= d={d}, got {self.key_dims}")
        P = _check_projection(self.P, heads_kv=k_new.shape[1], d=d)
        k_hat = rotate(k_new, P)[..., : (self.key_dims or d)]
        if self.keys is None or self.values is None:  # empty (both are set together)
            self.keys, self.values, self.d = k_hat, v_new, d
            return
        if k_hat.shape[:2] != self.keys.shape[:2] or d != self.d or v_new.shape[-1] != self.values.shape[-1]:
            raise ValueError(
                f"k_new/v_new {tuple(k_new.shape)}/{tuple(v_new.shape)} do not match the cache "
                f"(B, H_kv = {tuple(self.keys.shape[:2])}, d = {self.d}, d_v = {self.values.shape[-1]})"
            )
        self.keys = torch.cat([self.keys, k_hat], dim=2)
        self.values = torch.cat([self.values, v_new], dim=2)

    def attend(
        self,
        q: torch.Tensor,
        *,
        k_keep: int,
        selection: str = "per-head",
        causal: bool = True,
        scale: float | None = None,
    ) -> torch.Tensor:
        """AQUA for queries q [B, H_q, T, d] at the last T cached positions; [B, H_q, T, d_v]."""
        if self.keys is None or self.values is None:
            raise ValueError("the cache is empty: append keys and values before attending")
        _check_tensor("q", q, 4, "[B, H_q, T, d]")
        if q.shape[-1] != self.d or q.shape[0] != self.keys.shape[0]:
            raise ValueError(f"q must be [B={self.keys.shape[0]}, H_q, T, d={self.d}], got {tuple(q.shape)}")
        g = _group_size(q.shape[1], self.keys.shape[1], causal=causal, T=q.shape[2], N=self.length)
        P = _check_projection(self.P, heads_kv=self.keys.shape[1], d=self.d)
        q_hat = rotate(q, P, g=g)
        return aqua_attention_rotated(
            q_hat, self.keys, self.values, k_keep=k_keep, selection=selection, causal=causal, scale=scale
        )

    def decode_step(
        self, q: torch.Tensor, *, k_keep: int, selection: str = "per-head", scale: float | None = None
    ) -> torch.Tensor:
        """One decode query q [B, H_q, 1, d] against the whole cache; returns [B, H_q, 1, d_v]."""
        _check_tensor("q", q, 4, "[B, H_q, 1, d]")
        if q.shape[2] != 1:
            raise ValueError(f"decode_step takes one query per head (q.shape[2] == 1), got {q.shape[2]}")
        return self.attend(q, k_keep=k_keep, selection=selection, causal=True, scale=scale)

    def keys_dim_major(self) -> torch.Tensor:
        """The rotated keys as a contiguous dim-major copy [B, H_kv, m, N] (the Triton layout)."""
        if self.keys is None:
            raise ValueError("the cache is empty")
        return self.keys.transpose(-1, -2).contiguous()
