"""The one exact integer break-even search: the smallest context at which a method wins.

Both the FLOP break-even of AQUA's peers (:func:`aqua_model.costs.peers.breakeven_exact`) and
the simulator's time break-even (:func:`aqua_model.simulator.time_breakeven`) search every
integer context up to one limit with this function, vectorised (one evaluation over all
contexts at once).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._checks import check_int

#: Upper end of every exact integer break-even search (2^22 tokens, 4M: beyond every model's context).
BREAKEVEN_SEARCH_LIMIT = 1 << 22


def smallest_winning_context(
    wins: Callable[[np.ndarray], np.ndarray], *, lower: int = 1, limit: int = BREAKEVEN_SEARCH_LIMIT
) -> int | None:
    """Smallest integer context in [``lower``, ``limit``] where ``wins(contexts)`` is True.

    ``wins`` takes the int64 array of every context in the range and returns a boolean array
    broadcastable to it. ``None`` if it is True nowhere (or the range is empty).
    """
    lower = check_int("lower", lower, minimum=0)
    limit = check_int("limit", limit, minimum=0)
    if lower > limit:
        return None
    contexts = np.arange(lower, limit + 1)
    hits = np.nonzero(np.broadcast_to(np.asarray(wins(contexts)), contexts.shape))[0]
    return int(contexts[hits[0]]) if hits.size else None


__all__ = ["BREAKEVEN_SEARCH_LIMIT", "smallest_winning_context"]
