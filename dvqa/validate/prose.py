"""Rules PS3.3 and PS3.5 state in their prose, which the module tables do not carry.

dicom-validator checks what the tables hold (Type, conditions, enumerated values); these rules are written
in the attributes' descriptions and sections instead, and dciodvfy checks them:

- High Bit (0028,0102) "shall be one less than Bits Stored (0028,0101)" (PS3.3 C.7.6.3, Image Pixel
  Description macro; C.8.2.1.1.6 repeats it for CT), so where a module of the IOD enumerates Bits Stored
  (CT Image: 12-16, C.8.2.1.1.5), High Bit is one less than one of those values;
- Per-Frame Functional Groups Sequence (5200,9230): "The number of Items shall be the same as the number of
  frames in the Multi-frame image" (PS3.3 C.7.6.16, Table C.7.6.16-1), Number of Frames (0028,0008), or one
  frame where it is absent (as dvqa.validate.streamcheck counts);
- an image of a single-frame IOD (no module of the IOD defines Number of Frames, e.g. SC Image A.8.1 or US
  Image A.6) holds one frame: Number of Frames (0028,0008) above 1 needs the multi-frame SOP class;
- direction cosines are unit vectors: Image Orientation (Patient) (0020,0037) and (Slide) (0048,0102), two
  each (C.7.6.2.1.1, C.8.12.4.1.4), and Velocity Encoding Direction (0018,9090) (C.8.13.4, C.8.13.5.13):
  `0\\0\\0` is no direction;
- "All pixel spacing related Attributes shall have positive non-zero values, except when there is only a
  single row or column" (PS3.3 10.7.1.3, which lists them: PIXEL_SPACINGS);
- US images allocate 8 bits per sample, 16 only for a 16-bit palette (PS3.3 C.8.5.6.1.13, Table C.8-20);
- a UID identifies one thing (PS3.5 §9): a study, a series, a frame of reference and the SOP instance have
  four UIDs, not one shared;
- Patient Position (0018,5100) is "Required for images where Patient Orientation Code Sequence (0054,0410) is
  not present and whose SOP Class is one of ...; May be present for other SOP Classes if Patient Orientation
  Code Sequence (0054,0410) is not present" (PS3.3 C.7.3.1): never beside that sequence, even an empty one.
  dicom-validator's parser keeps the first half only.
"""

from __future__ import annotations

import math

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dvqa.core.findings import Finding, Severity

NUMBER_OF_FRAMES = "(0028,0008)"
PER_FRAME_GROUPS = 0x52009230
# tag -> (keyword, names of its vectors, reference)
DIRECTION_COSINES = {
    0x00200037: ("ImageOrientationPatient (0020,0037)", ("row", "column"), "PS3.3 C.7.6.2.1.1"),
    0x00480102: ("ImageOrientationSlide (0048,0102)", ("row", "column"), "PS3.3 C.8.12.4.1.4"),
    0x00189090: ("VelocityEncodingDirection (0018,9090)", ("direction",), "PS3.3 C.8.13.4 and C.8.13.5.13"),
}
PIXEL_SPACINGS = frozenset({0x00280030, 0x00181164, 0x00182010, 0x30020011, 0x300A00E9, 0x00187022, 0x00700101,
                            0x20100376, 0x00189404})  # the list of PS3.3 10.7.1.3
US_IMAGE = "module:us-image"
GENERAL_SERIES = "module:general-series"  # where Patient Position is defined
US_BITS_ALLOCATED = {"PALETTE COLOR": (8, 16)}  # PS3.3 Table C.8-20; every other Photometric Interpretation: 8
UNIT_TOLERANCE = 0.01  # DS values are written rounded; a direction off by more than 1 % is not one
ENTITY_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")


def check(ds: Dataset, iod: dict, tables, path: str) -> list[Finding]:
    """The rules above on one data set (read without Pixel Data); `tables`: dvqa.validate.standard.Tables."""
    out = []
    bits_stored, high_bit = _number(ds, "BitsStored"), _number(ds, "HighBit")
    if bits_stored is not None and high_bit is not None and high_bit != bits_stored - 1:
        out.append(Finding(Severity.ERROR, "iod.invalid-value", f"HighBit (0028,0102) is {high_bit:g}; it shall be one "
                           f"less than Bits Stored ({bits_stored:g})", path, "HighBit (0028,0102)", "PS3.3 C.7.6.3"))
    elif high_bit is not None:
        out += _high_bit_enumerated(high_bit, iod, tables, path)
    frames = _number(ds, "NumberOfFrames")
    if frames is not None and frames > 1 and not _lists(tables.info.modules, iod, NUMBER_OF_FRAMES):
        out.append(Finding(Severity.ERROR, "iod.invalid-value", f"NumberOfFrames (0028,0008) is {frames:g}, but the "
                           f"{iod['title']} IOD is single-frame (none of its modules defines Number of Frames); "
                           "more frames need the multi-frame SOP class", path, "NumberOfFrames (0028,0008)",
                           iod.get("table") or "PS3.3 Annex A"))
    out += _per_frame_items(ds, frames, path)
    single = (_number(ds, "Rows") == 1, _number(ds, "Columns") == 1)
    for elem in ds.iterall():
        if elem.tag in DIRECTION_COSINES:
            out += _unit_vectors(elem.value, *DIRECTION_COSINES[elem.tag], path)
        elif elem.tag in PIXEL_SPACINGS:
            out += _spacing(elem, single, path)
    if any(usage["ref"] == US_IMAGE and usage["use"].startswith("M") for usage in iod["modules"].values()):
        out += _us_bits_allocated(ds, path, _reference(tables, US_IMAGE, "PS3.3 C.8.5.6.1.13"))
    series = any(usage["ref"] == GENERAL_SERIES for usage in iod["modules"].values())
    if series and "PatientPosition" in ds and "PatientOrientationCodeSequence" in ds:
        out.append(Finding(Severity.ERROR, "iod.not-allowed", "PatientPosition (0018,5100) is present beside "
                           "PatientOrientationCodeSequence (0054,0410); it may be present only without it", path,
                           "PatientPosition (0018,5100)", "PS3.3 C.7.3.1"))
    return out + _one_uid_one_thing(ds, path)


def _per_frame_items(ds: Dataset, frames: float | None, path: str) -> list[Finding]:
    groups = ds.get(PER_FRAME_GROUPS)  # the element (a tag, not a keyword, gets the element)
    if groups is None or groups.VR != "SQ" or (frames is None and "NumberOfFrames" in ds):
        return []  # not a sequence, or Number of Frames no number: other findings say so
    count, declared = len(groups.value or []), 1 if frames is None else int(frames)
    if count in (0, declared):  # no item: the Type 1C "empty" finding
        return []
    said = f"Number of Frames is {declared}" if frames is not None else "Number of Frames is absent (one frame)"
    return [Finding(Severity.ERROR, "iod.invalid-value", f"PerFrameFunctionalGroupsSequence (5200,9230) has {count} "
                    f"items, but {said}: one item per frame", path, "PerFrameFunctionalGroupsSequence (5200,9230)",
                    "PS3.3 C.7.6.16 (Table C.7.6.16-1)")]


def _one_uid_one_thing(ds: Dataset, path: str) -> list[Finding]:
    seen: dict[str, str] = {}
    out = []
    for keyword in ENTITY_UIDS:
        value = str(ds.get(keyword, "") or "")
        if value and value in seen:
            first = seen[value]
            out.append(Finding(Severity.ERROR, "iod.invalid-value", f"{first} has the same value as {keyword} "
                               f"({value[:64]}): one UID names two things", path, _spelled(first), "PS3.5 §9"))
        seen.setdefault(value, keyword)
    return out


def _spelled(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _spacing(elem, single: tuple[bool, bool], path: str) -> list[Finding]:
    values = elem.value if isinstance(elem.value, (list, tuple, MultiValue)) else [elem.value]
    for number, value in enumerate(values[:2]):
        try:
            spacing = float(value)
        except (TypeError, ValueError):
            return []  # not a number: the value layer's finding
        if spacing <= 0 and not single[number]:
            name = f"{keyword_for_tag(elem.tag)} ({elem.tag.group:04X},{elem.tag.element:04X})"
            return [Finding(Severity.ERROR, "iod.invalid-value", f"{name} value {number + 1} is {spacing:g}; pixel "
                            "spacings are positive, zero only along a single row or column", path, name,
                            "PS3.3 10.7.1.3")]
    return []


def _us_bits_allocated(ds: Dataset, path: str, reference: str) -> list[Finding]:
    bits, photometric = _number(ds, "BitsAllocated"), str(ds.get("PhotometricInterpretation", "") or "").strip()
    allowed = US_BITS_ALLOCATED.get(photometric, (8,))
    if bits is None or not photometric or int(bits) in allowed:
        return []
    return [Finding(Severity.ERROR, "iod.invalid-value", f"BitsAllocated (0028,0100) is {bits:g}; a US image with "
                    f"Photometric Interpretation {photometric} allocates {' or '.join(map(str, allowed))}", path,
                    "BitsAllocated (0028,0100)", reference)]


def _high_bit_enumerated(high_bit: float, iod: dict, tables, path: str) -> list[Finding]:
    for module_name, usage in iod["modules"].items():
        table = tables.info.modules.get(usage["ref"], {})
        bits_stored = table.get("(0028,0101)") if usage["use"].startswith("M") else None
        for entry in (bits_stored or {}).get("enums", []):
            if "cond" in entry or "index" in entry:
                continue  # enumerated under a condition, or for another value: not read here
            allowed = [int(v) - 1 for v in entry["val"]]
            if int(high_bit) not in allowed:
                return [Finding(Severity.ERROR, "iod.invalid-value", f"HighBit (0028,0102) is {high_bit:g}; the "
                                f"{module_name} module enumerates Bits Stored as {', '.join(str(v) for v in entry['val'])}"
                                f", so High Bit, one less, is one of {', '.join(map(str, allowed))}", path,
                                "HighBit (0028,0102)", _reference(tables, usage["ref"], "PS3.3 C.7.6.3"))]
    return []


def _reference(tables, ref: str, section: str) -> str:
    """The module's table in PS3.3 (when the edition names it) and the section that states the rule."""
    return " and ".join(filter(None, (tables.references.get(ref, {}).get("table", ""), section)))


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        return float(value) if value not in (None, "") and not isinstance(value, (list, bytes)) else None
    except (TypeError, ValueError):
        return None


def _lists(modules, iod: dict, key: str) -> bool:
    """Whether a module of the IOD lists `key` at its top level."""
    return any(key in modules.get(usage["ref"], {}) for usage in iod["modules"].values())


def _unit_vectors(value, name: str, vectors: tuple[str, ...], reference: str, path: str) -> list[Finding]:
    try:
        numbers = [float(v) for v in (value if isinstance(value, (list, tuple, MultiValue)) else [value])]
    except (TypeError, ValueError):
        return []  # not numbers: the value layer's finding
    if len(numbers) != 3 * len(vectors):
        return []  # a VM problem: the value layer's finding
    out = []
    for number, vector in enumerate(vectors):
        x, y, z = numbers[3 * number:3 * number + 3]
        length = math.sqrt(x * x + y * y + z * z)
        if abs(length - 1) > UNIT_TOLERANCE:
            out.append(Finding(Severity.ERROR, "iod.invalid-value", f"{name}'s {vector} vector {x:g}\\{y:g}\\{z:g} has "
                               f"length {length:.3g}; direction cosines are a unit vector", path, name, reference))
    return out
