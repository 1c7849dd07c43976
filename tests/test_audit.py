"""The audit trail: every attempt recorded, tampering named, concurrency and crashes survived."""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pydicom
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import pytest

from dvqa.trust.audit import AuditLog, records, verify
from helpers import CLIPS, dvqa, run, tool

CLIP = CLIPS / "h264_cfr_high.mkv"


def _lines(log: Path) -> list[bytes]:
    return log.read_bytes().splitlines(keepends=True)


def _three_attempts(tmp_path: Path, *key: str) -> Path:
    log = tmp_path / "audit.jsonl"
    for name, source in (("a.dcm", CLIP), ("b.dcm", CLIPS / "audio_only.webm"), ("c.dcm", CLIP)):
        dvqa("convert", str(source), "-o", str(tmp_path / name), "--no-quality", "--patient-id", "MRN-7",
             "--audit", str(log), *key)
    return log


@pytest.mark.requirement("DVQA-AUD-001")
def test_every_attempt_is_recorded_with_what_an_auditor_asks(tmp_path: Path) -> None:
    log = _three_attempts(tmp_path)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # PHI: owner only
    ok, failed, _ = records(log)
    assert [r["seq"] for r in records(log)] == [1, 2, 3]
    assert ok["outcome"] == "success" and ok["exit_code"] == 0 and ok["user"] and ok["host"]
    assert ok["input"]["sha256"] and ok["input"]["size"] == CLIP.stat().st_size
    assert ok["output"]["sha256"] and ok["uids"]["sop_instance"] and ok["patient"]["PatientID"] == "MRN-7"
    assert ok["passthrough"] is True and set(ok["versions"]) == {"dvqa", "pyav", "ffmpeg", "pydicom"}
    assert failed["outcome"] == "failure" and failed["exit_code"] == 3 and "audio only" in failed["message"]
    proc = dvqa("audit", "verify", str(log))
    assert proc.returncode == 0 and "3 records chained" in proc.stdout


@pytest.mark.requirement("DVQA-AUD-002")
def test_edit_delete_and_reorder_are_named(tmp_path: Path) -> None:
    log = _three_attempts(tmp_path)
    original = _lines(log)
    edited = original[1].replace(b'"exit_code":3', b'"exit_code":0')
    assert edited != original[1]
    cases = {
        "edited": ([original[0], edited, original[2]],
                   "record 3 (line 3): does not follow record 2 - record 2 (line 2) was changed"),
        "deleted": ([original[0], original[2]], "expected record 2 here"),
        "reordered": ([original[0], original[2], original[1]], "expected record 2 here"),
    }
    for name, (lines, words) in cases.items():
        log.write_bytes(b"".join(lines))
        proc = dvqa("audit", "verify", str(log))
        assert proc.returncode == 1, name
        assert words in proc.stdout, (name, proc.stdout)


@pytest.mark.requirement("DVQA-AUD-002")
def test_hmac_catches_an_edit_at_the_edited_record(tmp_path: Path) -> None:
    env_key = ("--audit-key-env", "DVQA_TEST_AUDIT_KEY")
    os.environ["DVQA_TEST_AUDIT_KEY"] = "site secret of at least 32 bytes!"  # shorter keys are refused
    try:
        log = _three_attempts(tmp_path, *env_key)
        assert dvqa("audit", "verify", str(log), "--audit-key-env", "DVQA_TEST_AUDIT_KEY").returncode == 0
        lines = _lines(log)
        log.write_bytes(lines[0] + lines[1].replace(b'"exit_code":3', b'"exit_code":0') + lines[2])
        proc = dvqa("audit", "verify", str(log), "--audit-key-env", "DVQA_TEST_AUDIT_KEY")
        assert proc.returncode == 1 and "record 2 (line 2): HMAC does not match" in proc.stdout
    finally:
        del os.environ["DVQA_TEST_AUDIT_KEY"]


@pytest.mark.requirement("DVQA-AUD-001")
def test_parallel_conversions_append_whole_records(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    procs = [subprocess.Popen([sys.executable, "-m", "dvqa", "convert", str(CLIP), "-o", str(tmp_path / f"{i}.dcm"),
                               "--no-quality", "--audit", str(log)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for i in range(6)]
    assert all(p.wait(120) == 0 for p in procs)
    check = verify(log)
    assert check.ok and check.records == 6, check.errors
    assert sorted(r["output"]["path"] for r in records(log)) == sorted(str(tmp_path / f"{i}.dcm") for i in range(6))


WRITER = """
import sys
from pathlib import Path
from dvqa.trust.audit import AuditLog
log = AuditLog(Path(sys.argv[1]))
print("ready", flush=True)
while True:
    log.append({"command": "soak", "payload": "x" * 400000})
"""


@pytest.mark.requirement("DVQA-AUD-002")
def test_sigkill_during_writes_leaves_a_verifiable_log(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    torn_seen = False
    for attempt in range(8):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log)], stdout=subprocess.PIPE)
        assert writer.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + 0.03 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        check = verify(log)
        assert check.ok, (attempt, check.errors)  # whatever the kill left, the complete records verify
        torn_seen |= any("torn" in w for w in check.warnings)
        AuditLog(log).append({"command": "after kill"})  # and the next append continues the chain
        assert verify(log).ok
    # a torn tail, as a kill between two write() calls leaves it, is reported and then closed
    log.write_bytes(log.read_bytes() + b'{"seq": 999, "half a rec')
    check = verify(log)
    assert check.ok and any("torn" in w for w in check.warnings)
    AuditLog(log).append({"command": "after torn"})
    check = verify(log)
    assert check.ok and any("interrupted write" in w for w in check.warnings), check.warnings
    assert records(log)[-1]["torn_previous"]["bytes"] == len(b'{"seq": 999, "half a rec')
    print("torn by a real kill:", torn_seen)


@pytest.mark.requirement("DVQA-AUD-001")
def test_sign_writes_audit_records_too(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit test signer")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    video, log = tmp_path / "v.dcm", tmp_path / "audit.jsonl"
    assert dvqa("convert", str(CLIP), "-o", str(video), "--no-quality").returncode == 0
    assert dvqa("sign", str(video), "--key", str(key_path), "--cert", str(cert_path), "--audit", str(log)).returncode == 0
    bad = dvqa("sign", str(video), "--key", str(cert_path), "--cert", str(cert_path), "--audit", str(log))
    assert bad.returncode == 2
    done, failed = records(log)
    assert done["outcome"] == "success" and "audit test signer" in done["signer"]
    assert done["signature_uid"] == str(pydicom.dcmread(str(video)).DigitalSignaturesSequence[0].DigitalSignatureUID)
    assert failed["outcome"] == "failure" and failed["exit_code"] == 2
    assert verify(log).ok


SCHEMA = Path(__file__).resolve().parent / "data" / "dicom-audit-message.rnc"


def test_export_as_dicom_audit_messages_valid_against_the_schema(tmp_path: Path) -> None:
    log = _three_attempts(tmp_path)
    out = tmp_path / "atna"
    proc = dvqa("audit", "export", str(log), "--format", "dicom-audit", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    messages = sorted(out.glob("record-*.xml"))
    assert len(messages) == 3
    for message in messages:
        check = run(tool("jing"), "-c", str(SCHEMA), str(message))
        assert check.returncode == 0, check.stdout + check.stderr
    first, failed = ET.parse(messages[0]).getroot(), ET.parse(messages[1]).getroot()
    event = first.find("EventIdentification")
    assert event.get("EventActionCode") == "C" and event.get("EventOutcomeIndicator") == "0"
    assert event.find("EventID").get("csd-code") == "110103"
    objects = {o.find("ParticipantObjectIDTypeCode").get("originalText"): o.get("ParticipantObjectID")
               for o in first.findall("ParticipantObjectIdentification")}
    assert objects["Patient Number"] == "MRN-7" and objects["Study Instance UID"] == records(log)[0]["uids"]["study_instance"]
    assert failed.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert "audio only" in failed.find("EventIdentification/EventOutcomeDescription").text
    # the validator does reject what the schema forbids
    broken = tmp_path / "broken.xml"
    first.remove(first.find("EventIdentification"))
    ET.ElementTree(first).write(broken)
    assert run(tool("jing"), "-c", str(SCHEMA), str(broken)).returncode != 0
