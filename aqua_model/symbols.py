"""Deprecated: moved to :mod:`aqua_model.costs.symbols` (see CHANGELOG.md); kept for one release."""

from __future__ import annotations

import warnings

from aqua_model.costs.symbols import *  # noqa: F401,F403 - the whole namespace, re-exported
from aqua_model.costs.symbols import BY_NAME, MEANING, log2  # noqa: F401

warnings.warn(
    "aqua_model.symbols is deprecated; import aqua_model.costs.symbols", DeprecationWarning, stacklevel=2
)
