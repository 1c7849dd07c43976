"""Every relative link in README.md and docs/**/*.md leads somewhere: the file exists, and a
`#fragment` into a Markdown page names one of its headings (GitHub's anchors). Reference material
moved from the README into docs/ pages, so a link left pointing at the old place breaks the build
instead of the reader's trust."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target "title")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def links(page: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", page.read_text()))
    return [target for target in LINK.findall(text)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("//")]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-',
    repeats numbered."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken(page: Path, target: str) -> str | None:
    path, _, fragment = target.partition("#")
    resolved = (page.parent / unquote(path)).resolve() if path else page
    if not resolved.exists():
        return f"{target}: no {shown(resolved)}"
    if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
        return f"{target}: no heading #{fragment} in {shown(resolved)}"
    return None


@pytest.mark.requirement("DVQA-DOC-001")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [problem for target in links(page) if (problem := broken(page, target))]
    assert not problems, f"{page.relative_to(ROOT)}: {problems}"


def test_the_check_finds_links_and_catches_a_broken_one(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A title: `with code`\n\n[ok](#a-title-with-code) [gone](missing.md) "
                    "[web](https://example.org) `[not a link](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n")
    assert links(page) == ["#a-title-with-code", "missing.md"]
    assert broken(page, "#a-title-with-code") is None
    assert broken(page, "#elsewhere") is not None
    assert broken(page, "missing.md") is not None
    readme = ROOT / "README.md"
    assert "docs/regulatory/examples.md" in links(readme)
