"""Security: patient data on disk and on the wire, files an attacker plants, and what held up in the review.

Each defect of the security issue is reproduced here first; the things that held up (escaping in
reports, loopback defaults, certificate and host-name checks, secrets kept out of outputs) are pinned
so they stay that way.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import ssl
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from dvqa.core.errors import EnvironmentProblem
from dvqa.pacs import network as pacs
from dvqa.pacs import simulate
from dvqa.cli.main import loaded
from dvqa.dicom.dicomread import MAX_DEPTH
from dvqa.dicom.iod import VideoIOD
from helpers import CLIPS, PEM, certificate, pem_key, write_pki

ROOT = Path(__file__).resolve().parent.parent
VIDEO_ENDOSCOPIC = VideoIOD.ENDOSCOPIC.sop_class
H264 = "1.2.840.10008.1.2.4.102"
SECRET = "s3cret-passphrase-42"
AUDIT_KEY = "audit-hmac-key-99-of-32-bytes-or-more"  # shorter audit keys are refused


def dvqa_022(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """dvqa under the common umask 022, as most users run it."""
    return subprocess.run([sys.executable, "-m", "dvqa", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.umask(0o022), env={**os.environ, **(env or {})})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    def make(ca_key, key) -> dict[str, bytes]:
        return {"cert": certificate("signer", key, "dvqa test CA", ca_key).public_bytes(PEM),
                "key_enc": pem_key(key, SECRET),
                "server": certificate("pacs", key, "dvqa test CA", ca_key, ip="127.0.0.2").public_bytes(PEM),
                "server_key": pem_key(key)}
    return write_pki(tmp_path_factory.mktemp("pki"), make)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video") / "video.dcm"
    proc = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out), "--no-quality",
                    "--patient-name", "Doe^Jane", "--patient-id", "MRN-4242")
    assert proc.returncode == 0, proc.stderr
    return out


# --- 1. planted symlinks -------------------------------------------------------------------------------

@pytest.mark.requirement("DVQA-SEC-001")
def test_sign_never_writes_through_a_planted_link(video, pki, tmp_path: Path) -> None:
    attacker = tmp_path / "attacker-owned"
    attacker.write_bytes(b"")
    out = tmp_path / "signed.dcm"
    (tmp_path / ".signed.dcm.signing").symlink_to(attacker)  # the name dvqa used to write to
    proc = dvqa_022("sign", str(video), "--key", str(pki["key_enc"]), "--cert", str(pki["cert"]),
                    "--passphrase-env", "DVQA_TEST_PASSPHRASE", "-o", str(out),
                    env={"DVQA_TEST_PASSPHRASE": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert attacker.read_bytes() == b"" and out.is_file() and not out.is_symlink()
    # a link planted at OUT itself is replaced by the signed file; the file it pointed to is untouched
    out.unlink()
    out.symlink_to(attacker)
    proc = dvqa_022("sign", str(video), "--key", str(pki["key_enc"]), "--cert", str(pki["cert"]),
                    "--passphrase-env", "DVQA_TEST_PASSPHRASE", "-o", str(out),
                    env={"DVQA_TEST_PASSPHRASE": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert attacker.read_bytes() == b"" and not out.is_symlink() and out.read_bytes()[128:132] == b"DICM"


@pytest.mark.requirement("DVQA-SEC-001")
def test_convert_and_reports_never_write_through_a_planted_link(tmp_path: Path) -> None:
    attacker = tmp_path / "attacker-owned"
    attacker.write_bytes(b"")
    out, report = tmp_path / "video.dcm", tmp_path / "report.json"
    out.symlink_to(attacker)
    refused = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out), "--no-quality")
    assert refused.returncode == 2 and "already exists" in refused.stderr  # a dangling or planted link is "there"
    second = tmp_path / "attacker-owned-2"  # (two links to one file are one file: refused, tests/test_hostile_outputs.py)
    second.write_bytes(b"")
    report.symlink_to(second)
    proc = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out), "--no-quality", "--force",
                    "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert attacker.read_bytes() == second.read_bytes() == b"" and not out.is_symlink() and not report.is_symlink()
    assert json.loads(report.read_text())["output"]["path"] == str(out)


@pytest.mark.requirement("DVQA-SEC-001")
def test_the_audit_log_is_never_appended_through_a_link(tmp_path: Path) -> None:
    attacker = tmp_path / "attacker-owned"
    attacker.write_bytes(b"")
    log = tmp_path / "audit.jsonl"
    log.symlink_to(attacker)
    proc = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "v.dcm"), "--no-quality",
                    "--audit", str(log))
    assert proc.returncode == 2 and "symbolic link" in proc.stderr
    assert attacker.read_bytes() == b"" and not (tmp_path / "v.dcm").exists()


def test_audit_export_and_simulated_store_never_write_through_links(tmp_path: Path, video) -> None:
    attacker = tmp_path / "attacker-owned"
    attacker.write_bytes(b"")
    log = tmp_path / "audit.jsonl"
    assert dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "v.dcm"), "--no-quality",
                    "--audit", str(log)).returncode == 0
    export = tmp_path / "export"
    export.mkdir()
    (export / "record-000001.xml").symlink_to(attacker)
    assert dvqa_022("audit", "export", str(log), "-o", str(export)).returncode == 0
    assert attacker.read_bytes() == b"" and not (export / "record-000001.xml").is_symlink()
    assert _mode(export / "record-000001.xml") == 0o600
    store = tmp_path / "store"
    store.mkdir()
    uid = str(pydicom.dcmread(str(video), stop_before_pixels=True).SOPInstanceUID)
    (store / f"{uid}.dcm").symlink_to(attacker)
    behaviour = simulate.Behaviour({VIDEO_ENDOSCOPIC: [H264]}, store_dir=store)
    server = simulate.start("127.0.0.1", 0, "SIMULATED", behaviour)
    try:
        assert _store(server.server_address[1], pydicom.dcmread(str(video))) == 0x0000
    finally:
        server.shutdown()
    assert attacker.read_bytes() == b"" and not (store / f"{uid}.dcm").is_symlink()
    assert _mode(store / f"{uid}.dcm") == 0o600


@pytest.mark.requirement("DVQA-SEC-001")
def test_every_file_dvqa_writes_goes_through_dvqa_outputs() -> None:
    """A writer added later must not bypass the exclusive, private creation in dvqa/core/outputs.py. The few
    writes outside it are into folders dvqa has just created privately (mkdtemp, 0700), named here."""
    private_folder_writes = {
        ("convert/pipeline.py", 'open(stream_path, "wb")'),  # inside outputs.temp_dir
        ("convert/live.py", 'open(stream_path, "wb")'),  # inside outputs.temp_dir, as the whole-file one
        ("video/growing.py", 'self.spool = open(path, "wb")'),  # the live input kept in that private folder
        ("dicom/dicomfile.py", 'open(target, "wb")'),  # the DICOM under construction, inside outputs.temp_dir
        ("pacs/fallback.py", 'av.open(str(frames), "w"'),  # inside a TemporaryDirectory
        ("trust/signature.py", 'os.fdopen(fd, "wb")'),  # fd from outputs.temp_file
        # in an import's mkdtemp folder
        ("validate/standard_install.py", 'with open(target, "xb")'),  # a member, exclusively, in that folder
        ("validate/standard_install.py", '(work / name / "source.txt").write_text('),  # moved into place whole
        ("validate/standard_install.py", "modules_path.write_text("),  # dicom-validator's tables in that folder
        ("validate/standard_install.py", "iods_path.write_text("),
        # the editions folder's lock: O_NOFOLLOW, 0600, holds nothing
        ("validate/standard_install.py", 'os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW'),
        ("validate/standard_build.py", "args.output.write_bytes("),  # the developer's generator: package data
        ("report/error_catalogue.py", "args.write.write_text("),  # the developer's generator: the repo's docs
        ("dicom/deidentify.py", "TABLE.write_bytes("),  # the developer's generator: package data
        ("core/regular.py", "os.open(path, os.O_RDONLY"),  # a read-only open (the writer pattern matches os.open)
        ("evidence/manifest.py", "os.open(path, os.O_RDONLY"),  # a bundle member read to hash it, O_NOFOLLOW
        ("trust/signature.py", "os.open(folder, os.O_RDONLY | os.O_DIRECTORY"),  # the folder, opened to lock it
        # read-only opens of named inputs (O_NONBLOCK + fstat: a FIFO or device is refused, never waited on)
        ("dicom/dicomread.py", "os.open(path, os.O_RDONLY | os.O_NONBLOCK"),
        ("video/growing.py", "os.open(path, os.O_RDONLY | os.O_NONBLOCK"),
        # dvqa serve: the gateway's cache folder, created 0700 and refused when a link or another user's
        ("serve/cache.py", "os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW"),  # 0600
        ("serve/gateway.py", 'open(private_file(temporary), "wb")'),
        ("serve/entries.py", 'open(private_file(temporary), "wb")'),  # the gateway cache's header entries
        ("serve/prewarm.py", 'open(private_file(temporary), "wb")'),  # the same cache, prepared from a stored file
        ("serve/render.py", "fd = os.open(self."),  # read-only: a cached rendering served again
        ("serve/remux.py", 'av.open(out, "w", format="mp4"'),  # into a descriptor from private_file
        ("serve/remux.py", 'with av.open(str(out), "w", format="mp4",'),  # progressive: made 0600 by private_file
        # first in the cache's 0700 work folder, then by name (FFmpeg's faststart opens it again)
        ("serve/liveremux.py", 'os.fdopen(private_file('),  # the rendering, 0600, in the cache's work folder
        ("serve/liveremux.py", 'av.open(out, "w", format="mp4"'),  # into a descriptor from private_file
        ("serve/liveremux.py", "os.open(spool.path, os.O_RDONLY"),  # read-only: the spool the download writes
        # the recording spool (serve/spool.py: created 0700, refused when a link or another user's)
        ("serve/spool.py", "fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW"),  # 0600, holds nothing
    }
    writer = re.compile(r"""(open\(.*["'][wax]b?["']|\.write_text\(|\.write_bytes\(|save_as\(str\(|os\.open\()""")
    found = set()
    sources = sorted((ROOT / "dvqa").rglob("*.py"))
    assert len(sources) > 40  # the whole package, in every sub-package
    for source in sources:
        name = source.relative_to(ROOT / "dvqa").as_posix()
        if name == "core/outputs.py":
            continue
        for line in source.read_text().splitlines():
            if writer.search(line):
                found.add((name, next((w for f, w in private_folder_writes if f == name and w in line), line.strip())))
    assert found == private_folder_writes


# --- 2. modes ------------------------------------------------------------------------------------------

@pytest.mark.requirement("DVQA-SEC-001")
def test_phi_bearing_files_are_private_under_umask_022(tmp_path: Path) -> None:
    out, log = tmp_path / "v.dcm", tmp_path / "audit.jsonl"
    reports = [tmp_path / "q.json", tmp_path / "q.html"]
    proc = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out), "--patient-name", "Doe^Jane",
                    "--audit", str(log), *[a for r in reports for a in ("--report", str(r))])
    assert proc.returncode == 0, proc.stderr
    assert {p.name: _mode(p) for p in (out, log, *reports)} == {p.name: 0o600 for p in (out, log, *reports)}
    group = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "g.dcm"), "--no-quality",
                     env={"DVQA_FILE_MODE": "0640"})
    assert group.returncode == 0 and _mode(tmp_path / "g.dcm") == 0o640
    world = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "w.dcm"), "--no-quality",
                     env={"DVQA_FILE_MODE": "0644"})
    assert world.returncode == 2 and "DVQA_FILE_MODE" in world.stderr and not (tmp_path / "w.dcm").exists()


def test_appending_to_an_audit_log_others_can_read_warns_and_never_widens(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    log.chmod(0o644)
    proc = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "v.dcm"), "--no-quality",
                    "--audit", str(log))
    assert proc.returncode == 0 and "readable or writable by other users" in proc.stderr and "chmod 600" in proc.stderr
    assert _mode(log) == 0o644  # reported, not silently changed: the site owns that decision


# --- 3. clear-text PHI on the wire ------------------------------------------------------------------------

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def scp(tmp_path: Path):
    behaviour = simulate.Behaviour({VIDEO_ENDOSCOPIC: [H264]}, store_dir=tmp_path / "received")
    behaviour.store_dir.mkdir()
    server = simulate.start("127.0.0.1", 0, "SIMULATED", behaviour)
    yield server.server_address[1], behaviour
    server.shutdown()


@pytest.mark.requirement("DVQA-SEC-002")
def test_clear_text_is_said_on_every_run_and_can_be_forbidden(scp, video, tmp_path: Path) -> None:
    port, behaviour = scp
    log = tmp_path / "audit.jsonl"
    proc = dvqa_022("pacs", "store", str(video), "--port", str(port), "--called-aet", "SIMULATED",
                    "--format", "json", "--audit", str(log))
    assert proc.returncode == 0, proc.stderr
    assert "unencrypted" in proc.stderr and "--require-tls" in proc.stderr
    assert json.loads(proc.stdout)[0]["transport"] == "clear text"
    assert json.loads(log.read_text().splitlines()[-1])["transport"] == "clear text"
    for extra, env in ((["--require-tls"], {}), ([], {"DVQA_REQUIRE_TLS": "1"})):
        refused = dvqa_022("pacs", "store", str(video), "--port", str(port), "--called-aet", "SIMULATED", *extra,
                           env=env)
        assert refused.returncode == 2 and "without TLS is not allowed" in refused.stderr
    assert len(behaviour.received) == 1  # the refused runs sent nothing
    # said only when something went: a PACS that cannot be reached, or one that refuses the file's context,
    # received no patient data, and the warning does not claim otherwise
    nobody = dvqa_022("pacs", "store", str(video), "--port", str(_closed_port()), "--called-aet", "SIMULATED")
    assert nobody.returncode == 4 and "unencrypted" not in nobody.stderr, nobody.stderr
    jpeg_only = simulate.start("127.0.0.1", 0, "SIMULATED", simulate.Behaviour({VIDEO_ENDOSCOPIC: [JPEG_BASELINE]}))
    try:
        refusing = dvqa_022("pacs", "store", str(video), "--port", str(jpeg_only.server_address[1]),
                            "--called-aet", "SIMULATED")
    finally:
        jpeg_only.shutdown()
    assert refusing.returncode == 1 and "unencrypted" not in refusing.stderr, refusing.stdout + refusing.stderr
    stow = dvqa_022("pacs", "store", str(video), "--stow", "http://127.0.0.1:9/dicom-web", "--require-tls")
    assert stow.returncode == 2 and "without TLS is not allowed" in stow.stderr


# --- 4. a hostile peer and the simulated PACS ------------------------------------------------------------

def _store(port: int, ds: pydicom.Dataset, calling: str = "DVQA") -> int | None:
    ae = AE(ae_title=calling)
    ae.add_requested_context(VIDEO_ENDOSCOPIC, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title="SIMULATED")
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds)
        return getattr(status, "Status", None)
    finally:
        assoc.release()


@pytest.mark.parametrize("uid", ["../../evil", "/tmp/dvqa-evil-absolute", "1.2.3/../../../evil", "1.2..3", "01.2"])
def test_simulate_never_builds_a_path_from_an_invalid_uid(uid: str, scp, video, tmp_path: Path) -> None:
    port, behaviour = scp
    ds = pydicom.dcmread(str(video))
    ds.SOPInstanceUID = uid
    assert _store(port, ds) == 0xA900
    assert list(behaviour.store_dir.iterdir()) == [] and behaviour.refused
    assert not Path("/tmp/dvqa-evil-absolute.dcm").exists() and not (tmp_path.parent / "evil.dcm").exists()


def test_a_uid_names_a_stored_file_only_when_valid(tmp_path: Path) -> None:
    assert simulate.stored_path(tmp_path, "1.2.840.10008.5") == tmp_path / "1.2.840.10008.5.dcm"
    for bad in ("1." + "2" * 70, "..", "1.2.3/4", "", "1.2.3\x00", "1.2.3 "):
        assert simulate.stored_path(tmp_path, bad) is None, bad


def test_simulate_allow_aet_refuses_other_callers(video, tmp_path: Path) -> None:
    behaviour = simulate.Behaviour({VIDEO_ENDOSCOPIC: [H264]}, allow_aet=("DVQA",))
    server = simulate.start("127.0.0.1", 0, "SIMULATED", behaviour)
    try:
        ds = pydicom.dcmread(str(video))
        assert _store(server.server_address[1], ds, "INTRUDER") is None
        assert _store(server.server_address[1], ds, "DVQA") == 0x0000
    finally:
        server.shutdown()
    assert behaviour.received == [str(ds.SOPInstanceUID)]


# --- 5./6. hostile files ---------------------------------------------------------------------------------

def _nested(video: Path, path: Path, levels: int) -> Path:
    """A file whose Content Sequence nests `levels` deep (undefined lengths, explicit VR little endian)."""
    ds = pydicom.dcmread(str(video), stop_before_pixels=True)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    start = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    path.write_bytes(buffer.getvalue() + start * levels + end * levels)
    return path


@pytest.mark.requirement("DVQA-VAL-003")
def test_one_deeply_nested_file_does_not_stop_the_others(video, pki, tmp_path: Path) -> None:
    hostile = _nested(video, tmp_path / "nested.dcm", 5000)
    signed = tmp_path / "signed.dcm"
    assert dvqa_022("sign", str(video), "--key", str(pki["key_enc"]), "--cert", str(pki["cert"]), "-o", str(signed),
                    "--passphrase-env", "P", env={"P": SECRET}).returncode == 0
    proc = dvqa_022("verify", str(hostile), str(signed), "--trust", str(pki["ca"]), "--format", "json")
    assert proc.returncode == 1 and "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    first, second = json.loads(proc.stdout)
    assert not first["ok"] and f"more than {MAX_DEPTH} levels" in first["error"]
    assert second["ok"] and second["signatures"][0]["ok"]
    validate = dvqa_022("validate", str(hostile), str(signed), "--format", "json")
    files = json.loads(validate.stdout)["files"]
    assert validate.returncode == 1 and files[0]["findings"][0]["code"] == "file.too-deep" and files[1]["ok"]
    within = _nested(video, tmp_path / "within.dcm", MAX_DEPTH)  # at the limit: read, not refused
    assert json.loads(dvqa_022("validate", str(within), "--format", "json").stdout)["files"][0]["layers"]["file"] == "ran"


def test_a_meta_header_that_swallows_the_data_set_or_stands_alone_fails(video, tmp_path: Path) -> None:
    data = video.read_bytes()
    at = data.index(b"\x02\x00\x01\x00OB\x00\x00")
    swallowed = tmp_path / "swallowed.dcm"
    swallowed.write_bytes(data[:at + 8] + struct.pack("<L", 0xFFFFFFF0) + data[at + 12:])
    meta_end = 132 + 12 + struct.unpack("<L", data[140:144])[0]
    meta_only = tmp_path / "meta-only.dcm"
    meta_only.write_bytes(data[:meta_end])
    proc = dvqa_022("validate", str(swallowed), str(meta_only), "--format", "json")
    assert proc.returncode == 1, proc.stdout
    codes = {Path(f["path"]).name: f["findings"][0]["code"] for f in json.loads(proc.stdout)["files"]}
    assert codes == {"swallowed.dcm": "file.meta", "meta-only.dcm": "file.no-dataset"}


@pytest.mark.requirement("DVQA-CONV-005")
def test_a_uid_option_takes_only_a_uid(tmp_path: Path) -> None:
    proc = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "v.dcm"), "--study-uid",
                    "DOE^JANE-MRN-4242")
    assert proc.returncode == 2 and "--study-uid" in proc.stderr and "a UID is digits and dots" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# --- what held up, pinned ------------------------------------------------------------------------------------

def test_reports_escape_what_the_user_typed(tmp_path: Path) -> None:
    report = tmp_path / "q.html"
    proc = dvqa_022("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "v.dcm"), "--patient-name",
                    "<script>alert(1)</script>", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    page = report.read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.requirement("DVQA-SEC-002")
def test_servers_listen_on_loopback_unless_told_otherwise() -> None:
    pacs_group = loaded().commands["pacs"]
    defaults = {(command, p.name): p.default for command in ("echo", "store", "simulate")
                for p in pacs_group.commands[command].params if p.name in ("host", "listen_host")}
    assert set(defaults.values()) == {"127.0.0.1"} and len(defaults) == 4


@pytest.mark.requirement("DVQA-SEC-002")
def test_tls_always_verifies_the_peer_and_its_host_name(pki) -> None:
    client = pacs.Tls(ca=pki["ca"]).context()
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    server = pacs.Tls(ca=pki["ca"], cert=pki["server"], key=pki["server_key"]).server_context()
    assert server.verify_mode == ssl.CERT_REQUIRED
    # a TLS peer whose certificate is issued for another address (127.0.0.2) is refused on 127.0.0.1
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki["server"]), str(pki["server_key"]))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            try:
                context.wrap_socket(conn, server_side=True).recv(1)
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    peer = pacs.Peer("127.0.0.1", listener.getsockname()[1], timeout=10, tls=pacs.Tls(ca=pki["ca"]))
    with pytest.raises(EnvironmentProblem) as failure:
        pacs.echo(peer)
    listener.close()
    thread.join(10)
    assert "TLS handshake failed" in str(failure.value) and "mismatch" in str(failure.value)


@pytest.mark.requirement("DVQA-SEC-002")
def test_secrets_reach_no_output_and_no_command_line(video, pki, tmp_path: Path) -> None:
    log, out = tmp_path / "audit.jsonl", tmp_path / "signed.dcm"
    proc = dvqa_022("sign", str(video), "--key", str(pki["key_enc"]), "--cert", str(pki["cert"]), "-o", str(out),
                    "--passphrase-env", "P", "--audit", str(log), "--audit-key-env", "K", "--format", "json",
                    env={"P": SECRET, "K": AUDIT_KEY})
    assert proc.returncode == 0, proc.stderr
    for text in (proc.stdout, proc.stderr, log.read_text()):
        assert SECRET not in text and AUDIT_KEY not in text
    assert SECRET.encode() not in out.read_bytes() and AUDIT_KEY.encode() not in out.read_bytes()
    # secrets are only ever named by an environment variable, never typed on a command line (ps shows those)
    secretive = [(command.name, p.name) for command in _commands(loaded()) for p in command.params
                 if re.search(r"passphrase|key_env|password|secret", p.name)]
    assert secretive and all(name.endswith("_env") for _, name in secretive), secretive


def _commands(group):
    for command in group.commands.values():
        if hasattr(command, "commands"):
            yield from _commands(command)
        else:
            yield command


def test_one_unreadable_file_does_not_stop_a_send(scp, video, tmp_path: Path) -> None:
    port, behaviour = scp
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(video.read_bytes()[:5000])
    proc = dvqa_022("pacs", "store", str(damaged), str(video), "--port", str(port), "--called-aet", "SIMULATED",
                    "--format", "json")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    first, second = json.loads(proc.stdout)
    assert first["outcome"] == "unreadable" and "not sent" in first["message"]
    assert second["outcome"] == "stored" and len(behaviour.received) == 1
