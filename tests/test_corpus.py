"""The corpus comparison of bench/ on a small sample made at test time (issue 31).

bench/build_corpus.py --sample writes 15 files with DCMTK and GDCM from pictures FFmpeg and Pillow make
here (nothing is committed, so nothing has a licence to check beyond the tools'); bench/compare_corpus.py
pairs dciodvfy's errors with dvqa's and times both. These tests check that both run (the timing once,
as the bench's smoke mode), that every file's origin is recorded, and that dvqa does not crash on any
file - facts. They assert no verdict of today's evaluator
except one real defect both tools must name (a removed Type 1 Study Instance UID): the measured agreement
and who is right where the tools differ are in docs/regulatory/validation-comparison.md."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from helpers import ROOT, require

sys.path.insert(0, str(ROOT / "bench"))
import build_corpus  # noqa: E402
import compare_corpus  # noqa: E402

TOOLS = {"img2dcm": "dcmtk", "pdf2dcm": "dcmtk", "dcmconv": "dcmtk", "dcmcrle": "dcmtk", "dcmodify": "dcmtk",
         "gdcmimg": "libgdcm-tools", "gdcmconv": "libgdcm-tools", "ffmpeg": "ffmpeg", "dciodvfy": "dicom3tools"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for name, package in TOOLS.items():
        require(shutil.which(name) is not None, f"{name} not installed: apt-get install {package}")
    out = tmp_path_factory.mktemp("corpus")
    build_corpus.build(out, sample=True)
    return out


def test_the_sample_is_made_by_two_writers_with_every_origin_recorded(sample: Path) -> None:
    manifest = json.loads((sample / "manifest.json").read_text())
    assert manifest["not_made"] == []
    files = manifest["files"]
    assert {entry["writer"] for entry in files} == {"DCMTK", "GDCM"}
    assert len(files) >= 12
    assert sum((sample / entry["path"]).stat().st_size for entry in files) < 1_000_000
    for entry in files:
        assert (sample / entry["path"]).is_file(), entry
        assert entry["origin"] and entry["licence"] and entry["version"] != "not installed", entry
    assert sum(1 for entry in files if entry["defect"]) == 3


@pytest.mark.requirement("DVQA-VAL-003")
def test_the_harness_compares_every_file_and_dvqa_does_not_crash(sample: Path) -> None:
    result = compare_corpus.compare(sample)
    assert result["dvqa_exit"] in (0, 1) and "Traceback" not in result["dvqa_stderr"]
    manifest = json.loads((sample / "manifest.json").read_text())
    assert sorted(f["path"] for f in result["files"]) == sorted(e["path"] for e in manifest["files"])
    assert [f["path"] for f in result["files"] if f["crash"]] == []
    # the pairing pairs a real defect: Study Instance UID is Type 1 in General Study (PS3.3 C.7.2.1)
    removed = next(f for f in result["files"] if f["path"] == "dcmtk/defect-sc-no-study-uid.dcm")
    assert any("StudyInstanceUID" in p["dciodvfy"] and "StudyInstanceUID" in p["dvqa"] for p in removed["paired"])
    table = compare_corpus.render(result, None)
    assert "message recall of dciodvfy's correct errors" in table and "| DCMTK |" in table


def test_messages_pair_by_attribute_first_with_the_same_kind() -> None:
    m = compare_corpus.Message
    theirs = [m("dciodvfy", "missing", "Modality", "a"), m("dciodvfy", "enumerated", "PatientSex", "b"),
              m("dciodvfy", "missing", "Laterality", "c"), m("dciodvfy", "file", None, "d")]
    ours = [m("dvqa", "vr", "PatientSex", "x"), m("dvqa", "missing", "Modality", "y"),
            m("dvqa", "missing", "FrameIncrementPointer", "z"), m("dvqa", "file", None, "w")]
    pairs, missed, extra = compare_corpus.pair(theirs, ours)
    assert {(d.text, v.text, same) for d, v, same in pairs} == {("a", "y", True), ("d", "w", True), ("b", "x", False)}
    assert [d.text for d in missed] == ["c"] and [v.text for v in extra] == ["z"]


def test_dciodvfy_lines_are_read_into_kind_and_attribute() -> None:
    line = "Error - Missing attribute Type 2C Conditional Element=<Laterality> Module=<GeneralSeries>"
    assert (compare_corpus.dciodvfy_kind(line), compare_corpus.dciodvfy_attribute(line)) == ("missing", "Laterality")
    line = "Error - Unrecognized enumerated value <0x7> for value 1 of attribute <High Bit>"
    assert (compare_corpus.dciodvfy_kind(line), compare_corpus.dciodvfy_attribute(line)) == ("enumerated", "HighBit")
    line = ('Error - Illegal root for UID - "777.777.0.0.0.1" in (0x0020,0x000d) Study Instance UID')
    assert (compare_corpus.dciodvfy_kind(line), compare_corpus.dciodvfy_attribute(line)) == ("vr", "StudyInstanceUID")
    # lines that name their attribute only in their own words, so that dvqa's error on it pairs with them
    for line, attribute in (
            ("Error - Orientation vector is not unit vector for row vector of ImageOrientationPatient - values are "
             "0\\0\\0", "ImageOrientationPatient"),
            ("Error - StudyInstanceUID has same value as FrameOfReferenceUID <1.2.3>", "StudyInstanceUID"),
            ("Error - Invalid Value Representation - Pixel Data - VR = OB, Explicit VR, Bits Allocated = 16 exceeds 8",
             "PixelData")):
        assert compare_corpus.dciodvfy_attribute(line) == attribute, line


def test_a_repeated_dciodvfy_error_pairs_with_the_dvqa_error_on_its_attribute() -> None:
    m = compare_corpus.Message
    theirs = [m("dciodvfy", "vr", "StudyDate", "'-' at 5"), m("dciodvfy", "vr", "StudyDate", "'-' at 8")]
    pairs, missed, extra = compare_corpus.pair(theirs, [m("dvqa", "vr", "StudyDate", "x")])
    assert len(pairs) == 2 and missed == [] and extra == []


def test_the_timing_runs_once_on_the_sample(sample: Path) -> None:
    """The bench's timing path in smoke mode (one repeat), so it cannot rot unnoticed; no speed is asserted."""
    manifest = json.loads((sample / "manifest.json").read_text())
    timed = compare_corpus.timing(sample, [sample / e["path"] for e in manifest["files"]], repeat=1)
    assert timed["files"] == len(manifest["files"]) and timed["repeat"] == 1
    assert all(timed[key] > 0 for key in ("dvqa_jobs2_s", "dciodvfy_per_file_s", "dvqa_one_file_s", "dvqa_help_s"))
