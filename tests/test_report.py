"""`dvqa report licenses`: every claim checked against the binaries themselves."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import av
from elftools.elf.elffile import ELFFile

import pytest

from dvqa.core.digest import sha256_file
from dvqa.report import licenses, native
from dvqa.report.native import FFmpegBuild, NativeLibrary
from helpers import dvqa, require


def _needed(path: str) -> list[str]:
    with open(path, "rb") as handle:
        dynamic = ELFFile(handle).get_section_by_name(".dynamic")
        return [t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"]


@pytest.mark.requirement("DVQA-REP-001")
def test_the_bundled_ffmpeg_is_judged_by_what_it_links() -> None:
    build = native.bundled()
    report = licenses.assess(build)
    files = {lib["file"]: lib for lib in report["libraries"]}
    avcodec = next(lib for lib in report["libraries"] if lib["name"] == "avcodec")
    # what libavcodec needs, read here independently, is what the report lists
    for needed in _needed(avcodec["path"]):
        assert needed in files, needed
    x264 = [f for f in files if f.startswith("libx264")]
    # av 18.1.0's wheel: FFmpeg calls itself LGPL v3, yet libx264 (GPL) is linked - a GPL whole
    assert build.license_string == "LGPL version 3 or later" and x264
    assert any(n.startswith("libx264") for n in _needed(avcodec["path"]))
    assert report["verdict"] == "GPL-3.0-or-later"
    assert any("LGPL version 3 or later" in d and "GPL-3.0-or-later" in d for d in report["disagreements"])
    assert any("without --enable-gpl" in d for d in report["disagreements"])
    item18 = next(c for c in report["checklist"] if c["number"] == 18)
    assert item18["status"] == "not met" and x264[0] in item18["finding"]
    assert files[x264[0]]["license"] == "GPL-2.0-or-later" and files[x264[0]]["loaded"]
    assert files[x264[0]]["sha256"] == sha256_file(Path(files[x264[0]]["path"]))
    assert avcodec["license"] == "LGPL-3.0-or-later" and avcodec["loaded"]
    # the configuration is libavcodec's own answer, as the av package reports it too
    assert build.configuration == av._core.library_meta["libavcodec"]["configuration"]


def test_debians_ffmpeg_is_gpl_and_names_its_gpl_libraries() -> None:
    program = shutil.which("ffmpeg")
    require(program is not None, "ffmpeg not found: apt-get install ffmpeg")
    build = native.external(Path(program))
    report = licenses.assess(build)
    ldd = subprocess.run(["ldd", program], capture_output=True, text=True).stdout
    assert "--enable-gpl" in build.configuration and build.license_string.startswith("GPL version")
    assert report["verdict"].startswith("GPL-")
    gpl = next(c for c in report["checklist"] if c["number"] == 18)["finding"]
    for name in ("libx264", "libx265", "libpostproc"):
        if name in ldd:
            assert name in gpl, name
    assert next(c for c in report["checklist"] if c["number"] == 1)["status"] == "not met"
    assert len(report["libraries"]) == sum(1 for line in ldd.splitlines() if "=>" in line or "ld-linux" in line)


def _synthetic(configuration: str, says: str, names: list[str]) -> FFmpegBuild:
    libraries = [NativeLibrary(n, f"lib{n}.so.1", f"/x/lib{n}.so.1", "1", "", [], True) for n in names]
    return FFmpegBuild("a synthetic build", "test", configuration, says, libraries)


@pytest.mark.requirement("DVQA-REP-001")
def test_a_license_string_that_contradicts_the_linked_libraries_is_flagged() -> None:
    lgpl_but_x264 = licenses.assess(_synthetic("--enable-shared", "LGPL version 2.1 or later",
                                               ["avcodec", "x264", "madeup"]))
    assert lgpl_but_x264["verdict"] == "GPL-2.0-or-later"
    assert any("says of itself 'LGPL version 2.1 or later'" in d for d in lgpl_but_x264["disagreements"])
    assert any("libmadeup.so.1" in d and "not in dvqa's license table" in d for d in lgpl_but_x264["disagreements"])
    clean = licenses.assess(_synthetic("--enable-shared", "LGPL version 2.1 or later", ["avcodec", "vpx", "dav1d"]))
    assert clean["verdict"] == "LGPL-2.1-or-later" and clean["disagreements"] == []
    amr = licenses.assess(_synthetic("--enable-shared", "LGPL version 2.1 or later", ["avcodec", "opencore-amrnb"]))
    assert amr["verdict"] == "LGPL-3.0-or-later"  # Apache-2.0 needs version 3
    nonfree = licenses.assess(_synthetic("--enable-nonfree --enable-gpl", "nonfree and unredistributable",
                                         ["avcodec"]))
    assert nonfree["redistributable"] is False and nonfree["disagreements"] == []


def test_python_packages_carry_their_declared_licenses() -> None:
    packages = {p["name"].lower(): p for p in licenses.python_packages()}
    assert packages["pydicom"]["license"] != "NOASSERTION" and "MIT" in packages["pydicom"]["license"]
    assert packages["av"]["license"] == "BSD-3-Clause"


def test_the_command_writes_json_or_markdown_and_gates_on_gpl(tmp_path: Path) -> None:
    out = tmp_path / "licenses.json"
    proc = dvqa("report", "licenses", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["ffmpeg"]["verdict"] in proc.stdout and record["python_packages"]
    assert dvqa("report", "licenses", "--fail-on", "gpl").returncode == 1  # the bundled build links libx264
    markdown = tmp_path / "licenses.md"
    assert dvqa("report", "licenses", "-o", str(markdown)).returncode == 0
    assert "**Effective license: GPL-3.0-or-later**" in markdown.read_text()
    not_ffmpeg = dvqa("report", "licenses", "--ffmpeg", shutil.which("true") or "/bin/true")
    assert not_ffmpeg.returncode == 3 and "give an ffmpeg binary" in not_ffmpeg.stderr
    wrong = dvqa("report", "licenses", "-o", str(tmp_path / "licenses.txt"))
    assert wrong.returncode == 2 and ".json, .md, .html or .pdf" in wrong.stderr and not (tmp_path / "licenses.txt").exists()
    nowhere = dvqa("report", "licenses", "-o", str(tmp_path / "missing" / "licenses.json"))
    assert nowhere.returncode == 2 and "the output folder does not exist" in nowhere.stderr


@pytest.mark.requirement("DVQA-REP-003")
def test_expect_names_every_difference_from_the_validated_installation(tmp_path: Path) -> None:
    """docs/regulatory/deployment.md: a baseline saved at validation, checked on each installed machine."""
    baseline = tmp_path / "baseline.json"
    assert dvqa("report", "licenses", "-o", str(baseline)).returncode == 0
    same = dvqa("report", "licenses", "--expect", str(baseline), "--format", "json")
    assert same.returncode == 0, same.stderr
    assert "this installation is the one validated" in same.stderr and json.loads(same.stdout)["ffmpeg"]
    record = json.loads(baseline.read_text())
    avcodec = next(lib for lib in record["ffmpeg"]["libraries"] if lib["name"] == "avcodec")
    real_sha = avcodec["sha256"]
    avcodec["sha256"] = "0" * 64  # a rebuilt libavcodec under the same version
    pydicom_entry = next(p for p in record["python_packages"] if p["name"] == "pydicom")
    pydicom_entry["version"] = "2.4.4"
    record["python_packages"] = [p for p in record["python_packages"] if p["name"] != "click"]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(record))
    changed = dvqa("report", "licenses", "--expect", str(edited), "--fail-on", "never")
    assert changed.returncode == 1
    lines = [ln for ln in changed.stderr.splitlines() if ln.startswith("changed")]
    assert len(lines) == 3, changed.stderr
    assert any("library avcodec sha256" in ln and real_sha in ln for ln in lines)
    assert any("package pydicom version: 2.4.4 in the baseline, 3.0.2 here" in ln for ln in lines)
    assert any("package click: not in the baseline" in ln for ln in lines)
    assert "3 differences, this is not the validated installation" in changed.stderr
    for bad, said in (("missing.json", "no such file"), ("bad.json", "not a JSON report")):
        if bad == "bad.json":
            (tmp_path / bad).write_text('{"command": "convert"}')
        proc = dvqa("report", "licenses", "--expect", str(tmp_path / bad))
        assert proc.returncode == 3 and said in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.requirement("DVQA-REP-001")
def test_the_sbom_is_valid_cyclonedx_and_lists_every_bundled_library(tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    sbom = tmp_path / "dvqa.cdx.json"
    assert dvqa("report", "licenses", "--sbom", str(sbom)).returncode == 0
    text = sbom.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    components = {c["bom-ref"]: c for c in json.loads(text)["components"]}
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    for path in libs.iterdir():  # every file the wheel vendors, with its hash
        component = components[f"native:{path.name}"]
        assert component["hashes"][0]["content"] == sha256_file(path)
    x264 = next(c for ref, c in components.items() if ref.startswith("native:libx264"))
    assert x264["licenses"] == [{"expression": "GPL-2.0-or-later"}]
    depends = {d["ref"]: d.get("dependsOn", []) for d in json.loads(text)["dependencies"]}
    assert set(depends["pypi:av"]) == {ref for ref in components if ref.startswith("native:")}


def test_html_and_pdf_say_what_the_json_says_with_nothing_fetched(tmp_path: Path) -> None:
    import re

    from helpers import run, tool

    page, pdf = tmp_path / "licenses.html", tmp_path / "licenses.pdf"
    assert dvqa("report", "licenses", "-o", str(page)).returncode == 0
    assert dvqa("report", "licenses", "-o", str(pdf)).returncode == 0
    record = json.loads(dvqa("report", "licenses", "--format", "json").stdout)
    html = page.read_text()
    assert not re.search(r'(src|href)="(https?:|//)', html)  # self-contained: nothing fetched
    dom = run(tool("chromium"), "--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri())
    assert dom.returncode == 0 and f"Effective license: {record['ffmpeg']['verdict']}" in dom.stdout
    assert dom.stdout.count("<tr>") >= len(record["ffmpeg"]["checklist"]) + len(record["ffmpeg"]["libraries"])
    text = run(tool("pdftotext"), str(pdf), "-").stdout  # reading order
    assert f"Effective license: {record['ffmpeg']['verdict']}" in text
    x264 = next(lib["file"] for lib in record["ffmpeg"]["libraries"] if lib["name"] == "x264")
    flat = re.sub(r"\s+", "", text)  # table cells wrap long names over lines
    assert x264 in flat and "DonotuseanyGPLlibrary" in flat


def test_the_license_pages_show_every_digest_whole_and_nothing_spills(tmp_path: Path) -> None:
    """Found by a new user: the configure line ran out of the checklist table in the PDF, and each
    library's SHA-256 was cut to 16 digits. Checked on the HTML and on WeasyPrint's layout of it."""
    import re

    from dvqa.report import documents, markdown
    from pages import spilled

    record = licenses.report(native.bundled())
    page = documents.licenses_html(record)
    digests = [lib["sha256"] for lib in record["ffmpeg"]["libraries"] if lib["sha256"]]  # the system's: none
    assert len(digests) > 20 and all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests)
    shown = page.replace("<wbr>", "")
    assert all(f'<code class="sha256">{d}</code>' in shown for d in digests)
    assert all(f"`{d}`" in markdown.licenses(record) for d in digests)
    configuration = record["ffmpeg"]["configuration"]
    block = re.search(r'<p class="configure" id="configuration"><code>(.*?)</code></p>', page, re.S).group(1)
    assert block.count('<span class="opt">') == len(configuration.split()) > 10
    assert configuration not in page.replace("&#39;", "'")  # once, as options, not again as a checklist finding
    assert spilled(page) == []  # no line runs past its table cell
    (tmp_path / "l.pdf").write_bytes(documents.pdf(page))  # as `report licenses -o l.pdf` writes it
    text = re.sub(r"\s+", "", subprocess.run(["pdftotext", str(tmp_path / "l.pdf"), "-"], capture_output=True,
                                             text=True, check=True).stdout)
    # all 64 digits of each in the PDF too, 16 to a line (pdftotext reads a table's lines across its columns)
    assert all(d[i:i + 16] in text for d in digests for i in range(0, 64, 16))
