"""`dvqa evidence build` and `verify`: a real bundle from a real recording and a DICOM file, its
manifest signature checked by OpenSSL as well, and every kind of tampering detected."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from dvqa.report import traceability
from helpers import CLIPS, PEM, RECORDED, certificate, dvqa, pem_key, run, tool, write_pki


def _junit_passing_every_requirement(path: Path) -> Path:
    """A JUnit file in which one passing test names each requirement: input for the assembly, which
    is what this file tests (test_traceability.py reads real runs)."""
    ids = [r.id for r in traceability.load_requirements(traceability.default_requirements())]
    cases = "".join(f'<testcase classname="tests.x" name="t{n}"><properties><property name="requirement" '
                    f'value="{i}"/></properties></testcase>' for n, i in enumerate(ids))
    path.write_text(f"<testsuites><testsuite>{cases}</testsuite></testsuites>")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("evidence")
    pki = write_pki(folder, lambda ca_key, key: {
        "signer_cert": certificate("evidence signer", key, "dvqa test CA", ca_key).public_bytes(PEM),
        "signer_key": pem_key(key)})
    inputs = folder / "inputs"
    inputs.mkdir()
    shutil.copy(RECORDED / "vp8_opus.webm", inputs / "recording.webm")
    assert dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(inputs / "earlier.dcm")).returncode == 0
    (inputs / "notes.txt").write_text("not evidence")
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    out = folder / "bundle"
    arguments = ["--inputs", str(inputs), "--junit", str(_junit_passing_every_requirement(folder / "results.xml")),
                 "--key", str(pki["signer_key"]), "--cert", str(pki["signer_cert"]), "--trust", str(pki["ca"]),
                 "--audit-key-env", "DVQA_AUDIT_KEY", "--profile", "endoscopy"]
    proc = build(out, arguments)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before  # inputs never modified
    return {"out": out, "ca": pki["ca"], "folder": folder, "arguments": arguments}


def build(out: Path, arguments: list[str]) -> subprocess.CompletedProcess:
    return run("env", "DVQA_AUDIT_KEY=evidence-key-of-at-least-32-bytes",
               *dvqa_cmd("evidence", "build", str(out), *arguments))


def dvqa_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvqa", *args]


@pytest.mark.requirement("DVQA-EVI-001")
def test_the_bundle_holds_every_step_and_a_signed_manifest(built) -> None:
    out = built["out"]
    index = json.loads((out / "index.json").read_text())
    names = [s["name"] for s in index["steps"]]
    assert names == ["convert recording.webm", "collect earlier.dcm", "validate", "signatures", "audit trail",
                     "conformance statement", "licenses and SBOM", "traceability", "environment", "inputs not used"]
    assert all(s["status"] == "passed" for s in index["steps"]) and index["verdict"].startswith("all 10 steps passed")
    assert "notes.txt" in index["steps"][-1]["summary"]
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk - listed == {"manifest.json", "manifest.sig", "manifest-signer.crt"}
    for step in index["steps"]:
        assert set(step["files"]) <= listed, step
    for expected in ("dicom/recording.dcm", "dicom/earlier.dcm", "conversions/recording.html", "validation/validation.xml",
                     "validation/validation.sarif", "audit/audit.jsonl", "reports/sbom.cdx.json",
                     "reports/conformance-statement.pdf", "reports/traceability.pdf", "index.pdf", "environment.json"):
        assert expected in listed, expected
    assert (out / "index.pdf").read_bytes().startswith(b"%PDF")
    statement = json.loads((out / "reports" / "conformance-statement.json").read_text())
    assert {"3.5", "3.6"} <= {s["number"] for s in statement["sections"]}  # dvqa serve's interfaces too
    # the converted file was signed, and the audit trail of the conversion is keyed and intact
    assert dvqa("verify", str(out / "dicom" / "recording.dcm"), "--trust", str(built["ca"])).returncode == 0
    for key, code in (("evidence-key-of-at-least-32-bytes", 0), ("another-key-of-at-least-32-bytes", 1)):
        audit = run("env", f"DVQA_AUDIT_KEY={key}", *dvqa_cmd("audit", "verify", str(out / "audit" / "audit.jsonl"),
                                                              "--audit-key-env", "DVQA_AUDIT_KEY"))
        assert audit.returncode == code, audit.stdout + audit.stderr
    assert not [p for p in built["folder"].iterdir() if p.name.startswith(".dvqa")]  # no build leftovers


@pytest.mark.requirement("DVQA-EVI-002")
def test_verify_passes_and_openssl_agrees(built) -> None:
    out = built["out"]
    proc = dvqa("evidence", "verify", str(out), "--trust", str(built["ca"]))
    assert proc.returncode == 0, proc.stdout
    assert "every hash and the signature hold" in proc.stdout and "trusted: issued by CN=dvqa test CA" in proc.stdout
    openssl = tool("openssl")
    public = subprocess.run([openssl, "x509", "-in", str(out / "manifest-signer.crt"), "-pubkey", "-noout"],
                            capture_output=True, check=True).stdout
    (built["folder"] / "signer.pub").write_bytes(public)
    checked = run(openssl, "dgst", "-sha256", "-verify", str(built["folder"] / "signer.pub"), "-signature",
                  str(out / "manifest.sig"), str(out / "manifest.json"))
    assert checked.returncode == 0 and "Verified OK" in checked.stdout


@pytest.mark.requirement("DVQA-EVI-002")
@pytest.mark.parametrize("tamper", ["byte changed", "file added", "file removed", "manifest edited",
                                    "signature replaced", "untrusted signer"])
def test_every_kind_of_tampering_is_detected(built, tamper: str, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(built["out"], copy)
    trust = str(built["ca"])
    if tamper == "byte changed":
        target = copy / "dicom" / "recording.dcm"
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        said = "dicom/recording.dcm: changed"
    elif tamper == "file added":
        (copy / "reports" / "extra.pdf").write_bytes(b"%PDF-1.4")
        said = "reports/extra.pdf: added after the manifest was written"
    elif tamper == "file removed":
        (copy / "validation" / "validation.sarif").unlink()
        said = "validation/validation.sarif: removed"
    elif tamper == "manifest edited":  # a file changed and its hash rewritten to match: the signature catches it
        target = copy / "environment.json"
        target.write_text(target.read_text().replace('"dvqa"', '"dvqa-edited"'))
        manifest = json.loads((copy / "manifest.json").read_text())
        from dvqa.core.digest import sha256_file

        for entry in manifest["files"]:
            if entry["path"] == "environment.json":
                entry["sha256"], entry["bytes"] = sha256_file(target), target.stat().st_size
        (copy / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        said = "manifest.json: its signature does not verify"
    elif tamper == "signature replaced":
        (copy / "manifest.sig").write_bytes(bytes(256))
        said = "manifest.json: its signature does not verify"
    else:  # a bundle re-signed by someone else verifies only without --trust
        other = write_pki(tmp_path, lambda ca_key, key: {
            "cert": certificate("someone else", key, "dvqa test CA", ca_key).public_bytes(PEM), "key": pem_key(key)})
        trust = str(other["ca"])  # a different CA with the same name
        said = "untrusted"
    proc = dvqa("evidence", "verify", str(copy), "--trust", trust)
    assert proc.returncode == 1 and said in proc.stdout, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.endswith(" 1 problem") or last.endswith(" problems")  # a count that agrees with its noun


@pytest.mark.requirement("DVQA-EVI-001", "DVQA-OUT-001")
def test_a_failed_step_is_recorded_not_left_out(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "broken.webm").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(500))  # an EBML header and nothing else
    out = tmp_path / "bundle"
    proc = dvqa("evidence", "build", str(out), "--inputs", str(inputs))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    index = json.loads((out / "index.json").read_text())
    status = {s["name"]: (s["status"], s["summary"]) for s in index["steps"]}
    assert status["convert broken.webm"][0] == "failed" and "broken.webm" in status["convert broken.webm"][1]
    assert status["validate"][0] == "failed" and status["traceability"] == (
        "failed", "no test results given: run the tests with --junitxml and pass the file with --junit")
    assert "failed" in (out / "index.html").read_text()
    unsigned = dvqa("evidence", "verify", str(out))
    assert unsigned.returncode == 1 and "not signed" in unsigned.stdout
    again = dvqa("evidence", "build", str(out), "--inputs", str(inputs))  # never over an existing folder
    assert again.returncode == 2 and "already exists" in again.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dvqa")]
    assert json.loads((out / "environment.json").read_text())["dvqa"]


@pytest.mark.requirement("DVQA-EVI-003")
def test_a_rebuild_gives_the_same_manifest_but_for_times_and_signatures(built) -> None:
    again = built["folder"] / "bundle-again"
    assert build(again, built["arguments"]).returncode == 0
    first, second = (json.loads((b / "manifest.json").read_text()) for b in (built["out"], again))
    entries = [{f["path"]: f for f in m["files"]} for m in (first, second)]
    assert entries[0].keys() == entries[1].keys()
    differ_in_bytes = {p for p in entries[0] if entries[0][p]["sha256"] != entries[1][p]["sha256"]}
    assert "dicom/recording.dcm" in differ_in_bytes and "audit/audit.jsonl" in differ_in_bytes  # times inside
    assert "reports/licenses.pdf" not in differ_in_bytes and "environment.json" not in differ_in_bytes
    for path, entry in entries[0].items():
        if "volatile" in entry:
            assert path == "index.pdf" and entries[1][path]["volatile"]
        else:
            assert entry["content_sha256"] == entries[1][path]["content_sha256"], path
    # the same UIDs: derived from the input, the versions and the options
    a, b = (pydicom.dcmread(x / "dicom" / "recording.dcm") for x in (built["out"], again))
    assert (a.SOPInstanceUID, a.StudyInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.StudyInstanceUID,
                                                                         b.SeriesInstanceUID)
    assert a.SOPInstanceUID.startswith("2.25.") and a.PixelData == b.PixelData


def test_the_content_digest_ignores_times_and_signatures_but_not_content(built, tmp_path: Path) -> None:
    from dvqa.evidence import reproducible

    source = built["out"] / "dicom" / "recording.dcm"
    digest = reproducible._dicom_digest(source)
    ds = pydicom.dcmread(source)
    ds.ContentTime, ds.InstanceCreationDate = "235959", "19990101"
    del ds[0xFFFAFFFA]  # the signature
    ds.save_as(tmp_path / "times.dcm", enforce_file_format=True)
    assert reproducible._dicom_digest(tmp_path / "times.dcm") == digest
    ds.PatientID = "X"
    ds.save_as(tmp_path / "content.dcm", enforce_file_format=True)
    assert reproducible._dicom_digest(tmp_path / "content.dcm") != digest
    ds = pydicom.dcmread(source)
    stream = bytearray(ds.PixelData)
    stream[len(stream) // 2] ^= 0x01  # one bit of the video
    ds.PixelData = bytes(stream)
    ds.save_as(tmp_path / "pixels.dcm", enforce_file_format=True)
    assert reproducible._dicom_digest(tmp_path / "pixels.dcm") != digest


def _index_page(files_per_step: int = 3) -> tuple[str, list[list[str]]]:
    """The index template filled as a build fills it, with the long file names a real recording has."""
    from dvqa.evidence.bundle import Step
    from dvqa.report import documents

    name = "recording_with_a_long_name-2026-12-04"
    steps = [Step(f"convert {name}-{n}.webm", "passed", "h264-high-4.1, 62 frames, PSNR mean 49.68 dB",
                  [f"{folder}/{name}-{n}.{suffix}" for folder, suffix in
                   (("dicom", "dcm"), ("conversions", "json"), ("conversions", "html"))][:files_per_step])
             for n in range(1, 12)]
    steps.append(Step("audit trail", "failed", "1 records, chain intact (no HMAC key: --audit-key-env)"))
    page = documents.html("evidence.html", steps=steps, verdict="1 of 12 steps failed: audit trail", ok=False,
                          version="0", built_in="/tmp/.bundle.dvqa-1-2", created="2026-12-04T00:00:00+00:00",
                          inputs=["inputs"], signer="")
    return page, [s.files for s in steps]


def test_the_index_pdf_breaks_file_names_at_separators_and_numbers_never() -> None:
    """Found by a new user looking at index.pdf: "1 0" for step 10, and file names broken mid-word
    ("...name-2 | 026-12-04.dcm"). Checked on WeasyPrint's own layout of the page, line by line."""
    from pages import lines

    page, files = _index_page()
    laid_out = lines(page)
    numbers = [line.text for line in laid_out if any(a.startswith("td number") for a in line.inside)]
    assert numbers == [str(n) for n in range(1, 13)]  # one line each: never "1" above "0"
    names = {f for step in files for f in step}
    broken, so_far = [], ""
    for line in (line for line in laid_out if any(a.startswith("ul files") for a in line.inside)):
        text = line.text.replace("\u200b", "").replace("\u2022", "").strip()
        so_far += text
        if so_far in names:
            so_far = ""
        elif text and text[-1] not in "/_-.":
            broken.append(text)
    assert broken == [] and so_far == "", broken
    assert any(line.text.replace("\u200b", "").endswith("_") for line in laid_out)  # the names did wrap
    assert '<span class="opt">--audit-key-env)</span>' in page  # an option is never split after its "--"


def test_a_step_that_fails_on_dvqa_s_own_error_says_one_sentence(tmp_path: Path) -> None:
    """An error dvqa did not expect is not shown as the finding ("internal error: TypeError: ..."): the
    finding is one sentence, and the exception is kept in index.json as the step's detail."""
    from dvqa.core.errors import InputError
    from dvqa.evidence.bundle import _finding

    try:
        "frames: " + 62  # a real TypeError, as a bug in a step would raise it
    except TypeError as exc:
        summary, detail = _finding(exc, tmp_path)
    assert not re.search(r"[A-Z]\w*(Error|Exception)\b|\w\(", summary) and summary.count(". ") == 0, summary
    assert summary.endswith("please report it.") and detail.startswith("TypeError: can only concatenate str")
    try:
        open(tmp_path / "dicom" / "gone.dcm", "rb")
    except OSError as exc:
        summary, detail = _finding(exc, tmp_path)
    assert summary.startswith("dicom/gone.dcm: no such file or directory; ") and detail == ""  # the bundle's path
    said = _finding(InputError(f"{tmp_path}/dicom/x.dcm: not a readable DICOM file."), tmp_path)
    assert said == ("dicom/x.dcm: not a readable DICOM file.", "")
