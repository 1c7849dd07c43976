"""Requirements are traced to tests, and a real test run to a matrix.

The first test is the CI gate the requirements file promises: every requirement has at least one
test naming it, and no test names a requirement that does not exist. The others run pytest for real
on a small suite of their own and read its JUnit XML with `dvqa report traceability`."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvqa.report import traceability
from helpers import ROOT, dvqa

TESTS = ROOT / "tests"


def marked_requirements() -> dict[str, list[str]]:
    """requirement id -> tests whose @pytest.mark.requirement(...) names it, read from the source."""
    found: dict[str, list[str]] = {}
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.requirement":
                    for arg in decorator.args:
                        assert isinstance(arg, ast.Constant), f"{path.name}::{node.name}: name requirements literally"
                        found.setdefault(arg.value, []).append(f"{path.name}::{node.name}")
    return found


@pytest.mark.requirement("DVQA-DOC-001")
def test_every_requirement_has_a_test_and_every_named_requirement_exists() -> None:
    requirements = {r.id for r in traceability.load_requirements(traceability.default_requirements())}
    marked = marked_requirements()
    untested = sorted(requirements - marked.keys())
    assert not untested, f"requirements with no test: {untested} (mark a test with @pytest.mark.requirement)"
    unknown = sorted(marked.keys() - requirements)
    assert not unknown, f"tests name requirements not in docs/regulatory/requirements.yaml: {unknown}"
    assert len(requirements) >= 25


SUITE = '''
import pytest

@pytest.mark.requirement("R-1")
def test_passes():
    assert True

@pytest.mark.requirement("R-1", "R-2")
def test_fails():
    assert 1 == 2

@pytest.mark.requirement("R-3")
def test_skipped():
    pytest.skip("not here")

@pytest.mark.requirement("R-9")
def test_names_an_unknown_requirement():
    assert True
'''
REQUIREMENTS = """
requirements:
  - {id: R-1, title: one, text: passes and fails, risk: none}
  - {id: R-2, title: two, text: fails, risk: none}
  - {id: R-3, title: three, text: skipped, risk: none}
  - {id: R-4, title: four, text: no test, risk: none}
"""


def _real_run(tmp_path: Path) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(TESTS / "conftest.py", suite / "conftest.py")  # the hook that writes the properties
    (suite / "test_small.py").write_text(SUITE)
    (suite / "pytest.ini").write_text("[pytest]\nmarkers =\n    requirement(*ids): requirement ids\n")
    junit = tmp_path / "results.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                          str(suite)], cwd=suite, capture_output=True, text=True, timeout=120)
    assert junit.exists(), f"the small suite did not run:\n{run.stdout}\n{run.stderr}"
    return junit


@pytest.mark.requirement("DVQA-DOC-001")
def test_a_real_run_becomes_a_matrix_with_every_status(tmp_path: Path) -> None:
    junit = _real_run(tmp_path)
    requirements = tmp_path / "requirements.yaml"
    requirements.write_text(REQUIREMENTS)
    out = tmp_path / "matrix.json"
    proc = dvqa("report", "traceability", "--junit", str(junit), "--requirements", str(requirements), "-o", str(out))
    assert proc.returncode == 1, proc.stderr  # failed, R-3 and R-4 unverified
    record = json.loads(out.read_text())
    status = {row["id"]: row["status"] for row in record["rows"]}
    assert status == {"R-1": "failed", "R-2": "failed", "R-3": "unverified", "R-4": "unverified"}
    r1 = next(row for row in record["rows"] if row["id"] == "R-1")
    assert {(t["test"].split("::")[-1], t["outcome"]) for t in r1["tests"]} == {("test_passes", "passed"),
                                                                              ("test_fails", "failed")}
    assert record["unknown_requirements"] == ["R-9"] and record["tests_run"] == 4
    assert record["summary"] == {"verified": 0, "failed": 2, "unverified": 2}
    assert "warning    tests name R-9" in proc.stdout and "0 verified, 2 failed, 2 unverified" in proc.stdout
    # only what passed and never failed is verified
    (tmp_path / "r1.yaml").write_text("requirements:\n  - {id: R-1, title: one, text: t, risk: r}\n")
    junit.write_text(junit.read_text().replace('name="test_fails"', 'name="test_fails_renamed"'))
    for fmt, marker in (("markdown", "| R-1 | one | failed |"), ("json", '"status": "failed"')):
        shown = dvqa("report", "traceability", "--junit", str(junit), "--requirements", str(tmp_path / "r1.yaml"),
                     "--format", fmt)
        assert marker in shown.stdout
    pdf = tmp_path / "matrix.pdf"
    assert dvqa("report", "traceability", "--junit", str(junit), "--requirements", str(requirements),
                "-o", str(pdf)).returncode == 1
    assert pdf.read_bytes().startswith(b"%PDF")


def test_only_a_passing_run_is_verified(tmp_path: Path) -> None:
    junit = tmp_path / "ok.xml"
    junit.write_text('<testsuites><testsuite><testcase classname="t" name="a"><properties>'
                     '<property name="requirement" value="R-1"/></properties></testcase></testsuite></testsuites>')
    requirements = tmp_path / "requirements.yaml"
    requirements.write_text("requirements:\n  - {id: R-1, title: one, text: t, risk: r}\n")
    proc = dvqa("report", "traceability", "--junit", str(junit), "--requirements", str(requirements))
    assert proc.returncode == 0 and proc.stdout.startswith("verified   R-1")


def test_bad_inputs_are_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "junk.xml").write_text("not xml <")
    (tmp_path / "empty.xml").write_text("<testsuites/>")
    (tmp_path / "bad.yaml").write_text("requirements: 3\n")
    cases = [(["--junit", str(tmp_path / "missing.xml")], "no such file"),
             (["--junit", str(tmp_path / "junk.xml")], "not JUnit XML"),
             (["--junit", str(tmp_path / "empty.xml")], "holds no test cases"),
             (["--junit", str(tmp_path / "empty.xml"), "--requirements", str(tmp_path / "bad.yaml")],
              "not a requirements file")]
    for args, said in cases:
        proc = dvqa("report", "traceability", *args)
        assert proc.returncode == 3 and said in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_failed_requirement_is_marked_in_colour_and_in_words(tmp_path: Path) -> None:
    """Found by a new user: "failed" looked like every other status in the HTML matrix. A failed row
    carries the class that colours it and the word itself, so it reads in grey print as well."""
    import re

    junit = tmp_path / "run.xml"
    junit.write_text('<testsuites><testsuite>'
                     '<testcase classname="t" name="a"><properties><property name="requirement" value="R-1"/>'
                     '</properties></testcase>'
                     '<testcase classname="t" name="b"><properties><property name="requirement" value="R-2"/>'
                     '</properties><failure message="no"/></testcase></testsuite></testsuites>')
    requirements = tmp_path / "requirements.yaml"
    requirements.write_text("requirements:\n  - {id: R-1, title: one, text: t, risk: r}\n"
                            "  - {id: R-2, title: two, text: t, risk: r}\n  - {id: R-3, title: three, text: t, risk: r}\n")
    page = tmp_path / "matrix.html"
    assert dvqa("report", "traceability", "--junit", str(junit), "--requirements", str(requirements),
                "-o", str(page)).returncode == 1
    html = page.read_text()
    rows = {id_: status for status, id_ in re.findall(r'<tr class="(\w+)"><td class="nowrap">(R-\d)</td>', html)}
    assert rows == {"R-1": "verified", "R-2": "failed", "R-3": "unverified"}, rows
    failed_row = re.search(r'<tr class="failed"><td class="nowrap">R-2</td>.*?</tr>', html, re.S).group(0)
    assert '<td class="status nowrap">failed</td>' in failed_row
    assert re.search(r'<h2 id="section-3" class="failed">3 R-2: two</h2>', html)
    test_row = re.search(r'<tr class="failed"><td>t::b</td><td class="status">failed</td></tr>', html)
    assert test_row and "tr.failed > td" in html  # the style that colours them is in the page
