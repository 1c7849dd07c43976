"""DICOM digital signatures: interoperability with DCMTK's dcmsign is the acceptance test."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from dvqa.dicom.dicomfile import read_fragments
from helpers import CLIPS, certificate, dvqa, run, tool

PASSPHRASE = "correct horse"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A site CA, an RSA signer (plain, encrypted and PKCS#12), an ECDSA signer, a stranger CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = rsa.generate_private_key(65537, 2048)
    ca = certificate("dvqa test CA", ca_key, "dvqa test CA", ca_key, ca=True)
    key = rsa.generate_private_key(65537, 2048)
    cert = certificate("dvqa test signer", key, "dvqa test CA", ca_key)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_cert = certificate("dvqa ecdsa signer", ec_key, "dvqa test CA", ca_key)
    other_key = rsa.generate_private_key(65537, 2048)
    other = certificate("another CA", other_key, "another CA", other_key, ca=True)
    pem = serialization.Encoding.PEM
    files = {
        "ca": ca.public_bytes(pem), "other_ca": other.public_bytes(pem), "cert": cert.public_bytes(pem),
        "key": key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption()),
        "key_enc": key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                     serialization.BestAvailableEncryption(PASSPHRASE.encode())),
        "ec_cert": ec_cert.public_bytes(pem),
        "ec_key": ec_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = d / f"{name}.pem"
        paths[name].write_bytes(data)
    paths["p12"] = d / "signer.p12"
    paths["p12"].write_bytes(pkcs12.serialize_key_and_certificates(
        b"signer", key, cert, None, serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    return paths


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A dvqa video object: encapsulated H.264 fragments and sequences (Anatomic Region etc.)."""
    out = tmp_path_factory.mktemp("video") / "video.dcm"
    proc = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out), "--no-quality",
                "--patient-name", "Doe^Jane", "--patient-id", "MRN-42")
    assert proc.returncode == 0, proc.stderr
    return out


def _copy(video: Path, tmp_path: Path, name: str = "in.dcm") -> Path:
    target = tmp_path / name
    shutil.copy(video, target)
    return target


def _dcmsign_verify(path: Path, pki: dict[str, Path], *extra: str):
    return run(tool("dcmsign"), "--verify", "+cf", str(pki["ca"]), *extra, str(path))


def _dcmsign_ok(proc) -> bool:
    text = proc.stdout + proc.stderr
    return proc.returncode == 0 and "Verification : OK" in text and "failed" not in text


@pytest.mark.requirement("DVQA-SIG-001")
@pytest.mark.parametrize("profile, require", [("base", ()), ("creator", ("+rc",)), ("authorization", ("+ru",))])
def test_dcmsign_verifies_what_dvqa_signs(profile: str, require: tuple[str, ...], video: Path, pki,
                                          tmp_path: Path) -> None:
    signed = tmp_path / "signed.dcm"
    proc = dvqa("sign", str(_copy(video, tmp_path)), "--key", str(pki["key"]), "--cert", str(pki["cert"]),
                "--profile", profile, "-o", str(signed), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert "(7FE0,0010)" in record["signed_tags"] and "(0008,2218)" in record["signed_tags"]  # pixels, a sequence
    assert _dcmsign_ok(_dcmsign_verify(signed, pki, *require))
    ds = pydicom.dcmread(str(signed))
    item = ds.DigitalSignaturesSequence[0]
    assert item.CertificateType == "X509_1993_SIG" and len(item.Signature) == 256
    assert ds.MACParametersSequence[0].MACAlgorithm == "SHA256"


@pytest.mark.requirement("DVQA-SIG-001")
@pytest.mark.parametrize("dcmsign_options", [(), ("+m2",), ("+m5", "+pb"), ("+m2", "+pc"), ("+m2", "+pa")])
def test_dvqa_verifies_what_dcmsign_signs(dcmsign_options: tuple[str, ...], video: Path, pki,
                                          tmp_path: Path) -> None:
    signed = tmp_path / "by-dcmsign.dcm"
    proc = run(tool("dcmsign"), "--sign", str(pki["key"]), str(pki["cert"]), "-pw", *dcmsign_options,
               str(video), str(signed))
    assert proc.returncode == 0, proc.stderr
    out = dvqa("verify", str(signed), "--trust", str(pki["ca"]), "--format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    sig = json.loads(out.stdout)[0]["signatures"][0]
    assert sig["ok"] and sig["chain"].startswith("trusted") and "(7FE0,0010)" in sig["covered"]
    assert sig["profiles_met"] == ["base", "creator"]  # dcmsign signs everything by default
    expected = {(): "RIPEMD160", ("+m5", "+pb"): "SHA512"}.get(dcmsign_options, "SHA256")
    assert sig["algorithm"] == expected


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _signed_by_dvqa(video: Path, pki, tmp_path: Path) -> Path:
    signed = tmp_path / "signed.dcm"
    proc = dvqa("sign", str(_copy(video, tmp_path)), "--key", str(pki["key"]), "--cert", str(pki["cert"]),
                "-o", str(signed))
    assert proc.returncode == 0, proc.stderr
    return signed


@pytest.mark.requirement("DVQA-SIG-002")
def test_one_byte_in_a_pixel_fragment_breaks_both_tools(video: Path, pki, tmp_path: Path) -> None:
    signed = _signed_by_dvqa(video, pki, tmp_path)
    fragment = list(read_fragments(signed))[1]
    data = signed.read_bytes()
    start = data.index(fragment[:64])
    _flip(signed, start + len(fragment) // 2)  # one bit in the middle of the H.264 stream
    assert list(read_fragments(signed))[1] != fragment
    proc = dvqa("verify", str(signed))
    assert proc.returncode == 1 and "changed after signing" in proc.stdout
    assert not _dcmsign_ok(_dcmsign_verify(signed, pki))


@pytest.mark.requirement("DVQA-SIG-002")
def test_one_byte_in_a_signed_attribute_breaks_both_tools(video: Path, pki, tmp_path: Path) -> None:
    signed = _signed_by_dvqa(video, pki, tmp_path)
    _flip(signed, signed.read_bytes().index(b"Doe^Jane") + 4)  # Doe^Kane: same length, other patient
    assert dvqa("verify", str(signed)).returncode == 1
    assert not _dcmsign_ok(_dcmsign_verify(signed, pki))


def test_element_added_after_signing_is_reported_not_failed(video: Path, pki, tmp_path: Path) -> None:
    signed = _signed_by_dvqa(video, pki, tmp_path)
    ds = pydicom.dcmread(str(signed))
    ds.ImageComments = "added after signing"
    ds.save_as(str(signed))
    proc = dvqa("verify", str(signed), "--trust", str(pki["ca"]), "--format", "json")
    assert proc.returncode == 0, proc.stdout
    sig = json.loads(proc.stdout)[0]["signatures"][0]
    assert sig["ok"] and sig["not_covered"] == ["(0020,4000)"]
    assert _dcmsign_ok(_dcmsign_verify(signed, pki))


def test_signature_inside_a_sequence_item(video: Path, pki, tmp_path: Path) -> None:
    signed = tmp_path / "item-signed.dcm"
    proc = run(tool("dcmsign"), "--sign-item", str(pki["key"]), str(pki["cert"]), "AnatomicRegionSequence[0]",
               "-pw", "+m2", str(video), str(signed))
    assert proc.returncode == 0, proc.stderr
    out = dvqa("verify", str(signed), "--trust", str(pki["ca"]), "--format", "json")
    # the item's signature holds, but it is the file's only one: Pixel Data and the patient are unsigned
    assert out.returncode == 1, out.stdout
    whole, sig = json.loads(out.stdout)[0]["signatures"]
    assert whole["verdict"] == "PARTIAL" and "signed only inside sequence items" in whole["problem"]
    assert sig["ok"] and sig["location"] == "AnatomicRegionSequence[0]/"
    assert "(0008,0100)" in sig["covered"]  # the item's Code Value
    _flip(signed, signed.read_bytes().index(b"87100004") + 1)  # the coded anatomy, inside the item
    broken = json.loads(dvqa("verify", str(signed), "--trust", str(pki["ca"]), "--format", "json").stdout)
    assert broken[0]["signatures"][1]["verdict"] == "FAIL"


@pytest.mark.requirement("DVQA-SIG-001")
def test_keys_encrypted_pem_pkcs12_and_ecdsa(video: Path, pki, tmp_path: Path, monkeypatch) -> None:
    source = _copy(video, tmp_path)
    monkeypatch.setenv("SIGNING_PASSPHRASE", PASSPHRASE)
    for i, key_args in enumerate([("--key", str(pki["key_enc"]), "--cert", str(pki["cert"])),
                                  ("--key", str(pki["p12"]))]):
        out = tmp_path / f"s{i}.dcm"
        proc = dvqa("sign", str(source), *key_args, "--passphrase-env", "SIGNING_PASSPHRASE", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        assert _dcmsign_ok(_dcmsign_verify(out, pki))
    wrong = dvqa("sign", str(source), "--key", str(pki["key_enc"]), "--cert", str(pki["cert"]), "-o",
                 str(tmp_path / "x.dcm"))
    assert wrong.returncode == 2 and "passphrase" in wrong.stderr and not (tmp_path / "x.dcm").exists()
    ecdsa = dvqa("sign", str(source), "--key", str(pki["ec_key"]), "--cert", str(pki["ec_cert"]),
                 "--signature-profile", "base", "-o", str(tmp_path / "e.dcm"))
    assert ecdsa.returncode == 2 and "RSA profile" in ecdsa.stderr
    ecdsa = dvqa("sign", str(source), "--key", str(pki["ec_key"]), "--cert", str(pki["ec_cert"]),
                 "--signature-profile", "none", "-o", str(tmp_path / "e.dcm"))
    assert ecdsa.returncode == 0, ecdsa.stderr
    assert dvqa("verify", str(tmp_path / "e.dcm"), "--trust", str(pki["ca"])).returncode == 0
    assert source.read_bytes() == video.read_bytes()  # with -o, the input is never touched


@pytest.mark.requirement("DVQA-SIG-003")
def test_trust_rejects_a_signer_from_another_ca(video: Path, pki, tmp_path: Path) -> None:
    signed = _signed_by_dvqa(video, pki, tmp_path)
    assert dvqa("verify", str(signed), "--trust", str(pki["ca"])).returncode == 0
    proc = dvqa("verify", str(signed), "--trust", str(pki["other_ca"]))
    assert proc.returncode == 1 and "untrusted: no valid path from CN=dvqa test signer" in proc.stdout


def test_unsigned_file_passes_unless_a_signature_is_required(video: Path) -> None:
    assert dvqa("verify", str(video)).returncode == 0
    proc = dvqa("verify", str(video), "--require-signature")
    assert proc.returncode == 1 and "no digital signature" in proc.stdout


@pytest.mark.requirement("DVQA-OUT-001")
def test_convert_signs_before_the_file_appears(pki, tmp_path: Path) -> None:
    out = tmp_path / "signed.dcm"
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(out), "--sign", str(pki["key"]),
                "--cert", str(pki["cert"]), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["signature"]["uid"] == pydicom.dcmread(str(out)).DigitalSignaturesSequence[0].DigitalSignatureUID
    assert record["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert _dcmsign_ok(_dcmsign_verify(out, pki))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signed.dcm"]  # no temporary left


@pytest.mark.requirement("DVQA-EVI-003")
def test_signature_uids_are_random_valid_and_always_64_characters() -> None:
    """A signed file's size must not depend on the draw of its signature UID (evidence rebuilds compare it)."""
    from pydicom.uid import UID

    from dvqa.trust.signature import signature_uid

    uids = [signature_uid() for _ in range(2000)]
    assert len(set(uids)) == 2000 and {len(u) for u in uids} == {64}
    assert all(UID(u).is_valid for u in uids)


@pytest.mark.requirement("DVQA-SIG-001")
def test_sign_uid_root_puts_the_signature_uid_under_the_makers_root(video: Path, pki, tmp_path: Path) -> None:
    """`sign --uid-root` (and `convert --uid-root` for the signature it makes): the Digital Signature UID is the
    device maker's, still 64 characters, and DCMTK still verifies the file."""
    from pydicom.uid import UID

    root = "1.2.826.0.1.3680043.10.999"
    signed = tmp_path / "signed.dcm"
    proc = dvqa("sign", str(video), "-o", str(signed), "--key", str(pki["key"]), "--cert", str(pki["cert"]),
                "--uid-root", root, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    uid = pydicom.dcmread(str(signed)).DigitalSignaturesSequence[0].DigitalSignatureUID
    assert uid.startswith(root + ".") and len(uid) == 64 and UID(uid).is_valid
    assert _dcmsign_ok(_dcmsign_verify(signed, pki))
    bad = dvqa("sign", str(video), "-o", str(tmp_path / "bad.dcm"), "--key", str(pki["key"]), "--cert",
               str(pki["cert"]), "--uid-root", "1.2.x")
    assert bad.returncode == 2 and "--uid-root '1.2.x' is not a valid UID root" in bad.stderr
    assert not (tmp_path / "bad.dcm").exists()
    out = tmp_path / "converted.dcm"
    made = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out), "--no-quality", "--sign",
                str(pki["key"]), "--cert", str(pki["cert"]), "--uid-root", root)
    assert made.returncode == 0, made.stderr
    ds = pydicom.dcmread(str(out))
    assert ds.SOPInstanceUID.startswith(root + ".")
    assert ds.DigitalSignaturesSequence[0].DigitalSignatureUID.startswith(root + ".")
