"""docs/regulatory/troubleshooting.md lists every error message the code can print."""

from __future__ import annotations

import pytest

from dvqa.report import error_catalogue
from helpers import ROOT

PAGE = ROOT / "docs" / "regulatory" / "troubleshooting.md"


@pytest.mark.requirement("DVQA-OUT-002", "DVQA-DOC-001")
def test_the_page_lists_every_message_in_the_code() -> None:
    page = PAGE.read_text()
    assert page == error_catalogue.update(PAGE), (
        "an error message in dvqa is missing from (or changed since) docs/regulatory/troubleshooting.md: "
        "run python -m dvqa.report.error_catalogue --write docs/regulatory/troubleshooting.md")
    messages = error_catalogue.catalogue()
    assert len(messages) > 100 and {m.exit_code for m in messages} == {2, 3, 4}


def test_the_catalogue_finds_what_the_code_raises() -> None:
    # two messages picked from the code by hand: one FileProblem, one UsageError behind an f-string
    templates = {m.template: m for m in error_catalogue.catalogue()}
    assert "{path}: is a folder, not a file" in templates
    assert templates["--tls-key needs --tls-cert."].exit_code == 2
    assert templates["--tls-key needs --tls-cert."].where == "dvqa.cli.pacs:_tls"
