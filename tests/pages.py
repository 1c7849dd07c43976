"""Facts about a report as WeasyPrint lays it out on PDF pages: what a reader sees, checked without
looking at a picture.

dvqa's PDFs are WeasyPrint's layout of the report's HTML (dvqa.report.documents.pdf), so the boxes of
that same layout say where each line of text ended up: whether it stays inside its table cell, where
a file name was broken, what is last on each page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import weasyprint

from dvqa.report import documents


@dataclass(frozen=True)
class Line:
    page: int
    text: str
    right: float  # where the line's last glyph ends, in CSS px
    cell_right: float | None  # the right edge of the table cell's content it is in, if any
    inside: tuple[str, ...]  # tag and classes of every element around it, outermost first


def _boxes(box, around: tuple[str, ...] = (), cell=None) -> Iterator[tuple[object, tuple[str, ...], object]]:
    tag = getattr(box, "element_tag", None)
    element = getattr(box, "element", None)
    classes = element.get("class", "").split() if element is not None and tag else []
    here = around + ((tag, *classes),) if tag else around
    if type(box).__name__ == "TableCellBox":
        cell = box
    yield box, here, cell
    for child in getattr(box, "children", []) or []:
        yield from _boxes(child, here, cell)


def render(html: str):
    """The laid-out document, as dvqa's PDF is made (same HTML, same fetcher rules do not matter here)."""
    return weasyprint.HTML(string=html, base_url=None).render()


def lines(html: str) -> list[Line]:
    found = []
    for number, page in enumerate(render(html).pages, 1):
        for box, around, cell in _boxes(page._page_box):
            if type(box).__name__ != "LineBox":
                continue
            texts = [b for b, _, _ in _boxes(box) if type(b).__name__ == "TextBox"]
            if not texts:
                continue
            right = max(b.position_x + b.width for b in texts)
            cell_right = cell.content_box_x() + cell.width if cell is not None else None
            found.append(Line(number, "".join(b.text for b in texts), right, cell_right,
                              tuple(" ".join(t) for t in around)))
    return found


def spilled(html: str, tolerance: float = 1.0) -> list[Line]:
    """Lines of text that run past the right edge of the table cell they are in."""
    return [line for line in lines(html) if line.cell_right is not None and line.right > line.cell_right + tolerance]


def _kind(box) -> str | None:
    name, tag = type(box).__name__, getattr(box, "element_tag", None)
    if name == "TableRowBox":
        return "body row" if any(getattr(c, "element_tag", "") == "td" for c in box.children) else "header row"
    if name in ("BlockBox", "TableCaptionBox") and tag in ("h1", "h2", "h3", "h4", "p", "caption", "ul"):
        return tag
    return None


def page_ends(html: str) -> list[str]:
    """What comes last on each page: a heading, caption or header row there has lost what it introduces."""
    ends = []
    for page in render(html).pages:
        kinds = [k for box, _, _ in _boxes(page._page_box) if (k := _kind(box))]
        ends.append(kinds[-1] if kinds else "")
    return ends


ORPHANS = {"h2", "h3", "h4", "caption", "header row"}


def document_with_a_table_after(filler: int) -> str:
    """The document template with `filler` one-line paragraphs before a captioned table, so that one
    value or another puts the table's start at every height of the first page."""
    table = {"caption": "A table", "columns": ["A", "B"], "rows": [[str(n), "text " * 20] for n in range(8)]}
    return documents.document_html({"title": "Page breaks", "sections": [
        {"number": "1", "title": "Filler", "paragraphs": ["line"] * filler, "tables": []},
        {"number": "1.1", "title": "A sub-section", "paragraphs": ["A paragraph before the table."],
         "tables": [table]},
        {"number": "2", "title": "After", "paragraphs": ["end"], "tables": []}]})
