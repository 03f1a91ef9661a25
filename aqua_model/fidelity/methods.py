"""Dimension selection of AQUA and its peers, and the approximate scores they produce.

Every method picks, for each query, ``k`` of the ``d`` coordinates of a basis and computes
the dot products on those coordinates only:

- ``aqua``: the calibrated SVD basis (q^ = q @ P, k^ = k @ P); per query, the k coordinates
  with the largest |q^|.
- ``sparq``: no rotation; per query, the k coordinates with the largest |q|.
- ``loki``: the calibrated SVD basis; the same static prefix of the first k coordinates
  for every query.
- ``random``: no rotation; k coordinates drawn uniformly at random per query (seeded).

No method rescales the kept scores (SparQ's softmax-temperature correction is not applied),
so every method is compared on the same plain truncated dot product.
"""

from __future__ import annotations

import numpy as np

from aqua_model._checks import check_choice, check_int

METHODS = ("aqua", "sparq", "loki", "random")
"""Method names, in the order tables and figures list them."""

ROTATED_METHODS = frozenset({"aqua", "loki"})
"""Methods that work in the calibrated basis; the others work in the model's own coordinates."""


def _as_matrix(name: str, value: object) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.ndim != 2 or value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {value.shape}")
    if not np.issubdtype(value.dtype, np.floating):
        raise TypeError(f"{name} must hold floats, got dtype {value.dtype}")
    return value


def to_method_basis(
    *, queries: np.ndarray, keys: np.ndarray, projection: np.ndarray, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return (queries, keys) in the basis ``method`` selects in: rotated by P or unchanged."""
    queries = _as_matrix("queries", queries)
    keys = _as_matrix("keys", keys)
    projection = _as_matrix("projection", projection)
    method = check_choice("method", method, METHODS)
    d = queries.shape[1]
    if keys.shape[1] != d:
        raise ValueError(f"keys must have {d} columns like queries, got shape {keys.shape}")
    if projection.shape != (d, d):
        raise ValueError(f"projection must have shape ({d}, {d}), got {projection.shape}")
    if method in ROTATED_METHODS:
        return queries @ projection, keys @ projection
    return queries, keys


def selection_ranks(
    *, queries: np.ndarray, method: str, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Return int ranks [n, d]: coordinate j of query i is kept at budget k iff rank[i, j] < k.

    ``queries`` must already be in the method's basis (see :func:`to_method_basis`). Ranks
    for every k at once let a sweep over k reuse one sort. ``rng`` is required for ``random``.
    """
    queries = _as_matrix("queries", queries)
    method = check_choice("method", method, METHODS)
    n, d = queries.shape
    if method == "loki":
        return np.broadcast_to(np.arange(d), (n, d)).copy()
    if method == "random":
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be a numpy.random.Generator for method 'random', got {type(rng).__name__}"
            )
        order = np.argsort(rng.random((n, d)), axis=1)
    else:
        # Stable sort on -|q|: ties keep coordinate order, so results are reproducible.
        order = np.argsort(-np.abs(queries), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(d)[None, :].repeat(n, axis=0), axis=1)
    return ranks


def keep_mask(*, ranks: np.ndarray, k: int) -> np.ndarray:
    """Return the boolean [n, d] mask of the coordinates kept at budget ``k``."""
    d = ranks.shape[1]
    k = check_int("k", k, minimum=1, maximum=d)
    return ranks < k


def approximate_scores(
    *, queries: np.ndarray, keys: np.ndarray, mask: np.ndarray, scale: float
) -> np.ndarray:
    """Return the [n_queries, n_keys] scores ``scale * (q * mask) @ k.T`` in the method's basis."""
    queries = _as_matrix("queries", queries)
    keys = _as_matrix("keys", keys)
    if mask.shape != queries.shape:
        raise ValueError(f"mask must have the shape of queries {queries.shape}, got {mask.shape}")
    return scale * ((queries * mask) @ keys.T)
