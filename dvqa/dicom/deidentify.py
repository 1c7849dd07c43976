"""De-identification by PS3.15 Annex E's Basic Application Level Confidentiality Profile.

Evidence bundles travel to regulators and auditors, who must not receive patient data. The
profile's attribute table (PS3.15 Table E.1-1, the "Basic Prof." column) is carried by dvqa from the
same source as its bundled edition (PyPI dicom-standard 0.1.0, DICOM 2020a), as data in
dvqa/dicom/data/, rebuilt and compared byte for byte by a test (`python -m dvqa.dicom.deidentify
--build`). No option of the profile (PS3.15 Table E.1-1's "Rtn." and "Clean" columns) is applied.

Action codes (PS3.15 §E.3.1 and Table E.1-1's legend) and the choice dvqa makes where the table
leaves one:

- X remove; Z empty; D a dummy value of the element's VR; U a new UID, the same new UID for the same
  old UID everywhere in one set of files (so references between them still resolve);
- X/Z, X/D, X/Z/D and Z/D ("X unless Z or D is needed for IOD conformance"): dvqa does not know
  every IOD's Type of every nested attribute, so it takes the choice that keeps any IOD conformant:
  Z where Z is allowed (Type 2 or 3 only: the table offers Z only where an empty value is valid),
  else D. X/Z/U* (a sequence of references): kept, its items de-identified, their UIDs replaced;
- every private element is removed (the profile keeps none without the Retain Safe Private option).

New UIDs are 2.25 UIDs from an HMAC of the old UID under a random key made for the set and never
written anywhere: consistent inside the set, unlinkable to the originals outside it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import hmac
import json
import secrets
import sys
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

TABLE = Path(__file__).resolve().parent / "data" / "confidentiality-2020a.json"
PROFILE = "PS3.15 Annex E Basic Application Level Confidentiality Profile (Table E.1-1, DICOM 2020a)"
METHOD = "PS3.15 E.1-1 Basic Profile (DICOM 2020a), dvqa"  # (0012,0063) is LO: 64 characters at most
CHOICE = {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D", "X/Z/U*": "U*"}  # see the module's docstring
METHOD_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")  # PS3.16 CID 7050
_DUMMY_TEXT = "ANONYMIZED"
_DUMMIES = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "DS": "0", "IS": "0",
            "UR": "", "AT": 0}
_BINARY = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_NUMBERS = {"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"}


class UidMap:
    """Old UID -> new UID, consistent within one set of files, under a key that is never written."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def __call__(self, uid: str) -> str:
        digest = hmac.new(self._key, str(uid).encode("ascii", "replace"), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"  # 128 bits, as a UUID-derived UID (PS3.5 B.2)


@functools.lru_cache(maxsize=1)
def table() -> tuple[dict[int, str], tuple[tuple[int, int, str], ...], str]:
    """(exact tags -> action, (mask, value, action) for the table's repeating groups such as 50xx,xxxx,
    the action for private elements)."""
    exact: dict[int, str] = {}
    masked = []
    actions = json.loads(TABLE.read_text())["actions"]
    for tag, action in actions.items():
        if tag == "private":
            continue
        group, element = tag.strip("()").split(",")
        if "x" in tag:  # a repeating group: x is any hex digit
            mask = int("".join("0" if c in "xX" else "F" for c in group + element), 16)
            value = int("".join("0" if c in "xX" else c for c in group + element), 16)
            masked.append((mask, value, action))
        else:
            exact[int(group + element, 16)] = action
    return exact, tuple(masked), actions["private"]


def action_for(tag: BaseTag) -> str | None:
    """The profile's action for `tag` after dvqa's choice for combined codes; None: not in the table."""
    exact, masked, _ = table()
    code = exact.get(int(tag))
    if code is None:
        code = next((a for mask, value, a in masked if int(tag) & mask == value), None)
    return CHOICE.get(code, code) if code else None


def deidentify(ds: Dataset, uids: UidMap) -> list[str]:
    """Apply the profile to `ds` in place (and to its file meta); notes for what it cannot cover."""
    if table()[2] == "X":
        ds.remove_private_tags()
    _apply(ds, uids)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    method = Dataset()
    method.CodeValue, method.CodingSchemeDesignator, method.CodeMeaning = METHOD_CODE
    ds.DeidentificationMethodCodeSequence = Sequence([method])
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    notes = []
    if ds.get("BurnedInAnnotation", "") != "NO" and "PixelData" in ds:
        notes.append("the pictures may show identifying text (Burned In Annotation is "
                     f"{ds.get('BurnedInAnnotation') or 'absent'}): the profile removes attributes, "
                     "not what is drawn in the pixels")
    return notes


def _apply(ds: Dataset, uids: UidMap) -> None:
    for element in list(ds):
        action = action_for(element.tag)
        if action == "X":
            del ds[element.tag]
        elif action == "Z":
            element.value = Sequence() if element.VR == "SQ" else None
        elif action == "D":
            _dummy(element, uids)
        elif action == "U":
            _new_uids(element, uids)
        elif element.VR == "SQ" and element.value:  # kept (U* or not in the table): what it holds is not
            for item in element.value:
                _apply(item, uids)


def _dummy(element: DataElement, uids: UidMap) -> None:
    vr = element.VR
    if vr == "SQ":
        for item in element.value or []:
            _apply(item, uids)
    elif vr == "UI":
        _new_uids(element, uids)
    elif vr in _BINARY:
        element.value = b"\x00\x00"
    elif vr in _NUMBERS:
        element.value = 0
    else:
        element.value = _DUMMIES.get(vr, _DUMMY_TEXT)


def _new_uids(element: DataElement, uids: UidMap) -> None:
    if element.VR == "SQ":
        for item in element.value or []:
            _apply(item, uids)
    elif element.value not in (None, ""):
        values = element.value if element.VM > 1 else [element.value]
        mapped = [uids(v) for v in values]
        element.value = mapped if element.VM > 1 else mapped[0]


def build(source: Path) -> bytes:
    """The table file from dicom-standard's parse of Table E.1-1: the Basic Profile column only."""
    rows = json.loads((source / "confidentiality_profile_attributes.json").read_text(encoding="utf-8"))
    actions = {}
    for row in rows:  # the table's one row that is not a tag: private elements, "(gggg,eeee) where gggg is odd"
        tag = "private" if "ODD" in row["tag"].upper() else row["tag"].upper().replace("X", "x")
        actions[tag] = row["basicProfile"]
    data = {"source": "PyPI dicom-standard 0.1.0 confidentiality_profile_attributes.json (DICOM 2020a, "
                      "PS3.15 Table E.1-1, column 'Basic Prof.')", "actions": dict(sorted(actions.items()))}
    return (json.dumps(data, indent=0, sort_keys=True) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild dvqa's copy of PS3.15 Table E.1-1.")
    parser.add_argument("--build", action="store_true", required=True)
    parser.add_argument("--source", type=Path, default=Path(sys.prefix) / "standard")
    args = parser.parse_args(argv)
    TABLE.write_bytes(build(args.source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
