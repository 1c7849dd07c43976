"""dicom-validator's IOD rules, evaluated on module tables expanded once per process instead of per file.

dicom-validator's IODValidator (0.9) reads the same tables but expands every module table of the IOD
(macros included, every attribute's dict copied) for every file, twice - once to guess which modules are
present, once to check them - builds a DicomTag object for every attribute it looks at, and converts every
element of every data set to list its tags. On the held-out corpus that was a third of `dvqa validate`'s
time per file (issue 31). `Evaluator` gives the same ValidationResult (the same module errors, tag errors,
contexts and status; tests/test_evaluator.py compares the two on pydicom's test files and on data sets it
varies, and they agreed on every file of bench/compare_corpus.py's corpus) with:

- a level of a table expanded once per process and group-macro set (its `include`s merged as dicom-validator
  merges them); a level whose includes carry a condition (imported editions; dvqa's bundled edition has
  none) is expanded per data set, as the condition depends on it;
- tags as integers, looked up in a set of the data set's own tags; a DicomTag made only for an error;
- a data set's tags read from its keys, without converting its elements.

The checks themselves (Types, conditions, enumerated values, functional groups shared and per frame) are
dicom-validator's: the code below follows IODValidator's method by method, so that a verdict can only change
where dicom-validator's does - with one deliberate difference (issue 31), in `Run.lookup`: a condition in a
sequence item about an attribute the item's own table lists reads the item's value. dicom-validator looks the
attribute up in the enclosing data sets when the item lacks it, so an SR content item without a Value Type was
judged by its parent's ("CONTAINER": Continuity of Content required, Text Value forbidden), and a by-reference
item under a TCOORD item needed Temporal Range Type. Where the item lacks an attribute it requires (Type 1, or
1C by its own condition; reported missing), a condition on it is undecided: no finding rests on it (PS3.3
C.17.3: the value-type attributes follow the item's own Value Type; there is none to follow).
"""

from __future__ import annotations

from typing import Any

from dicom_validator.spec_reader.condition import ConditionOperator, ConditionType
from dicom_validator.validator.iod_validator import FunctionalGroupInfo
from dicom_validator.validator.validation_result import (
    DicomTag,
    ErrorCode,
    ErrorScope,
    Status,
    TagError,
    TagErrors,
    TagType,
    ValidationResult,
)
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

SHARED, PER_FRAME = 0x52009229, 0x52009230
PIXEL_DATA_AND_AFTER = 0x7FE00010  # dicom-validator does not check these (it reads files without them)
_TAGS: dict[str, int] = {}


def tag_of(key: str) -> int:
    """'(0020,0020)' -> 0x00200020; a repeating group '(60xx,0010)' as its first, 6000 (as dicom-validator reads it)."""
    tag = _TAGS.get(key)
    if tag is None:
        group, element = key[1:-1].split(",")
        if group.endswith("xx"):
            group = group[:2] + "00"
        tag = _TAGS[key] = (int(group, 16) << 16) + int(element, 16)
    return tag


class Level:
    """A data set being checked: the root, or an item of a sequence, with the sequence tags above it."""

    __slots__ = ("dataset", "tags", "tag", "parents", "in_func_group", "unexpected", "listed")

    def __init__(self, dataset: Dataset, tag: int | None = None, parents: list[int] | None = None,
                 in_func_group: bool = False) -> None:
        self.dataset = dataset
        self.tags = {int(t) for t in dataset.keys()}  # the data set's own tags, its elements left unconverted
        self.tag = tag
        self.parents = [*(parents or []), tag] if tag is not None else None
        self.in_func_group = in_func_group or tag in (SHARED, PER_FRAME)
        self.unexpected = {t for t in self.tags if not t >> 16 & 1}  # private tags (odd groups) are never listed
        self.listed: dict[int, dict] | None = None  # an item's: its table's attributes by tag (None: the root)

    def tag_id(self, tag: int) -> DicomTag:
        return DicomTag(tag, self.parents)


class Evaluator:
    """Expanded tables of one edition (dvqa.validate.standard.Tables.info), kept for the life of the process."""

    def __init__(self, info, dicom_validator_lookup: bool = False) -> None:
        """`dicom_validator_lookup`: read an item's absent attributes from the enclosing data sets, as dicom-validator
        does (tests/test_evaluator.py compares the two that way; the module docstring says why dvqa does not)."""
        self.info = info
        self.dicom_validator_lookup = dicom_validator_lookup
        self._expanded: dict[tuple[int, int], tuple[dict, dict | None, dict]] = {}  # (id table, id macros) -> ...
        self._conditional: dict[int, bool] = {}
        self._tags: dict[str, frozenset[int]] = {}
        self._own: dict[int, tuple[dict, dict[int, dict]]] = {}

    def validate(self, dataset: Dataset) -> ValidationResult:
        return Run(self, dataset).validate()

    # -- tables ---------------------------------------------------------------------------------------

    def module(self, ref: str, group_macros: dict | None, run: Run) -> dict:
        return self.expanded(self.info.modules[ref], group_macros, run)

    def module_tags(self, ref: str, run: Run) -> frozenset[int]:
        """The tags of a module's first level, macros included."""
        table = self.info.modules[ref]
        found = self._tags.get(ref)
        if found is None:
            found = frozenset(tag_of(key) for key in self.expanded(table, None, run))
            if not self._has_conditional_include(table):
                self._tags[ref] = found
        return found

    def own(self, table: dict) -> dict[int, dict]:
        """An expanded item table's attributes by tag (Run.lookup)."""
        found = self._own.get(id(table))
        if found is None or found[0] is not table:  # an id is only a key while its table lives
            found = self._own[id(table)] = (table, {tag_of(key): value for key, value in table.items()
                                                    if key.startswith("(")})
        return found[1]

    def expanded(self, table: dict, group_macros: dict | None, run: Run) -> dict:
        """One level of a table with its includes merged (IODValidator._expanded_module_info): tag key ->
        attribute, and "modules" -> the functional group macros where the level includes them. A nested
        level (an attribute's "items") is left as it is: it is expanded when an item is checked."""
        key = (id(table), id(group_macros))
        found = self._expanded.get(key)
        if found is not None:
            return found[2]
        out = self._expand(table, group_macros, run)
        if not self._has_conditional_include(table):
            self._expanded[key] = (table, group_macros, out)  # the objects kept, so that their ids stay theirs
        return out

    def _expand(self, table: dict, group_macros: dict | None, run: Run) -> dict:
        out: dict = {}
        for key, value in table.items():
            if key == "include":
                for info in value:
                    ref = info["ref"]
                    if ref == "FuncGroup":
                        if group_macros is not None:
                            out["modules"] = group_macros
                    elif "cond" not in info or run.required_or_allowed(info["cond"])[0]:
                        out.update(self.module(ref, group_macros, run))
            else:
                out[key] = value
        return out

    def _has_conditional_include(self, table: dict) -> bool:
        """Whether expanding this level evaluates a condition (in it, or in a table it includes)."""
        key = id(table)
        if key not in self._conditional:
            self._conditional[key] = False  # an include cycle ends here
            found = False
            for info in table.get("include", []):
                if "cond" in info:
                    found = True
                elif info["ref"] != "FuncGroup" and info["ref"] in self.info.modules:
                    found = found or self._has_conditional_include(self.info.modules[info["ref"]])
            self._conditional[key] = found
        return self._conditional[key]


class Run:
    """One data set through IODValidator's checks (each method names the one it follows)."""

    def __init__(self, evaluator: Evaluator, dataset: Dataset) -> None:
        self.evaluator = evaluator
        self.stack = [Level(dataset)]
        self.groups = FunctionalGroupInfo({}, set())
        self.result = ValidationResult()
        self.undecided = False  # set by lookup: a condition rested on an attribute its item requires and lacks
        self.asking: set[int] = set()  # attributes whose own condition is being evaluated (required_here)

    def validate(self) -> ValidationResult:  # validate
        result = self.result
        result.sop_class_uid = self.stack[0].dataset.get("SOPClassUID")
        if not result.sop_class_uid:
            result.status, result.errors = Status.MissingSOPClassUID, 1
        elif result.sop_class_uid not in self.evaluator.info.iods:
            result.status, result.errors = Status.UnknownSOPClassUID, 1
        else:
            iod = self.evaluator.info.iods[result.sop_class_uid]
            present = self.present_modules(iod["modules"])
            for name, module in iod["modules"].items():
                errors = self.module(module, name, present, iod["group_macros"])
                if errors:
                    result.add_tag_errors(name, errors)
                    result.status = Status.Failed
            if self.stack[-1].unexpected:
                result.add_tag_errors("General", self.unexpected_errors())
        return result

    # -- modules --------------------------------------------------------------------------------------

    def module(self, module: dict, name: str, present: dict[str, set[int]],
               group_macros: dict | None = None) -> TagErrors:  # _validate_module
        usage = module["use"]
        info = self.evaluator.module(module["ref"], group_macros, self)
        condition = module.get("cond")
        shared = per_frame = False
        if group_macros is None:
            if name in self.groups.checked_modules:
                return {}
            shared = self.stack[-1].tag == SHARED
            per_frame = not shared and self.stack[-1].tag == PER_FRAME
        allowed, scope = True, ErrorScope.General
        if condition and "F" in condition["type"] and shared:
            required, allowed, scope = False, False, ErrorScope.SharedFuncGroup
        elif condition and "S" in condition["type"] and per_frame:
            required, allowed, scope = False, False, ErrorScope.PerFrameFuncGroup
        elif usage[0] == "M":
            required = True
        elif usage[0] == ConditionType.UserDefined:
            required = False
        elif condition:
            required, allowed = self.required_or_allowed(condition)
        else:
            required = False
        if required:
            result = self.attributes(info, False, group_macros)
            if group_macros is not None:
                return result
            if shared:
                self.groups.shared_results[name] = result
                return {}
            if per_frame:
                if self.groups.shared_results.get(name) is not None:
                    first = self.stack[-1].tag_id(tag_of(next(iter(info))))
                    return self.groups.combined(name, first, result)
                return result
        if module["ref"] not in present:
            return {}
        if present and not self.strongly_present(module["ref"], present):
            return {}
        if not allowed:
            errors = {}
            level = self.stack[-1]
            for key in info:
                tag = tag_of(key)
                if tag in level.tags:
                    errors[level.tag_id(tag)] = TagError(code=ErrorCode.TagNotAllowed, scope=scope)
                    level.unexpected.discard(tag)
            return errors
        return self.attributes(info, False, group_macros)

    def present_modules(self, modules: dict) -> dict[str, set[int]]:  # _get_maybe_existing_modules
        level, found = self.stack[-1], {}
        for module in modules.values():
            tags = self.evaluator.module_tags(module["ref"], self) & level.tags
            if tags:
                found[module["ref"]] = tags
        return found

    @staticmethod
    def strongly_present(ref: str, present: dict[str, set[int]]) -> bool:  # _does_module_strongly_exist
        only_here = set(present[ref])
        for other, tags in present.items():
            if other == ref:
                continue
            only_here -= tags
            if not only_here:
                return False
        return True

    def func_group_modules(self, modules: dict) -> None:  # _validate_func_group_modules
        if self.stack[-1].tag == SHARED:
            self.groups.clear()
        present = self.present_modules(modules)
        for name, module in modules.items():
            errors = self.module(module, name, present)
            if errors:
                self.result.add_tag_errors(name, errors)

    # -- attributes -----------------------------------------------------------------------------------

    def attributes(self, attributes: dict, report_unexpected: bool, group_macros: dict | None) -> TagErrors:
        errors: TagErrors = {}  # _validate_attributes
        for key, attribute in attributes.items():
            if key == "modules":
                self.func_group_modules(attribute)
                continue
            level = self.stack[-1]
            tag = tag_of(key)
            error = self.attribute(tag, attribute)
            if error is not None:
                errors[level.tag_id(tag)] = error
            level.unexpected.discard(tag)
            if "items" not in attribute:
                continue
            element = level.dataset.get_item(tag)  # as dicom-validator: a raw element stays raw
            if element is None:
                continue
            if element.VR != "SQ":
                errors[level.tag_id(tag)] = TagError(code=ErrorCode.InvalidSequence)
                continue
            for item in element.value:
                self.stack.append(Level(item, tag, level.parents, level.in_func_group))
                expanded = self.evaluator.expanded(attribute["items"], group_macros, self)
                if not self.evaluator.dicom_validator_lookup:
                    self.stack[-1].listed = self.evaluator.own(expanded)
                errors.update(self.attributes(expanded, True, group_macros))
                self.stack.pop()
        if report_unexpected:
            errors.update(self.unexpected_errors())
        return errors

    def unexpected_errors(self) -> TagErrors:  # _unexpected_tag_errors, in the order of its set of DicomTags
        level = self.stack[-1]
        return {tag_id: TagError(TagType.Undefined, ErrorCode.TagUnexpected)
                for tag_id in {level.tag_id(tag) for tag in level.unexpected}}

    def attribute(self, tag: int, attribute: dict) -> TagError | None:  # _validate_attribute
        kind = attribute["type"]
        if tag >= PIXEL_DATA_AND_AFTER:
            return None
        level = self.stack[-1]
        has_tag = tag in level.tags
        if not has_tag:  # the common case, first: missing where required, else nothing to check
            if kind in ("1", "2"):
                return TagError(kind, ErrorCode.TagMissing, context={})
            if "cond" in attribute and self.decided(attribute["cond"])[0]:
                return TagError(kind, ErrorCode.TagMissing, context={"cond": attribute["cond"]})
            return None
        error = TagError(kind, context={})
        value_required = kind in ("1", "1C")
        allowed = True
        if kind not in ("1", "2") and "cond" in attribute:
            error.context["cond"] = attribute["cond"]
            allowed = self.decided(attribute["cond"])[1]
        if not allowed:
            error.code = ErrorCode.TagNotAllowed
        else:
            value = level.dataset[tag].value
            if value_required and (value is None or isinstance(value, (Sequence, str)) and not value):
                error.code = ErrorCode.TagEmpty
            if value is not None and (not isinstance(value, str) or value) and "enums" in attribute:
                values = value if isinstance(value, (MultiValue, list)) else [value]
                for number, v in enumerate(values, 1):
                    for enums in attribute["enums"]:
                        if "index" in enums and int(enums["index"]) != number:
                            continue
                        if (cond := enums.get("cond")) and not self.decided(cond, (False, True))[0]:
                            continue
                        if v not in enums["val"]:
                            error.code = ErrorCode.EnumValueNotAllowed
                            error.context.update({"value": v, "allowed": enums["val"]})
        return error if error.is_error() else None

    # -- conditions -----------------------------------------------------------------------------------

    def required_or_allowed(self, condition: dict[str, Any]) -> tuple[bool, bool]:  # _object_is_required_or_allowed
        kind = condition["type"]
        if ConditionType(kind).user_defined:
            return False, True
        if self.matches(condition):
            return (False, False) if kind == ConditionType.NotAllowedOrUserDefined else (True, True)
        allowed = (kind == ConditionType.MandatoryOrUserDefined or kind == ConditionType.NotAllowedOrUserDefined
                   or kind == ConditionType.MandatoryOrConditional and self.matches(condition["other_cond"]))
        return False, allowed

    def decided(self, condition: dict[str, Any], undecided: tuple[bool, bool] = (False, True)) -> tuple[bool, bool]:
        """required_or_allowed, or `undecided` (neither required nor forbidden) where the condition rested on an
        attribute the item requires and lacks (lookup)."""
        self.undecided = False
        outcome = self.required_or_allowed(condition)
        return undecided if self.undecided else outcome

    def required_here(self, tag: int, attribute: dict) -> bool:
        """Whether the current item requires this attribute: Type 1, or 1C with its condition holding there."""
        kind = attribute.get("type")
        if kind == "1":
            return True
        if kind != "1C" or "cond" not in attribute or tag in self.asking:
            return False
        self.asking.add(tag)
        outer = self.undecided
        try:
            self.undecided = False
            return self.required_or_allowed(attribute["cond"])[0] and not self.undecided
        finally:
            self.asking.discard(tag)
            self.undecided = outer

    def matches(self, condition: dict[str, Any]) -> bool:  # _composite_object_matches_condition
        if "and" in condition:
            return all(self.matches(c) for c in condition["and"])
        if "or" in condition:
            return any(self.matches(c) for c in condition["or"])
        return self.matches_one(condition)

    def matches_one(self, condition: dict[str, Any]) -> bool:  # _matches_condition
        tag = tag_of(condition["tag"])
        operator = ConditionOperator(condition["op"])
        if operator == ConditionOperator.Present:
            return self.lookup(tag) is not None
        if operator == ConditionOperator.Absent:
            return self.lookup(tag) is None
        element = self.lookup(tag)
        if not element:
            return False
        value = operand(element, condition["index"])
        if value is None:
            return False
        if operator == ConditionOperator.NotEmpty:
            return True
        return _value_matches(value, operator, condition["values"])

    def lookup(self, tag: int):  # _lookup_tag
        current = self.stack[-1]
        if current.listed is not None and tag in current.listed and tag not in current.tags:
            if not self.undecided and self.required_here(tag, current.listed[tag]):
                self.undecided = True
            return None  # the item's own attribute, absent: not its parent's (the module docstring)
        for level in reversed(self.stack):
            if tag in level.tags:
                return level.dataset[tag]
        if self.stack[-1].in_func_group:
            parents = self.stack[-1].parents
            if parents is None:
                return None
            element = self._in_func_group(tag, parents[0])
            if element:
                return element
            return self._in_func_group(tag, PER_FRAME if parents[0] == SHARED else SHARED)
        return None

    def _in_func_group(self, tag: int, sequence: int):  # _lookup_tag_in_func_group
        root = self.stack[0].dataset
        if sequence not in root or not len(root[sequence].value):
            return None
        item = root[sequence].value[0]
        if tag in item:
            return item[tag]
        for key in item.keys():
            inner = item[key]
            if inner.VR != "SQ" or not len(inner.value):
                continue
            if tag in inner.value[0]:
                return inner.value[0][tag]
        return None


def operand(element, index: int) -> Any:
    """The value of an element a condition compares: value `index` (from 1), or the first (0)."""
    if index > 0:
        return element.value[index - 1] if index <= element.VM else None
    return element.value[0] if element.VM > 1 else element.value


def _value_matches(value: Any, operator: ConditionOperator, values: list) -> bool:  # _tag_matches
    try:
        values = [type(value)(v) for v in values]
    except ValueError:
        return False
    if operator in (ConditionOperator.EqualsValue, ConditionOperator.EqualsTag):
        return value in values
    if operator == ConditionOperator.NotEqualsValue:
        return value not in values
    if operator == ConditionOperator.GreaterValue:
        return value > values[0]
    if operator == ConditionOperator.LessValue:
        return value < values[0]
    return False
