"""docs/regulatory/format-recommendation.md says what its measured data says: the generated part
and the plots are re-rendered from format-data.json and compared, and the data covers every
input and every syntax dvqa writes."""

from __future__ import annotations

import pytest

import json

from bench import format_table, viewer_matrix
from dvqa.dicom import syntaxes


@pytest.mark.requirement("DVQA-DOC-001")
def test_the_page_and_plots_are_the_data_rendered() -> None:
    data = json.loads(format_table.DATA.read_text())
    page = format_table.PAGE.read_text()
    generated = page[page.index(format_table.START):page.index(format_table.END) + len(format_table.END)]
    assert generated == format_table.render(data), "re-render: python bench/format_table.py --render"
    for name in {c["input"] for c in data["cells"]}:
        assert (format_table.PLOTS / f"{name}.svg").read_text() == format_table.plot(data, name)


def test_the_viewer_matrix_is_its_data_rendered_and_the_format_page_reads_it() -> None:
    """One fact in one place: the OHIF tests write viewer-matrix.json; its page and the format page's
    "plays in OHIF" column are rendered from it (a hand edit of either makes this fail)."""
    data = viewer_matrix.load()
    assert viewer_matrix.PAGE.read_text() == viewer_matrix.render(data), \
        "regenerate: DVQA_WRITE_VIEWER_MATRIX=1 pytest tests/test_serve.py -k ohif"
    column = viewer_matrix.ohif_column(data)
    page = format_table.PAGE.read_text()
    for syntax, cell in column.items():
        assert any(line.startswith(f"| {syntax} |") and line.endswith(f"| {cell} |") for line in page.splitlines())
    assert column["h264-high-4.1"].startswith("yes /")  # what the tests assert: H.264 plays through the gateway


def test_the_data_covers_every_input_and_every_written_syntax() -> None:
    data = json.loads(format_table.DATA.read_text())
    expected = {(f"{label}{rate}", syntax) for label in format_table.SIZES for rate in format_table.RATES
                for syntax in syntaxes.writable_names()}
    assert {(c["input"], c["syntax"]) for c in data["cells"]} == expected
    for cell in data["cells"]:
        if cell["exit"] != 0:
            assert cell["refused"], cell
            continue
        assert cell["mb_per_min"] > 0 and 0 < cell["ssim_min"] <= cell["ssim_mean"] <= 1
        assert cell["psnr_min"] <= cell["psnr_mean"] and len(cell["speed_runs"]) == data["repeat"]
        assert set(cell["toolkits"]) == {"dcmdump", "gdcminfo", "pydicom", "dciodvfy"}
        assert isinstance(cell["browser"]["plays"], bool)


def test_the_recommendation_follows_the_rules_it_states() -> None:
    """A syntax that resamples, drops a frame, misses a floor, is slower than real time or does not
    play is never the pick; among the rest the smallest file wins."""
    def cell(syntax: str, mb: float, **changes) -> dict:
        base = {"input": "720p30", "syntax": syntax, "exit": 0, "keeps_source": True, "dropped_source_frames": 0,
                "psnr_min": 45.0, "ssim_min": 0.98, "speed_x_realtime": 2.0, "browser": {"plays": True},
                "mb_per_min": mb}
        return {**base, **changes}

    data = {"floors": {"psnr_min": 40.0, "ssim_min": 0.95}, "cells": [
        cell("big", 50.0),
        cell("resampled", 1.0, keeps_source=False),
        cell("drops", 1.0, dropped_source_frames=3),
        cell("blurry", 1.0, psnr_min=39.0),
        cell("slow", 2.0, speed_x_realtime=0.9),
        cell("archive", 3.0, browser={"plays": False}),
        cell("small", 10.0),
    ]}
    assert format_table.recommend(data) == {"720p30": {"everywhere": "small", "smallest": "slow"}}
