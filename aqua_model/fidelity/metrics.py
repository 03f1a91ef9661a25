"""Fidelity metrics of an approximate attention against the exact one.

All metrics are computed per segment (one sequence: its queries attend to its own keys)
as sums, pooled over segments, then finalised:

- ``energy``: mean over queries of the fraction of ||q||^2 on the kept coordinates;
- ``score_rel_err``: ||S_approx - S||_F / ||S||_F, pooled over segments;
- ``output_rel_err``: ||A_approx V - A V||_F / ||A V||_F, pooled over segments;
- ``top1_agreement``: fraction of queries whose highest-scoring key is unchanged;
- ``top8_agreement``: mean overlap |top8(S) & top8(S_approx)| / 8 (fewer when < 8 keys);
- ``kl_nats``: mean over queries of KL(softmax(S) || softmax(S_approx)) in nats.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from aqua_model._checks import check_int, check_real
from aqua_model.fidelity.methods import (
    approximate_scores,
    keep_mask,
    selection_ranks,
    to_method_basis,
)

METRICS = ("energy", "score_rel_err", "output_rel_err", "top1_agreement", "top8_agreement", "kl_nats")
"""Metric names, in table order."""

TOP_SET_SIZE = 8
"""Size of the key set compared by ``top8_agreement``."""


@dataclass
class SegmentStats:
    """Additive sums of one or more segments; :meth:`finalize` turns them into the metrics."""

    n_queries: int = 0
    energy_sum: float = 0.0
    score_err_sq: float = 0.0
    score_ref_sq: float = 0.0
    output_err_sq: float = 0.0
    output_ref_sq: float = 0.0
    top1_hits: float = 0.0
    top_overlap_sum: float = 0.0
    kl_sum: float = 0.0

    def __add__(self, other: SegmentStats) -> SegmentStats:
        return SegmentStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def finalize(self) -> dict[str, float]:
        """Return the metrics of :data:`METRICS` from the pooled sums."""
        if self.n_queries == 0:
            raise ValueError("n_queries must be >= 1 to finalize metrics, got 0")
        n = float(self.n_queries)
        return {
            "energy": self.energy_sum / n,
            "score_rel_err": _safe_ratio(self.score_err_sq, self.score_ref_sq),
            "output_rel_err": _safe_ratio(self.output_err_sq, self.output_ref_sq),
            "top1_agreement": self.top1_hits / n,
            "top8_agreement": self.top_overlap_sum / n,
            "kl_nats": self.kl_sum / n,
        }


def _safe_ratio(err_sq: float, ref_sq: float) -> float:
    if ref_sq == 0.0:
        return 0.0 if err_sq == 0.0 else float("inf")
    return float(np.sqrt(err_sq / ref_sq))


def log_softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Return the row-wise log-softmax of a 2-D score matrix (numerically stable)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def kept_energy(*, queries: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return, per query, sum of kept q^2 / sum of q^2 (1 for an all-zero query)."""
    sq = queries.astype(np.float64) ** 2
    total = sq.sum(axis=1)
    kept = (sq * mask).sum(axis=1)
    return np.divide(kept, total, out=np.ones_like(total), where=total > 0)


def _top_set(scores: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` largest scores per row (unordered; ties broken by argpartition)."""
    if size >= scores.shape[1]:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    return np.argpartition(-scores, size - 1, axis=1)[:, :size]


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)


def top_set_overlap(*, exact: np.ndarray, approx: np.ndarray, size: int = TOP_SET_SIZE) -> np.ndarray:
    """Return, per row, |top-size(exact) & top-size(approx)| / size (size capped at n_keys)."""
    size = check_int("size", size, minimum=1)
    size = min(size, exact.shape[1])
    return _overlap(_top_set(exact, size), _top_set(approx, size)) / size


@dataclass(frozen=True)
class ExactReference:
    """Everything about the exact attention of one segment that every approximation is compared to."""

    scores: np.ndarray
    values: np.ndarray
    log_probs: np.ndarray
    probs: np.ndarray
    output: np.ndarray
    argmax: np.ndarray
    top_set: np.ndarray

    @classmethod
    def build(cls, *, scores: np.ndarray, values: np.ndarray) -> ExactReference:
        """Precompute softmax, output, argmax and top set of exact ``scores`` [n_q, n_k]."""
        if scores.ndim != 2:
            raise ValueError(f"scores must be 2-D [n_queries, n_keys], got shape {scores.shape}")
        if values.ndim != 2 or values.shape[0] != scores.shape[1]:
            raise ValueError(f"values must be [n_keys={scores.shape[1]}, d_v], got shape {values.shape}")
        log_p = log_softmax_rows(scores)
        p = np.exp(log_p)
        size = min(TOP_SET_SIZE, scores.shape[1])
        return cls(scores, values, log_p, p, p @ values, scores.argmax(axis=1), _top_set(scores, size))

    def compare(self, approx: np.ndarray) -> SegmentStats:
        """Return the pooled sums of ``approx`` against this reference, all but ``energy``."""
        if approx.shape != self.scores.shape:
            raise ValueError(
                f"approx must have the exact scores' shape {self.scores.shape}, got {approx.shape}"
            )
        log_q = log_softmax_rows(approx)
        out_approx = np.exp(log_q) @ self.values
        kl = (self.probs * (self.log_probs - log_q)).sum(axis=1)
        size = self.top_set.shape[1]
        return SegmentStats(
            n_queries=self.scores.shape[0],
            score_err_sq=float(((approx - self.scores) ** 2).sum()),
            score_ref_sq=float((self.scores**2).sum()),
            output_err_sq=float(((out_approx - self.output) ** 2).sum()),
            output_ref_sq=float((self.output**2).sum()),
            top1_hits=float((self.argmax == approx.argmax(axis=1)).sum()),
            top_overlap_sum=float(_overlap(self.top_set, _top_set(approx, size)).sum() / size),
            kl_sum=float(np.maximum(kl, 0.0).sum()),
        )


def compare_scores(*, exact: np.ndarray, approx: np.ndarray, values: np.ndarray) -> SegmentStats:
    """Return the pooled sums for one segment, all but ``energy`` (see :func:`segment_stats`)."""
    if exact.shape != approx.shape or exact.ndim != 2:
        raise ValueError(f"exact and approx must be 2-D of one shape, got {exact.shape} and {approx.shape}")
    return ExactReference.build(scores=exact, values=values).compare(approx)


def segment_stats(
    *,
    queries: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    projection: np.ndarray,
    method: str,
    ks: tuple[int, ...] | list[int],
    rng: np.random.Generator | None = None,
    scale: float | None = None,
) -> dict[int, SegmentStats]:
    """Return {k: sums} for one segment and one method, over every budget in ``ks``.

    ``scale`` multiplies all scores (default 1/sqrt(d), as in softmax attention).
    """
    q_b, k_b = to_method_basis(queries=queries, keys=keys, projection=projection, method=method)
    d = q_b.shape[1]
    scale = (
        1.0 / np.sqrt(d) if scale is None else check_real("scale", scale, minimum=0.0, strict_minimum=True)
    )
    reference = ExactReference.build(scores=scale * (queries @ keys.T), values=values)
    ranks = selection_ranks(queries=q_b, method=method, rng=rng)
    out: dict[int, SegmentStats] = {}
    for k in ks:
        mask = keep_mask(ranks=ranks, k=k)
        approx = approximate_scores(queries=q_b, keys=k_b, mask=mask, scale=scale)
        stats = reference.compare(approx)
        stats.energy_sum = float(kept_energy(queries=q_b, mask=mask).sum())
        out[int(k)] = stats
    return out


def fidelity_metrics(
    *,
    queries: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    projection: np.ndarray,
    method: str,
    k: int,
    seed: int = 0,
) -> dict[str, float]:
    """Return the metrics of :data:`METRICS` for one segment, one method and one budget ``k``."""
    seed = check_int("seed", seed, minimum=0)
    stats = segment_stats(
        queries=queries,
        keys=keys,
        values=values,
        projection=projection,
        method=method,
        ks=(k,),
        rng=np.random.default_rng(seed),
    )
    return stats[int(k)].finalize()
