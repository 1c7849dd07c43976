"""Findings rendered for people and for CI servers: text, JSON, JUnit XML, SARIF 2.1.0.

All four render the same list of `validate.FileResult`s; none decides anything.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from xml.etree import ElementTree as ET

from dvqa import __version__
from dvqa.core.findings import Severity

LAYERS = ("file", "value", "iod", "stream", "profile")  # a finding's layer is its code's prefix; else profile


def _layer(code: str) -> str:
    prefix = code.split(".")[0]
    return prefix if prefix in LAYERS else "profile"


def _failing(severity: Severity, fail_on: Severity) -> bool:
    return severity is Severity.ERROR or (fail_on is Severity.WARNING and severity is Severity.WARNING)


def _standard(edition) -> dict[str, str]:
    """The tables the IOD layer used: name, trust (bundled and verified, or imported and unverified), the
    SHA-256 of the tables read, and their provenance (for an imported edition, what its import recorded)."""
    return edition.describe() if edition else {}


def text(results, fail_on: Severity, edition=None, verbose: bool = False) -> str:
    """One line per error and warning; infos one line per check id unless `verbose` (a folder of clean
    files would otherwise print the same "condition not evaluated" note once per file)."""
    lines, counts = [], Counter()
    if edition:
        lines.append(f"standard DICOM {edition.name} ({edition.trust}; tables sha256 {edition.digest}; {edition.source})")
    infos: dict[str, list] = {}
    for r in results:
        for f in r.findings:
            counts[f.severity.value] += 1
            if f.severity is Severity.INFO and not verbose:
                infos.setdefault(f.code, []).append((r, f))
                continue
            lines.append(_line(r.path, f))
    for code, found in infos.items():
        if len(found) == 1:
            lines.append(_line(found[0][0].path, found[0][1]))
            continue
        paths = [r.path for r, _ in found]
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        lines.append(f"{'info':<8} {code}: {len(paths)} files ({shown}; --verbose lists each), e.g. "
                     + _line(paths[0], found[0][1]).split(": ", 1)[1])
    failed = sum(1 for r in results if any(_failing(f.severity, fail_on) for f in r.findings))
    skipped = sum(1 for r in results if r.layers.get("file") == "skipped")
    checked = len(results) - skipped
    lines.append(f"checked  {checked} file{'' if checked == 1 else 's'}"
                 + (f" ({skipped} not checked)" if skipped else "")
                 + f": {failed} failed; {_count(counts['error'], 'error')}, {_count(counts['warning'], 'warning')}, "
                 f"{counts['info']} info")
    return "\n".join(lines)


def _line(path: str, f) -> str:
    where = f" {f.where}" if f.where else ""
    if len(where) > 100:  # a list of places (conditions not evaluated): JSON carries it whole
        where = where[:97] + "..."
    ref = f" [{f.reference}]" if f.reference else ""
    return f"{f.severity.value:<8} {f.code}: {path}{where}: {f.message}{ref}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def as_json(results, fail_on: Severity, edition=None) -> str:
    return json.dumps({
        "tool": {"name": "dvqa", "version": __version__}, "fail_on": fail_on.value, "standard": _standard(edition),
        "files": [{"path": r.path, "ok": not any(_failing(f.severity, fail_on) for f in r.findings),
                   "layers": r.layers, "findings": [f.to_dict() for f in r.findings]} for r in results],
    }, indent=2)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """XML 1.0 cannot carry most control characters even escaped (§2.2); a damaged file's values and
    pydicom's messages about them do contain them. Written as \\xNN instead, so the report stays XML."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def junit(results, fail_on: Severity, edition=None) -> str:
    """One test case per file and check layer; a layer that did not run is a skipped case, not a pass."""
    suite = ET.Element("testsuite", name="dvqa validate")
    if edition:
        properties = ET.SubElement(suite, "properties")
        for key, value in _standard(edition).items():
            ET.SubElement(properties, "property", name=f"dicom-{key}", value=value)
    tests = failures = skipped = 0
    not_checked = [r for r in results if r.layers.get("file") == "skipped"]
    if not_checked:  # one case for all of them: a folder of reports is not dozens of skipped tests
        case = ET.SubElement(suite, "testcase", classname="dvqa validate", name="files not checked")
        tests += 1
        skipped += 1
        note = ET.SubElement(case, "skipped", message=_xml_text(
            f"{len(not_checked)} file{'' if len(not_checked) == 1 else 's'} not checked (not DICOM, hidden or "
            "excluded); name a file explicitly to check it"))
        note.text = _xml_text("\n".join(f"{r.path}: {r.findings[0].message if r.findings else 'skipped'}"
                                         for r in not_checked))
    for r in results:
        if r.layers.get("file") == "skipped":
            continue
        # every layer that ran or has a finding: no finding may be left out of the XML
        found = {_layer(f.code) for f in r.findings}
        layers = [layer for layer in LAYERS if layer == "file" or layer in r.layers or layer in found]
        for layer in layers:
            case = ET.SubElement(suite, "testcase", classname=_xml_text(r.path), name=layer)
            tests += 1
            bad = [f for f in r.findings if _layer(f.code) == layer and _failing(f.severity, fail_on)]
            note = r.layers.get(layer, "ran")
            if bad:
                failures += 1
                failure = ET.SubElement(case, "failure", message=_xml_text(bad[0].message), type=bad[0].code)
                failure.text = _xml_text("\n".join(f"{f.severity.value} {f.code} {f.where}: {f.message} [{f.reference}]"
                                                    for f in bad))
            elif note == "skipped" or (layer == "iod" and note != "ran"):
                skipped += 1
                shown = next((f.message for f in r.findings), note) if note == "skipped" else note
                ET.SubElement(case, "skipped", message=_xml_text(shown))
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    suite.set("errors", "0")
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def sarif(results, fail_on: Severity, edition=None) -> str:
    """SARIF 2.1.0 as GitHub code scanning reads it: one rule per check id, one result per finding."""
    rules: dict[str, dict] = {}
    out = []
    for r in results:
        for f in r.findings:
            rules.setdefault(f.code, {"id": f.code, "shortDescription": {"text": f.code},
                                      "properties": {"layer": _layer(f.code)}})
            if f.reference:
                rules[f.code].setdefault("help", {"text": f"Reference: {f.reference}"})
            out.append({
                "ruleId": f.code, "level": SARIF_LEVEL[f.severity],
                "message": {"text": f"{f.message}" + (f" ({f.where})" if f.where else "")},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": r.path.lstrip("/")},
                                                    "region": {"startLine": 1}}}],
            })
    return json.dumps({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "dvqa", "version": __version__,
                                      "rules": list(rules.values())}},
                  "results": out, "properties": {"standard": _standard(edition)}}],
    }, indent=2)


RENDERERS = {"text": text, "json": as_json, "junit": junit, "sarif": sarif}
SUFFIX_FORMATS = {".txt": "text", ".json": "json", ".xml": "junit", ".sarif": "sarif"}  # validate -o FILE


def at_least(results, minimum: Severity) -> list:
    """The results with only findings at least as severe as `minimum` (what --min-severity shows); the
    exit code is decided on all of them before."""
    order = [Severity.INFO, Severity.WARNING, Severity.ERROR]
    keep = set(order[order.index(minimum):])
    return [replace(r, findings=[f for f in r.findings if f.severity in keep]) for r in results]
