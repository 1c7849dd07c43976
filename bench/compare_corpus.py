"""`dvqa validate` and dciodvfy on bench/build_corpus.py's corpus, message by message (issue 31).

Run: python bench/compare_corpus.py [--corpus bench/.cache/corpus] [--build] [--timing [--repeat N]] [--json FILE]
     python bench/compare_corpus.py --smoke   (build_corpus's sample in a temporary folder: tests/test_bench.py)

Per file, dciodvfy's errors and dvqa's errors (from `dvqa validate --format json`) are paired by attribute
(the element keyword each names) and kind (missing, empty, present when forbidden, enumerated value, VR,
VM, file); a pair on the same attribute but another kind still counts as found. What is left is a
disagreement: grouped by direction, kind and attribute, with counts and an example each. Disagreement
groups judged against PS3.3 2020a (the edition dvqa bundles) are in JUDGEMENTS below, with who is right
and the reference; they turn the raw counts into the issue's measures:

- recall of dciodvfy's correct errors: messages (every agreed error, and every dciodvfy-only error not
  judged a dciodvfy mistake) and files (files with at least one such error that dvqa fails);
- dvqa's false errors: dvqa-only errors judged wrong, as a share of all dvqa errors;
- crashes: `dvqa validate` not exiting 0 or 1, a file missing from its report, or a layer that raised
  (dvqa reports "... could not be checked (Exception: ...)" as a finding rather than a traceback).

Files marked `in_dvqa_tests` in the manifest (pydicom's own test files, which tests/test_iod.py reads)
are counted apart from the held-out ones. `--timing`: one `dvqa validate --jobs 2` over the folder
against one dciodvfy per file, each start-up included, medians of 3 (--repeat); and `dvqa validate one.dcm` and
`dvqa --help`, medians of 3; dvqa's bytecode compiled first, as an installation has it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DVQA = [sys.executable, "-m", "dvqa"]
TAG = re.compile(r"(\w+) \(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)")
BARE_TAG = re.compile(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)\s*$")
CRASH = re.compile(r"could not be checked \(\w+")
# PS3.3 Table 8.8-1a (Basic Code Sequence Macro): a code's value is in exactly one of these; an item with none
# lacks one value, which dciodvfy reports under all three names and dvqa under one
ALTERNATIVES = [frozenset({"CodeValue", "LongCodeValue", "URNCodeValue"})]
# dciodvfy's closing line after its VR errors: a summary of messages already counted, not an error of its own
SUMMARY = re.compile(r"Dicom dataset contains invalid data values")


@dataclass
class Message:
    """One error from either tool, reduced to what the pairing compares."""

    tool: str
    kind: str
    attribute: str | None  # pydicom keyword; None: about the whole file
    text: str
    code: str = ""  # dvqa's finding id


# ------------------------------------------------------------------------------------- dciodvfy

def _keyword_of(name: str) -> str | None:
    from pydicom.datadict import DicomDictionary

    for entry in DicomDictionary.values():
        if entry[2] == name:
            return entry[4]
    return None


def dciodvfy_kind(line: str) -> str:
    if "Missing attribute" in line:
        return "missing"
    if "Empty attribute" in line:
        return "empty"
    if "present when condition unsatisfied" in line:
        return "present-when-forbidden"
    if "enumerated value" in line.lower():
        return "enumerated"
    if "Value invalid for this VR" in line or "Illegal root for UID" in line or "invalid character" in line:
        return "vr"
    if "Value Multiplicity" in line or "multiplicity" in line.lower():
        return "vm"
    if "Dicom dataset read failed" in line or "Information Object Not found" in line or "not a directory" in line:
        return "file"
    if "incorrect value length" in line:
        return "pixel-length"
    return "other"


def dciodvfy_attribute(line: str) -> str | None:
    found = re.search(r"Element=<(\w+)>", line)
    if found:
        return found.group(1)
    found = re.search(r"\(0x([0-9a-f]{4}),0x([0-9a-f]{4})\)", line)
    if found:
        from pydicom.datadict import DicomDictionary

        # a private element (odd group) has no keyword: its tag, as dvqa_attribute gives it
        keyword = DicomDictionary.get(int(found.group(1) + found.group(2), 16), (None,) * 5)[4]
        private = int(found.group(1), 16) & 1
        return keyword or (f"({found.group(1)},{found.group(2)})".upper() if private else None)
    found = re.search(r"attribute <([^>]+)>", line)
    if found:
        from pydicom.datadict import keyword_dict

        return found.group(1) if found.group(1) in keyword_dict else _keyword_of(found.group(1))
    found = re.search(r"(\w+) has same value as \w+", line)  # "StudyInstanceUID has same value as FrameOfReferenceUID"
    if found:
        return found.group(1)
    found = re.search(r"vector of (\w+) - values", line)  # "not unit vector for row vector of ImageOrientationPatient"
    if found:
        return found.group(1)
    found = re.search(r"Number of items in (\w+) does not match", line)  # "... PerFrameFunctionalGroupsSequence ..."
    if found:
        return found.group(1)
    found = re.search(r"(PixelData|Pixel Data|MediaStorageSOP\w+|SOPInstanceUID|SOPClassUID)", line)
    return found.group(1).replace(" ", "") if found else None


def run_dciodvfy(path: Path) -> tuple[list[Message], list[str]]:
    """dciodvfy's errors (paired) and warnings (kept as text) for one file."""
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace")
    lines = (out.stdout + out.stderr).splitlines()
    errors = [Message("dciodvfy", dciodvfy_kind(line), dciodvfy_attribute(line), line)
              for line in lines if line.startswith("Error") and not SUMMARY.search(line)]
    return errors, [line for line in lines if line.startswith("Warning")]


# ----------------------------------------------------------------------------------------- dvqa

DVQA_KINDS = {"iod.missing": "missing", "iod.empty": "empty", "iod.not-allowed": "present-when-forbidden",
              "iod.enumerated-value": "enumerated", "iod.invalid-value": "enumerated", "value.vr": "vr",
              "value.format": "vr", "value.too-long": "vr", "value.characters": "vr", "value.vm": "vm",
              "iod.unknown-sop-class": "file", "iod.no-sop-class": "file"}


def dvqa_kind(code: str) -> str:
    if code in DVQA_KINDS:
        return DVQA_KINDS[code]
    if code.startswith("file."):
        return "file"
    if code.startswith("stream."):
        return "stream"
    return code


def dvqa_attribute(finding: dict) -> str | None:
    found = TAG.findall(finding.get("where") or "") or TAG.findall(finding.get("message") or "")
    if found:
        return found[-1][0]
    bare = BARE_TAG.findall(finding.get("where") or "")  # a private element (odd group): "(0019,1060)", no keyword
    return f"({bare[-1][0]},{bare[-1][1]})".upper() if bare and int(bare[-1][0], 16) & 1 else None


def run_dvqa(targets: list[Path], jobs: int = 2) -> tuple[dict[str, dict], int, str]:
    """One `dvqa validate --format json` over the targets: each file's report by path, exit code, stderr."""
    out = subprocess.run([*DVQA, "validate", "--format", "json", "--jobs", str(jobs), *map(str, targets)],
                         capture_output=True, text=True, cwd=ROOT)
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {}, out.returncode, out.stderr[-2000:]
    return {f["path"]: f for f in report["files"]}, out.returncode, out.stderr[-2000:]


# ------------------------------------------------------------------------------------- pairing

def pair(theirs: list[Message], ours: list[Message]) -> tuple[list[tuple[Message, Message, bool]],
                                                              list[Message], list[Message]]:
    """(dciodvfy, dvqa, same kind) pairs; dciodvfy errors dvqa does not give; dvqa errors dciodvfy does not.
    One to one first (same attribute and kind, then same attribute), then a dciodvfy error left over on an
    attribute dvqa names with an error pairs with that error too."""
    left, right, pairs = list(theirs), list(ours), []
    for same_kind in (True, False):
        for d in list(left):
            for v in right:
                if d.attribute is None and v.kind == "file" and d.kind == "file":
                    match = True
                elif d.attribute is None or v.attribute is None:
                    match = False
                else:
                    match = d.attribute == v.attribute and (d.kind == v.kind or not same_kind)
                if match:
                    pairs.append((d, v, same_kind))
                    left.remove(d)
                    right.remove(v)
                    break
    for d in list(left):  # dciodvfy often says one thing twice (per character, per table): one dvqa error covers it
        v = next((v for v in ours if d.attribute is not None and _same_value(v.attribute, d.attribute)), None)
        if v is not None:
            pairs.append((d, v, d.kind == v.kind))
            left.remove(d)
    return pairs, left, right


def _same_value(ours: str | None, theirs: str) -> bool:
    """The same attribute, or alternatives that hold one value (ALTERNATIVES)."""
    return ours == theirs or any(ours in group and theirs in group for group in ALTERNATIVES)


DEFLATED = "1.2.840.10008.1.2.1.99"
SC = "1.2.840.10008.5.1.4.1.1.7"
PAIRED = {"BREAST", "EYE", "KNEE", "HIP", "SHOULDER", "ELBOW", "WRIST", "HAND", "FOOT", "ANKLE", "EAR", "KIDNEY",
          "LUNG", "OVARY", "TESTIS", "CLAVICLE", "FEMUR", "HUMERUS", "ARM", "LEG", "THIGH", "FOREARM"}


@dataclass(frozen=True)
class Judgement:
    """A disagreement group judged against PS3.3 2020a (dvqa's bundled edition) or PS3.5/PS3.10."""

    side: str  # whose error it is: "dciodvfy" (dvqa does not give it) or "dvqa" (dciodvfy does not)
    kind: str  # the message kind, or "*"
    attribute: str  # regex on the attribute keyword ("-": none)
    verdict: str  # "dvqa right", "dciodvfy right", or "moot" (dvqa refuses the file as a whole)
    why: str
    text: str = ""  # regex on the message text
    when: Callable[[dict], bool] | None = None  # on the file's context (syntax, SOP class, body part, dvqa layers)


def _deflated(c: dict) -> bool:
    return c.get("syntax") == DEFLATED


def _refused(c: dict) -> bool:
    return c.get("iod_layer") != "ran" and c.get("syntax") != DEFLATED and not c.get("dicomdir")


def _sop(*prefixes: str) -> Callable[[dict], bool]:
    return lambda c: any((c.get("sop") or "") == p or (c.get("sop") or "").startswith(p + ".") for p in prefixes)


DEFLATE_WHY = ("dciodvfy (dicom3tools 2022-06, Debian 12) cannot read the Deflated Explicit VR Little Endian syntax "
               "(PS3.5 A.5): its 'Dicom dataset read failed' and what follows are its limit; dvqa reads the data set "
               "and gives the errors both tools give on the same file before deflation")
JUDGEMENTS: list[Judgement] = [
    Judgement("dciodvfy", "*", ".*", "dvqa right", DEFLATE_WHY, when=_deflated),
    Judgement("dciodvfy", "*", ".*", "moot", "dvqa refuses the file as a whole (file.* error: no PS3.10 preamble and "
              "'DICM', PS3.10 §7.1, or cut short), so it checks none of its attributes", when=_refused),
    Judgement("dciodvfy", "missing", "Laterality", "dvqa right",
              "PS3.3 C.7.3.1 (Table C.7-5a): Type 2C 'Required if the body part examined is a paired structure and "
              "Image Laterality, Frame Laterality or Measurement Laterality are not present'; these files name no "
              "paired body part (none, WHOLE BODY, Unknown); dciodvfy requires it whenever Image Laterality is "
              "absent. dvqa lists the condition as not evaluated (info)",
              when=lambda c: (c.get("body_part") or "").upper() not in PAIRED),
    Judgement("dciodvfy", "other", "ImageType", "dciodvfy right",
              "PS3.3 C.8.2.1.1.1 (CT), C.8.3.1.1.1 (MR), C.8.7.1.1.1 (XA/XRF): Image Type 'uses one of the following "
              "... for Value 3', so a third value is required (here a consequence of Image Type missing or short)",
              text="A value is required for value 3"),
    Judgement("dciodvfy", "other", ".*", "dciodvfy right",
              "PS3.3 C.7.6.2.1.1: Image Orientation (Patient) holds direction cosines; 0\\0\\0 is no direction",
              text="not unit vector for (row|column) vector of ImageOrientationPatient"),
    Judgement("dciodvfy", "other", ".*", "dciodvfy right",
              "PS3.5 §9: a UID identifies one thing; a study and a frame of reference are two",
              text="StudyInstanceUID has same value as FrameOfReferenceUID"),
    Judgement("dciodvfy", "other", ".*", "dciodvfy right",
              "PS3.5 §8.1.2 and A.2: in Explicit VR, native Pixel Data with Bits Allocated above 8 is OW, not OB",
              text="Invalid Value Representation - Pixel Data - VR = OB"),
    Judgement("dciodvfy", "missing", "ActualFrameDuration", "dciodvfy right",
              "PS3.3 C.8.4.9 (NM Image): Type 1C 'Required if Image Type Value 3 is WHOLE BODY or STATIC'; "
              "XMedCon writes STATIC without it"),
    Judgement("dciodvfy", "other", "PatientPosition", "dciodvfy right",
              "PS3.3 C.7.3.1: Patient Position 'May be present for other SOP Classes if Patient Orientation Code "
              "Sequence (0054,0410) is not present'; here that Type 2 sequence is present (empty) in an NM image",
              text="Shall not be present when PatientOrientationCodeSequence is present"),
    Judgement("dciodvfy", "enumerated", "RescaleType", "dvqa right",
              "PS3.3 CT Pixel Value Transformation macro: Rescale Type 'shall be HU' only if Frame Type Value 1 is "
              "ORIGINAL and Value 3 is not LOCALIZER; this frame is DERIVED, and C.11.1.1.2's Defined Terms "
              "include US", when=lambda c: c.get("path", "").endswith("eCT_Supplemental.dcm")),
    Judgement("dciodvfy", "missing", "PatientOrientation", "dciodvfy right",
              "PS3.3 C.7.6.1 (Table C.7-9): Type 2C 'Required if image does not require Image Orientation (Patient) "
              "and Image Position (Patient)'; these IODs (SC, US, VL, CR, XA, NM, MG) have no Image Plane module, "
              "so it is required (issue 31, defect 5)"),
    Judgement("dciodvfy", "present-when-forbidden", "PlanarConfiguration", "dciodvfy right",
              "PS3.3 C.7.6.3: Type 1C 'Required if Samples per Pixel has a value greater than 1' with no 'may be "
              "present otherwise'; a 1C attribute whose condition is false shall not be present (PS3.5 §7.4.4; issue "
              "31, defect 2)"),
    Judgement("dciodvfy", "vr", ".*", "dciodvfy right",
              "PS3.5 §9.1: a UID has digits and dots only (these are hexadecimal digests)", text=r" UI .*= <[0-9a-f]{20,}>"),
    Judgement("dciodvfy", "vr", ".*", "dciodvfy right",
              "PS3.5 §9.1: a UID is an ISO/IEC 8824 object identifier, whose first arc is 0, 1 or 2",
              text=r'Illegal root for UID - "([3-9]|[12]\d)'),
    Judgement("dciodvfy", "vr", ".*", "dvqa right",
              "PS3.5 §9.1 allows single-digit zero components; whether a root is registered cannot be read from a "
              "file: dciodvfy's root heuristic", text=r"0\.0\.0\.0"),
    Judgement("dciodvfy", "vr", ".*", "dciodvfy right",
              "PS3.5 Table 6.2-1: CS has upper-case letters, digits, space and underscore only", text=r" CS .*invalid"),
    Judgement("dciodvfy", "vr", ".*", "dciodvfy right",
              "PS3.5 Table 6.2-1: DA is YYYYMMDD and TM HHMMSS.FFFFFF; the ACR-NEMA forms with '.', '-' or ':' are "
              "for reading old data only", text=r" (DA|TM) .*Character invalid"),
    Judgement("dciodvfy", "vr", ".*", "dciodvfy right",
              "PS3.5 Table 6.2-1: AS is 4 characters nnnD/W/M/Y; SH is padded with a space, not NUL",
              text=r" (AS|SH) .*Trailing character invalid"),
    Judgement("dciodvfy", "missing", "FrameOfReferenceUID|PositionReferenceIndicator", "dvqa right",
              "PS3.3 2020a A.19.3 (Table A.19.3-1, RT Structure Set IOD): the Frame of Reference module is U and "
              "none of its attributes is present; dciodvfy requires the module",
              when=_sop("1.2.840.10008.5.1.4.1.1.481.3")),
    Judgement("dciodvfy", "enumerated", "HighBit", "dciodvfy right",
              "PS3.3 C.8.2.1.1.4 and C.8.2.1.1.6 (CT Image): Bits Stored 12-16 and High Bit one less, so High Bit "
              "11-15; the same defect as the Bits Stored error both tools give"),
    Judgement("dciodvfy", "enumerated", "NumberOfFrames", "dciodvfy right",
              "PS3.3 A.6 and A.8.1: the US Image and SC Image IODs are single-frame (no Multi-frame module); two "
              "frames need the multi-frame SOP class", when=_sop("1.2.840.10008.5.1.4.1.1.6.1", SC)),
    Judgement("dciodvfy", "other", ".*", "dciodvfy right",
              "PS3.3 C.17.2 (Table C.17-2): Current Requested Procedure Evidence Sequence lists the instances 'that "
              "are referenced in the content tree'", text="not listed in CurrentRequestedProcedureEvidenceSequence"),
    Judgement("dciodvfy", "enumerated", "PhotometricInterpretation", "dciodvfy right",
              "PS3.3 C.8.12.1 (VL Image): Enumerated Values MONOCHROME2, RGB, YBR_FULL_422, YBR_PARTIAL_420, "
              "YBR_RCT, YBR_ICT", when=_sop("1.2.840.10008.5.1.4.1.1.77.1")),
    Judgement("dciodvfy", "enumerated", "PhotometricInterpretation", "dvqa right",
              "PS3.3 C.8.6 / C.7.6.3.1.2: the SC Image IOD restricts Photometric Interpretation by Defined Terms, not "
              "Enumerated Values; dciodvfy reads a Defined Term list as enumerated", when=_sop(SC)),
    Judgement("dciodvfy", "missing", "RepetitionTime", "dvqa right",
              "PS3.3 C.8.3.1 (MR Image): Repetition Time is 2C on the values of Scanning Sequence and Sequence Variant; "
              "both are missing (Type 1, which both tools report), so the condition cannot hold; the missing "
              "attributes are the error"),
    Judgement("dciodvfy", "vm", "ImageType", "dciodvfy right",
              "PS3.6: Image Type has VM 2-n (PS3.3 C.7.6.1.1.2: values 1 and 2 are required)"),
    Judgement("dciodvfy", "vm", "PatientID", "dciodvfy right", "PS3.6: Patient ID has VM 1"),
    Judgement("dciodvfy", "missing", "PerFrameFunctionalGroupsSequence|SharedFunctionalGroupsSequence|"
              "DimensionOrganizationSequence", "dciodvfy right",
              "PS3.3 C.7.6.16 and C.7.6.17: Type 1 in an enhanced multi-frame IOD (here Enhanced MR)"),
    Judgement("dciodvfy", "missing", "PixelData", "dciodvfy right",
              "PS3.3 C.7.6.3: Pixel Data Type 1C, required unless Pixel Data Provider URL is present: an image "
              "without pixels (issue 31, defect 5)"),
    Judgement("dciodvfy", "missing", "TextValue", "dciodvfy right",
              "PS3.3 C.17.3 (Table C.17-5/C.18.1): Text Value is required in a TEXT content item at any depth "
              "(issue 31, defect 3)"),
    Judgement("dciodvfy", "missing", "RTROIInterpretedType", "dciodvfy right", "PS3.3 C.8.8.8: Type 2 (issue 31, "
              "defect 4)"),
    Judgement("dciodvfy", "missing", "MIMETypeOfEncapsulatedDocument", "dciodvfy right", "PS3.3 C.24.2: Type 1"),
    Judgement("dciodvfy", "missing", "AnatomicRegionSequence", "dciodvfy right",
              "PS3.3 C.8.11.7 (Mammography Image) includes the General Anatomy Mandatory Macro: Type 1"),
    Judgement("dciodvfy", "missing", "RescaleIntercept|RescaleSlope|RescaleType", "dciodvfy right",
              "PS3.3 C.8.6.3 (SC Multi-frame Image): Type 1C 'Required if Photometric Interpretation is MONOCHROME2 "
              "and Bits Stored is greater than 1'", when=_sop(SC)),
    Judgement("dciodvfy", "enumerated", "SamplesPerPixel", "dciodvfy right",
              "PS3.3 C.7.6.3.1.1: RGB has 3 samples per pixel (the file's Photometric Interpretation RGB, which both "
              "tools reject for CT, is the cause)"),
    Judgement("dciodvfy", "pixel-length", "PixelData", "dciodvfy right",
              "PS3.5 §8.1.1: native Pixel Data is Rows x Columns x Samples x Bits Allocated / 8 bytes (padded to even)"),
    Judgement("dciodvfy", "*", "MediaStorageSOPInstanceUID", "dciodvfy right",
              "PS3.10 §7.1: Media Storage SOP Instance UID is Type 1 and names the data set's SOP instance",
              when=lambda c: c.get("syntax") != DEFLATED),
    Judgement("dvqa", "missing", "Modality", "dciodvfy right",
              "PS3.3 C.8.6.1 (SC Equipment): Modality is Type 3 there, 'This type definition shall override the "
              "definition in the General Series Module' (issue 31, defect 1)", when=_sop(SC)),
    Judgement("dvqa", "missing", "ReferencedTimeOffsets|ReferencedDateTime|ReferencedSamplePositions", "dciodvfy right",
              "PS3.3 C.18.7 (Table C.18.7-1): the temporal coordinates attributes belong to TCOORD content items "
              "only; these items are TEXT and CONTAINER (issue 31, defect 3)"),
    Judgement("dvqa", "missing", "FrameIncrementPointer", "dciodvfy right",
              "PS3.3 C.8.6.3 (SC Multi-frame Image): Frame Increment Pointer 'Shall be present if Number of Frames "
              "is greater than 1, overriding (specializing) the Type 1 requirement ... in the Multi-frame Module'; "
              "these images have one frame (or none recorded)", when=_sop(SC)),
    Judgement("dvqa", "stream", ".*", "dciodvfy right",
              "PS3.3 C.7.6.1.1.5.1: Lossy Image Compression Method is Type 3 and 'should' be present; not an error",
              text="Lossy Image Compression Method should"),
    Judgement("dvqa", "stream", ".*", "dvqa right",
              "PS3.5 §8.2.1: JPEG frames with horizontally subsampled chroma are YBR_FULL_422", text="4:2:2"),
    Judgement("dvqa", "stream", ".*", "dvqa right",
              "PS3.3 C.7.6.1.1.5 and C.8.12.1: a lossy JPEG image has Lossy Image Compression 01 (Type 2 in VL Image, "
              "here absent)",
              text="Lossy Image Compression must be 01"),
    Judgement("dvqa", "stream", ".*", "dciodvfy right",
              "PS3.5 A.4: an encapsulated transfer syntax concerns Pixel Data only; a presentation state written "
              "with the JPEG syntax of its image has no Pixel Data to parse", text="no encapsulated Pixel Data"),
    Judgement("dvqa", "file", "-", "dciodvfy right",
              "PS3.10 §8 and PS3.3 F.3 (Basic Directory IOD): a DICOMDIR holds the Media Storage Directory SOP "
              "instance, whose data set has no SOP Class/Instance UID (issue 31, defect 5)",
              text="file.no-dataset", when=lambda c: c.get("dicomdir", False)),
    Judgement("dvqa", "file", "-", "dvqa right",
              "PS3.10 §7.1: a DICOM file begins with a 128-byte preamble and 'DICM'", text="file.not-dicom"),
    Judgement("dvqa", "file", "MediaStorageSOPInstanceUID", "dvqa right",
              "PS3.10 §7.1 (Table 7.1-1): Media Storage SOP Instance UID is the data set's SOP Instance UID"),
    Judgement("dvqa", "vr", ".*", "dvqa right",
              "PS3.5 §9.1 (no leading zero in a UID component) and Table 6.2-1 (IS is an integer)", text="value.format"),
    Judgement("dvqa", "missing", "OperatorsName", "dvqa right", "PS3.3 C.8.8.1 (RT Series): Operators' Name is Type 2"),
    Judgement("dvqa", "empty", "ReferencedSOPInstanceUID", "dvqa right",
              "PS3.3 C.8.8.3 (RT Dose): Referenced SOP Instance UID is Type 1 in a Referenced RT Plan Sequence item"),
    Judgement("dvqa", "missing", "ContentCreatorName", "dvqa right",
              "PS3.3 C.10.9 (Content Identification Macro, in the Segmentation and Parametric Map Image modules): "
              "Content Creator's Name is Type 2"),
    Judgement("dvqa", "enumerated", "RescaleIntercept|RescaleSlope", "dciodvfy right",
              "PS3.5 Table 6.2-1: DS is a decimal number; '0.0' and '1.0' are the enumerated values 0 and 1"),
    Judgement("dvqa", "enumerated", "NumberOfFrames", "dvqa right",
              "PS3.3 A.6 and A.8.1: the US Image and SC Image IODs are single-frame (no Multi-frame module); two "
              "frames need the multi-frame SOP class (dciodvfy stops on an assertion on these 32-bit files)",
              when=_sop("1.2.840.10008.5.1.4.1.1.6.1", SC)),
    Judgement("dvqa", "stream", "PixelData", "dvqa right",
              "PS3.5 §8.2: native Pixel Data is OW when Bits Allocated is above 8 (OB only for 8 bits or fewer); "
              "dciodvfy stops on an assertion on these 32-bit files", text="native Pixel Data is OB"),
    Judgement("dvqa", "missing", "DVHSequence", "dvqa right",
              "PS3.3 2020a C.8.8.4 (RT DVH): Referenced Structure Set Sequence (300C,0060) belongs to the RT DVH "
              "module alone among the RT Dose IOD's modules (A.18.3); the file holds it, so it uses the module, "
              "whose DVH Sequence is Type 1", when=_sop("1.2.840.10008.5.1.4.1.1.481.2")),
    Judgement("dvqa", "missing", "ValueType", "dvqa right", "PS3.3 C.17.3: Value Type is Type 1 in a content item "
              "that holds its value (not one that names its target by reference, Table C.17-6)",
              when=lambda c: not c.get("path", "").endswith("test-SR.dcm")),
    Judgement("dvqa", "missing", "ContinuityOfContent", "dciodvfy right",
              "PS3.3 C.17.3: Type 1C 'Required if Value Type is CONTAINER'; with Value Type absent the condition "
              "cannot hold, the missing Value Type is the error"),
    # round 3 (2026-12-05): the groups left unjudged after round 2, each read in the file and in the 2020a text
    Judgement("dciodvfy", "vr", ".*", "dciodvfy right",
              "PS3.5 Table 6.2-1: ST, LT and UT 'may contain the Graphic Character set and the Control Characters, "
              "CR, LF, FF, and ESC' - not TAB (here 0x09 in a private UT); dvqa allowed TAB until round 3",
              text=r"\?  (UT|LT|ST) \[", when=lambda c: c.get("path", "").endswith("color3d_jpeg_baseline.dcm")),
    Judgement("dciodvfy", "vr", "ReferencedSOPClassUID|ReferencedSOPInstanceUID", "dvqa right",
              "PS3.5 §9.1: a UID component 'shall consist of one or more digits' without a leading zero 'unless the "
              "component is a single digit': '0' is well-formed. That it names no SOP class or instance is another "
              "matter (these IMAGE references also miss the evidence sequence, judged above)",
              text="Nothing but zero components"),
    Judgement("dciodvfy", "other", "PerFrameFunctionalGroupsSequence", "dciodvfy right",
              "PS3.3 C.7.6.16 (Table C.7.6.16-1): 'The number of Items shall be the same as the number of frames'; "
              "3 items, 1 frame (Number of Frames absent, which both tools report). dvqa checks it since round 3"),
    Judgement("dciodvfy", "file", "-", "dvqa right",
              "PS3.4 2020a B.5 / PS3.6 Annex A: 1.2.840.10008.5.1.4.1.1.6 is the retired Ultrasound Image Storage, "
              "for which PS3.3 2020a defines no IOD: neither tool can check the IOD; a retired SOP class is no "
              "error of the file (dvqa warns, iod.sop-class-not-in-edition), its other errors both tools give",
              text="Information Object Not found", when=lambda c: c.get("sop") == "1.2.840.10008.5.1.4.1.1.6"),
    Judgement("dciodvfy", "present-when-forbidden", "MultiplexGroupTimeOffset", "dvqa right",
              "PS3.3 2020a C.10.4 (Table C.10-9, Waveform): 'Required if Acquisition Time Synchronized (0018,1800) "
              "value is Y; may be present otherwise'; dciodvfy reads it without the last clause"),
    Judgement("dciodvfy", "present-when-forbidden", "Laterality", "dciodvfy right",
              "PS3.3 C.7.3.1 (Table C.7-5a): Laterality 2C 'Required if the body part examined is a paired "
              "structure ...', no 'may be present otherwise', so absent otherwise (PS3.5 §7.4.4); a 12-lead ECG "
              "examines the heart and the file names no paired body part, yet holds Laterality (empty). Not "
              "fixed: dvqa cannot tell a paired body part (its condition is listed as not evaluated)",
              when=_sop("1.2.840.10008.5.1.4.1.1.9.1.1")),
    Judgement("dciodvfy", "*", "RequestAttributesSequence", "dvqa right",
              "PS3.5 §7.4.6: a Type 3 element 'may or may not be included and could be zero length'; PS3.3 2020a "
              "C.7.3.1 (Table C.7-5a) says of this Type 3 sequence 'One or more Items are permitted' (what may be "
              "there, not 'shall be included'); dciodvfy reads it as a value multiplicity 1-n and rejects the "
              "empty sequence, twice", text="Bad (Sequence number of Items 0|attribute Value Multiplicity)"),
    Judgement("dciodvfy", "other", "ReferencedFrameNumber", "dciodvfy right",
              "PS3.3 C.18.3 (Image Reference Macro via C.17.3): Referenced Frame Number 1C 'Required if the "
              "Referenced SOP Instance is a multi-frame image and the reference does not apply to all frames', not "
              "present otherwise (PS3.5 §7.4.2); it references CT Image Storage, a single-frame IOD. Not fixed: the "
              "condition asks about the referenced instance, which dvqa lists as not evaluated"),
    Judgement("dciodvfy", "other", "-", "dciodvfy right",
              "PS3.3 C.18.6 (Spatial Coordinates Macro): an SCOORD content item is the source of a SELECTED FROM "
              "relationship to the IMAGE its coordinates are on; this one has no child. Not fixed: dvqa checks content "
              "items' attributes, not the relationships a value type needs (until round 3 this line hid in the "
              "unjudged 'other' group beside liver_1frame.dcm's)", text="required child Content Item for SCOORD"),
    Judgement("dvqa", "missing", "NumberOfFrames", "dvqa right",
              "PS3.3 A.18.3 (RT Dose IOD): the Multi-frame module is 'C - Required if pixel data is multi-frame'; "
              "these files hold its Frame Increment Pointer (C.7.6.6), pointing at a 15-value Grid Frame Offset "
              "Vector, so the module is used and its Type 1 Number of Frames is missing (dciodvfy stops on an "
              "assertion on these 32-bit files)", when=_sop("1.2.840.10008.5.1.4.1.1.481.2")),
    Judgement("dvqa", "missing", "FrameAnatomySequence", "dvqa right",
              "PS3.3 2020a A.75 (Table A.75-2, Parametric Map functional group macros): Frame Anatomy is M; neither "
              "the shared nor the per-frame items hold it", when=_sop("1.2.840.10008.5.1.4.1.1.30")),
    Judgement("dvqa", "missing", "RedPaletteColorLookupTableData|GreenPaletteColorLookupTableData|"
              "BluePaletteColorLookupTableData", "dciodvfy right",
              "PS3.3 C.7.9 (Table C.7-22): the full Palette Color Lookup Table Data is required 'if segmented data is "
              "NOT used in an Image IOD'; this file has the Segmented form (C.7.9.2), and the Palette module's "
              "definition governs Image Pixel's (C.7.6.3) in the IODs that include it. Fixed in round 3",
              when=lambda c: c.get("path", "").endswith("gdcm-US-ALOKA-16.dcm")),
    Judgement("dvqa", "missing", "ContentTime", "dciodvfy right",
              "PS3.3 C.7.6.1 (Table C.7-9): Content Date and Content Time 'Required if image is part of a Series in "
              "which the images are temporally related. May be present otherwise.': a Content Date says nothing of "
              "the condition. Fixed in round 3"),
    Judgement("dvqa", "present-when-forbidden", "TextValue", "dciodvfy right",
              "PS3.3 C.17.3: Text Value follows the item's own Value Type, which the defect removed (a Type 1 error "
              "dvqa gives, dciodvfy does not); dvqa read the parent CONTAINER's instead. Fixed in round 3",
              when=lambda c: c.get("path", "").endswith("defect-sr-value-type-removed.dcm")),
    Judgement("dvqa", "enumerated", "GraphicType", "dciodvfy right",
              "PS3.3 C.18.6.1.2: SCOORD's Graphic Type includes CIRCLE (POLYGON and ELLIPSOID are SCOORD3D's, "
              "C.18.9.1.2); one table row held SCOORD3D's list for both. Fixed in round 3"),
    Judgement("dvqa", "missing", "TemporalRangeType|ConceptCodeSequence|ValueType", "dciodvfy right",
              "PS3.3 Table C.17-6: a by-reference content item (Referenced Content Item Identifier) holds no Document "
              "Content Macro - no Value Type, and nothing its parent's Value Type (TCOORD, CODE) requires. Fixed in "
              "round 3", when=lambda c: c.get("path", "").endswith("test-SR.dcm")),
    # last: a dvqa error on a deflated file that no judgement above covers is one dciodvfy cannot see
    Judgement("dvqa", "*", ".*", "dvqa right", DEFLATE_WHY, when=_deflated),
]


def judge(side: str, message: Message, context: dict) -> tuple[str, str]:
    """The first judgement that matches (the list is in order of precedence)."""
    for j in JUDGEMENTS:
        if (j.side == side and j.kind in (message.kind, "*")
                and re.fullmatch(j.attribute, message.attribute or "-")
                and (not j.text or re.search(j.text, message.text))
                and (j.when is None or j.when(context))):
            return j.verdict, j.why
    return "not judged", ""


def file_context(path: Path, relative: str, layers: dict) -> dict:
    """What the judgements look at: transfer syntax, SOP class, body part, whether dvqa checked the IOD."""
    import pydicom

    context: dict = {"iod_layer": layers.get("iod"), "dicomdir": path.name == "DICOMDIR", "path": relative}
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        context["syntax"] = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        context["sop"] = str(ds.get("SOPClassUID", "") or "")
        context["body_part"] = str(ds.get("BodyPartExamined", "") or "")
    except Exception as error:  # noqa: BLE001 - a file pydicom cannot read has no context; judged without it
        context["unreadable"] = f"{type(error).__name__}: {error}"
    return context


# ------------------------------------------------------------------------------------------ main

def compare(corpus: Path) -> dict:
    manifest = json.loads((corpus / "manifest.json").read_text())
    entries = {str((corpus / e["path"]).resolve()): e for e in manifest["files"]}
    folders = sorted({corpus / Path(e["path"]).parts[0] for e in manifest["files"]})
    findings, exit_code, stderr = run_dvqa(folders)
    files = []
    for path, entry in entries.items():
        theirs, warnings = run_dciodvfy(Path(path))
        reported = findings.get(path)
        errors = [f for f in (reported or {}).get("findings", []) if f["severity"] == "error"]
        context = file_context(Path(path), entry["path"], (reported or {}).get("layers", {}))
        ours = [Message("dvqa", dvqa_kind(f["code"]), dvqa_attribute(f), f"{f['code']}: {f['where']}: {f['message']}",
                        f["code"]) for f in errors]
        pairs, missed, extra = pair(theirs, ours)
        files.append({
            "path": entry["path"], "writer": entry["writer"], "defect": entry["defect"],
            "held_out": not entry["in_dvqa_tests"],
            "crash": reported is None or any(CRASH.search(f["message"]) for f in errors),
            "dciodvfy_errors": len(theirs), "dciodvfy_warnings": len(warnings), "dvqa_errors": len(ours),
            "dvqa_codes": sorted({m.code for m in ours}),
            "paired": [{"dciodvfy": d.text, "dvqa": v.text, "same_kind": same} for d, v, same in pairs],
            "dciodvfy_only": [asdict(m) | {"judged": judge("dciodvfy", m, context)} for m in missed],
            "dvqa_only": [asdict(m) | {"judged": judge("dvqa", m, context)} for m in extra],
            "context": context,
        })
    return {"files": files, "dvqa_exit": exit_code, "dvqa_stderr": stderr, "writers": manifest["writers"],
            "not_made": manifest["not_made"]}


def measures(files: list[dict]) -> dict:
    """The issue's measures on a set of files (see the module docstring). A dciodvfy-only error not judged
    counts as a correct error dvqa misses, a dvqa-only error not judged as neither right nor wrong: both
    are counted in `unjudged_*`."""
    def count(side: str, verdict: str) -> int:
        return sum(1 for f in files for m in f[side] if m["judged"][0] == verdict)

    theirs = sum(f["dciodvfy_errors"] for f in files)
    wrong_theirs, moot = count("dciodvfy_only", "dvqa right"), count("dciodvfy_only", "moot")
    correct_theirs = theirs - wrong_theirs - moot
    given = sum(len(f["paired"]) for f in files)
    ours = sum(f["dvqa_errors"] for f in files)
    false_ours = count("dvqa_only", "dciodvfy right")
    really_bad = [f for f in files if f["paired"] or any(m["judged"][0] != "dvqa right" for m in f["dciodvfy_only"])
                  or any(m["judged"][0] == "dvqa right" for m in f["dvqa_only"])]
    clean = [f for f in files if f not in really_bad]
    return {
        "files": len(files), "crashes": sum(f["crash"] for f in files),
        "dciodvfy errors": theirs, "... judged dciodvfy mistakes": wrong_theirs,
        "... moot (dvqa refuses the file as a whole)": moot,
        "dvqa errors": ours, "errors paired (same attribute)": given,
        "... of them same kind": sum(1 for f in files for p in f["paired"] if p["same_kind"]),
        "message recall of dciodvfy's correct errors": given / correct_theirs if correct_theirs else 1.0,
        "files with a real error": len(really_bad),
        "file recall (dvqa fails a file with a real error)":
            (sum(1 for f in really_bad if f["dvqa_errors"]) / len(really_bad)) if really_bad else 1.0,
        "files without a known error": len(clean),
        "... of them dvqa fails": sum(1 for f in clean if f["dvqa_errors"]),
        "dvqa-only errors": sum(len(f["dvqa_only"]) for f in files),
        "... judged right (dciodvfy misses them)": count("dvqa_only", "dvqa right"),
        "... judged false errors": false_ours,
        "dvqa false errors / dvqa errors": false_ours / ours if ours else 0.0,
        "unjudged dciodvfy-only errors": count("dciodvfy_only", "not judged"),
        "unjudged dvqa-only errors": count("dvqa_only", "not judged"),
        "files dciodvfy passes": sum(1 for f in files if not f["dciodvfy_errors"]),
        "files dciodvfy fails and dvqa passes": sum(1 for f in files if f["dciodvfy_errors"] and not f["dvqa_errors"]),
    }


def groups(files: list[dict], side: str) -> list[tuple[tuple[str, str, str, str], int, dict]]:
    counted: collections.Counter = collections.Counter()
    example: dict = {}
    for f in files:
        for m in f[side]:
            key = (m["kind"], m["attribute"] or "-", m["judged"][0], m["judged"][1])
            counted[key] += 1
            example.setdefault(key, {"file": f["path"], "text": m["text"]})
    return [(key, count, example[key]) for key, count in counted.most_common()]


def by_judgement(files: list[dict]) -> dict:
    """Disagreements per judgement (unjudged ones per kind and attribute): counts held out and in all, and
    an example, largest first."""
    found: dict = {}
    for f in files:
        for side in ("dciodvfy_only", "dvqa_only"):
            for m in f[side]:
                verdict, why = m["judged"]
                if verdict == "not judged":
                    why = f"{m['kind']} {m['attribute'] or ''}".strip()
                key = (side.split("_")[0], verdict, why)
                held, total, example = found.get(key, (0, 0, None))
                found[key] = (held + f["held_out"], total + 1, example or {"file": f["path"], "text": m["text"]})
    return dict(sorted(found.items(), key=lambda item: (-item[1][1], item[0])))


def timing(corpus: Path, paths: list[Path], repeat: int = 3) -> dict:
    """Medians of `repeat` runs, each tool's run right after the other's so that both see the same load."""
    # as installed: pip compiles dvqa's bytecode at install time, which a checkout run with PYTHONDONTWRITEBYTECODE=1
    # never has (every run would compile dvqa's modules again, ~50 ms of each start-up)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "dvqa")], check=True)
    folders = sorted({corpus / p.relative_to(corpus).parts[0] for p in paths})
    runs = {"dvqa_jobs2_s": lambda: subprocess.run([*DVQA, "validate", "--jobs", "2", "--format", "json",
                                                    *map(str, folders)], capture_output=True, cwd=ROOT),
            "dciodvfy_per_file_s": lambda: [subprocess.run(["dciodvfy", str(p)], capture_output=True) for p in paths],
            "dvqa_one_file_s": lambda: subprocess.run([*DVQA, "validate", str(paths[0])], capture_output=True,
                                                      cwd=ROOT),
            "dciodvfy_one_file_s": lambda: subprocess.run(["dciodvfy", str(paths[0])], capture_output=True),
            "dvqa_help_s": lambda: subprocess.run([*DVQA, "--help"], capture_output=True, cwd=ROOT)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    load = [os.getloadavg()[0]]
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        load.append(os.getloadavg()[0])
    out = {name: statistics.median(values) for name, values in times.items()}
    return {"files": len(paths), **out, "dvqa_files_per_s": len(paths) / out["dvqa_jobs2_s"],
            "dciodvfy_files_per_s": len(paths) / out["dciodvfy_per_file_s"],
            "speed_ratio": out["dciodvfy_per_file_s"] / out["dvqa_jobs2_s"], "one_file": paths[0].name,
            "load": f"{min(load):.1f}-{max(load):.1f}", "cores": os.cpu_count(), "repeat": repeat}


def render(result: dict, timed: dict | None) -> str:
    lines = []
    held = [f for f in result["files"] if f["held_out"]]
    seen = [f for f in result["files"] if not f["held_out"]]
    by_writer = collections.Counter(f["writer"] for f in result["files"])
    lines += [f"{len(result['files'])} files ({len(held)} held out, {len(seen)} read by dvqa's tests) from "
              f"{len(by_writer)} writers: " + ", ".join(f"{w} {n}" for w, n in sorted(by_writer.items())),
              f"dvqa validate exit {result['dvqa_exit']}", ""]
    lines += ["| measure | held out | read by dvqa's tests | all |", "|---|---|---|---|"]
    m_held, m_seen, m_all = measures(held), measures(seen), measures(result["files"])
    for key in m_all:
        cell = [(f"{m[key]:.3f}" if isinstance(m[key], float) else str(m[key])) for m in (m_held, m_seen, m_all)]
        lines.append(f"| {key} | " + " | ".join(cell) + " |")
    writers = sorted(by_writer)
    lines += ["", "| writer | files | dciodvfy fails | dvqa fails | dciodvfy errors | dvqa errors | paired |"
              " dciodvfy only | dvqa only | crashes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for w in writers:
        fs = [f for f in result["files"] if f["writer"] == w]
        lines.append(f"| {w} | {len(fs)} | {sum(1 for f in fs if f['dciodvfy_errors'])} | "
                     f"{sum(1 for f in fs if f['dvqa_errors'])} | {sum(f['dciodvfy_errors'] for f in fs)} | "
                     f"{sum(f['dvqa_errors'] for f in fs)} | {sum(len(f['paired']) for f in fs)} | "
                     f"{sum(len(f['dciodvfy_only']) for f in fs)} | {sum(len(f['dvqa_only']) for f in fs)} | "
                     f"{sum(f['crash'] for f in fs)} |")
    lines += ["", "| error given by | who is right | held out | all | why (reference) | example file | its line |",
              "|---|---|---|---|---|---|---|"]
    for (side, verdict, why), (count_held, count_all, ex) in by_judgement(result["files"]).items():
        text = ex["text"].replace("|", "/")[:140]
        lines.append(f"| {side} only | {verdict} | {count_held} | {count_all} | {why or '-'} | {ex['file']} | "
                     f"`{text}` |")
    for side, title in (("dciodvfy_only", "dciodvfy errors dvqa does not give"),
                        ("dvqa_only", "dvqa errors dciodvfy does not give")):
        lines += ["", f"| {title}: kind | attribute | count | who is right | why | example (file: message) |",
                  "|---|---|---|---|---|---|"]
        for (kind, attribute, verdict, why), count, ex in groups(result["files"], side):
            text = ex["text"].replace("|", "/")[:160]
            lines.append(f"| {kind} | {attribute} | {count} | {verdict} | {why} | {ex['file']}: `{text}` |")
    if timed:
        lines += ["", f"Timing, {timed['files']} files, medians of {timed['repeat']}: `dvqa validate --jobs 2` over "
                      f"the folders {timed['dvqa_jobs2_s']:.2f} s ({timed['dvqa_files_per_s']:.1f} files/s), "
                      f"dciodvfy once per file {timed['dciodvfy_per_file_s']:.2f} s "
                      f"({timed['dciodvfy_files_per_s']:.1f} files/s): dvqa at {timed['speed_ratio']:.2f}x; "
                      f"`dvqa validate one.dcm` ({timed['one_file']}) {timed['dvqa_one_file_s']:.2f} s, `dciodvfy "
                      f"one.dcm` {timed['dciodvfy_one_file_s']:.3f} s, `dvqa --help` {timed['dvqa_help_s']:.2f} s; "
                      f"load average {timed['load']} on {timed['cores']} cores"]
    if result["not_made"]:
        lines += ["", "Not made by the builder: " + "; ".join(line.splitlines()[0] for line in result["not_made"])]
    return "\n".join(lines)


def smoke() -> None:
    """--smoke: build_corpus's sample (DCMTK and GDCM) in a temporary folder, compared and timed once; the output's
    shape is checked, its numbers mean nothing."""
    import tempfile

    sys.path.insert(0, str(HERE))
    import build_corpus

    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder).resolve() / "corpus"
        build_corpus.build(corpus, sample=True)
        result = compare(corpus)
        timed = timing(corpus, [corpus / f["path"] for f in result["files"]], repeat=1)
    table = render(result, timed)
    print(table)
    assert result["files"] and not any(f["crash"] for f in result["files"]) and result["dvqa_exit"] in (0, 1), result
    assert "| message recall of dciodvfy's correct errors |" in table and "| dvqa false errors / dvqa errors |" in table
    assert re.search(r"^Timing, \d+ files, medians of 1: .* dvqa at [\d.]+x", table, re.MULTILINE), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=HERE / ".cache" / "corpus")
    parser.add_argument("--build", action="store_true", help="run bench/build_corpus.py first")
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing (medians)")
    parser.add_argument("--json", type=Path, help="write every file's pairing here")
    parser.add_argument("--smoke", action="store_true", help="the 15-file sample in a temporary folder, timed once")
    args = parser.parse_args()
    if args.smoke:
        smoke()
        return
    if args.build:
        sys.path.insert(0, str(HERE))
        import build_corpus

        build_corpus.build(args.corpus)
    args.corpus = args.corpus.resolve()  # dvqa reports the paths it is given; the manifest's are matched resolved
    result = compare(args.corpus)
    timed = None
    if args.timing:
        paths = [args.corpus / f["path"] for f in result["files"]]
        timed = timing(args.corpus, paths, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(result | {"timing": timed}, indent=1) + "\n")
    print(render(result, timed))


if __name__ == "__main__":
    main()
