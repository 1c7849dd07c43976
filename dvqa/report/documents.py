"""Reports as documents people read: self-contained HTML from the templates/, and PDF from that HTML.

WeasyPrint renders the PDF from the same HTML (print CSS included) without a browser or a network,
so the PDF a regulator files says exactly what the page says.
"""

from __future__ import annotations

from dvqa.core.resources import templates


def html(template: str, **values: object) -> str:
    """`template` rendered, with the filters that make paths, digests and options break where they should."""
    from dvqa.report.htmltext import FILTERS

    env = templates()
    env.filters.update(FILTERS)
    return env.get_template(template).render(**values)


def pdf(page: str) -> bytes:
    """The PDF of `page`. Only data: URLs are fetched: dvqa's pages embed everything they show, and a page
    carrying text from a hostile file (a file name, a DICOM value) must not make WeasyPrint's default
    fetcher read a local file (file:///etc/passwd) into the PDF or make a request on the network."""
    import weasyprint
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols={"data"}, allow_redirects=False, timeout=1)
    return weasyprint.HTML(string=page, base_url=None, url_fetcher=fetcher).write_pdf()


def licenses_html(record: dict) -> str:
    return html("licenses.html", r=record, f=record["ffmpeg"])


def document_html(doc: dict) -> str:
    return html("document.html", doc=doc)
