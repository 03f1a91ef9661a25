"""The paper's calibration on a transformers decoder: one SVD per (layer, KV group), post-RoPE.

For every layer and KV group, the post-RoPE queries of the group's g query heads and the
post-RoPE keys of its KV head, collected on calibration text, are stacked into one matrix and
decomposed once (:func:`aqua_model.kernels.calibration.calibrate`, uncentred, source "both").
:class:`ModelProjections` adds what the kernels' calibration file does not carry: the model's
name, the calibration text and its token count, under its own schema version.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from aqua_model.integrations import transformers as aqua_tf
from aqua_model.kernels.calibration import SOURCES, Calibration, calibrate

SCHEMA_VERSION = 1
_FILE_KIND = "aqua_model.integrations.projections"
_CAL_FIELDS = ("d", "layers", "heads_q", "heads_kv", "center", "source", "n_samples", "created_by")
ORTHOGONALITY_TOLERANCE = 1e-4
"""Largest max |P^T P - I| accepted when loading (float32 SVD factors are orthogonal to ~1e-6)."""


@dataclasses.dataclass(frozen=True, eq=False)
class ModelProjections:
    """The projections of one model, with the model's name and what they were calibrated on."""

    model_name: str
    text: str
    n_tokens: int
    calibration: Calibration

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write with ``torch.save`` as a plain dict with a kind and a schema version."""
        cal = self.calibration
        payload: dict[str, Any] = {
            "kind": _FILE_KIND,
            "schema_version": SCHEMA_VERSION,
            "model_name": self.model_name,
            "text": self.text,
            "n_tokens": self.n_tokens,
            "P": cal.P.detach().cpu(),
            **{name: getattr(cal, name) for name in _CAL_FIELDS},
        }
        torch.save(payload, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, model_name: str | None = None) -> ModelProjections:
        """Read a file written by :meth:`save`; with ``model_name``, refuse projections of another model."""
        where = os.fspath(path)
        payload = torch.load(where, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("kind") != _FILE_KIND:
            raise ValueError(f"{where!r} is not an AQUA model-projections file (kind must be {_FILE_KIND!r})")
        if payload.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version must be {SCHEMA_VERSION}, got {payload.get('schema_version')!r} in {where!r}"
            )
        missing = [f for f in ("model_name", "text", "n_tokens", "P", *_CAL_FIELDS) if f not in payload]
        if missing:
            raise ValueError(f"projections file {where!r} misses fields {missing}")
        if model_name is not None and payload["model_name"] != model_name:
            raise ValueError(
                f"model_name must be {payload['model_name']!r} for {where!r} (its projections), got {model_name!r}"
            )
        P = payload["P"]
        if not isinstance(P, torch.Tensor) or not P.is_floating_point() or not bool(torch.isfinite(P).all()):
            raise ValueError(f"P in {where!r} must be a finite floating tensor")
        cal = Calibration(P=P, **{f: payload[f] for f in _CAL_FIELDS})
        eye = torch.eye(cal.d, dtype=torch.float64)
        err = (P.double().mT @ P.double() - eye).abs().max().item()
        if not math.isfinite(err) or err > ORTHOGONALITY_TOLERANCE:
            raise ValueError(
                f"P in {where!r} is not orthogonal: max |P^T P - I| = {err:.3g} > {ORTHOGONALITY_TOLERANCE}"
            )
        return cls(payload["model_name"], payload["text"], int(payload["n_tokens"]), cal)


def collect_qk(
    model: Any, segments: Sequence[torch.Tensor], *, batch_size: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-RoPE queries [L, H_q, n, d] and keys [L, H_kv, n, d] of ``segments`` (1-D token-id tensors).

    Segments of equal length run ``batch_size`` at a time, each without a cache (every key is
    the key of a token of that segment); n is the total number of tokens.
    """
    if not segments:
        raise ValueError("segments must hold at least one token-id tensor, got none")
    for i, seg in enumerate(segments):
        if not isinstance(seg, torch.Tensor) or seg.dim() != 1 or seg.numel() == 0 or seg.is_floating_point():
            raise ValueError(
                f"segments[{i}] must be a non-empty 1-D integer tensor of token ids, got {seg!r:.60}"
            )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    def run() -> None:
        for start in range(0, len(segments), batch_size):
            chunk = list(segments[start : start + batch_size])
            if len({len(s) for s in chunk}) == 1:
                model(input_ids=torch.stack(chunk), use_cache=False)
            else:
                for seg in chunk:
                    model(input_ids=seg[None], use_cache=False)

    queries, keys = aqua_tf.capture(model, run)
    # per layer: list of [B, H, T, d] -> [H, sum(B*T), d]
    q = torch.stack(
        [
            torch.cat([t.transpose(0, 1).reshape(t.shape[1], -1, t.shape[3]) for t in per], dim=1)
            for per in queries
        ]
    )
    k = torch.stack(
        [
            torch.cat([t.transpose(0, 1).reshape(t.shape[1], -1, t.shape[3]) for t in per], dim=1)
            for per in keys
        ]
    )
    return q, k


def collect_qk_prefill(
    model: Any, ids: torch.Tensor, *, chunk_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-RoPE queries [L, H_q, n, d] and keys [L, H_kv, n, d] of one long sequence ``ids`` (1-D),
    run as a chunked prefill with a cache of ``chunk_tokens`` tokens per forward.

    Every position of the sequence gives one query and one key, as in :func:`collect_qk`, but the
    attention of a chunk covers only [chunk, n] scores, so long calibration texts (whose keys sit
    at the positions a long context reaches: RoPE rotates the low frequencies only there) fit in
    memory. The model is restored afterwards.
    """
    from transformers.cache_utils import DynamicCache

    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.numel() < 2 or ids.is_floating_point():
        raise ValueError(f"ids must be a 1-D integer tensor of at least 2 token ids, got {ids!r:.60}")
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be a positive integer, got {chunk_tokens!r}")
    mods = aqua_tf.attention_modules(model)
    qs: list[list[torch.Tensor]] = [[] for _ in mods]
    ks: list[list[torch.Tensor]] = [[] for _ in mods]
    aqua_tf._install(model, None, None, capture=True)
    try:
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            for start in range(0, ids.numel(), chunk_tokens):
                chunk = ids[start : start + chunk_tokens]
                model(input_ids=chunk[None], cache=cache, use_cache=True, logits_to_keep=1)
                for i, mod in enumerate(mods):
                    state = getattr(mod, aqua_tf.STATE_ATTR)
                    for q, k in state.captured:  # one entry per forward: q [1, H_q, T, d], k [1, H_kv, N, d]
                        qs[i].append(q[0])
                        ks[i].append(k[0, :, -q.shape[2] :])
                    state.captured.clear()
    finally:
        aqua_tf.restore(model)
    return torch.stack([torch.cat(per, dim=1) for per in qs]), torch.stack(
        [torch.cat(per, dim=1) for per in ks]
    )


def calibrate_model_prefill(
    model: Any,
    ids: torch.Tensor,
    *,
    model_name: str,
    text: str,
    chunk_tokens: int,
    source: str = "both",
) -> ModelProjections:
    """:func:`calibrate_model` on one long sequence run as a chunked prefill (:func:`collect_qk_prefill`)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(map(repr, SOURCES))}; got {source!r}")
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must name the calibration text, got {text!r}")
    q, k = collect_qk_prefill(model, ids, chunk_tokens=chunk_tokens)
    cal = calibrate(q.double(), k.double(), center=False, source=source)
    cal = dataclasses.replace(cal, P=cal.P.float())
    return ModelProjections(model_name, text, int(ids.numel()), cal)


def calibrate_model(
    model: Any,
    segments: Sequence[torch.Tensor],
    *,
    model_name: str,
    text: str,
    source: str = "both",
    batch_size: int = 4,
) -> ModelProjections:
    """Fit P per (layer, KV group) on the post-RoPE q and k of ``segments`` (the paper's recipe).

    ``source``: which rows enter each SVD ("both" stacks queries and keys, as the paper does).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(map(repr, SOURCES))}; got {source!r}")
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must name the calibration text, got {text!r}")
    q, k = collect_qk(model, segments, batch_size=batch_size)
    cal = calibrate(q.double(), k.double(), center=False, source=source)
    cal = dataclasses.replace(cal, P=cal.P.float())
    return ModelProjections(model_name, text, int(sum(len(s) for s in segments)), cal)
