"""Issue 28 items 3-5 and issue 27's trust items: who signed, what a signature covers, what an audit log proves.

Each test here failed on 9d36d13: `verify` passed a re-signed file under a copied signer name, a
signature over 2 elements after the video was swapped, a relabelled transfer syntax; `audit verify`
said OK for a rewritten unkeyed log and missed records cut off the end; `--resume` trusted a forged
record; an empty key switched HMAC off; two in-place signs lost a signature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from dvqa.trust import audit as audit_trail
from dvqa.trust import signature
from dvqa.trust.signature import Signer, sign_dataset, verify_file
from helpers import CLIPS, PEM, big_copy, dvqa, pem_key, run, tool

ROOT = Path(__file__).resolve().parent.parent
KEY = "a-site-audit-key-of-at-least-32-bytes"
CLINIC = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Clinic"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "QA Signer")])


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
          key_usage: x509.KeyUsage | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        key_usage = key_usage or x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    if key_usage:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """The clinic's CA and signer "O=Clinic,CN=QA Signer"; an intermediate; an impostor copying the name."""
    d = tmp_path_factory.mktemp("pki")
    root_key, key = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    root = _cert(_name("Clinic Root CA"), root_key, _name("Clinic Root CA"), root_key, ca=True)
    signer = _cert(CLINIC, key, root.subject, root_key,
                   key_usage=x509.KeyUsage(True, True, False, False, False, False, False, False, False))
    inter_key = rsa.generate_private_key(65537, 2048)
    inter = _cert(_name("Clinic Issuing CA"), inter_key, root.subject, root_key, ca=True)
    impostor_key = rsa.generate_private_key(65537, 2048)
    impostor = _cert(CLINIC, impostor_key, CLINIC, impostor_key)  # self-signed, the clinic signer's name
    files = {"root": root, "signer": signer, "inter": inter, "impostor": impostor}
    out: dict = {"root_key": root_key, "key_obj": key, "inter_key": inter_key}
    for name, cert in files.items():
        (d / f"{name}.pem").write_bytes(cert.public_bytes(PEM))
        out[name] = d / f"{name}.pem"
        out[f"{name}_cert"] = cert
    for name, k in (("key", key), ("impostor_key", impostor_key)):
        (d / f"{name}.pem").write_bytes(pem_key(k))
        out[name] = d / f"{name}.pem"
    out["dir"] = d
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video") / "video.dcm"
    proc = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out), "--no-quality",
                "--patient-name", "Doe^Jane", "--patient-id", "MRN-42")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def other_video(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("other") / "other.dcm"
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(out), "--no-quality",
                "--patient-name", "Roe^Richard", "--patient-id", "MRN-99", "--syntax", "h264-high-4.1")
    assert proc.returncode == 0, proc.stderr
    return out


def _sign(video: Path, out: Path, key: Path, cert: Path, *extra: str) -> Path:
    proc = dvqa("sign", str(video), "--key", str(key), "--cert", str(cert), "-o", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    return out


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


# --- 3. signer trust ---------------------------------------------------------------------------------------

@pytest.mark.requirement("DVQA-SIG-003")
def test_an_impostor_copying_the_signers_name_is_not_authenticated(video, pki, tmp_path: Path) -> None:
    edited = tmp_path / "edited.dcm"
    ds = pydicom.dcmread(str(video))
    ds.PatientName = "Other^Patient"
    ds.save_as(str(edited))
    forged = _sign(edited, tmp_path / "forged.dcm", pki["impostor_key"], pki["impostor"])
    proc = dvqa("verify", str(forged))
    assert proc.returncode == 1, proc.stdout
    first = proc.stdout.splitlines()[0]
    assert first.startswith("UNAUTHENTICATED") and "not authenticated" in first and CLINIC.rfc4514_string() in first
    assert _fingerprint(pki["impostor_cert"]) in proc.stdout
    accepted = dvqa("verify", str(forged), "--accept-unauthenticated-signer")
    assert accepted.returncode == 0 and accepted.stdout.startswith("UNAUTHENTICATED")  # accepted, still said
    trusted = dvqa("verify", str(forged), "--trust", str(pki["root"]))
    assert trusted.returncode == 1 and "untrusted: no valid path" in trusted.stdout
    genuine = _sign(video, tmp_path / "genuine.dcm", pki["key"], pki["signer"])
    ok = dvqa("verify", str(genuine), "--trust", str(pki["root"]))
    assert ok.returncode == 0 and ok.stdout.startswith("OK") and "issued by CN=Clinic Root CA" in ok.stdout


@pytest.mark.requirement("DVQA-EVI-002")
def test_evidence_verify_does_not_authenticate_a_signer_without_trust(pki, tmp_path: Path) -> None:
    from dvqa.evidence import manifest

    for name, key, cert in (("forged", "impostor_key", "impostor"), ("genuine", "key", "signer")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "report.txt").write_text("a step's result\n")
        # the index a build writes: verify also reports the build's own verdict (all its steps passed here)
        (folder / "index.json").write_text(json.dumps({"verdict": "all 1 steps passed",
                                                       "steps": [{"name": "report", "status": "passed"}]}))
        manifest.write(folder, Signer.load(pki[key], pki[cert], None), dt.datetime.now(dt.timezone.utc))
    forged = dvqa("evidence", "verify", str(tmp_path / "forged"))
    assert forged.returncode == 1 and "not authenticated" in forged.stdout
    assert _fingerprint(pki["impostor_cert"]) in forged.stdout
    accepted = dvqa("evidence", "verify", str(tmp_path / "forged"), "--accept-unauthenticated-signer")
    assert accepted.returncode == 0 and "NOT authenticated" in accepted.stdout
    assert dvqa("evidence", "verify", str(tmp_path / "forged"), "--trust", str(pki["root"])).returncode == 1
    genuine = dvqa("evidence", "verify", str(tmp_path / "genuine"), "--trust", str(pki["root"]))
    assert genuine.returncode == 0 and "trusted: issued by CN=Clinic Root CA" in genuine.stdout


def _signed_with(video: Path, out: Path, key, cert: x509.Certificate, profile: str = "base") -> Path:
    """Signed by the library directly: sign_file's own check would refuse a weak key before writing."""
    ds = pydicom.dcmread(str(video))
    sign_dataset(ds, Signer(key, cert), profile=profile, transfer_syntax=str(ds.file_meta.TransferSyntaxUID))
    ds.save_as(str(out), enforce_file_format=True)
    return out


@pytest.mark.requirement("DVQA-SIG-003")
def test_the_trust_path_is_checked_by_policy(video, pki, tmp_path: Path) -> None:
    VerifyPolicy = signature.VerifyPolicy  # noqa: N806 - new in this round: 9d36d13 fails here
    root, root_key = pki["root_cert"], pki["root_key"]
    anchors = VerifyPolicy(trust=(root,))
    key = pki["key_obj"]

    def verdict(cert: x509.Certificate, policy: VerifyPolicy = anchors, signing_key=key, profile="base") -> str:
        path = _signed_with(video, tmp_path / "s.dcm", signing_key, cert, profile)
        (result,) = verify_file(path, policy=policy)
        return "OK" if result.ok else result.problem

    # root -> intermediate -> leaf: accepted with the intermediate given, not without it
    via = _cert(CLINIC, key, pki["inter_cert"].subject, pki["inter_key"])
    assert verdict(via, VerifyPolicy(trust=(root,), intermediates=(pki["inter_cert"],))) == "OK"
    assert verdict(via).startswith("untrusted: no valid path")
    # the signer's own certificate pinned as the anchor is refused
    assert "is in --trust" in verdict(pki["signer_cert"], VerifyPolicy(trust=(pki["signer_cert"],)))
    # a CA:TRUE certificate is not a signer; a keyUsage without digitalSignature/nonRepudiation is not one either
    assert "CA certificate" in verdict(_cert(CLINIC, key, root.subject, root_key, ca=True))
    encipher_only = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    assert "keyUsage" in verdict(_cert(CLINIC, key, root.subject, root_key, key_usage=encipher_only))
    # minimum key sizes: RSA 2048, EC 256 (the library's RSA and EC checks do not stop these)
    small = rsa.generate_private_key(65537, 1024)
    assert "1024 bits" in verdict(_cert(CLINIC, small, root.subject, root_key), signing_key=small)
    p224 = ec.generate_private_key(ec.SECP224R1())
    assert "224 bits" in verdict(_cert(CLINIC, p224, root.subject, root_key), signing_key=p224, profile="none")
    p256 = ec.generate_private_key(ec.SECP256R1())
    assert verdict(_cert(CLINIC, p256, root.subject, root_key), signing_key=p256, profile="none") == "OK"
    # a weak key fails even without anchors
    path = _signed_with(video, tmp_path / "w.dcm", small, _cert(CLINIC, small, root.subject, root_key))
    assert "1024 bits" in verify_file(path, policy=VerifyPolicy(accept_unauthenticated=True))[0].problem


def test_verify_cli_takes_intermediates(video, pki, tmp_path: Path) -> None:
    key = pki["key_obj"]
    via = _cert(CLINIC, key, pki["inter_cert"].subject, pki["inter_key"])
    path = _signed_with(video, tmp_path / "via.dcm", key, via)
    assert dvqa("verify", str(path), "--trust", str(pki["root"])).returncode == 1
    proc = dvqa("verify", str(path), "--trust", str(pki["root"]), "--intermediates", str(pki["inter"]))
    assert proc.returncode == 0 and "issued by CN=Clinic Issuing CA, issued by CN=Clinic Root CA" in proc.stdout


def _dcmsign(video: Path, out: Path, pki, *options: str) -> Path:
    proc = run(tool("dcmsign"), "--sign", str(pki["key"]), str(pki["signer"]), "-pw", *options, str(video), str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.requirement("DVQA-SIG-003")
@pytest.mark.parametrize("option, name", [("+mm", "MD5"), ("+ms", "SHA1")])
def test_md5_and_sha1_macs_fail_by_default(option: str, name: str, video, pki, tmp_path: Path) -> None:
    signed = _dcmsign(video, tmp_path / "weak.dcm", pki, option)
    proc = dvqa("verify", str(signed), "--trust", str(pki["root"]))
    assert proc.returncode == 1 and proc.stdout.startswith("FAIL") and f"MAC algorithm {name}" in proc.stdout
    allowed = dvqa("verify", str(signed), "--trust", str(pki["root"]), "--accept-weak-mac")
    assert allowed.returncode == 0 and "warning" in allowed.stdout and name in allowed.stdout


def test_ripemd160_dcmsigns_default_is_accepted_with_a_warning(video, pki, tmp_path: Path) -> None:
    signed = _dcmsign(video, tmp_path / "ripemd.dcm", pki)
    proc = dvqa("verify", str(signed), "--trust", str(pki["root"]))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("OK") and "warning" in proc.stdout and "RIPEMD-160" in proc.stdout


# --- 4. partial signatures ---------------------------------------------------------------------------------

@pytest.mark.requirement("DVQA-SIG-004")
def test_a_two_element_signature_is_partial_and_a_swapped_video_is_caught(video, other_video, pki,
                                                                         tmp_path: Path) -> None:
    signed = _dcmsign(video, tmp_path / "two.dcm", pki, "+m2", "--tag", "StudyDate", "--tag", "Modality")
    swapped = tmp_path / "swapped.dcm"
    ds, other = pydicom.dcmread(str(signed)), pydicom.dcmread(str(other_video))
    ds.PixelData, ds.PatientName, ds.PatientID = other.PixelData, other.PatientName, other.PatientID
    ds.save_as(str(swapped))
    for path in (signed, swapped):
        proc = dvqa("verify", str(path), "--trust", str(pki["root"]))
        assert proc.returncode == 1, proc.stdout
        first = proc.stdout.splitlines()[0]
        assert first.startswith("PARTIAL") and "covers 2 elements but not PixelData (7FE0,0010)" in first
        assert "PatientID (0010,0020)" in first and "SOPInstanceUID (0008,0018)" in first


@pytest.mark.requirement("DVQA-SIG-004")
def test_require_covered_extends_the_list(video, pki, tmp_path: Path) -> None:
    required = ("PixelData", "PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    signed = _dcmsign(video, tmp_path / "six.dcm", pki, "+m2", *[a for t in required for a in ("--tag", t)])
    assert dvqa("verify", str(signed), "--trust", str(pki["root"])).returncode == 0
    proc = dvqa("verify", str(signed), "--trust", str(pki["root"]), "--require-covered", "(0008,0020)")
    assert proc.returncode == 1 and proc.stdout.startswith("PARTIAL") and "StudyDate (0008,0020)" in proc.stdout
    keyword = dvqa("verify", str(signed), "--trust", str(pki["root"]), "--require-covered", "Modality")
    assert keyword.returncode == 1 and "Modality (0008,0060)" in keyword.stdout  # 8 letters, not a hex tag
    bad = dvqa("verify", str(signed), "--require-covered", "NotAKeyword")
    assert bad.returncode == 2 and "--require-covered NotAKeyword" in bad.stderr


@pytest.mark.requirement("DVQA-SIG-004")
def test_a_relabelled_transfer_syntax_fails(video, pki, tmp_path: Path) -> None:
    signed = _sign(video, tmp_path / "signed.dcm", pki["key"], pki["signer"])
    data = signed.read_bytes()
    h264 = b"1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264 High Profile / Level 4.1 ...
    assert data.index(h264) < 300  # the first one is the file meta's; the MAC Parameters keep theirs
    relabelled = tmp_path / "relabelled.dcm"
    relabelled.write_bytes(data.replace(h264, b"1.2.840.10008.1.2.4.107", 1))  # ... now "HEVC Main"
    proc = dvqa("verify", str(relabelled), "--trust", str(pki["root"]))
    assert proc.returncode == 1 and "relabelled after signing" in proc.stdout, proc.stdout


# --- 5. audit log claims -----------------------------------------------------------------------------------

def _log(path: Path, key: bytes | None, count: int = 3) -> Path:
    log = audit_trail.AuditLog(path, key)
    for number in range(count):
        log.append({"command": "convert", "n": number})
    return path


def _rechain(path: Path) -> None:
    """What anyone who can write an unkeyed log can do: edit a record and recompute every link after it."""
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    records[1]["n"] = 99
    lines, prev = [], audit_trail.GENESIS
    for record in records:
        record["prev"] = prev
        line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        prev = hashlib.sha256(line).hexdigest()
        lines.append(line + b"\n")
    path.write_bytes(b"".join(lines))


@pytest.mark.requirement("DVQA-AUD-002")
def test_an_unkeyed_log_is_said_not_to_be_tamper_evident(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl", None)
    _rechain(log)
    proc = dvqa("audit", "verify", str(log))
    assert proc.returncode == 0 and proc.stdout.startswith("CHAINED") and "NOT tamper-evident" in proc.stdout
    assert "OK " not in proc.stdout
    assert json.loads(dvqa("audit", "verify", str(log), "--format", "json").stdout)["tamper_evident"] is False


def test_resume_refuses_an_unkeyed_log_that_could_be_forged(tmp_path: Path) -> None:
    source, output = CLIPS / "h264_cfr_high.mkv", tmp_path / "out.dcm"
    output.write_bytes(b"not the conversion")  # a forged record will claim this is the row's output
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"input,output,PatientID\n{source},{output},P1\n")
    log = tmp_path / "audit.jsonl"
    audit_trail.AuditLog(log).append({
        "command": "convert", "outcome": "success", "exit_code": 0,
        "input": {"path": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()},
        "output": {"path": str(output), "written": True, "sha256": hashlib.sha256(output.read_bytes()).hexdigest()}})
    proc = dvqa("batch", "convert", str(manifest), "--audit", str(log), "--resume")
    assert proc.returncode == 2 and "keyed log" in proc.stderr and "--audit-key-env" in proc.stderr, proc.stdout
    assert output.read_bytes() == b"not the conversion"


@pytest.mark.requirement("DVQA-AUD-002")
def test_empty_and_short_audit_keys_are_refused(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl", KEY.encode())
    for value in ("", "short-key"):
        proc = subprocess.run([sys.executable, "-m", "dvqa", "audit", "verify", str(log), "--audit-key-env", "K"],
                              capture_output=True, text=True, env={**os.environ, "K": value}, cwd=ROOT)
        assert proc.returncode == 2 and "at least 32" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        sign = subprocess.run([sys.executable, "-m", "dvqa", "sign", str(log), "--key", str(log), "--cert",
                                  str(log), "--audit", str(tmp_path / "new.jsonl"), "--audit-key-env", "K"],
                                 capture_output=True, text=True, env={**os.environ, "K": value}, cwd=ROOT)
        assert sign.returncode == 2 and "at least 32" in sign.stderr
        assert not (tmp_path / "new.jsonl").exists()  # refused before anything was written
    with pytest.raises(Exception, match="at least 32"):
        audit_trail.AuditLog(tmp_path / "x.jsonl", b"")


@pytest.mark.requirement("DVQA-AUD-002")
def test_expect_head_catches_truncation_and_rewrite(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl", KEY.encode())
    env = {**os.environ, "K": KEY}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dvqa", "audit", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT)

    head = cli("head", str(log), "--audit-key-env", "K")
    assert head.returncode == 0 and head.stdout.strip().startswith("3:")
    kept = head.stdout.strip()
    whole = log.read_bytes()
    log.write_bytes(b"".join(whole.splitlines(keepends=True)[:2]))  # the last record cut off: still a chain
    assert cli("verify", str(log), "--audit-key-env", "K").returncode == 0
    cut = cli("verify", str(log), "--audit-key-env", "K", "--expect-head", kept)
    assert cut.returncode == 1 and "cut off the end" in cut.stdout
    log.write_bytes(whole)
    _log(log, KEY.encode(), 2)  # appended since: the kept head is still in it
    assert cli("verify", str(log), "--audit-key-env", "K", "--expect-head", kept).returncode == 0
    _rechain(log)  # no key needed with a head kept elsewhere: the rewrite is caught
    rewritten = cli("verify", str(log), "--expect-head", kept)
    assert rewritten.returncode == 1 and "rewritten" in rewritten.stdout
    assert cli("verify", str(log), "--expect-head", "3:abc").returncode == 2


def test_hmacs_are_compared_in_constant_time(tmp_path: Path, monkeypatch) -> None:
    log = _log(tmp_path / "audit.jsonl", KEY.encode())
    calls = []
    original = audit_trail.hmac.compare_digest
    monkeypatch.setattr(audit_trail.hmac, "compare_digest", lambda a, b: calls.append(1) or original(a, b))
    assert audit_trail.verify(log, KEY.encode()).ok and len(calls) >= 3


def test_not_an_audit_log_and_odd_lines_are_one_sentence(tmp_path: Path) -> None:
    readme = dvqa("audit", "verify", str(ROOT / "README.md"))
    assert readme.returncode == 3 and "not an audit log" in readme.stderr and "edited" not in readme.stdout
    log = _log(tmp_path / "audit.jsonl", None)
    for odd in (b"[1, 2]\n", b"42\n", b'"text"\n', b"null\n"):
        path = tmp_path / "odd.jsonl"
        path.write_bytes(log.read_bytes() + odd)
        proc = dvqa("audit", "verify", str(path))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and "not a record" in proc.stdout
        alone = tmp_path / "alone.jsonl"
        alone.write_bytes(odd)
        proc = dvqa("audit", "verify", str(alone))
        assert proc.returncode == 3 and "not an audit log" in proc.stderr and "Traceback" not in proc.stderr
        assert dvqa("audit", "export", str(path), "-o", str(tmp_path / "atna")).returncode == 0


def test_audit_verify_refuses_a_fifo_and_a_device_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        proc = subprocess.run([sys.executable, "-m", "dvqa", "audit", "verify", str(path)], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 3 and "not a regular file" in proc.stderr, proc.stderr


# --- issue 27: concurrent in-place signs ---------------------------------------------------------------------

def test_two_signs_of_one_file_at_once_keep_both_signatures(video, pki, tmp_path: Path) -> None:
    """Both start together on a large file (a long read-sign-write window); each adds its signature in turn."""
    for attempt in range(3):
        target = big_copy(video, tmp_path / f"shared{attempt}.dcm", 24)
        log = tmp_path / f"audit{attempt}.jsonl"
        command = [sys.executable, "-m", "dvqa", "sign", str(target), "--key", str(pki["key"]), "--cert",
                   str(pki["signer"]), "--audit", str(log), "--format", "json"]
        barrier, outs = threading.Barrier(2), []

        def one() -> None:
            barrier.wait()
            outs.append(subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300))

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(p.returncode == 0 for p in outs), [p.stderr for p in outs]
        claimed = {json.loads(p.stdout)["uid"] for p in outs}
        present = {str(item.DigitalSignatureUID) for item in pydicom.dcmread(str(target)).DigitalSignaturesSequence}
        assert claimed == present, (attempt, claimed, present)  # no signature an audit record claims was lost
        assert {r["signature_uid"] for r in audit_trail.records(log)} == claimed
