"""Deprecated: moved to :mod:`aqua_model.table_render` (see CHANGELOG.md); kept for one release."""

from __future__ import annotations

import warnings

from aqua_model.table_render import to_csv, to_markdown, to_text, write_table

warnings.warn(
    "aqua_model.tables is deprecated; import aqua_model.table_render", DeprecationWarning, stacklevel=2
)

__all__ = ["to_csv", "to_markdown", "to_text", "write_table"]
