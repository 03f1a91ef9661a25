"""The README is a short guide whose every relative link resolves, and whose headline numbers are the
numbers of the pages it links to (issue 23, item 14).

A link resolves when its file exists and, for ``#anchor``, the target Markdown file has a heading
whose GitHub anchor is that name (lower case, punctuation other than ``-`` and ``_`` dropped, spaces
as ``-``, ``-1``, ``-2`` ... for repeats)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
#: The issue's bound on the guide: "at most about 300 lines".
README_MAX_LINES = 300

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _prose_lines(text: str, *, keep_code: bool = False) -> list[str]:
    """The lines outside fenced and indented code blocks, with inline code spans removed (or, with
    ``keep_code``, only their backticks)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            continue
        out.append(line.replace("`", "") if keep_code else re.sub(r"`[^`]*`", "", line))
    return out


def anchors(path: Path) -> set[str]:
    """The GitHub anchors of a Markdown file's headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(path.read_text(encoding="utf-8"), keep_code=True):
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    """Every link target of a Markdown file that is not a URL (http, https, mailto)."""
    return [
        target
        for line in _prose_lines(path.read_text(encoding="utf-8"))
        for target in _LINK.findall(line)
        if not re.match(r"[a-z]+:", target)
    ]


def broken(path: Path, target: str) -> str | None:
    """Why ``target`` (a link in ``path``) does not resolve, or None."""
    name, _, anchor = target.partition("#")
    dest = (path.parent / name).resolve() if name else path
    if not dest.exists():
        return f"{name}: no such file"
    if anchor:
        if dest.suffix != ".md" or dest.is_dir():
            return f"#{anchor}: {name} is not a Markdown file"
        if anchor not in anchors(dest):
            return f"#{anchor}: no such heading in {dest.name}"
    return None


def test_anchor_rule_on_known_headings(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("# A: b's `c`\n\n## Tab\n\n## Tab\n\n    # not a heading\n```\n# nor this\n```\n")
    assert anchors(md) == {"a-bs-c", "tab", "tab-1"}
    (tmp_path / "y.md").write_text(
        "[ok](x.md#tab-1) [bad](x.md#nope) [gone](z.md) `[code](z.md)` [web](https://a)\n"
    )
    links = relative_links(tmp_path / "y.md")
    assert links == ["x.md#tab-1", "x.md#nope", "z.md"]
    assert [broken(tmp_path / "y.md", t) is None for t in links] == [True, False, False]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    problems = [f"{t}: {why}" for t in relative_links(path) if (why := broken(path, t))]
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_readme_is_a_short_guide_that_links_every_page() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    assert DOCS.is_dir() and [p for p in DOCS.glob("*.md") if p.resolve() not in linked] == []


def _headline_rows() -> list[tuple[str, str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Headline results", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| question")]
    return [tuple(c.strip() for c in ln.strip("|").split("|")) for ln in rows]  # type: ignore[misc]


def test_every_headline_number_is_on_the_page_its_row_links_to() -> None:
    """Each page's numbers are checked against their sources by that page's tests; the headline row
    repeats them, so each of its numbers must appear on the page it links to."""
    rows = _headline_rows()
    assert len(rows) >= 5
    for question, answer, detail in rows:
        (target,) = _LINK.findall(detail)
        assert target.startswith("docs/"), (question, target)
        page = " ".join((ROOT / target).read_text(encoding="utf-8").split())
        numbers = set(_NUMBER.findall(answer))
        assert numbers, question
        missing = [
            n for n in sorted(numbers) if not re.search(rf"(?<![\d.]){re.escape(n)}(?![\d]|\.\d)", page)
        ]
        assert not missing, f"{question}: {missing} not on {target}"
