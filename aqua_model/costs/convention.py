"""Counting conventions: every assumption of the cost model as a named, documented field.

A :class:`Convention` is frozen and hashable; every result of the package records the
convention that produced it (``convention.label()`` and ``convention.to_dict()``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .._checks import check_choice, check_real

SELECTION_MODELS = ("sort", "select", "none")
KEY_PROJECTION_MODELS = ("shared", "per-step")
PROJECTION_PLACEMENTS = ("online", "folded")
#: Upper bound on every per-operation FLOP count of a convention. Real conventions charge a
#: handful of FLOPs per multiply-add, score or dimension; the bound keeps every count finite in
#: float64 (1e6 x (2^20 dims)^2 x 2^63 tokens is about 1e37) and every break-even exact.
MAX_FLOPS_PER_OP = 1e6


@dataclass(frozen=True)
class Convention:
    """How FLOPs are counted. The defaults reproduce the AQUA paper's accounting.

    Attributes:
        flops_per_mac: FLOPs per multiply-add. 2 counts the multiply and the add, as
            torch's FlopCounterMode and the roofline literature do (fvcore counts 1).
        softmax_flops_per_score: FLOPs per attention score in softmax. 5 = subtract the
            running max, exponentiate, add to the denominator, divide, plus the max
            comparison; the exponential counted as one FLOP, as FlashAttention's accounting
            does. Identical for dense and AQUA, so it never moves a break-even point.
        selection: cost model of picking the top-k of d magnitudes per query. ``"sort"``:
            d*log2(d) comparisons (a full sort, the conservative default); ``"select"``:
            a linear selection, ``select_flops_per_dim * d``; ``"none"``: free.
        tile_sum_flops_per_dim: FLOPs per dim of each further query of a selection tile
            (tile-shared selection in prefill): its |q^| and one add into the tile's sum, 2.
            A tile of M queries pays M - 1 of these sums and one top-k (``selection``).
        select_flops_per_dim: the constant c of ``"select"`` (c*d). 2: one magnitude
            and about one comparison per element for introselect on average.
        key_projection: ``"shared"``: each new key is rotated once (d x d) and cached
            rotated, and the g query heads of its KV group share it (cost 2d^2/g per
            query head); ``"per-step"``: every cached key is re-rotated at every step
            (2*N*d^2/g per query head per step), as an implementation without a
            projected-key cache would do.
        projection: ``"online"``: P is applied after RoPE, a real d x d product per
            query and per new key; ``"folded"``: P folded into W_Q and W_K offline, free
            at run time, exact only for models without rotary embeddings.
    """

    flops_per_mac: float = 2.0
    softmax_flops_per_score: float = 5.0
    selection: str = "sort"
    select_flops_per_dim: float = 2.0
    tile_sum_flops_per_dim: float = 2.0
    key_projection: str = "shared"
    projection: str = "online"

    def __post_init__(self) -> None:
        check_real(
            "flops_per_mac", self.flops_per_mac, minimum=0.0, strict_minimum=True, maximum=MAX_FLOPS_PER_OP
        )
        check_real(
            "softmax_flops_per_score", self.softmax_flops_per_score, minimum=0.0, maximum=MAX_FLOPS_PER_OP
        )
        check_choice("selection", self.selection, SELECTION_MODELS)
        check_real("select_flops_per_dim", self.select_flops_per_dim, minimum=0.0, maximum=MAX_FLOPS_PER_OP)
        check_real(
            "tile_sum_flops_per_dim", self.tile_sum_flops_per_dim, minimum=0.0, maximum=MAX_FLOPS_PER_OP
        )
        check_choice("key_projection", self.key_projection, KEY_PROJECTION_MODELS)
        check_choice("projection", self.projection, PROJECTION_PLACEMENTS)

    def label(self) -> str:
        """Short text naming every field that differs from the default (``"default"`` if none)."""
        default = Convention()
        diffs = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return "default" if not diffs else "default+" + ",".join(diffs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


DEFAULT = Convention()


def resolve(convention: Convention | None) -> Convention:
    """``None`` means the documented default; anything else must be a Convention."""
    if convention is None:
        return DEFAULT
    if not isinstance(convention, Convention):
        raise TypeError(
            f"convention must be an aqua_model.Convention or None, got {type(convention).__name__}"
        )
    return convention
