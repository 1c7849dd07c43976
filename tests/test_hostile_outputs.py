"""Issue 27, outputs and evidence: two roles of one command that are one file are refused before any
work (a report named like the audit log used to replace the whole chain), a passthrough conversion
in an evidence bundle, an evidence build that cannot read an input, is killed or fills the disk,
`evidence verify` on a failed build or a planted manifest, and WeasyPrint fetching nothing.

Every test runs the real command line on the reference clips; none mocks a part that runs here.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pytest

from dvqa.report import traceability
from helpers import CLIPS, PEM, SmallFilesystem, as_nobody, certificate, dvqa, pem_key, run, write_pki

PASSTHROUGH = ("h264_cfr_high.mkv", "h264_cb42.mkv")  # H.264 streams a DICOM H.264 syntax carries unchanged


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_sentence(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("dvqa: warning:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """An audit log of three real conversions (copied by each test that puts it at risk)."""
    folder = tmp_path_factory.mktemp("chain")
    for n in range(3):
        proc = dvqa("convert", str(CLIPS / "h264_cb42.mkv"), "-o", str(folder / f"v{n}.dcm"), "--no-quality",
                    "--audit", str(folder / "audit.json"))
        assert proc.returncode == 0, proc.stderr
    return folder / "audit.json"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    return write_pki(tmp_path_factory.mktemp("pki"), lambda ca_key, key: {
        "cert": certificate("signer", key, "dvqa test CA", ca_key).public_bytes(PEM), "key": pem_key(key)})


def _records(log: Path) -> int:
    proc = dvqa("audit", "verify", str(log), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["records"]


# --- item 1: two roles, one file ---------------------------------------------------------------------

def _alias(kind: str, target: Path, tmp_path: Path) -> Path:
    """Another name of `target`: itself, through `..`, through a symlinked folder, or a hard link."""
    if kind == "same":
        return target
    if kind == "dotdot":
        (tmp_path / "sub").mkdir()
        return tmp_path / "sub" / ".." / target.name
    if kind == "symlinked-folder":
        (tmp_path / "linked").symlink_to(target.parent)
        return tmp_path / "linked" / target.name
    os.link(target, tmp_path / "hard.json")
    return tmp_path / "hard.json"


@pytest.mark.requirement("DVQA-AUD-002", "DVQA-OUT-001")
@pytest.mark.parametrize("kind", ["same", "dotdot", "symlinked-folder", "hardlink"])
def test_a_report_named_like_the_audit_log_is_refused_and_the_chain_survives(chain, tmp_path: Path,
                                                                             kind: str) -> None:
    log = tmp_path / "audit.json"
    shutil.copy(chain, log)
    before = log.read_bytes()
    report = _alias(kind, log, tmp_path)
    proc = dvqa("convert", str(CLIPS / "h264_cb42.mkv"), "-o", str(tmp_path / "new.dcm"), "--audit", str(log),
                "--report", str(report))
    assert proc.returncode == 2, proc.stderr
    sentence = _one_sentence(proc)
    assert "--report" in sentence and "--audit" in sentence and "same file" in sentence
    assert log.read_bytes() == before  # not replaced, and nothing appended: the log was one of the two
    assert not (tmp_path / "new.dcm").exists()
    assert _records(log) == 3


@pytest.mark.requirement("DVQA-AUD-002", "DVQA-OUT-001")
def test_an_output_named_like_the_audit_log_is_refused_with_nothing_appended(chain, tmp_path: Path) -> None:
    log = tmp_path / "audit.json"
    shutil.copy(chain, log)
    before = log.read_bytes()
    proc = dvqa("convert", str(CLIPS / "h264_cb42.mkv"), "-o", str(log), "--force", "--audit", str(log))
    assert proc.returncode == 2 and "-o and --audit are the same file" in _one_sentence(proc)
    assert log.read_bytes() == before and _records(log) == 3


@pytest.mark.requirement("DVQA-AUD-001", "DVQA-OUT-001")
def test_output_and_report_one_file_is_refused_and_the_attempt_recorded(chain, tmp_path: Path) -> None:
    log = tmp_path / "audit.json"
    shutil.copy(chain, log)
    out = tmp_path / "out.json"
    proc = dvqa("convert", str(CLIPS / "h264_cb42.mkv"), "-o", str(out), "--report", str(out), "--audit", str(log))
    assert proc.returncode == 2, proc.stderr
    assert "-o and --report are the same file" in _one_sentence(proc)
    assert not out.exists() and proc.stdout == ""  # no DICOM printed as written, no report left at X
    assert _records(log) == 4  # the refused attempt is recorded: the log was not one of the two
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["outcome"] == "failure" and last["exit_code"] == 2


@pytest.mark.requirement("DVQA-OUT-001")
@pytest.mark.parametrize("how", [["--force"], ["--follow", "--idle", "1", "--force"]])
def test_an_output_or_audit_log_naming_the_source_is_refused(tmp_path: Path, how: list[str]) -> None:
    source = tmp_path / "in.mkv"
    shutil.copy(CLIPS / "h264_cb42.mkv", source)
    digest = _sha(source)
    proc = dvqa("convert", str(source), "-o", str(tmp_path / "." / "in.mkv"), *how)
    assert proc.returncode == 2 and "-o and SOURCE are the same file" in _one_sentence(proc)
    proc = dvqa("convert", str(source), "-o", str(tmp_path / "out.dcm"), "--audit", str(source), *how)
    assert proc.returncode == 2 and "--audit and SOURCE are the same file" in _one_sentence(proc)
    assert _sha(source) == digest and not (tmp_path / "out.dcm").exists()


@pytest.mark.requirement("DVQA-OUT-001")
def test_quality_refuses_a_report_named_like_its_input(tmp_path: Path) -> None:
    reference = tmp_path / "ref.json"  # a name a report can have
    shutil.copy(CLIPS / "h264_cb42.mkv", reference)
    digest = _sha(reference)
    proc = dvqa("quality", str(reference), str(CLIPS / "h264_cb42.mkv"), "--report", str(reference))
    assert proc.returncode == 2 and "--report and REFERENCE are the same file" in _one_sentence(proc)
    assert _sha(reference) == digest


@pytest.mark.requirement("DVQA-OUT-001")
def test_sign_refuses_an_output_or_audit_log_that_is_the_key_or_the_file(pki, chain, tmp_path: Path) -> None:
    file = tmp_path / "v.dcm"
    shutil.copy(chain.parent / "v0.dcm", file)
    key = tmp_path / "key.pem"
    shutil.copy(pki["key"], key)
    digests = {p: _sha(p) for p in (file, key)}
    base = ["sign", str(file), "--key", str(key), "--cert", str(pki["cert"])]
    proc = dvqa(*base, "-o", str(key))
    assert proc.returncode == 2 and "-o and --key are the same file" in _one_sentence(proc)
    proc = dvqa(*base, "--audit", str(file))
    assert proc.returncode == 2 and "FILE and --audit are the same file" in _one_sentence(proc)
    assert {p: _sha(p) for p in digests} == digests
    # signing in place (the default, or -o naming FILE itself) is still what sign does
    assert dvqa(*base, "-o", str(tmp_path / "." / "v.dcm")).returncode == 0


@pytest.mark.requirement("DVQA-OUT-001")
def test_reports_refuse_two_outputs_or_an_output_and_an_input_that_are_one_file(tmp_path: Path) -> None:
    proc = dvqa("report", "licenses", "-o", str(tmp_path / "r.json"), "--sbom", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and "-o and --sbom are the same file" in _one_sentence(proc)
    assert not (tmp_path / "r.json").exists()
    junit = tmp_path / "results.md"
    junit.write_text("<testsuites/>")
    proc = dvqa("report", "traceability", "--junit", str(junit), "-o", str(junit))
    assert proc.returncode == 2 and "-o and --junit are the same file" in _one_sentence(proc)
    assert junit.read_text() == "<testsuites/>"


@pytest.mark.requirement("DVQA-AUD-002")
def test_audit_export_refuses_to_replace_the_log_it_reads(chain, tmp_path: Path) -> None:
    log = tmp_path / "record-000002.xml"
    shutil.copy(chain, log)
    proc = dvqa("audit", "export", str(log), "-o", str(tmp_path))
    assert proc.returncode == 2 and "would replace the audit log" in _one_sentence(proc)
    assert log.read_bytes() == chain.read_bytes() and _records(log) == 3


@pytest.mark.requirement("DVQA-OUT-001")
def test_pacs_store_refuses_an_audit_log_or_fallback_copy_that_is_a_file_sent(chain, tmp_path: Path) -> None:
    file = tmp_path / "v.dcm"
    shutil.copy(chain.parent / "v0.dcm", file)
    digest = _sha(file)
    proc = dvqa("pacs", "store", str(file), "--port", "9", "--audit", str(file))
    assert proc.returncode == 2 and "--audit and FILES are the same file" in _one_sentence(proc)
    assert _sha(file) == digest
    (tmp_path / "b").mkdir()
    other = tmp_path / "b" / "v.dcm"
    shutil.copy(file, other)
    proc = dvqa("pacs", "store", str(file), str(other), "--port", "9", "--fallback", "mpeg2-mp-ml",
                "--fallback-dir", str(tmp_path / "copies"))
    assert proc.returncode == 2 and "same file" in _one_sentence(proc)


# --- item 6 and the evidence bundle -------------------------------------------------------------------

def _junit(path: Path) -> Path:
    ids = [r.id for r in traceability.load_requirements(traceability.default_requirements())]
    cases = "".join(f'<testcase classname="tests.x" name="t{n}"><properties><property name="requirement" '
                    f'value="{i}"/></properties></testcase>' for n, i in enumerate(ids))
    path.write_text(f"<testsuites><testsuite>{cases}</testsuite></testsuites>")
    return path


def _steps(out: Path) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads((out / "index.json").read_text())["steps"]}


@pytest.fixture(scope="module")
def real_dicom(tmp_path_factory) -> Path:
    """A real DICOM video (a passthrough conversion), collected by the builds below."""
    out = tmp_path_factory.mktemp("real") / "v.dcm"
    proc = dvqa("convert", str(CLIPS / "h264_cb42.mkv"), "-o", str(out), "--no-quality")
    assert proc.returncode == 0, proc.stderr
    out.chmod(0o644)
    return out


def _fake_dicom(path: Path, size: int = 0) -> Path:
    """A file with the DICM marker (collected as DICOM, then failed by validation)."""
    path.write_bytes(bytes(128) + b"DICM" + bytes(size))
    return path


@pytest.mark.requirement("DVQA-EVI-001", "DVQA-EVI-002")
def test_an_evidence_bundle_of_passthrough_conversions_builds_and_verifies(pki, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    proc = dvqa("evidence", "build", str(out), *(a for clip in PASSTHROUGH for a in ("--inputs", str(CLIPS / clip))),
                "--junit", str(_junit(tmp_path / "results.xml")), "--key", str(pki["key"]), "--cert", str(pki["cert"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = _steps(out)
    for clip in PASSTHROUGH:
        step = steps[f"convert {clip}"]
        assert step["status"] == "passed" and "bit-exact (every frame identical" in step["summary"], step
        record = json.loads((out / "conversions" / f"{Path(clip).stem}.json").read_text())
        assert record["passthrough"] is True
    verified = dvqa("evidence", "verify", str(out), "--trust", str(pki["ca"]))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "all 9 steps passed" in verified.stdout


@pytest.mark.requirement("DVQA-EVI-002")
def test_evidence_verify_fails_a_bundle_whose_build_failed_a_step(pki, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _fake_dicom(inputs / "broken.dcm")
    out = tmp_path / "bundle"
    built = dvqa("evidence", "build", str(out), "--inputs", str(inputs), "--key", str(pki["key"]),
                 "--cert", str(pki["cert"]))
    assert built.returncode == 1, built.stdout + built.stderr  # validation, signatures and traceability fail
    proc = dvqa("evidence", "verify", str(out), "--trust", str(pki["ca"]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = r"the build failed 3 of \d+ steps \(validate, signatures, traceability\)"
    assert re.search(failed, proc.stdout), proc.stdout
    proc = dvqa("evidence", "verify", str(out), "--trust", str(pki["ca"]), "--format", "json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["verdict"].startswith("3 of ")


@pytest.fixture(scope="module")
def passed_bundle(pki, tmp_path_factory) -> Path:
    """A signed bundle whose build passed every step (one collected DICOM file, no conversion)."""
    folder = tmp_path_factory.mktemp("passed")
    (folder / "inputs").mkdir()
    proc = dvqa("convert", str(CLIPS / "h264_cb42.mkv"), "-o", str(folder / "inputs" / "v.dcm"), "--no-quality")
    assert proc.returncode == 0, proc.stderr
    out = folder / "bundle"
    proc = dvqa("evidence", "build", str(out), "--inputs", str(folder / "inputs"), "--junit",
                str(_junit(folder / "results.xml")), "--key", str(pki["key"]), "--cert", str(pki["cert"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.requirement("DVQA-EVI-002")
@pytest.mark.parametrize("kind", ["link", "fifo"])
@pytest.mark.parametrize("name", ["manifest.json", "manifest.sig", "manifest-signer.crt"])
def test_evidence_verify_refuses_a_manifest_that_is_a_fifo_or_a_link(passed_bundle, pki, tmp_path: Path, name: str,
                                                                     kind: str) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(passed_bundle, bundle)
    assert dvqa("evidence", "verify", str(bundle), "--trust", str(pki["ca"])).returncode == 0
    if kind == "link":
        outside = tmp_path / name
        shutil.move(bundle / name, outside)
        (bundle / name).symlink_to(outside)  # the same bytes, but not the bundle's own file
    else:
        (bundle / name).unlink()
        os.mkfifo(bundle / name)
    try:
        proc = subprocess.run([sys.executable, "-m", "dvqa", "evidence", "verify", str(bundle), "--trust",
                               str(pki["ca"])], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"evidence verify waited on a FIFO at {name}")
    if name == "manifest.json":
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert ("FIFO" if kind == "fifo" else "symbolic link") in _one_sentence(proc)
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"{name}: not a regular file" in proc.stdout


@pytest.mark.requirement("DVQA-EVI-001")
def test_an_input_the_build_cannot_read_fails_the_build(real_dicom, tmp_path: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="dvqa-unreadable-"))  # below /tmp: user nobody can reach it
    try:
        shared.chmod(0o777)
        inputs = shared / "inputs"
        (inputs / "locked").mkdir(parents=True)
        for name in ("locked/hidden.dcm", "secret.dcm", "readable.dcm"):
            shutil.copy(real_dicom, inputs / name)
        (inputs / "secret.dcm").chmod(0o000)
        for folder in (inputs, inputs / "locked"):
            folder.chmod(0o755)
        (inputs / "locked").chmod(0o000)
        proc = run(*as_nobody(sys.executable, "-m", "dvqa", "evidence", "build", str(shared / "bundle"),
                              "--inputs", str(inputs), "--format", "json"))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        steps = {s["name"]: s for s in json.loads(proc.stdout)["steps"]}
        assert steps["inputs not read"]["status"] == "failed", steps
        said = steps["inputs not read"]["summary"]
        assert str(inputs / "locked") in said and str(inputs / "secret.dcm") in said
        assert "secret.dcm" not in steps.get("inputs not used", {}).get("summary", "")
        assert steps["collect readable.dcm"]["status"] == "passed"
    finally:
        (shared / "inputs" / "locked").chmod(0o755)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.requirement("DVQA-OUT-001")
def test_the_next_build_removes_what_a_killed_build_left(real_dicom, tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    shutil.copy(CLIPS / "h264_cfr_high.mkv", tmp_path / "inputs" / "a.mkv")
    child = subprocess.Popen([sys.executable, "-m", "dvqa", "evidence", "build", str(tmp_path / "first"),
                              "--inputs", str(tmp_path / "inputs")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".first.dvqa-*")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = list(tmp_path.glob(".first.dvqa-*"))
    assert left, "the build ended before it could be killed"
    proc = dvqa("evidence", "build", str(tmp_path / "second"), "--inputs", str(real_dicom))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # traceability: no --junit
    assert not any(p.exists() for p in left), left
    assert f"removed {left[0]}" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "second"]


@pytest.fixture()
def small_fs(tmp_path: Path):
    mounts: list[SmallFilesystem] = []

    def make(kib: int) -> SmallFilesystem:
        mounts.append(SmallFilesystem(tmp_path / f"fs{len(mounts)}", kib))
        return mounts[-1]

    yield make
    for mount in mounts:
        mount.unmount()


@pytest.mark.requirement("DVQA-OUT-001", "DVQA-OUT-002")
def test_a_full_disk_during_an_evidence_build_is_exit_4_and_no_bundle(small_fs, tmp_path: Path) -> None:
    fs = small_fs(3000)  # room for the reports, not for the 4 MiB file collected first
    big = _fake_dicom(tmp_path / "big.dcm", 4 * 1024 * 1024)
    proc = dvqa("evidence", "build", str(fs.path / "bundle"), "--inputs", str(big))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "no space left" in _one_sentence(proc) and str(fs.path) in proc.stderr
    assert list(fs.path.iterdir()) == []


@pytest.mark.requirement("DVQA-OUT-001", "DVQA-EVI-001")
def test_a_passthrough_build_on_a_full_disk_ends_and_says_so(small_fs, tmp_path: Path) -> None:
    """A conversion cut by a full disk inside the build: exit 4, and the process ends (freeing the cut
    conversion's FFmpeg threads once deadlocked on PyAV's log callback)."""
    fs = small_fs(200)
    proc = dvqa("evidence", "build", str(fs.path / "bundle"), "--inputs", str(CLIPS / "h264_cb42.mkv"))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "no space left" in _one_sentence(proc)
    assert list(fs.path.iterdir()) == []


# --- WeasyPrint fetches nothing ----------------------------------------------------------------------

def _pdf_text(pdf: bytes) -> bytes:
    """The PDF with every Flate stream inflated, so embedded files and text can be searched."""
    parts = [pdf]
    for found in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            parts.append(zlib.decompress(found.group(1)))
        except zlib.error:
            pass
    return b"\n".join(parts)


@pytest.mark.requirement("DVQA-SEC-001")
def test_a_pdf_embeds_no_local_file_and_makes_no_request(tmp_path: Path) -> None:
    from dvqa.report import documents

    secret = tmp_path / "secret.css"
    secret.write_text('body::after { content: "DVQA-SECRET-MARK" }')
    secret.chmod(stat.S_IRUSR | stat.S_IWUSR)
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        page = (f'<html><head><link rel="stylesheet" href="{secret.as_uri()}">'
                f'<link rel="attachment" href="{secret.as_uri()}"><link rel="attachment" href="file:///etc/passwd">'
                f'<link rel="stylesheet" href="{url}/style.css"></head><body><p>report</p>'
                f'<img src="file:///etc/passwd"><img src="{url}/x.png"></body></html>')
        pdf = documents.pdf(page)
    finally:
        server.shutdown()
    assert pdf.startswith(b"%PDF")
    text = _pdf_text(pdf)
    assert b"DVQA-SECRET-MARK" not in text and b"root:" not in text
    assert requests == []
