"""The IOD-layer corpus: dvqa's outputs for every IOD and syntax, then one defect each, and how dciodvfy's
messages are read. Shared by tests/test_iod.py and bench/validation_comparison.py (which renders the
comparison in docs/regulatory/validation-comparison.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
from pydicom.datadict import DicomDictionary

from dvqa.convert.pipeline import ConvertOptions, convert

CLIP = Path(__file__).resolve().parent.parent / "reference_videos" / "synthetic" / "h264_cfr_high.mkv"
SYNTAXES = ["h264-high-4.1", "h264-high-4.2", "h264-bd-4.1", "hevc-main", "mpeg2-mp-ml", "mpeg2-mp-hl", "mjpeg"]
IODS = ["endoscopic", "microscopic", "photographic"]


def _delete(keyword: str):
    return lambda ds: delattr(ds, keyword)


def _set(keyword: str, value):
    return lambda ds: setattr(ds, keyword, value)


def _wrong_vr(ds) -> None:
    ds["Modality"].VR = "LO"


def _item_without_meaning(ds) -> None:
    del ds.AnatomicRegionSequence[0].CodeMeaning


# defect -> (change, the error code dvqa must give, the attribute it must name)
DEFECTS = {
    "type1-removed": (_delete("Modality"), "iod.missing", "Modality"),
    "type1-emptied": (_set("Modality", ""), "iod.empty", "Modality"),
    "type2-removed": (_delete("PatientName"), "iod.missing", "PatientName"),
    "type1c-broken": (_delete("FrameTime"), "iod.missing", "FrameTime"),
    "frame-increment-elsewhere": (_set("FrameIncrementPointer", 0x00181065), "iod.missing", "FrameTimeVector"),
    "enumerated-value": (_set("PatientSex", "X"), "iod.enumerated-value", "PatientSex"),
    "enumerated-value-1": (_set("ImageType", ["FOO", "PRIMARY"]), "iod.enumerated-value", "ImageType"),
    "lossy-flag": (_set("LossyImageCompression", "02"), "iod.enumerated-value", "LossyImageCompression"),
    "wrong-vr": (_wrong_vr, "value.vr", "Modality"),
    "item-type1-missing": (_item_without_meaning, "iod.missing", "CodeMeaning"),
    "type1c-sequence-removed": (_delete("AnatomicRegionSequence"), "iod.missing", "AnatomicRegionSequence"),
    "study-uid-removed": (_delete("StudyInstanceUID"), "iod.missing", "StudyInstanceUID"),
    "rows-removed": (_delete("Rows"), "iod.missing", "Rows"),
    "samples-removed": (_delete("SamplesPerPixel"), "iod.missing", "SamplesPerPixel"),
    "type2-series-number": (_delete("SeriesNumber"), "iod.missing", "SeriesNumber"),
    "two-patient-ids": (_set("PatientID", ["A", "B"]), "value.vm", "PatientID"),
    "unknown-sop-class": (_set("SOPClassUID", "1.2.3.4.5.6"), "iod.unknown-sop-class", "SOPClassUID"),
    "meta-mismatch": (lambda ds: setattr(ds.file_meta, "MediaStorageSOPInstanceUID", "1.2.3.4"),
                      "file.meta-mismatch", "MediaStorageSOPInstanceUID"),
}

# Where dciodvfy (dicom3tools 2022-06, Debian 12) reports an error that is not one by the standard dvqa
# checks against - each with the reason; the test fails on any other dciodvfy error dvqa does not give.
DCIODVFY_EXCEPTIONS = [
    (r"Undefined value length of other byte/word element is illegal|Dicom dataset read failed|"
     r"Element=<PixelData> Module=<ImagePixel>", "hevc",
     "dciodvfy does not know the HEVC transfer syntaxes (1.2.840.10008.1.2.4.107/.108): it reads the "
     "encapsulated Pixel Data as native and fails"),
    (r"Empty attribute \(no value\) Type 1C Conditional Element=<PixelData>", "rows-removed",
     "without Rows dciodvfy cannot size native Pixel Data and calls the encapsulated one empty; dvqa says "
     "Rows is missing and the stream does not match (stream.size-mismatch)"),
]
NAME_TO_KEYWORD = {entry[2]: entry[4] for entry in DicomDictionary.values()}


def make_corpus(d: Path) -> dict[str, Path]:
    """Every IOD x syntax dvqa writes, then one defect each on an H.264 endoscopic video: 39 files."""
    files = {f"{iod}-{syntax}": convert(CLIP, d / f"{iod}-{syntax}.dcm",
                                        ConvertOptions(syntax=syntax, iod=iod, quality=False)).output
             for iod in IODS for syntax in SYNTAXES}
    base = files["endoscopic-h264-high-4.1"]
    for name, (change, _, _) in DEFECTS.items():
        ds = pydicom.dcmread(str(base))
        change(ds)
        files[name] = d / f"{name}.dcm"
        ds.save_as(str(files[name]), enforce_file_format=False)  # as changed: pydicom would resync the meta
    return files


def attribute(line: str) -> str | None:
    """The attribute a dciodvfy message is about, as a pydicom keyword (or None for whole-file messages)."""
    found = re.search(r"Element=<(\w+)>", line)
    if found:
        return found.group(1)
    found = re.search(r"\(0x([0-9a-f]{4}),0x([0-9a-f]{4})\)", line)
    if found:
        return DicomDictionary.get(int(found.group(1) + found.group(2), 16), (None,) * 5)[4]
    found = re.search(r"attribute <([^>]+)>", line)
    return NAME_TO_KEYWORD.get(found.group(1)) if found else None


