"""Offline AQUA calibration: an orthogonal projection P per (layer, KV group) from an SVD.

For one KV group, the calibration queries of its g query heads and the calibration keys of its
KV head are stacked into a matrix X [n, d] (or only the queries / only the keys). With
X = U S V^T, the projection is P = V: its columns are the right singular vectors sorted by
descending singular value, so ``x @ P`` rotates a row vector and a prefix of P's columns spans
the top principal subspace. P is orthogonal, which makes AQUA exact when all d rotated
coordinates are kept.

Every singular vector is defined up to its sign; we fix the sign so that the largest-magnitude
entry of each column is positive, which makes P a deterministic function of the data.
"""

from __future__ import annotations

import dataclasses
import math
import os
from importlib import metadata
from typing import Any

import torch

from aqua_model._checks import check_choice

SOURCES = ("queries", "keys", "both")
SCHEMA_VERSION = 1
_FILE_KIND = "aqua_model.calibration"


def _package_version() -> str:
    try:
        return metadata.version("aqua-model")
    except metadata.PackageNotFoundError:  # pragma: no cover - source checkout without install
        return "unknown"


def _check_float_tensor(name: str, value: Any, ndim: int, shape_doc: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {value.dtype}"
        )
    if value.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc} ({ndim} dims), got shape {tuple(value.shape)}")
    if any(s == 0 for s in value.shape):
        raise ValueError(f"{name} must be non-empty, got shape {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, got {bad} non-finite values (NaN or inf)")
    return value


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    # float64 on CPU (cheap, d is small); on accelerators float64 may be missing or slow.
    dev = tensors[0].device
    return (
        torch.float64
        if dev.type == "cpu" or any(t.dtype == torch.float64 for t in tensors)
        else torch.float32
    )


def fit_projection(
    queries: torch.Tensor | None,
    keys: torch.Tensor | None,
    *,
    center: bool = False,
    source: str = "both",
) -> torch.Tensor:
    """Return the orthogonal projection P [d, d] of one KV group.

    queries [n_q, d] and keys [n_k, d] are calibration vectors (any float dtype; the one not
    named by ``source`` may be None). ``source`` picks the rows of X: "queries", "keys" or
    "both" (stacked). ``center`` subtracts the mean row of X first. The SVD runs in float64 on
    the CPU (float32 elsewhere); P is float32, or float64 when an input is float64.
    Columns are sorted by descending singular value; ``x @ P`` rotates.
    """
    source = check_choice("source", source, SOURCES)
    if not isinstance(center, bool):
        raise TypeError(f"center must be a bool, got {center!r}")
    used: list[torch.Tensor] = []
    if source in ("queries", "both"):
        used.append(_check_float_tensor("queries", queries, 2, "[n_q, d]"))
    if source in ("keys", "both"):
        used.append(_check_float_tensor("keys", keys, 2, "[n_k, d]"))
    if source == "both":
        q_t, k_t = used
        if q_t.shape[1] != k_t.shape[1]:
            raise ValueError(
                f"queries and keys must have the same head dim d, got queries d={q_t.shape[1]} "
                f"and keys d={k_t.shape[1]}"
            )
        if q_t.device != k_t.device:
            raise ValueError(f"queries and keys must be on one device, got {q_t.device} and {k_t.device}")
    out_dtype = torch.float64 if any(t.dtype == torch.float64 for t in used) else torch.float32
    dtype = _compute_dtype(*used)
    x = torch.cat([t.to(dtype) for t in used], dim=0)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    n, d = x.shape
    # full_matrices only when n < d, so that V is still a complete d x d basis.
    _, _, vh = torch.linalg.svd(x, full_matrices=n < d)
    p = vh.mT.contiguous()  # columns = right singular vectors, descending singular values
    # Deterministic signs: the largest-magnitude entry of each column is positive.
    pivot = p.abs().argmax(dim=0)
    signs = torch.sign(p[pivot, torch.arange(d, device=p.device)])
    signs[signs == 0] = 1
    p = p * signs
    return p.to(out_dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class Calibration:
    """Projections of a whole model: P [layers, heads_kv, d, d] plus how they were made.

    ``n_samples`` is the number of rows of X per KV group (queries of the g heads and/or keys).
    """

    P: torch.Tensor
    d: int
    layers: int
    heads_q: int
    heads_kv: int
    center: bool
    source: str
    n_samples: int
    created_by: str

    def __post_init__(self) -> None:
        if not isinstance(self.P, torch.Tensor) or not self.P.is_floating_point():
            raise TypeError(f"P must be a floating torch.Tensor, got {type(self.P).__name__}")
        want = (self.layers, self.heads_kv, self.d, self.d)
        if tuple(self.P.shape) != want:
            raise ValueError(
                f"P must have shape [layers, heads_kv, d, d] = {want}, got {tuple(self.P.shape)}"
            )
        if self.heads_kv < 1 or self.heads_q % self.heads_kv != 0:
            raise ValueError(
                f"heads_q must be a positive multiple of heads_kv, got heads_q={self.heads_q}, heads_kv={self.heads_kv}"
            )
        check_choice("source", self.source, SOURCES)

    @property
    def group_size(self) -> int:
        """Query heads per KV head (g = heads_q / heads_kv)."""
        return self.heads_q // self.heads_kv

    def projection(self, layer: int) -> torch.Tensor:
        """P of one layer, [heads_kv, d, d]."""
        if not isinstance(layer, int) or not 0 <= layer < self.layers:
            raise ValueError(f"layer must be an int in [0, {self.layers}), got {layer!r}")
        return self.P[layer]


def calibrate_projections(
    queries: torch.Tensor,
    keys: torch.Tensor,
    *,
    center: bool = False,
    source: str = "both",
) -> Calibration:
    """Fit P for every (layer, KV group) of a model.

    queries [L, H_q, n_q, d], keys [L, H_kv, n_k, d]; query heads h*g .. h*g+g-1 share KV head
    h (g = H_q / H_kv). Both tensors are required whatever ``source`` is, because together
    they define the grouping; ``source`` only picks which rows enter each SVD.
    """
    source = check_choice("source", source, SOURCES)
    q = _check_float_tensor("queries", queries, 4, "[layers, heads_q, n_q, d]")
    k = _check_float_tensor("keys", keys, 4, "[layers, heads_kv, n_k, d]")
    L, hq, nq, d = q.shape
    Lk, hkv, nk, dk = k.shape
    if dk != d:
        raise ValueError(f"keys head dim must equal queries head dim d={d}, got {dk}")
    if Lk != L:
        raise ValueError(f"keys must have as many layers as queries ({L}), got {Lk}")
    if hq % hkv != 0:
        raise ValueError(f"heads_q must be a multiple of heads_kv, got heads_q={hq}, heads_kv={hkv}")
    g = hq // hkv
    out_dtype = torch.float64 if torch.float64 in (q.dtype, k.dtype) else torch.float32
    P = torch.empty(L, hkv, d, d, dtype=out_dtype)
    for layer in range(L):
        for h in range(hkv):
            group_q = q[layer, h * g : (h + 1) * g].reshape(g * nq, d)
            P[layer, h] = fit_projection(group_q, k[layer, h], center=center, source=source).cpu()
    n_samples = {"queries": g * nq, "keys": nk, "both": g * nq + nk}[source]
    return Calibration(
        P=P,
        d=d,
        layers=L,
        heads_q=hq,
        heads_kv=hkv,
        center=center,
        source=source,
        n_samples=n_samples,
        created_by=f"aqua_model.kernels.calibration {_package_version()}",
    )


#: The old name of :func:`calibrate_projections`, kept importable (the fidelity study uses it).
calibrate = calibrate_projections

_META_FIELDS = ("d", "layers", "heads_q", "heads_kv", "center", "source", "n_samples", "created_by")


def save_calibration(cal: Calibration, path: str | os.PathLike[str]) -> None:
    """Write ``cal`` with ``torch.save`` as a plain dict carrying a schema version."""
    if not isinstance(cal, Calibration):
        raise TypeError(f"cal must be a Calibration, got {type(cal).__name__}")
    payload: dict[str, Any] = {
        "kind": _FILE_KIND,
        "schema_version": SCHEMA_VERSION,
        "P": cal.P.detach().cpu(),
    }
    for name in _META_FIELDS:
        payload[name] = getattr(cal, name)
    torch.save(payload, os.fspath(path))


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a file written by :func:`save_calibration` and validate it.

    Raises ValueError when the file is not a calibration, has another schema version, misses a
    field, or holds a P that is not finite or not orthogonal (max |P^T P - I| > 1e-4).
    """
    payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") != _FILE_KIND:
        raise ValueError(f"{os.fspath(path)!r} is not an AQUA calibration file (kind must be {_FILE_KIND!r})")
    version = payload.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version must be {SCHEMA_VERSION}, got {version!r} in {os.fspath(path)!r}")
    missing = [name for name in ("P", *_META_FIELDS) if name not in payload]
    if missing:
        raise ValueError(f"calibration file {os.fspath(path)!r} misses fields {missing}")
    P = payload["P"]
    if not isinstance(P, torch.Tensor) or not P.is_floating_point():
        raise ValueError(f"P in {os.fspath(path)!r} must be a floating tensor, got {type(P).__name__}")
    if not bool(torch.isfinite(P).all()):
        raise ValueError(f"P in {os.fspath(path)!r} holds non-finite values")
    cal = Calibration(P=P, **{name: payload[name] for name in _META_FIELDS})
    eye = torch.eye(cal.d, dtype=torch.float64)
    err = (P.double().mT @ P.double() - eye).abs().max().item() if P.numel() else 0.0
    if not math.isfinite(err) or err > 1e-4:
        raise ValueError(f"P in {os.fspath(path)!r} is not orthogonal: max |P^T P - I| = {err:.3g} > 1e-4")
    return cal
