"""AQUA as an attention implementation of Hugging Face transformers (Llama-style decoders).

:func:`apply` registers the implementation ``"aqua"`` in transformers' ``AttentionInterface``
(and its mask builder in ``AttentionMaskInterface``), puts a per-layer state on every attention
module and switches the model to it with ``set_attn_implementation``. transformers then calls
:func:`aqua_attention_forward` with the post-RoPE queries [B, H_q, T, d], the keys and values
[B, H_kv, N, d] (the whole cache when one is used) and the additive mask [B, 1, T, N].

What the function does, per layer (P = that layer's calibrated [H_kv, d, d], query head h uses
P of its KV head h // g):

- ``aqua``: q^ = q P and k^ = k P, post-RoPE; per query the k coordinates with the largest |q^|
  ("per-head"), or with the largest sum of |q^| over the g heads of its KV group ("group");
- ``sparq``: the same selection on the unrotated q (SparQ-style, no softmax correction);
- ``loki``: rotated, the same static prefix of the first k coordinates for every query;
- ``random``: k coordinates drawn uniformly per query (seeded), unrotated;
- ``dense``: exact scores (used for H2O alone).

``stored_dims=m`` keeps only the first m rotated key coordinates (the KV-memory saving);
selection is then among q^'s first m. ``h2o_budget`` adds H2O token eviction on top (see
:func:`h2o_keep_mask`). Values and the softmax are never changed and no score is rescaled.

Scores are computed as (q^ * keep) @ k^T with a 0/1 keep mask over coordinates: exactly the
sum over the kept coordinates (the zeroed terms add 0), so it equals the gathered dot products
of :mod:`aqua_model.kernels.reference` up to float summation order (tested). Rotation,
selection and GQA expansion are the reference's own functions.

The projected-key cache: :class:`ProjectedKeyCache` stores k^ (its first m coordinates only)
instead of k, and marks the keys it hands back so the attention function does not rotate them
again; without it (a plain ``DynamicCache``, or no cache in a full-sequence forward) the function
rotates and truncates the keys it receives, an exactly equivalent computation whose outputs are
the same and whose memory is not saved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from aqua_model.fidelity.methods import METHODS as DIM_METHODS, ROTATED_METHODS
from aqua_model.integrations._args import need_choice, need_int
from aqua_model.kernels.calibration import Calibration
from aqua_model.kernels.reference import SELECTIONS, expand_kv, rotate, select_dims

IMPLEMENTATION = "aqua"
"""Name under which the AQUA attention is registered in transformers' AttentionInterface."""

METHODS = ("dense", *DIM_METHODS)
"""Score methods: exact ("dense") and the dimension-selection methods of aqua_model.fidelity."""

STATE_ATTR = "aqua_state"
"""Attribute of each attention module that holds its :class:`LayerState`."""

PROJECTED_MARK = "_aqua_projected_keys"
"""Attribute set on key tensors that a :class:`ProjectedKeyCache` already rotated and truncated."""

_ORIGINAL_ATTR = "_aqua_original_attn_implementation"

H2O_RECENT_FRACTION = 0.5
"""Default share of the H2O budget given to the recent window (H2O's own split: half heavy
hitters, half recent tokens)."""


@dataclasses.dataclass(frozen=True)
class AquaSettings:
    """What every layer does: method, kept dims k, selection, stored dims m, H2O budget."""

    method: str
    k: int
    selection: str
    stored_dims: int
    h2o_budget: int | None
    h2o_recent: int | None
    seed: int


@dataclasses.dataclass
class LayerState:
    """The state of one attention module: settings, its P [H_kv, d, d] (None: unrotated),
    its layer index, and, while capturing, the list that receives (q, k)."""

    settings: AquaSettings | None
    projection: torch.Tensor | None
    layer_idx: int
    captured: list[tuple[torch.Tensor, torch.Tensor]] | None = None


def attention_modules(model: Any) -> list[Any]:
    """Return the model's self-attention modules ordered by layer index (Llama-style layout)."""
    found = [
        m
        for m in model.modules()
        if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups") and hasattr(m, "head_dim")
    ]
    if not found:
        raise TypeError(
            f"model must be a Llama-style transformers model whose attention modules have layer_idx, "
            f"num_key_value_groups and head_dim; {type(model).__name__} has none"
        )
    found.sort(key=lambda m: m.layer_idx)
    if [m.layer_idx for m in found] != list(range(len(found))):
        raise TypeError(f"model attention layer indices must be 0..L-1, got {[m.layer_idx for m in found]}")
    return found


def model_shape(model: Any) -> tuple[int, int, int, int]:
    """(layers, heads_q, heads_kv, head_dim) of a Llama-style model, from its attention modules."""
    mods = attention_modules(model)
    cfg = model.config
    heads_q = int(cfg.num_attention_heads)
    heads_kv = int(getattr(cfg, "num_key_value_heads", None) or heads_q)
    return len(mods), heads_q, heads_kv, int(mods[0].head_dim)


def rotation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every rotation by P runs in: float32 at least (float64 stays float64).

    Rotating in a 16-bit model dtype rounds P and every rotated coordinate to 8 (bf16) or 11
    (fp16) mantissa bits, so k = d is no longer exact (measured on Qwen2.5-Coder-0.5B in bf16:
    KL 0.0044 against a bf16 noise floor of 0.0018 when P was cast to bf16). In float32 the
    rotation's error is far below the model's own 16-bit rounding.
    """
    return torch.promote_types(dtype, torch.float32)


def _rotate(x: torch.Tensor, projection: torch.Tensor | None, *, g: int = 1) -> torch.Tensor:
    """x @ P in :func:`rotation_dtype` (x itself is not rotated when P is None, only promoted)."""
    wide = rotation_dtype(x.dtype if projection is None else torch.promote_types(x.dtype, projection.dtype))
    return rotate(x.to(wide), None if projection is None else projection.to(wide), g=g)


def _projection_tensor(projections: Any) -> torch.Tensor | None:
    if projections is None:
        return None
    if isinstance(projections, Calibration):
        return projections.P
    inner = getattr(projections, "calibration", None)
    if isinstance(inner, Calibration):
        return inner.P
    if isinstance(projections, torch.Tensor):
        return projections
    raise TypeError(
        "projections must be a Calibration, a ModelProjections, a tensor [layers, heads_kv, d, d] or None; "
        f"got {type(projections).__name__}"
    )


def register() -> None:
    """Register :data:`IMPLEMENTATION` in transformers' attention and mask interfaces (idempotent)."""
    AttentionInterface.register(IMPLEMENTATION, aqua_attention_forward)
    # The eager builder always returns a 4-D additive mask (0 where allowed, the dtype's minimum
    # elsewhere); without a registered builder transformers would pass no mask at all.
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def _settings(
    *,
    d: int,
    k: int | None,
    method: str,
    selection: str,
    stored_dims: int | None,
    h2o_budget: int | None,
    h2o_recent: int | None,
    seed: int,
) -> AquaSettings:
    method = need_choice("method", method, METHODS)
    selection = need_choice("selection", selection, SELECTIONS)
    m = d if stored_dims is None else need_int("stored_dims", stored_dims, minimum=1, maximum=d)
    if method == "dense":
        if k not in (None, m):
            raise ValueError(
                f"k must be None or stored_dims={m} for method 'dense' (exact scores), got {k!r}"
            )
        if stored_dims not in (None, d):
            raise ValueError(
                f"stored_dims must be None for method 'dense' (no rotation to truncate), got {stored_dims!r}"
            )
        k = m
    elif k is None:
        raise ValueError(f"k must be an integer in [1, {m}] for method {method!r}, got None")
    k = need_int("k", k, minimum=1, maximum=m)
    if stored_dims is not None and stored_dims < d and method not in ROTATED_METHODS:
        raise ValueError(
            f"stored_dims < d truncates the rotated keys, so method must be one of {sorted(ROTATED_METHODS)}; "
            f"got method={method!r}"
        )
    recent = None
    if h2o_budget is not None:
        h2o_budget = need_int("h2o_budget", h2o_budget, minimum=2)
        default_recent = max(1, int(h2o_budget * H2O_RECENT_FRACTION))
        recent = (
            default_recent
            if h2o_recent is None
            else need_int("h2o_recent", h2o_recent, minimum=1, maximum=h2o_budget - 1)
        )
    elif h2o_recent is not None:
        raise ValueError(f"h2o_recent needs h2o_budget, got h2o_recent={h2o_recent!r} and h2o_budget=None")
    return AquaSettings(method, k, selection, m, h2o_budget, recent, need_int("seed", seed, minimum=0))


def apply(
    model: Any,
    projections: Any = None,
    *,
    k: int | None,
    method: str = "aqua",
    selection: str = "per-head",
    stored_dims: int | None = None,
    h2o_budget: int | None = None,
    h2o_recent: int | None = None,
    seed: int = 0,
) -> Any:
    """Run ``model`` with AQUA (or a peer) attention from now on; returns the same model.

    ``projections``: a :class:`~aqua_model.kernels.calibration.Calibration`, a
    :class:`~aqua_model.integrations.calibrate.ModelProjections` or a tensor [layers, heads_kv, d, d];
    required by the rotated methods ("aqua", "loki"), unused by the others. ``k``: kept
    coordinates per query (1 .. m; None for "dense"). ``selection``: "per-head" or "group".
    ``stored_dims``: m, the rotated key coordinates kept in the cache (None: d). ``h2o_budget``:
    KV tokens kept per KV head by H2O (None: no eviction), of which ``h2o_recent`` (default half)
    are the most recent. ``seed``: draws of the "random" method. Call :func:`restore` to undo.
    """
    layers, _heads_q, heads_kv, d = model_shape(model)
    settings = _settings(
        d=d,
        k=k,
        method=method,
        selection=selection,
        stored_dims=stored_dims,
        h2o_budget=h2o_budget,
        h2o_recent=h2o_recent,
        seed=seed,
    )
    P = _projection_tensor(projections)
    if settings.method in ROTATED_METHODS:
        if P is None:
            raise ValueError(
                f"projections are required by method {settings.method!r} (it rotates by P), got None"
            )
        want = (layers, heads_kv, d, d)
        if tuple(P.shape) != want:
            raise ValueError(
                f"projections must have shape [layers, heads_kv, d, d] = {want}, got {tuple(P.shape)}"
            )
    _install(model, settings, P if settings.method in ROTATED_METHODS else None)
    return model


def _install(
    model: Any, settings: AquaSettings | None, P: torch.Tensor | None, capture: bool = False
) -> None:
    register()
    for mod in attention_modules(model):
        device = next(mod.parameters()).device
        # P stays in float32 (float64 stays float64) whatever the model's dtype: see rotation_dtype.
        proj = None if P is None else P[mod.layer_idx].to(dtype=rotation_dtype(P.dtype), device=device)
        setattr(mod, STATE_ATTR, LayerState(settings, proj, mod.layer_idx, [] if capture else None))
    if not hasattr(model, _ORIGINAL_ATTR):
        setattr(model, _ORIGINAL_ATTR, model.config._attn_implementation)
    if model.config._attn_implementation != IMPLEMENTATION:
        model.set_attn_implementation(IMPLEMENTATION)


def restore(model: Any) -> Any:
    """Undo :func:`apply`: remove the per-layer states and return to the original implementation."""
    for mod in attention_modules(model):
        if hasattr(mod, STATE_ATTR):
            delattr(mod, STATE_ATTR)
    original = getattr(model, _ORIGINAL_ATTR, None)
    if original is not None:
        model.set_attn_implementation(original)
        delattr(model, _ORIGINAL_ATTR)
    return model


def capture(model: Any, run: Any) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Call ``run()`` with exact attention while recording post-RoPE q and k of every layer.

    Returns (queries, keys): per layer, the list of [B, H_q, T, d] / [B, H_kv, N, d] tensors
    seen, in call order. The model is restored afterwards.
    """
    if not callable(run):
        raise TypeError(f"run must be a callable of no arguments, got {type(run).__name__}")
    _install(model, None, None, capture=True)
    try:
        with torch.no_grad():
            run()
        mods = attention_modules(model)
        queries = [[q for q, _ in getattr(m, STATE_ATTR).captured] for m in mods]
        keys = [[k for _, k in getattr(m, STATE_ATTR).captured] for m in mods]
    finally:
        restore(model)
    return queries, keys


# --------------------------------------------------------------------------- attention


def _additive_mask(attention_mask: torch.Tensor | None, T: int, N: int, ref: torch.Tensor) -> torch.Tensor:
    """A float mask broadcastable to [B, H, T, N]: 0 where allowed, a very negative number elsewhere."""
    zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
    neg = torch.full((), torch.finfo(ref.dtype).min, dtype=ref.dtype, device=ref.device)
    if attention_mask is None:
        # Causal with the T queries at the last T of the N positions (the sdpa is_causal rule).
        i = torch.arange(T, device=ref.device)[:, None]
        j = torch.arange(N, device=ref.device)[None, :]
        allowed = j <= (N - T) + i
        return torch.where(allowed, zero, neg)
    mask = attention_mask[..., :N]
    if mask.dtype == torch.bool:
        return torch.where(mask, zero, neg)
    return mask.to(ref.dtype)


def _keep_dims(q_hat: torch.Tensor, settings: AquaSettings, g: int, layer_idx: int) -> torch.Tensor:
    """0/1 mask [B, H_q, T, m] of the coordinates each query keeps."""
    B, hq, T, m = q_hat.shape
    if settings.method == "random":
        gen = torch.Generator(device=q_hat.device).manual_seed(settings.seed * 100_003 + layer_idx)
        shape = (B, hq // g, 1, T, m) if settings.selection == "group" else (B, hq, 1, T, m)
        draws = torch.rand(shape, generator=gen, device=q_hat.device, dtype=q_hat.dtype)
        draws = draws.expand(B, shape[1], g if settings.selection == "group" else 1, T, m).reshape(
            B, hq, T, m
        )
        idx = select_dims(draws, k_keep=settings.k, selection="per-head", g=g)
    else:
        idx = select_dims(q_hat, k_keep=settings.k, selection=settings.selection, g=g)
    return torch.zeros_like(q_hat).scatter_(-1, idx, 1.0)


def approximate_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    settings: AquaSettings,
    projection: torch.Tensor | None,
    layer_idx: int = 0,
    keys_projected: bool = False,
) -> torch.Tensor:
    """Unscaled scores [B, H_q, T, N] of ``settings.method`` from post-RoPE q [B, H_q, T, d] and
    k [B, H_kv, N, d] (or k^ [B, H_kv, N, m] when ``keys_projected``)."""
    hq, hkv = query.shape[1], key.shape[1]
    if hkv < 1 or hq % hkv:
        raise ValueError(f"heads_q must be a multiple of heads_kv, got {hq} and {hkv}")
    g = hq // hkv
    m = settings.stored_dims
    q_hat = _rotate(query, projection, g=g)[..., :m]
    k_hat = _rotate(key, None) if keys_projected else _rotate(key, projection)[..., :m]
    k_hat = k_hat.to(q_hat.dtype)
    if k_hat.shape[-1] != m:
        raise ValueError(f"keys must hold m={m} coordinates, got {k_hat.shape[-1]}")
    k_rep = expand_kv(k_hat, g)
    if settings.method == "dense" or settings.k == m:
        return torch.matmul(q_hat, k_rep.transpose(-1, -2))
    if settings.method == "loki":
        kk = settings.k
        return torch.matmul(q_hat[..., :kk], k_rep[..., :kk].transpose(-1, -2))
    keep = _keep_dims(q_hat, settings, g, layer_idx)
    return torch.matmul(q_hat * keep, k_rep.transpose(-1, -2))


def h2o_keep_mask(scores: torch.Tensor, *, g: int, budget: int, recent: int) -> torch.Tensor:
    """H2O eviction replayed over a full sequence: bool keep mask [B, H_q, T, T].

    ``scores`` [B, H_q, T, T] are the (approximate, scaled, causally masked) scores of T queries
    at positions 0 .. T-1. The cache of each KV head holds at most ``budget`` tokens: at step t
    token t enters; when the cache is over budget, the token outside the ``recent`` most recent
    ones with the smallest accumulated attention (summed over the g heads of the group and over
    all earlier queries, each query's softmax taken over the tokens it could still see) is
    evicted for good. Query t then sees exactly the tokens left in the cache.
    """
    B, hq, T, N = scores.shape
    if T != N:
        raise ValueError(
            f"H2O is replayed over a full sequence only (no cache): queries T={T} must equal keys N={N}"
        )
    hkv = hq // g
    s = scores.reshape(B, hkv, g, T, N).float()
    alive = torch.zeros(B, hkv, N, dtype=torch.bool, device=scores.device)
    acc = torch.zeros(B, hkv, N, dtype=torch.float32, device=scores.device)
    keep = torch.zeros(B, hkv, T, N, dtype=torch.bool, device=scores.device)
    inf = torch.tensor(float("inf"), device=scores.device)
    for t in range(T):
        alive[..., t] = True
        if t + 1 > budget:
            cand = torch.where(alive, acc, inf)
            cand[..., max(0, t - recent + 1) : t + 1] = inf
            alive.scatter_(-1, cand.argmin(dim=-1, keepdim=True), False)
        keep[:, :, t] = alive
        row = s[:, :, :, t, :].masked_fill(~alive[:, :, None, :], float("-inf"))
        acc += torch.softmax(row, dim=-1).sum(dim=2)
    return keep[:, :, None].expand(B, hkv, g, T, N).reshape(B, hq, T, N)


def aqua_attention_forward(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered attention function: returns ([B, T, H_q, d_v] output, [B, H_q, T, N] probabilities)."""
    state = getattr(module, STATE_ATTR, None)
    if state is None:
        raise RuntimeError(
            f"attention module of layer {getattr(module, 'layer_idx', '?')} has no AQUA state: "
            "call aqua_model.integrations.transformers.apply(model, ...) first"
        )
    if dropout:
        raise ValueError(f"dropout must be 0 (AQUA attention is for inference), got {dropout!r}")
    _B, hq, T, d = query.shape
    hkv = value.shape[1]
    g = hq // hkv
    scale = d**-0.5 if scaling is None else float(scaling)
    settings = state.settings
    if state.captured is not None:
        state.captured.append((query.detach().clone(), key.detach().clone()))
    if settings is None:
        settings = AquaSettings("dense", d, "per-head", d, None, None, 0)
    projected = bool(getattr(key, PROJECTED_MARK, False))
    scores = approximate_scores(
        query,
        key,
        settings=settings,
        projection=state.projection,
        layer_idx=state.layer_idx,
        keys_projected=projected,
    )
    N = scores.shape[-1]
    scores = scores * scale + _additive_mask(attention_mask, T, N, scores)
    if settings.h2o_budget is not None:
        keep = h2o_keep_mask(scores, g=g, budget=settings.h2o_budget, recent=settings.h2o_recent)
        scores = scores.masked_fill(~keep, float("-inf"))
    # softmax in float32 at least (as transformers' eager attention), float64 inputs stay float64
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(
        value.dtype
    )
    out = torch.matmul(probs, expand_kv(value, g))
    return out.transpose(1, 2).contiguous(), probs


# --------------------------------------------------------------------------- cache


class _ProjectsKeys:
    """Mixin of the projected-key layers: rotate (in :func:`rotation_dtype`) and truncate the new
    keys before the cache layer of transformers stores them (in the keys' own dtype)."""

    projection: torch.Tensor | None
    stored_dims: int

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        k_hat = _rotate(key_states, self.projection)[..., : self.stored_dims].to(key_states.dtype)
        keys, values = super().update(k_hat, value_states, *args, **kwargs)  # type: ignore[misc]
        setattr(keys, PROJECTED_MARK, True)
        return keys, values


class ProjectedKeyLayer(_ProjectsKeys, DynamicLayer):
    """One full-attention layer of a :class:`ProjectedKeyCache`: stores k^ = (k P)[..., :m] and the values."""

    def __init__(self, projection: torch.Tensor | None, stored_dims: int) -> None:
        super().__init__()
        self.projection = projection
        self.stored_dims = stored_dims


class ProjectedKeySlidingWindowLayer(_ProjectsKeys, DynamicSlidingWindowLayer):
    """One sliding-window layer of a :class:`ProjectedKeyCache`: keeps, like transformers'
    ``DynamicSlidingWindowLayer``, only the last ``sliding_window - 1`` tokens' k^ and values."""

    def __init__(self, projection: torch.Tensor | None, stored_dims: int, *, sliding_window: int) -> None:
        super().__init__(sliding_window=sliding_window)
        self.projection = projection
        self.stored_dims = stored_dims


class ProjectedKeyCache(DynamicCache):
    """A dynamic cache whose keys are stored rotated by each layer's P and truncated to m coordinates.

    Build it with :func:`projected_key_cache` after :func:`apply`; pass it as ``cache=`` (or
    ``past_key_values=``) to the model. Key memory per token and KV head: m instead of d values.
    """

    def __init__(self, layers: Sequence[ProjectedKeyLayer | ProjectedKeySlidingWindowLayer]) -> None:
        super().__init__()
        self.layers = list(layers)
        self.layer_class_to_replicate = None

    def key_values_stored(self) -> int:
        """Number of key values held (all layers, batch, heads, tokens and stored coordinates)."""
        layers = cast(list[ProjectedKeyLayer | ProjectedKeySlidingWindowLayer], self.layers)
        return sum(0 if layer.keys is None else layer.keys.numel() for layer in layers)


def projected_key_cache(model: Any) -> ProjectedKeyCache:
    """Return an empty :class:`ProjectedKeyCache` for a model that :func:`apply` set up.

    Each layer is of the kind transformers' ``DynamicCache(config=model.config)`` gives it: a
    sliding-window layer (keeping the last ``sliding_window - 1`` tokens) where the config makes
    the layer sliding or chunked, a full layer otherwise; so the projected cache keeps exactly
    the tokens the dynamic cache keeps.
    """
    template = DynamicCache(config=model.config).layers
    layers: list[ProjectedKeyLayer | ProjectedKeySlidingWindowLayer] = []
    for mod in attention_modules(model):
        state = getattr(mod, STATE_ATTR, None)
        if state is None or state.settings is None:
            raise ValueError(
                "model must be set up by apply(model, ...) before building its projected-key cache"
            )
        if state.settings.h2o_budget is not None:
            raise ValueError(
                "H2O eviction is replayed over full sequences only; a cache cannot be used with h2o_budget"
            )
        kind = template[mod.layer_idx] if mod.layer_idx < len(template) else DynamicLayer()
        m = state.settings.stored_dims
        if isinstance(kind, DynamicSlidingWindowLayer):
            layers.append(
                ProjectedKeySlidingWindowLayer(state.projection, m, sliding_window=kind.sliding_window)
            )
        elif type(kind) is DynamicLayer:
            layers.append(ProjectedKeyLayer(state.projection, m))
        else:
            raise TypeError(
                f"layer {mod.layer_idx} needs a cache layer of kind {type(kind).__name__}, which the projected-key "
                "cache does not provide (it provides full and sliding-window layers)"
            )
    return ProjectedKeyCache(layers)
