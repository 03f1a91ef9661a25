"""Plain tables (rows of dicts) rendered as CSV, Markdown or aligned text, and written to files."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or value is None


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table."""
    cols = list(columns or (rows[0].keys() if rows else []))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An aligned plain-text table for the terminal."""
    cols = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    # text columns left-aligned, numeric columns right-aligned
    numeric = [all(_is_number(r.get(c)) for r in rows) for c in cols]
    fmt = "  ".join(("{:>%d}" if num else "{:<%d}") % w for w, num in zip(widths, numeric))
    return "\n".join([fmt.format(*cols)] + [fmt.format(*row) for row in cells]) + "\n"


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text (missing values as empty cells)."""
    cols = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_table(
    rows: Sequence[dict[str, Any]],
    stem: Path,
    *,
    columns: Sequence[str] | None = None,
    title: str = "",
    notes: Iterable[str] = (),
) -> list[Path]:
    """Write ``stem``.csv and ``stem``.md; returns the paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    csv_path.write_text(to_csv(rows, columns))
    header = f"# {title}\n\n" if title else ""
    footer = "".join(f"\n{n}\n" for n in notes)
    md_path.write_text(header + to_markdown(rows, columns) + footer)
    return [csv_path, md_path]
