"""The traceability matrix: dvqa's requirements -> the tests that verify them -> their result in a
real test run.

Requirements live in docs/regulatory/requirements.yaml; tests name theirs with
@pytest.mark.requirement(...), which tests/conftest.py writes into the JUnit XML of the run as a
`requirement` property of each test case. So the matrix needs only the requirements and the JUnit
file, and says what that run showed - not what the source code claims.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import yaml

from dvqa import __version__
from dvqa.core.digest import sha256_file
from dvqa.core.errors import InputError
from dvqa.core.resources import data_dir

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
VERIFIED, NOT_MET, UNVERIFIED = "verified", "failed", "unverified"


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    text: str
    risk: str


@dataclass(frozen=True)
class TestResult:
    test: str  # classname::name, as pytest names it
    outcome: str  # passed / failed / skipped
    requirements: tuple[str, ...]


def default_requirements() -> Path:
    return data_dir("docs/regulatory") / "requirements.yaml"


def load_requirements(path: Path) -> list[Requirement]:
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))["requirements"]
        found = [Requirement(str(e["id"]), str(e["title"]), str(e["text"]), str(e["risk"])) for e in entries]
    except FileNotFoundError:
        raise InputError(f"{path}: no such requirements file.") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        raise InputError(f"{path}: not a requirements file (a YAML list 'requirements' of id, title, text, "
                         "risk); see docs/regulatory/requirements.yaml.") from None
    ids = [r.id for r in found]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: requirement ids must be unique; fix the repeated ones.")
    return found


def load_junit(path: Path) -> list[TestResult]:
    """Every test case of a pytest JUnit XML file, with its outcome and the requirements it names."""
    try:
        root = ElementTree.parse(path).getroot()
    except FileNotFoundError:
        raise InputError(f"--junit {path}: no such file; run the tests with --junitxml={path} first.") from None
    except (OSError, ElementTree.ParseError):
        raise InputError(f"--junit {path}: not JUnit XML; give the file pytest's --junitxml wrote.") from None
    results = []
    for case in root.iter("testcase"):
        outcome = PASSED
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = FAILED
        elif case.find("skipped") is not None:
            outcome = SKIPPED
        requirements = tuple(p.get("value", "") for p in case.iter("property") if p.get("name") == "requirement")
        results.append(TestResult(f"{case.get('classname', '')}::{case.get('name', '')}", outcome, requirements))
    if not results:
        raise InputError(f"--junit {path}: holds no test cases; give the file of a whole test run.")
    return results


def matrix(requirements: list[Requirement], results: list[TestResult], junit: list[Path],
           requirements_path: Path) -> dict:
    """One row per requirement: its tests in this run and a status; failed beats verified."""
    known = {r.id for r in requirements}
    rows = []
    for requirement in requirements:
        tests = [{"test": t.test, "outcome": t.outcome} for t in results if requirement.id in t.requirements]
        outcomes = {t["outcome"] for t in tests}
        status = NOT_MET if FAILED in outcomes else VERIFIED if PASSED in outcomes else UNVERIFIED
        rows.append({"id": requirement.id, "title": requirement.title, "text": requirement.text,
                     "risk": requirement.risk, "status": status, "tests": tests})
    unknown = sorted({req for t in results for req in t.requirements if req not in known})
    return {
        "command": "report traceability", "dvqa_version": __version__,
        "requirements_file": {"path": str(requirements_path), "sha256": sha256_file(requirements_path)},
        "junit": [{"path": str(p), "sha256": sha256_file(p)} for p in junit],
        "tests_run": len(results),
        "summary": {s: sum(1 for r in rows if r["status"] == s) for s in (VERIFIED, NOT_MET, UNVERIFIED)},
        "unknown_requirements": unknown,
        "rows": rows,
    }


def document(record: dict) -> dict:
    """The matrix as a document structure (markdown.document / documents.document_html render it)."""
    s = record["summary"]
    overview = [
        f"dvqa {record['dvqa_version']}. Requirements: {record['requirements_file']['path']} "
        f"(SHA-256 {record['requirements_file']['sha256']}). Test results: "
        + ", ".join(f"{j['path']} (SHA-256 {j['sha256']})" for j in record["junit"])
        + f", {record['tests_run']} test cases.",
        f"{s[VERIFIED]} requirements verified (at least one test passed, none failed), {s[NOT_MET]} failed "
        f"(a test failed), {s[UNVERIFIED]} unverified (no test of theirs passed in this run).",
    ]
    if record["unknown_requirements"]:
        overview.append("Tests name requirements that are not in the file: "
                        + ", ".join(record["unknown_requirements"]) + ".")
    summary_rows = [[r["id"], r["title"], r["status"], str(sum(1 for t in r["tests"] if t["outcome"] == PASSED)),
                     str(len(r["tests"]))] for r in record["rows"]]
    sections = [{"number": "1", "title": "Summary", "paragraphs": overview, "tables": [
        {"caption": "Requirements and their status in this run", "status_column": 2, "nowrap_columns": [0, 2],
         "columns": ["Requirement", "Title", "Status", "Tests passed", "Tests"], "rows": summary_rows}]}]
    for number, row in enumerate(record["rows"], 2):
        sections.append({"number": str(number), "title": f"{row['id']}: {row['title']}", "status": row["status"],
                         "paragraphs": [row["text"], f"Risk: {row['risk']}", f"Status: {row['status']}."],
                         "tables": [{"caption": "Tests", "columns": ["Test", "Outcome"], "status_column": 1,
                                     "rows": [[t["test"], t["outcome"]] for t in row["tests"]] or [["none", "-"]]}]})
    return {"title": f"Traceability matrix (dvqa {record['dvqa_version']})", "sections": sections}
