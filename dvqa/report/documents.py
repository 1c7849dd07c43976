"""Reports as documents people read: self-contained HTML from the templates/, and PDF from that HTML.

WeasyPrint renders the PDF from the same HTML (print CSS included) without a browser or a network,
so the PDF a regulator files says exactly what the page says.
"""

from __future__ import annotations

from dvqa.core.resources import templates


def html(template: str, **values: object) -> str:
    return templates().get_template(template).render(**values)


def pdf(page: str) -> bytes:
    import weasyprint

    return weasyprint.HTML(string=page, base_url=None).write_pdf()


def licenses_html(record: dict) -> str:
    return html("licenses.html", r=record, f=record["ffmpeg"])


def document_html(doc: dict) -> str:
    return html("document.html", doc=doc)
