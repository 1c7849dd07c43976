"""Is each value what its Value Representation says it is? (PS3.5 §6.2, Table 6.2-1; VM from PS3.6)

Checked before dvqa writes a value it was given (patient name, IDs, UIDs, anything from
--metadata-json or --metadata-from) and by `dvqa validate` on files others wrote: length, the
characters the VR allows, the format of dates, times, numbers and UIDs, the value multiplicity the
data dictionary gives, and a VR that differs from the dictionary's (pydicom turns a value it cannot
encode into UN). A backslash is the value delimiter (PS3.5 §6.4), so a backslash inside a patient
ID silently makes two values: that is a VM problem, and reported as one.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Iterator

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

REFERENCE = "PS3.5 §6.2 Table 6.2-1"

# maximum length of one value, in characters (bytes for the ASCII-only VRs) - PS3.5 Table 6.2-1
MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240,
              "SH": 16, "ST": 1024, "TM": 14, "UI": 64, "UT": 0xFFFFFFFE}
PN_GROUP_LENGTH = 64  # per component group (PS3.5 §6.2.1.2)
TEXT_VRS = {"ST", "LT", "UT"}  # may hold the control characters of TEXT_CONTROLS (and ESC); VM is always 1
STRING_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
FORMATS = {
    "AS": re.compile(r"\d{3}[DWMY]"),
    "CS": re.compile(r"[A-Z0-9 _]*"),
    "DS": re.compile(r" *[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)? *"),
    "IS": re.compile(r" *[+-]?\d+ *"),
    "UI": re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*"),
    "TM": re.compile(r"([01]\d|2[0-3])(([0-5]\d)((60|[0-5]\d)(\.\d{1,6})?)?)? *"),
    "DT": re.compile(r"\d{4}((0[1-9]|1[0-2])(([0-2]\d|3[01])(([01]\d|2[0-3])(([0-5]\d)((60|[0-5]\d)(\.\d{1,6})?)?)?)?)?)?"
                     r"([+-]\d{4})? *"),
    "UR": re.compile(r"[^\x00-\x20\\]* *"),
}
# PS3.5 Table 6.2-1 (ST, LT, UT): "It may contain the Graphic Character set and the Control Characters, CR, LF,
# FF, and ESC" - no TAB (0x09); dciodvfy reports a TAB in a text value as well (pydicom-data's
# color3d_jpeg_baseline.dcm, issue 31)
TEXT_CONTROLS = {"\n", "\f", "\r"}
ESC = "\x1b"


def valid_uid(text: str) -> bool:
    """A UID as PS3.5 §9.1 writes it: at most 64 characters, ASCII digits and dots, no empty component,
    no leading zero in one, and an object identifier's first arc (_uid_root)."""
    return len(text) <= 64 and text.isascii() and FORMATS["UI"].fullmatch(text) is not None and \
        _uid_root(text) is None


def _uid_root(text: str) -> str | None:
    """Why a well-formed UID is no object identifier, or None. PS3.5 §9.1: a UID is an ISO/IEC 8824 OID, whose
    first arc is itu-t (0), iso (1) or joint-iso-itu-t (2) (ITU-T X.660 A.2): "777.777.0.0.0" (XMedCon) or
    "999.999.2..." are not."""
    first = text.split(".", 1)[0]
    if int(first) > 2:
        return f"its first component is {first}; an object identifier's first arc is 0, 1 or 2 (PS3.5 §9.1)"
    return None


@dataclass(frozen=True)
class Problem:
    where: str  # keyword (tag), with the sequence path for nested elements
    kind: str  # too-long | characters | format | vm | vr
    message: str


def _name(tag: BaseTag) -> str:
    keyword = keyword_for_tag(tag)
    return f"{keyword} ({tag.group:04X},{tag.element:04X})" if keyword else f"({tag.group:04X},{tag.element:04X})"


def _vm_allows(rule: str, count: int) -> bool:
    """Value multiplicity as PS3.6 writes it: "1", "1-3", "1-n", "2-2n", "3-3n"."""
    if count == 0:
        return True  # an empty value: a Type 2 matter, not a VM one
    low, _, high = rule.partition("-")
    if not high:
        return count == int(low)
    if high.endswith("n"):
        step = int(high[:-1] or 1)
        return count >= int(low) and count % step == 0
    return int(low) <= count <= int(high)


def _values(elem: DataElement) -> list:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, (list, MultiValue)):
        return list(value)
    return [value]


def _characters(vr: str, text: str, charset: list[str]) -> str | None:
    """Why `text` has a character the VR or the declared character set does not allow, or None."""
    if text.isascii() and text.isprintable():
        return None  # space to tilde only: nothing below can object (the common case, decided at C speed)
    allowed = TEXT_CONTROLS if vr in TEXT_VRS else set()
    code_extensions = any(c.startswith("ISO 2022") for c in charset)
    for ch in text:
        if ch == ESC:
            if not code_extensions:
                return "an ESC character, allowed only for ISO 2022 code extensions, which (0008,0005) does not declare"
        elif (ch < " " or ch == "\x7f") and ch not in allowed:
            return f"the control character 0x{ord(ch):02X}" + ("" if vr in TEXT_VRS else
                                                                   f", which {vr} does not allow")
        elif ord(ch) > 0x7E and not [c for c in charset if c]:
            return (f"the character {ch!r}, outside the default repertoire, and (0008,0005) Specific Character Set "
                    "declares none")
        elif ord(ch) > 0x7E and vr in {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"}:
            return f"the non-ASCII character {ch!r}, which {vr} does not allow"
    return None


def _date(text: str) -> str | None:
    if not re.fullmatch(r"\d{8}", text):
        return "not a date YYYYMMDD"
    try:
        dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return "not a calendar date"
    return None


def _check_value(vr: str, value, charset: list[str]) -> tuple[str, str] | None:
    """(kind, message) for the first problem of one value, or None."""
    if vr == "PN":
        text = str(value)
        bad = _characters(vr, text, charset)
        if bad:
            return "characters", f"holds {bad}"
        groups = text.split("=")
        if len(groups) > 3:
            return "format", f"has {len(groups)} component groups; a person name has at most 3 (PS3.5 §6.2.1)"
        for group in groups:
            if len(group.split("^")) > 5:
                return "format", "has more than 5 components (family^given^middle^prefix^suffix, PS3.5 §6.2.1)"
            if len(group) > PN_GROUP_LENGTH:
                return "too-long", f"has a component group of {len(group)} characters; at most {PN_GROUP_LENGTH}"
        return None
    if vr not in STRING_VRS or not isinstance(value, str):
        return None
    text = value.rstrip(" ") if vr != "UI" else value.rstrip("\x00")
    bad = _characters(vr, text, charset)
    if bad:
        return "characters", f"holds {bad}"
    limit = MAX_LENGTH.get(vr)
    if limit and len(value) > limit:
        return "too-long", f"is {len(value)} characters long; {vr} allows at most {limit}"
    if vr == "DA":
        problem = _date(text)
        return ("format", f"{text!r} is {problem}") if problem else None
    pattern = FORMATS.get(vr)
    if pattern and not pattern.fullmatch(text):
        what = {"UI": "a UID is digits and dots, no leading zeros in a component (PS3.5 §9.1)",
                "CS": "a code string is upper-case letters, digits, space and underscore"}.get(vr, f"not a valid {vr}")
        return "format", f"{text[:80]!r}: {what}"
    if vr == "UI" and text and (root := _uid_root(text)):
        return "format", f"{text[:80]!r}: {root}"
    if vr == "IS" and not -(2 ** 31) <= int(text) < 2 ** 31:
        return "format", f"{text!r} is outside the IS range (a signed 32-bit integer)"
    return None


def check_element(elem: DataElement, charset: list[str], where: str = "") -> Iterator[Problem]:
    """Problems of one non-sequence element (private elements: characters only, their VR is unknown)."""
    def named() -> str:  # spelled out only for a problem: most elements have none
        return f"{where}{_name(elem.tag)}"

    expected = None
    if not elem.tag.is_private:
        try:
            expected = dictionary_VR(elem.tag)
        except KeyError:
            expected = None
    if expected and " or " not in expected and elem.VR not in (expected, "UN") and not (
            expected == "OB" and elem.VR == "OW"):
        name = named()
        yield Problem(name, "vr", f"{name} is encoded as {elem.VR}; the data dictionary gives {expected} (PS3.6)")
    if expected and elem.VR == "UN" and expected != "UN" and elem.value not in (None, b""):
        name = named()
        yield Problem(name, "vr", f"{name} is encoded as UN (unknown) instead of {expected}: its value could not be "
                                  f"encoded as {expected} (PS3.6)")
    vr = elem.VR
    values = _values(elem)
    if vr in STRING_VRS and not elem.tag.is_private:
        rule = dictionary_VM(elem.tag) if expected else ""
        if rule and vr not in TEXT_VRS and not _vm_allows(rule, len(values)):
            extra = "; a backslash separates values (PS3.5 §6.4)" if len(values) > 1 else ""
            name = named()
            yield Problem(name, "vm", f"{name} has {len(values)} values; PS3.6 allows {rule}{extra}")
    for value in values:
        found = _check_value(vr, value, charset)
        if found:
            name = named()
            yield Problem(name, found[0], f"{name} {found[1]}")
            break


def check_dataset(ds: Dataset, where: str = "", charset: list[str] | None = None) -> Iterator[Problem]:
    """Every element of `ds` and of its sequence items (Pixel Data is not a string and is skipped)."""
    if charset is None or "SpecificCharacterSet" in ds:
        raw = ds.get("SpecificCharacterSet", "") if "SpecificCharacterSet" in ds else ""
        charset = [str(c) for c in (raw if isinstance(raw, (list, MultiValue)) else [raw])]
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        if elem.VR == "SQ":
            for number, item in enumerate(elem.value or []):
                yield from check_dataset(item, f"{where}{_name(elem.tag)}[{number}] / ", charset)
            continue
        try:
            yield from check_element(elem, charset, where)
        except (ValueError, TypeError, UnicodeError) as exc:
            yield Problem(f"{where}{_name(elem.tag)}", "characters",
                          f"{where}{_name(elem.tag)} cannot be decoded ({exc})")
