"""Synthetic queries, keys and values with a known singular spectrum, for fast tests.

The generator draws latent Gaussian coordinates, scales latent axis ``i`` by a spectrum
``sigma_i`` (power-law decay, or a hard rank ``r``), boosts a few latent axes into outlier
channels, and optionally rotates the latent axes by a random orthogonal matrix. With
``rotate=True`` the outlier directions are *not* coordinate axes, the case where a learned
rotation (AQUA) should beat per-coordinate selection without rotation (SparQ). With
``rotate=False`` the outliers sit on coordinate axes, as in the outlier channels of real LLMs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aqua_model._checks import check_choice, check_int, check_real

SPECTRA = ("power", "rank", "flat")
"""Spectrum shapes: ``power`` sigma_i = (i+1)^-alpha; ``rank`` sigma_i = 1 for i < r else 0;
``flat`` sigma_i = 1."""

DEFAULT_POWER_ALPHA = 1.0
"""Power-law exponent of the default spectrum: a moderately concentrated spectrum."""

DEFAULT_OUTLIER_SCALE = 10.0
"""Factor that turns a latent axis into an outlier channel (LLM outlier channels are ~10x)."""


@dataclass(frozen=True)
class SyntheticHead:
    """One synthetic attention head: queries [n_queries, d], keys [n_keys, d], values [n_keys, d]."""

    queries: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    basis: np.ndarray
    """Orthogonal [d, d] matrix whose columns are the latent axes in coordinate space."""
    sigma: np.ndarray
    """Per-latent-axis standard deviation, outliers included, shape [d]."""


def spectrum(
    *, d: int, kind: str = "power", alpha: float = DEFAULT_POWER_ALPHA, rank: int | None = None
) -> np.ndarray:
    """Return the per-axis scale sigma (shape [d], non-increasing, max 1) of a named spectrum."""
    d = check_int("d", d, minimum=1)
    kind = check_choice("kind", kind, SPECTRA)
    idx = np.arange(d, dtype=np.float64)
    if kind == "power":
        alpha = check_real("alpha", alpha, minimum=0.0)
        return (idx + 1.0) ** (-alpha)
    if kind == "rank":
        if rank is None:
            raise ValueError("rank must be given when kind='rank', got None")
        rank = check_int("rank", rank, minimum=1, maximum=d)
        return (idx < rank).astype(np.float64)
    return np.ones(d)


def random_orthogonal(*, d: int, rng: np.random.Generator) -> np.ndarray:
    """Return a Haar-random orthogonal [d, d] matrix drawn from ``rng``."""
    d = check_int("d", d, minimum=1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    gauss = rng.standard_normal((d, d))
    q, r = np.linalg.qr(gauss)
    return q * np.sign(np.diag(r))[None, :]


def make_head(
    *,
    n_queries: int,
    n_keys: int,
    d: int,
    kind: str = "power",
    alpha: float = DEFAULT_POWER_ALPHA,
    rank: int | None = None,
    n_outliers: int = 0,
    outlier_scale: float = DEFAULT_OUTLIER_SCALE,
    rotate: bool = True,
    seed: int = 0,
) -> SyntheticHead:
    """Draw one synthetic head whose queries and keys share a latent basis and spectrum.

    Outliers boost latent axes ``r, r+1, ...`` spread evenly through the spectrum (never axes
    with sigma 0, so a rank-``r`` head stays rank ``r``). Values are isotropic Gaussian.
    """
    n_queries = check_int("n_queries", n_queries, minimum=1)
    n_keys = check_int("n_keys", n_keys, minimum=1)
    d = check_int("d", d, minimum=1)
    n_outliers = check_int("n_outliers", n_outliers, minimum=0, maximum=d)
    outlier_scale = check_real("outlier_scale", outlier_scale, minimum=0.0, strict_minimum=True)
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(rotate, bool):
        raise TypeError(f"rotate must be a bool, got {rotate!r}")
    rng = np.random.default_rng(seed)
    sigma = spectrum(d=d, kind=kind, alpha=alpha, rank=rank)
    live = np.flatnonzero(sigma > 0)
    if n_outliers > live.size:
        raise ValueError(f"n_outliers must be <= the number of non-zero axes {live.size}, got {n_outliers}")
    if n_outliers:
        picks = live[np.linspace(0, live.size - 1, n_outliers).round().astype(int)]
        sigma = sigma.copy()
        sigma[picks] *= outlier_scale
    basis = random_orthogonal(d=d, rng=rng) if rotate else np.eye(d)
    latent_q = rng.standard_normal((n_queries, d)) * sigma
    latent_k = rng.standard_normal((n_keys, d)) * sigma
    values = rng.standard_normal((n_keys, d))
    return SyntheticHead(
        queries=latent_q @ basis.T,
        keys=latent_k @ basis.T,
        values=values,
        basis=basis,
        sigma=sigma,
    )
