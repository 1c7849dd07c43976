"""The last disagreements with dciodvfy on other writers' files, judged against PS3.3/PS3.5 and fixed (issue 31).

bench/compare_corpus.py's JUDGEMENTS say who is right on each disagreement group of its corpus; where dvqa was
wrong, the class of defect is shown here on a small file DCMTK's dump2dcm writes (edited with pydicom where a
dump would be long), each with the reference it is judged by and, where it speaks to it, dciodvfy's verdict.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from helpers import ROOT
from test_iod_layer import SC_DUMP, _dciodvfy_errors, _dump2dcm, _errors, _findings, _with

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
MULTIFRAME_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
TEXT_ITEM = "ContentSequence (0040,A730) > ContentSequence (0040,A730)"


def _saved(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.requirement("DVQA-VAL-001")
def test_a_tab_in_a_text_value_is_an_error(tmp_path: Path) -> None:
    """PS3.5 Table 6.2-1: ST, LT and UT "may contain the Graphic Character set and the Control Characters, CR, LF,
    FF, and ESC" - not TAB. dciodvfy reports it (pydicom-data's color3d_jpeg_baseline.dcm, in a private UT)."""
    tabbed = _dump2dcm(tmp_path, "tab", _with(SC_DUMP, "(0020,0020)", "(0020,4000) LT [first\tsecond]"))
    assert pydicom.dcmread(tabbed).ImageComments == "first\tsecond"
    assert ("value.characters", "ImageComments (0020,4000)") in _errors(tabbed)
    assert any("(0x0020,0x4000)" in line and "0x9" in line for line in _dciodvfy_errors(tabbed))
    ds = pydicom.dcmread(tabbed)
    ds.ImageComments = "first\r\nsecond\ffourth"  # CR, LF and FF are allowed
    lines = _saved(ds, tmp_path / "lines.dcm")
    assert not [e for e in _errors(lines) if "ImageComments" in e[1]]
    assert not [line for line in _dciodvfy_errors(lines) if "(0x0020,0x4000)" in line]


def _multiframe_sc(tmp_path: Path, items: int) -> Path:
    ds = pydicom.dcmread(_dump2dcm(tmp_path, "sc", SC_DUMP))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MULTIFRAME_BYTE_SC
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = 0x00181063  # Frame Time (C.8.6.3: any attribute; FrameTime below)
    ds.FrameTime = 40
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset() for _ in range(items)])
    for number, item in enumerate(ds.PerFrameFunctionalGroupsSequence, 1):
        content = Dataset()
        content.FrameAcquisitionNumber = number
        item.FrameContentSequence = Sequence([content])
    return _saved(ds, tmp_path / f"per-frame-{items}.dcm")


@pytest.mark.requirement("DVQA-VAL-001")
def test_per_frame_functional_groups_have_one_item_per_frame(tmp_path: Path) -> None:
    """PS3.3 C.7.6.16 (Table C.7.6.16-1), Per-Frame Functional Groups Sequence: "The number of Items shall be the
    same as the number of frames in the Multi-frame image" (pydicom's liver_1frame.dcm: 3 items, 1 frame;
    dciodvfy reports it)."""
    where = "PerFrameFunctionalGroupsSequence (5200,9230)"
    three = _multiframe_sc(tmp_path, 3)
    assert ("iod.invalid-value", where) in _errors(three)
    assert any("PerFrameFunctionalGroupsSequence does not match NumberOfFrames" in line
               for line in _dciodvfy_errors(three))
    one = _multiframe_sc(tmp_path, 1)
    assert not [e for e in _errors(one) if e[1] == where]


def _text_sr(tmp_path: Path) -> Dataset:
    return pydicom.dcmread(_dump2dcm(tmp_path, "sr", (ROOT / "tests" / "data" / "basic-text-sr.dump").read_text()))


@pytest.mark.requirement("DVQA-VAL-001")
def test_a_content_item_is_judged_by_its_own_value_type(tmp_path: Path) -> None:
    """PS3.3 C.17.3: a content item's Text Value and Continuity of Content follow its own Value Type. With the
    TEXT item's Value Type removed, the item lacks a Type 1 attribute (one error); it was judged by its parent
    CONTAINER's instead (dicom-validator looks an attribute up in the enclosing data sets), giving Continuity
    of Content missing and Text Value not allowed as well (dcmtk/defect-sr-value-type-removed.dcm)."""
    ds = _text_sr(tmp_path)
    del ds.ContentSequence[0].ContentSequence[0].ValueType
    path = _saved(ds, tmp_path / "no-value-type.dcm")
    assert _errors(path) == [("iod.missing", f"{TEXT_ITEM} > ValueType (0040,A040)")]


@pytest.mark.requirement("DVQA-VAL-001")
def test_a_retired_sop_class_is_named_retired(tmp_path: Path) -> None:
    """1.2.840.10008.5.1.4.1.1.6, the retired Ultrasound Image Storage (PS3.6 Annex A), has no IOD in PS3.3 2020a
    (pydicom-data's color-pl.dcm): neither tool can check the IOD (dciodvfy: "Information Object Not found");
    dvqa says why, without suggesting a newer edition, which would not define it either."""
    retired = _dump2dcm(tmp_path, "retired", SC_DUMP.replace("1.2.840.10008.5.1.4.1.1.7]", "1.2.840.10008.5.1.4.1.1.6]"))
    found = [f for f in _findings(retired) if f.code == "iod.sop-class-not-in-edition"]
    assert [f.severity.value for f in found] == ["warning"] and "is retired" in found[0].message
    assert any("Information Object Not found" in line for line in _dciodvfy_errors(retired))
