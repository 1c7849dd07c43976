"""`dvqa validate --explain TAG`: why the IOD layer asks what it asks of one attribute in one file.

For every place the file's IOD defines the attribute (each module or macro of the IOD that lists it, at the
top level or inside a sequence's items), the explanation names the module and its usage in the IOD, the
attribute's Type, its condition as the standard words it (the sentence the bundled edition keeps beside
the condition it parsed, or the one it could not parse), and how that condition was evaluated on this
data set: each attribute it reads, the value read, and the outcome - required, may be present, or shall
not be present. The file's findings on the attribute follow. Conditions are evaluated by the same code
as the check itself (dvqa.validate.evaluator), so the explanation cannot disagree with the verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_description, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from dvqa.core.errors import UsageError
from dvqa.core.findings import Finding
from dvqa.dicom import dicomread
from dvqa.validate import iodcheck
from dvqa.validate.evaluator import PER_FRAME, SHARED, Level, Run, operand, tag_of

OPERATORS = {"+": "is present", "++": "has a value", "-": "is absent", "=": "is", "!=": "is not", ">": "is above",
             "<": "is below", "=>": "points to", "!0": "is not zero"}
OUTCOMES = {  # condition type -> (when it holds, when it does not) - dicom-validator's ConditionType
    "MN": ("required", "shall not be present"), "MU": ("required", "may be present"),
    "MC": ("required", "allowed only if the other condition holds"), "NU": ("shall not be present", "may be present"),
    "MF": ("required per frame", "not in the shared group"), "MS": ("required in the shared group", "not per frame"),
}
NOT_HELD = "not evaluated: the data set holds no"
SPELLED = re.compile(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?")


def parse_tag(text: str) -> int:
    """A keyword (PlanarConfiguration), or a tag as (0028,0006), 0028,0006 or 00280006."""
    found = SPELLED.fullmatch(text.strip())
    if found:
        return int(found.group(1) + found.group(2), 16)
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise UsageError(f"--explain {text}: neither a keyword of the DICOM dictionary nor a tag; write it as "
                         "PlanarConfiguration or (0028,0006).")
    return tag


def spelled(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{keyword} {text}" if keyword else text


@dataclass
class Place:
    """One definition of the attribute in the IOD, and what it asks of one data set (or sequence item)."""

    module: str
    usage: str  # the module's usage in the IOD (M, U, or C with its condition) and whether it is checked here
    reference: str
    path: str  # where the attribute sits: its tag, below the sequences that hold it
    type: str
    condition: str  # as the standard words it; "" when the Type is unconditional
    evaluated: list[str] = field(default_factory=list)  # each value read and what it gave
    outcome: str = ""  # required, may be present, shall not be present, ...
    present: str = ""  # absent, or the value held

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def explain(path: str, tag: int, tables, findings: list[Finding]) -> dict:
    """The explanation for one file (dvqa.validate.run.check_file's findings on it given): a dict that the text
    form renders and JSON prints as it is."""
    entry: dict = {"path": path, "attribute": spelled(tag), "iod": None, "places": [],
                   "findings": [f.to_dict() for f in findings_on(findings, tag)]}
    try:
        ds, _ = dicomread.read_header(path)
    except dicomread.FileProblem:
        return entry  # the findings say why it was not read
    ds = iodcheck.prepare(ds)
    iod = tables.info.iods.get(str(ds.get("SOPClassUID", "") or ""))
    if iod is not None:
        entry["iod"] = iod["title"]
        entry["places"] = [p.to_dict() for p in places(ds, tag, tables, iod)]
    return entry


def places(ds: Dataset, tag: int, tables, iod: dict) -> list[Place]:
    """Every definition of `tag` in the IOD, each with its condition evaluated where the data set holds the
    attribute's parent items."""
    evaluator = iodcheck.evaluator_of(tables)
    reference = iodcheck.module_reference
    overridden = iodcheck.governed(tables, str(ds.SOPClassUID))
    run = Run(evaluator, ds)
    present = run.present_modules(iod["modules"])
    out: list[Place] = []
    for name, usage in iod["modules"].items():
        table = evaluator.module(usage["ref"], iod["group_macros"], run)
        where = (name, _usage(run, usage, present), reference(tables, iod, name))
        found = len(out)
        _search(run, table, tag, [], out, where, iod["group_macros"])
        if (name.lower(), tag) in overridden:
            for place in out[found:]:
                if " > " not in place.path:
                    place.outcome += ("; but another module of this IOD states that its definition overrides this "
                                      "one, so this module's findings on it are dropped")
    for name, usage in iod.get("group_macros", {}).items():  # functional group macros: inside each group's item
        table = evaluator.module(usage["ref"], None, run)
        where = (name, f"functional group macro, {usage['use']}", reference(tables, iod, name))
        for group in (SHARED, PER_FRAME):
            for item in _items(ds, group):
                run.stack.append(Level(item, group))
                _search(run, table, tag, [group], out, where, None)
                run.stack.pop()
    return out


def _usage(run: Run, usage: dict, present: dict[str, set[int]]) -> str:
    """The module's usage in the IOD, and whether its attributes are checked on this data set (as the evaluator
    decides it: a Mandatory module, a condition that holds, or attributes of the module that no other module of
    the IOD also has)."""
    use = usage["use"]
    if use.startswith("M"):
        return f"{use}: mandatory, checked"
    if "cond" in usage and run.required_or_allowed(usage["cond"])[0]:
        return f"{use}: its condition holds, so it is required and checked"
    held = present.get(usage["ref"], set())
    if held and run.strongly_present(usage["ref"], present):
        return f"{use}: the data set holds {len(held)} of its attributes, so it is checked"
    if held:
        return f"{use}: the data set holds only attributes other modules have too, so it is not checked"
    return f"{use}: the data set holds none of its attributes, so they are not checked"


def _items(ds: Dataset, tag: int) -> list[Dataset]:
    element = ds.get_item(tag) if tag in ds else None
    return list(ds[tag].value) if element is not None and ds[tag].VR == "SQ" else []


def _search(run: Run, table: dict, tag: int, parents: list[int], out: list[Place], where: tuple[str, str, str],
            group_macros: dict | None) -> None:
    for key, attribute in table.items():
        if key == "modules" or not isinstance(attribute, dict):
            continue
        here = tag_of(key)
        if here == tag:
            out.append(_place(run, attribute, tag, parents, where))
        if "items" in attribute:
            items = run.evaluator.expanded(attribute["items"], group_macros, run)
            level = run.stack[-1]
            held = _items(level.dataset, here) if here in level.tags else []
            for item in held or [None]:  # the definition is shown once even where no item holds it
                if item is None:
                    if _lists(items, tag):
                        out.append(Place(*where, _path([*parents, here, tag]), "", "", [],
                                         f"{NOT_HELD} {spelled(here)} item"))
                    continue
                run.stack.append(Level(item, here, level.parents, level.in_func_group))
                _search(run, items, tag, [*parents, here], out, where, group_macros)
                run.stack.pop()


def _lists(table: dict, tag: int) -> bool:
    return any(key.startswith("(") and (tag_of(key) == tag or "items" in value and _lists(value["items"], tag))
               for key, value in table.items() if isinstance(value, dict))


def _path(tags: list[int]) -> str:
    return " > ".join(spelled(t) for t in tags)


def _place(run: Run, attribute: dict, tag: int, parents: list[int], where: tuple[str, str, str]) -> Place:
    kind = attribute["type"]
    condition = attribute.get("text") or attribute.get("unevaluated") or ""
    place = Place(*where, _path([*parents, tag]), kind, condition)
    level = run.stack[-1]
    place.present = _shown(level.dataset[tag]) if tag in level.tags else "absent"
    if kind in ("1", "2"):
        place.outcome = "required" + (" (empty allowed)" if kind == "2" else ", with a value")
    elif "cond" in attribute:
        place.evaluated = _trace(run, attribute["cond"])
        required, allowed = run.required_or_allowed(attribute["cond"])
        place.outcome = "required" if required else ("may be present" if allowed else "shall not be present")
    elif "unevaluated" in attribute:
        place.outcome = "condition not evaluated (dvqa cannot parse it): check it by hand"
    else:
        place.outcome = "may be present (Type 3)" if kind == "3" else "may be present (no condition stated)"
    return place


def _trace(run: Run, condition: dict, depth: int = 0) -> list[str]:
    """Each test of the condition: the attribute read, the value found, whether the test held."""
    lines = []
    if depth == 0 and condition.get("type") in OUTCOMES:
        holds, otherwise = OUTCOMES[condition["type"]]
        lines.append(f"if the condition holds: {holds}; otherwise: {otherwise}")
    for joint in ("and", "or"):
        if joint in condition:
            lines.append(f"{'  ' * depth}{'all' if joint == 'and' else 'any'} of:")
            for part in condition[joint]:
                lines += _trace(run, part, depth + 1)
            return lines
    tag = tag_of(condition["tag"])
    element = run.lookup(tag)
    read = "absent" if element is None else _shown(element)
    if element is not None and condition.get("index"):
        value = operand(element, condition["index"])
        read += f" (value {condition['index']}: {value!r})"
    wanted = ", ".join(str(v) for v in condition.get("values", []))
    test = f"{_named(tag)} {OPERATORS.get(condition['op'], condition['op'])}{' ' + wanted if wanted else ''}"
    lines.append(f"{'  ' * depth}{test}: read {read} -> {'holds' if run.matches(condition) else 'does not hold'}")
    if depth == 0 and "other_cond" in condition:
        lines.append("otherwise, the other condition:")
        lines += _trace(run, condition["other_cond"], 1)
    return lines


def _named(tag: int) -> str:
    try:
        return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
    except KeyError:
        return spelled(tag)


def _shown(element) -> str:
    if element.VR == "SQ":
        return f"a sequence of {len(element.value)} items"
    value = element.value
    if value in (None, "", b""):
        return "present, empty"
    text = repr(value if not isinstance(value, bytes) else f"{len(value)} bytes")
    return f"present, {text[:80]}"


def findings_on(findings: list[Finding], tag: int) -> list[Finding]:
    spelled_tag = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return [f for f in findings if spelled_tag in f.where or spelled_tag in f.message]


def text(entry: dict) -> str:
    """One file's explanation (explain()'s dict) as text."""
    lines = [f"{entry['path']}: {entry['attribute']}" + (f" in the {entry['iod']} IOD" if entry["iod"] else "")]
    if entry["iod"] is None:
        lines.append("  no IOD of the edition defines this data set (see the findings)")
    elif not entry["places"]:
        lines.append("  no module of this IOD defines the attribute")
    unheld = [p for p in entry["places"] if p["outcome"].startswith(NOT_HELD)]
    for place in entry["places"]:
        if place in unheld:
            continue
        lines.append(f"  {place['module']} ({place['reference']}); usage {place['usage']}")
        lines.append(f"    {place['path']}: Type {place['type'] or '-'}" +
                     (f"; {place['present']}" if place["present"] else ""))
        if place["condition"]:
            lines.append(f"    condition, as the standard words it: {place['condition']}")
        lines += [f"      {line}" for line in place["evaluated"]]
        lines.append(f"    -> {place['outcome']}")
    if unheld:
        lines.append(f"  also defined in {len(unheld)} sequences this data set holds no item of (not evaluated): " +
                     "; ".join(f"{p['path']} ({p['module']})" for p in unheld))
    lines.append(f"  findings on it: {len(entry['findings']) or 'none'}")
    lines += [f"    {f['severity']} {f['code']}: {f['message']} [{f['reference']}]" for f in entry["findings"]]
    return "\n".join(lines)
