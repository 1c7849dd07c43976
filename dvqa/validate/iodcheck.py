"""Layer 1 of `dvqa validate`: the data set against its IOD in a DICOM edition, by dicom-validator's rules.

dicom-validator's IODValidator's checks (run by dvqa.validate.evaluator on tables expanded once per
process) cover the modules the SOP class requires and their attributes: Type 1 missing or empty, Type 2
missing, 1C/2C conditions, attributes a condition forbids, values outside enumerated values, sequences that
are not sequences, attributes no module of the IOD lists. Its result becomes dvqa findings, each with the module's table in PS3.3 as reference. Value
representation checks are left to dvqa.dicom.values (one finding per problem, not two).

A condition whose text dicom-validator's parser cannot read is never silently passed: when the
attribute (or the module) it governs is absent, an info finding says the condition was not evaluated.
"""

from __future__ import annotations

from dicom_validator.validator.validation_result import (
    DicomTag,
    ErrorCode,
    Status,
    TagError,
)
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from dvqa.core.findings import Finding, Severity
from dvqa.dicom import dicomread
from dvqa.validate import iodconditions, prose
from dvqa.validate.evaluator import Evaluator, tag_of
from dvqa.validate.standard import Tables

SOP_CLASS_UID = 0x00080016
DIRECTORY_RECORDS = 0x00041220  # Directory Record Sequence

CODES = {
    ErrorCode.TagMissing: "iod.missing", ErrorCode.TagEmpty: "iod.empty", ErrorCode.TagNotAllowed: "iod.not-allowed",
    ErrorCode.EnumValueNotAllowed: "iod.enumerated-value", ErrorCode.InvalidValue: "iod.invalid-value",
    ErrorCode.InvalidSequence: "iod.not-a-sequence", ErrorCode.TagUnexpected: "iod.not-in-iod",
}


def _name(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{keyword} {text}" if keyword else text


def _where(tag: DicomTag) -> str:
    return " > ".join(_name(t) for t in [*(tag.parents or []), tag.tag])


def check(ds: Dataset, path: str, tables: Tables) -> list[Finding]:
    """Findings of the IOD layer for one data set (read without Pixel Data).

    Code String values lose their insignificant spaces in `ds` itself (_strip_code_strings): run the
    value checks, which look at the values as written, before this."""
    edition = tables.edition.name
    directory = dicomread.is_directory(ds) and "SOPClassUID" not in ds
    checked = prepare(ds)
    result = evaluator_of(tables).validate(checked)
    sop_class = str(checked.get("SOPClassUID", "") or "")
    if result.status == Status.MissingSOPClassUID:
        return [Finding(Severity.ERROR, "iod.no-sop-class", "SOP Class UID (0008,0016) is missing or empty: the "
                        "data set cannot be checked against any IOD", path, "SOPClassUID (0008,0016)",
                        "PS3.3 C.12.1")]
    if result.status == Status.UnknownSOPClassUID:
        known = UID_dictionary.get(sop_class)
        if known and known[1] == "SOP Class" and known[3] == "Retired":  # e.g. the old US Image Storage, ...1.6
            return [Finding(Severity.WARNING, "iod.sop-class-not-in-edition",
                            f"SOP Class {known[0]} ({sop_class}) is retired: edition {edition} defines no IOD for it, "
                            "so its IOD was not checked", path,
                            "SOPClassUID (0008,0016)", "PS3.6 Annex A (retired UIDs)")]
        if known and known[1] == "SOP Class":
            return [Finding(Severity.WARNING, "iod.sop-class-not-in-edition",
                            f"SOP Class {known[0]} ({sop_class}) is not in edition {edition}'s tables, so its IOD "
                            "was not checked; import a newer edition (dvqa standard import)", path,
                            "SOPClassUID (0008,0016)", f"PS3.4 B.5 ({edition})")]
        return [Finding(Severity.ERROR, "iod.unknown-sop-class", f"SOP Class UID {sop_class!r} is not a SOP class of "
                        f"edition {edition}, nor one pydicom knows: no IOD defines this data set", path,
                        "SOPClassUID (0008,0016)", "PS3.4 B.5")]
    iod = tables.info.iods[sop_class]
    findings = []
    known = tables.known_tags
    overridden = governed(tables, sop_class)
    unlisted_keys = 0
    for module_name, errors in result.module_errors.items():
        reference = module_reference(tables, iod, module_name)
        for tag, error in sorted(errors.items(), key=lambda item: item[0]):
            if not tag.parents and (module_name.lower(), tag.tag) in overridden:
                continue  # another module of this IOD defines the attribute, and its definition governs
            if directory and not tag.parents and tag.tag == SOP_CLASS_UID:
                continue  # put there above, not in the file
            if directory and error.code == ErrorCode.TagUnexpected and (tag.parents or [0])[0] == DIRECTORY_RECORDS:
                unlisted_keys += 1  # a record's keys (PS3.3 F.5): not in the edition's tables
                continue
            if error.code == ErrorCode.EnumValueNotAllowed and _same_number(tag.tag, error.context or {}):
                continue  # DS "1.0" is the enumerated value 1 (dicom-validator compares the strings)
            findings.append(_finding(tag, error, module_name, reference, path, edition, known))
    findings += _pixel_data(checked, iod, tables, path)
    settled: set[tuple[str, str]] = set()
    findings += _decided(checked, iod, tables, iodconditions.decided(tables, sop_class), path, settled)
    findings += prose.check(checked, iod, tables, path)
    if unlisted_keys:
        findings.append(Finding(Severity.INFO, "iod.directory-keys-not-checked", f"{unlisted_keys} attributes of "
                                "the DICOMDIR's directory records are record keys, which the tables of edition "
                                f"{edition} do not list per record type; they were not checked", path,
                                "DirectoryRecordSequence (0004,1220)", "PS3.3 F.5"))
    findings += _unevaluated(ds, iod, tables, path, settled)
    return findings


PIXEL_KEYS = {"(7FE0,0008)": 0x7FE00008, "(7FE0,0009)": 0x7FE00009, "(7FE0,0010)": 0x7FE00010}


def _pixel_data(ds: Dataset, iod: dict, tables: Tables, path: str) -> list[Finding]:
    """Pixel Data missing from a module the IOD requires. dicom-validator skips every tag from (7FE0,0010) on
    (it does not read them), so an SC image without Pixel Data passed. dvqa's reader leaves a placeholder
    for Pixel Data it did not load (dvqa.dicom.dicomread), so presence is known. A 1C condition is
    evaluated when it asks only whether one attribute is present or absent (Image Pixel's "Required if
    Pixel Data Provider URL (0028,7FE0) is not present"); modules used under a condition (the float pixel
    data of a Parametric Map) are not checked here."""
    out = []
    for module_name, usage in iod["modules"].items():
        if not usage["use"].startswith("M"):
            continue
        table = tables.info.modules.get(usage["ref"], {})
        for key, tag in PIXEL_KEYS.items():
            attribute = table.get(key)
            if attribute is None or tag in ds or not _required(ds, attribute):
                continue
            kind = attribute["type"]
            out.append(Finding(Severity.ERROR, "iod.missing", f"Type {kind} attribute {_name(tag)} is missing from "
                               f"the {module_name} module" + (" (by its condition)" if "cond" in attribute else ""),
                               path, _name(tag), module_reference(tables, iod, module_name)))
    return out


def _required(ds: Dataset, attribute: dict) -> bool:
    """Type 1, or a 1C whose condition is one attribute's presence or absence and holds."""
    if attribute.get("type") == "1":
        return True
    condition = attribute.get("cond") or {}
    if attribute.get("type") != "1C" or condition.get("op") not in ("+", "-") or "tag" not in condition:
        return False
    present = _tag(condition["tag"]) in ds
    return present if condition["op"] == "+" else not present


def _decided(ds: Dataset, iod: dict, tables: Tables, decisions: dict, path: str,
             settled: set[tuple[str, str]]) -> list[Finding]:
    """Attributes whose condition the IOD or the data set decides (dvqa.validate.iodconditions): missing, or a
    Type 1C empty, where required, in a module the IOD makes Mandatory or the data set uses. Each condition
    decided either way goes into `settled`, so that it is not listed as not evaluated."""
    out, held = [], _held(ds)
    for (module_name, key), (tag, attribute, decide) in decisions.items():
        usage = iod["modules"][module_name]
        if not (usage["use"].startswith("M") or not held.isdisjoint(_prepared(tables, usage["ref"])[0])):
            continue
        required, why = decide(ds)
        if required is not None:
            settled.add((module_name, key))
        if not required:
            continue
        kind, what = attribute["type"], _name(tag)
        if tag not in ds:
            code, message = "iod.missing", f"Type {kind} attribute {what} is missing from the {module_name} module"
        elif kind == "1C" and ds[tag].value in (None, "", b"", []):
            code, message = "iod.empty", f"Type {kind} attribute {what} of the {module_name} module is empty"
        else:
            continue
        out.append(Finding(Severity.ERROR, code, f"{message} (by its condition: {why})", path, what,
                           module_reference(tables, iod, module_name)))
    return out


def prepare(ds: Dataset) -> Dataset:
    """The data set as the IOD is checked on: Code Strings without their insignificant spaces (in `ds` itself),
    and a DICOMDIR given the SOP class only its File Meta Information names (the Basic Directory IOD)."""
    _strip_code_strings(ds)
    if not (dicomread.is_directory(ds) and "SOPClassUID" not in ds):
        return ds
    checked = Dataset(ds)
    checked.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    return checked


def evaluator_of(tables: Tables) -> Evaluator:
    """dicom-validator's checks on this edition's tables, expanded once per process (dvqa.validate.evaluator)."""
    found = tables.prepared.get("evaluator")
    if found is None:
        found = tables.prepared["evaluator"] = Evaluator(tables.info)
    return found


def _same_number(tag: int, context: dict) -> bool:
    """A DS or IS value equal as a number to one of the enumerated values: "A string of characters representing a
    ... decimal number" (PS3.5 Table 6.2-1), so '0.0' and '1.0' are the values 0 and 1 (highdicom writes them)."""
    try:
        if dictionary_VR(int(tag)) not in ("DS", "IS"):
            return False
        return float(context.get("value")) in {float(v) for v in context.get("allowed", [])}
    except (KeyError, TypeError, ValueError):
        return False


def governed(tables: Tables, sop_class: str) -> set[tuple[str, int]]:
    """(module name, tag) pairs of this IOD whose definition another module of the IOD overrides, as PS3.3
    says in that module's table ("This type definition shall override the definition in the General
    Series Module": SC Equipment's Modality, C.8.6.1). dicom-validator checks every module's definition
    on its own, so an SC image without Modality failed General Series' Type 1 although SC Equipment makes
    it Type 3; the overridden module's findings for that attribute are dropped, the overriding module's
    own are kept. Computed once per process and IOD."""
    key = ("governed", sop_class)
    if key not in tables.prepared:
        iod = tables.info.iods[sop_class]
        names = {name.lower() for name in iod["modules"]}
        pairs = set()
        for usage in iod["modules"].values():
            for tag_key, attribute in tables.info.modules.get(usage["ref"], {}).items():
                if not tag_key.startswith("(") or not isinstance(attribute, dict):
                    continue
                for overridden in attribute.get("overrides", []):
                    if overridden.lower() in names:
                        pairs.add((overridden.lower(), _tag(tag_key)))
        tables.prepared[key] = pairs
    return tables.prepared[key]


def _strip_code_strings(ds: Dataset) -> None:
    """Leading and trailing spaces of a CS value are not significant (PS3.5 §6.2), also inside a multi-valued
    one ("DERIVED \\PRIMARY"): drop them so that an enumerated value compares as the standard means."""
    for elem in ds.iterall():
        if elem.VR != "CS" or elem.value in (None, ""):
            continue
        value = elem.value
        if isinstance(value, str):
            stripped = value.strip(" ")
            if stripped != value:
                elem.value = stripped
        elif any(isinstance(v, str) and v != v.strip(" ") for v in value):
            elem.value = [v.strip(" ") if isinstance(v, str) else v for v in value]


def module_reference(tables: Tables, iod: dict, module_name: str) -> str:
    """The PS3.3 table of a module (or macro) of the IOD; "General" (outside every module): the IOD's table."""
    usage = iod["modules"].get(module_name) or iod.get("group_macros", {}).get(module_name)
    if usage is None:  # "General": attributes outside every module of the IOD
        title = iod["title"] if iod["title"].endswith("IOD") else f"{iod['title']} IOD"
        return f"{iod.get('table') or 'PS3.3 Annex A'} ({title})"
    ref = usage["ref"]
    known = tables.references.get(ref)
    return known["table"] if known else f"PS3.3 Section {ref}"


def _finding(tag: DicomTag, error: TagError, module: str, reference: str, path: str, edition: str,
             known: set[str]) -> Finding:
    code = CODES.get(error.code, "iod.other")
    what = _where(tag)
    level = str(getattr(error.type, "value", error.type))  # a TagType, or the table's plain string
    kind = f"Type {level}" if level not in ("Undefined", "") else "An"
    severity = Severity.ERROR
    if error.code == ErrorCode.TagMissing:
        message = f"{kind} attribute {what} is missing from the {module} module"
    elif error.code == ErrorCode.TagEmpty:
        message = f"{kind} attribute {what} of the {module} module is empty"
    elif error.code == ErrorCode.TagNotAllowed:
        message = f"{what} is present, but a condition of the {module} module does not allow it here"
    elif error.code == ErrorCode.EnumValueNotAllowed:
        context = error.context or {}
        allowed = ", ".join(str(v) for v in context.get("allowed", []))
        message = f"{what} is {context.get('value')!r}, not one of the enumerated values of the {module} module: " \
                  f"{allowed}"
    elif error.code == ErrorCode.InvalidSequence:
        message = f"{what} must be a sequence (SQ) in the {module} module"
    elif error.code == ErrorCode.TagUnexpected:
        spelled = f"({tag.tag.group:04X},{tag.tag.element:04X})"
        newer = spelled not in known and not tag.tag.group & 1
        severity = Severity.INFO if newer else Severity.WARNING
        message = (f"{what} is not in edition {edition}'s module tables (newer than the edition, or retired)"
                   if newer else f"{what} is not an attribute of any module of this IOD")
        code = "iod.not-in-edition" if newer else code
    else:
        message = f"{what}: {error.code.name} in the {module} module"
    condition = (error.context or {}).get("cond")
    if condition and error.code in (ErrorCode.TagMissing, ErrorCode.TagNotAllowed):
        message += " (by its condition)"
    return Finding(severity, code, message, path, what, reference)


def _unevaluated(ds: Dataset, iod: dict, tables: Tables, path: str, decided: set[tuple[str, str]]) -> list[Finding]:
    """One info finding naming every absent attribute or module whose condition could not be parsed (and that
    the IOD does not decide: `decided`, (module name, tag key) pairs).

    One per file, not one per attribute: a typical file has a score of them (an animal patient, a
    paired body part ...), and a line each would bury the findings that matter; the finding's `where`
    lists them all."""
    absent: list[str] = []
    held = _held(ds)
    for module_name, usage in iod["modules"].items():
        tags, branches = _prepared(tables, usage["ref"])
        present = not held.isdisjoint(tags)
        if "unevaluated" in usage and not present:
            absent.append(f"{module_name} module")
            continue
        if branches and (usage["use"].startswith("M") or present):
            skip = {_tag(key) for module, key in decided if module == module_name}
            absent += _walk(ds, {t: b for t, b in branches.items() if t not in skip} if skip else branches, [])
    absent = list(dict.fromkeys(absent))  # an attribute in two modules (Anatomic Region Sequence) once
    if not absent:
        return []
    shown = ", ".join(absent[:4]) + (f" and {len(absent) - 4} more" if len(absent) > 4 else "")
    return [Finding(Severity.INFO, "iod.condition-not-evaluated",
                    f"{len(absent)} conditions that dicom-validator cannot parse were not evaluated for what is absent "
                    f"({shown}); check them by hand where they matter (e.g. a paired body part, an animal patient)",
                    path, "; ".join(absent), f"{iod.get('table') or 'PS3.3 Annex A'} and its modules' tables")]


def _held(ds: Dataset) -> set[int]:
    """The tags of a data set, read from its keys (its elements are not converted), for set operations."""
    return {int(tag) for tag in ds.keys()}


def _prepared(tables: Tables, ref: str) -> tuple[frozenset[int], dict]:
    """A module's top-level tags, and only the branches of its table that lead to a condition not
    evaluated - computed once per process and module, not per file."""
    cache = tables.prepared
    if ref not in cache:
        module = tables.info.modules.get(ref, {})
        cache[ref] = (frozenset(_tag(key) for key in module if key.startswith("(")), _branches(module))
    return cache[ref]


def _branches(table: dict) -> dict:
    """{tag: (attribute if its condition is not evaluated else None, branches below it)}, pruned."""
    out = {}
    for key, attribute in table.items():
        if not key.startswith("(") or not isinstance(attribute, dict):
            continue
        below = _branches(attribute["items"]) if "items" in attribute else {}
        if "unevaluated" in attribute or below:
            out[_tag(key)] = (attribute if "unevaluated" in attribute else None, below)
    return out


_tag = tag_of


def _walk(ds: Dataset, branches: dict, parents: list[int]) -> list[str]:
    """The paths of absent attributes whose condition is not evaluated, in present sequence items too."""
    absent, held = [], _held(ds)
    for tag, (attribute, below) in branches.items():
        present = tag in held
        if attribute is not None and not present:
            absent.append(" > ".join(_name(t) for t in [*parents, tag]))
        if below and present and ds[tag].VR == "SQ":
            for item in ds[tag].value:
                absent += _walk(item, below, [*parents, tag])
    return absent
