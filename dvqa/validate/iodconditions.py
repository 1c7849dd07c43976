"""Conditions dicom-validator cannot parse that the IOD (or the data set's own attributes) decide, evaluated here.

Some Type 1C/2C conditions ask what the IOD requires rather than what the data set holds. General Image's
Patient Orientation (0020,0020) is "Required if image does not require Image Orientation (Patient)
(0020,0037) and Image Position (Patient) (0020,0032) or if image does not require Image Orientation
(Slide) (0048,0102)" (PS3.3 C.7.6.1): an SC, US, VL, CR, XA or MG image, whose IOD has no module with those
attributes, must carry it (Type 2: empty is fine); a CT or MR image need not. Multi-frame Functional
Groups' Per-Frame Functional Groups Sequence (5200,9230) is "Required if for any frame, there are
Per-Frame Functional Groups that are not empty" (PS3.3 C.7.6.16): an IOD whose Frame Content macro is
Mandatory has such groups in every frame, since that macro is used only per frame (C.7.6.16.2.2).

The same goes for conditions a module's attributes share about a fact of the acquisition (_siblings).
These were listed as "not evaluated" (info). Each rule names the attribute and a phrase of its condition
text, so an edition that words the condition otherwise falls back to "not evaluated", never to a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from pydicom.dataset import Dataset

from dvqa.validate.evaluator import tag_of

ORIENTATION_TAGS = ("(0020,0037)", "(0048,0102)")  # Image Orientation (Patient), Image Orientation (Slide)
ORIENTATION_KEYS = frozenset({0x00200037, 0x00480102})
FRAME_CONTENT = "macro:frame-content"
Decision = Callable[[Dataset], "tuple[bool | None, str]"]  # the data set -> (required, or None: undecided; why)


def _holds(table: dict, keys: tuple[str, ...]) -> bool:
    """Whether a module or macro table lists one of `keys`, at any depth."""
    stack = [table]
    while stack:
        current = stack.pop()
        for key, value in current.items():
            if key in keys:
                return True
            if isinstance(value, dict) and isinstance(value.get("items"), dict):
                stack.append(value["items"])
    return False


def _requires_no_orientation(modules, iod: dict, module_name: str) -> Decision:
    """Whether the image requires no Image Orientation (Patient) or (Slide): no module or functional group
    macro of the IOD that defines them is Mandatory, or Conditional on the same condition as the attribute's
    own module (RT Dose's Image Plane and General Image: "Required if dose data contains grid-based doses");
    one Conditional on something else (multi-frame SC's Plane Orientation macro) requires them when the data
    set uses it, which it then shows by holding them."""
    own = iod["modules"][module_name]["use"]
    conditional = False
    for usage in [*iod["modules"].values(), *iod.get("group_macros", {}).values()]:
        if usage["use"].startswith("U") or not _holds(modules.get(usage["ref"], {}), ORIENTATION_TAGS):
            continue
        if usage["use"].startswith("M") or usage["use"] == own:
            return lambda ds: (False, "")
        conditional = True
    why = "this IOD has no module that requires Image Orientation"
    if not conditional:
        return lambda ds: (True, why)
    return lambda ds: (not _present(ds, ORIENTATION_KEYS), why + " unless a conditional one holds it, and none does")


def _has_per_frame_groups(modules, iod: dict, module_name: str) -> Decision:
    for usage in iod.get("group_macros", {}).values():
        if usage["ref"] == FRAME_CONTENT and usage["use"] == "M":
            return lambda ds: (True, "this IOD's Frame Content macro is Mandatory and is used per frame (PS3.3 "
                                     "C.7.6.16.2.2)")
    return lambda ds: (False, "")


def _present(ds: Dataset, tags: frozenset[int]) -> bool:
    return any(elem.tag in tags for elem in ds.iterall())


@dataclass(frozen=True)
class Rule:
    tag: str  # the attribute, as the tables spell it
    phrase: re.Pattern  # a phrase of its condition text, as the edition states it
    decide: Callable[[object, dict, str], Decision]  # (module tables, IOD, module name) -> the decision


RULES = (
    Rule("(0020,0020)", re.compile(r"does not require Image Orientation \(Patient\)", re.IGNORECASE),
         _requires_no_orientation),
    Rule("(5200,9230)", re.compile(r"Per-Frame Functional Groups that are not empty", re.IGNORECASE),
         _has_per_frame_groups),
)


# A condition about a fact of the acquisition ("Required if image was acquired in a Staged protocol", US Image)
# that several attributes of a module share: one of them present says the fact holds, since a Type 1C/2C
# attribute shall not be present when its condition is false (PS3.5 §7.4.2, §7.4.4), so the others are
# required. Not for conditions that ask what is present elsewhere ("Required if present in the source
# images") or allow presence otherwise: there the presence of one says nothing of the others.
NOT_A_FACT = re.compile(r"\bpresent\b|\bmay\b|\bconsistent\b|\bsee\b", re.IGNORECASE)


def _siblings(table: dict) -> dict[str, Decision]:
    """{tag key: decision} for the top-level attributes of a module that share such a condition."""
    groups: dict[str, list[str]] = {}
    for key, attribute in table.items():
        text = attribute.get("unevaluated", "") if isinstance(attribute, dict) and key.startswith("(") else ""
        if text.startswith("Required if") and not NOT_A_FACT.search(text):
            groups.setdefault(text, []).append(key)
    out: dict[str, Decision] = {}
    for text, keys in groups.items():
        for key in keys if len(keys) > 1 else []:
            others = [(other, tag_of(other), table[other].get("name", other)) for other in keys if other != key]

            def decide(ds: Dataset, others=others, text=text) -> tuple[bool | None, str]:
                present = [name for _, tag, name in others if tag in ds]
                if not present:
                    return None, ""
                return True, f"{present[0]} is present, which says so of '{text.rstrip('.')}'"
            out[key] = decide
    return out


def decided(tables, sop_class: str) -> dict[tuple[str, str], tuple[int, dict, Decision]]:
    """{(module name, tag key): (tag, attribute, decide)} for this IOD's top-level attributes whose condition a
    rule or its siblings decide; computed once per process and IOD."""
    cached = ("decided", sop_class)
    if cached not in tables.prepared:
        iod = tables.info.iods[sop_class]
        modules = tables.info.modules
        found = {}
        for module_name, usage in iod["modules"].items():
            table = modules.get(usage["ref"], {})
            for rule in RULES:
                attribute = table.get(rule.tag)
                if isinstance(attribute, dict) and rule.phrase.search(attribute.get("unevaluated", "")):
                    found[(module_name, rule.tag)] = (tag_of(rule.tag), attribute,
                                                      rule.decide(modules, iod, module_name))
            for key, decide in _siblings(table).items():
                found.setdefault((module_name, key), (tag_of(key), table[key], decide))
        tables.prepared[cached] = found
    return tables.prepared[cached]

