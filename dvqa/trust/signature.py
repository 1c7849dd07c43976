"""DICOM digital signatures (PS3.15 Annex C; PS3.3 C.12.1.1.3): signing, and the MAC that verifying recomputes.

The MAC is computed over the signed Data Elements encoded in the MAC Calculation
Transfer Syntax (Explicit VR Little Endian), in the order they appear, in the
standard's "signature format": sequences and items are written without their
lengths (the tags of each item and the Sequence Delimitation Item stand in for
them, PS3.3 C.12.1.1.3.1.1), and so are encapsulated Pixel Data and its
fragments. After them come the elements of the Digital Signatures Sequence
item itself except Certificate of Signer, Signature, Certified Timestamp Type
and Certified Timestamp, so that the signature also covers its own UID, time
and MAC ID. The MAC is then signed with the signer's key: RSASSA-PKCS1-v1_5
(RFC 2437/8017) as PS3.15 C.1 requires for the RSA profiles, or ECDSA (DER)
outside them.

Files are read with pydicom; elements not touched keep their raw bytes, so the
MAC is over exactly what is in the file. Checking signatures is dvqa.trust.verification.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pydicom
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs12
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_ROOT_UID, ExplicitVRLittleEndian

from dvqa.core import outputs
from dvqa.core.errors import InputError, UsageError
from dvqa.dicom import dicomread

MAC_TRANSFER_SYNTAX = ExplicitVRLittleEndian
MAC_ALGORITHMS = ("RIPEMD160", "SHA1", "MD5", "SHA256", "SHA384", "SHA512")  # PS3.15 C.1
SIGNING_ALGORITHMS = {"SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}
# DigestInfo prefixes (RFC 8017 §9.2 note 1; RIPEMD-160: OID 1.3.36.3.2.1), for checking RSA
# signatures whose hash the cryptography library cannot name (RIPEMD-160, dcmsign's default)
DIGEST_INFO = {
    "RIPEMD160": bytes.fromhex("3021300906052b2403020105000414"),
    "SHA1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "MD5": bytes.fromhex("3020300c06082a864886f70d020505000410"),
    "SHA256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "SHA384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "SHA512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
PROFILES = ("none", "base", "creator", "authorization")
# the profiles whose requirements `verify` checks (PS3.15 C.1, C.2); authorization's (C.3) it does not
VERIFIED_PROFILES = ("base", "creator")
CERTIFICATE_TYPE = "X509_1993_SIG"

DIGITAL_SIGNATURES = Tag(0xFFFA, 0xFFFA)
MAC_PARAMETERS = Tag(0x4FFE, 0x0001)
ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
SEQUENCE_DELIMITER = struct.pack("<HH", 0xFFFE, 0xE0DD)
PIXEL_DATA = Tag(0x7FE0, 0x0010)
# elements of the signature item the MAC does not cover (they hold or certify the result)
NOT_IN_MAC = {Tag(0x0400, 0x0115), Tag(0x0400, 0x0120), Tag(0x0400, 0x0305), Tag(0x0400, 0x0310)}

# PS3.15 C.2 (Creator RSA): these are signed whenever present. General Equipment module,
# SOP Common creation date/time, the UIDs, Image Pixel module and Pixel Data; overlays too.
CREATOR_REQUIRED = {
    Tag(0x0008, 0x0016), Tag(0x0008, 0x0018), Tag(0x0008, 0x0012), Tag(0x0008, 0x0013),
    Tag(0x0020, 0x000D), Tag(0x0020, 0x000E),
    Tag(0x0008, 0x0070), Tag(0x0008, 0x0080), Tag(0x0008, 0x0081), Tag(0x0008, 0x1010),
    Tag(0x0008, 0x1040), Tag(0x0008, 0x1090), Tag(0x0018, 0x1000), Tag(0x0018, 0x1020),
    Tag(0x0018, 0x1050), Tag(0x0018, 0x1200), Tag(0x0018, 0x1201), Tag(0x0028, 0x0120),
    Tag(0x0028, 0x0002), Tag(0x0028, 0x0004), Tag(0x0028, 0x0006), Tag(0x0028, 0x0010),
    Tag(0x0028, 0x0011), Tag(0x0028, 0x0034), Tag(0x0028, 0x0100), Tag(0x0028, 0x0101),
    Tag(0x0028, 0x0102), Tag(0x0028, 0x0103), PIXEL_DATA,
}
# Digital Signature Purpose (CID 7007, from ASTM E1762): code value -> meaning, the ones dvqa
# offers. None is implied by a profile: dcmsign's profiles add none either.
PURPOSES = {"1": "Author's Signature", "5": "Verification Signature", "14": "Source Signature"}



def signature_uid(root: str | None = None) -> str:
    """A random Digital Signature UID under `root` (a device maker's own, `--uid-root`) or else pydicom's,
    always the maximum 64 characters (PS3.5 §9.1).

    pydicom's generate_uid draws a number without leading zeros, so its length - and with it the signed
    file's size - varied from draw to draw; two builds of an evidence bundle from the same inputs then
    differed in a size that is not a time or a signature (tests/test_evidence.py caught it)."""
    prefix = PYDICOM_ROOT_UID
    if root:
        prefix = root if root.endswith(".") else root + "."
        if not pydicom.uid.UID(prefix[:-1]).is_valid or len(prefix) > 40:
            raise UsageError(f"--uid-root {root!r} is not a valid UID root of at most 39 characters.")
    digits = 64 - len(prefix)
    return prefix + str(10 ** (digits - 1) + secrets.randbelow(9 * 10 ** (digits - 1)))

def signable(tag: BaseTag, vr: str | None) -> bool:
    """Whether an element may be in Data Elements Signed (PS3.3 C.12.1.1.3.1.1)."""
    if tag.group < 0x0008 or tag.element == 0x0000 or tag == Tag(0x0008, 0x0001):
        return False
    if tag.group == 0xFFFA or tag in (MAC_PARAMETERS, Tag(0xFFFC, 0xFFFC), Tag(0xFFFE, 0xE00D)):
        return False
    return vr != "UN"


def _contains_un(seq: Sequence) -> bool:
    for item in seq:
        for tag in item.keys():
            elem = item.get_item(tag)
            if elem.VR == "UN" or (elem.VR == "SQ" and _contains_un(item[tag].value)):
                return True
    return False


def _signable_in(ds: Dataset, tag: BaseTag) -> bool:
    elem = ds.get_item(tag)
    if not signable(tag, elem.VR):
        return False
    return not (elem.VR == "SQ" and _contains_un(ds[tag].value))


class _Mac:
    """The bytes the MAC is computed over, fed straight into the hash."""

    def __init__(self, algorithm: str) -> None:
        if algorithm not in MAC_ALGORITHMS:
            raise InputError(f"MAC Algorithm {algorithm!r} is not one of PS3.15 C.1's {MAC_ALGORITHMS}")
        self.algorithm = algorithm
        self.hash = hashlib.new(algorithm.lower())

    def element(self, ds: Dataset, tag: BaseTag) -> None:
        raw = ds.get_item(tag)
        tag_bytes = struct.pack("<HH", tag.group, tag.element)
        if raw.VR == "SQ":
            self.hash.update(tag_bytes + b"SQ\0\0")
            for item in ds[tag].value:
                self.hash.update(ITEM)  # item tags without lengths, and no item delimiters
                for inner in sorted(item.keys()):
                    if _signable_in(item, inner):
                        self.element(item, inner)
            self.hash.update(SEQUENCE_DELIMITER)
            return
        if tag == PIXEL_DATA and _undefined_length(raw):
            self.hash.update(tag_bytes + raw.VR.encode() + b"\0\0")
            for fragment in generate_fragments(ds.PixelData):
                self.hash.update(ITEM + fragment)
            self.hash.update(SEQUENCE_DELIMITER)
            return
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_data_element(buffer, raw, ds.get("SpecificCharacterSet"))
        self.hash.update(buffer.getvalue())

    def digest(self) -> bytes:
        return self.hash.digest()


def _undefined_length(elem) -> bool:
    if elem.is_raw:
        return elem.length == 0xFFFFFFFF
    return bool(elem.is_undefined_length)


def mac_of(ds: Dataset, tags: Iterable[BaseTag], signature_item: Dataset, algorithm: str) -> bytes:
    mac = _Mac(algorithm)
    for tag in tags:
        mac.element(ds, tag)
    for tag in sorted(signature_item.keys()):
        if tag not in NOT_IN_MAC:
            mac.element(signature_item, tag)
    return mac.digest()


@dataclass
class Signer:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    allow_outside_validity: bool = False  # sign with a certificate that is expired or not yet valid

    def check_validity(self, when: dt.datetime) -> None:
        """A signature made outside its certificate's validity period proves nothing; refuse unless asked."""
        cert = self.certificate
        if cert.not_valid_before_utc <= when <= cert.not_valid_after_utc or self.allow_outside_validity:
            return
        state = "expired" if when > cert.not_valid_after_utc else "not yet valid"
        raise UsageError(f"the signer's certificate ({cert.subject.rfc4514_string()}) is {state} at the signing time "
                         f"{when.isoformat(timespec='seconds')} (valid {cert.not_valid_before_utc.isoformat()} to "
                         f"{cert.not_valid_after_utc.isoformat()}); renew it, or pass --allow-invalid-certificate "
                         "to sign anyway (verify will report it).")

    @classmethod
    def load(cls, key_path: Path, cert_path: Path | None, passphrase: str | None,
             allow_outside_validity: bool = False) -> "Signer":
        data = key_path.read_bytes()
        secret = passphrase.encode() if passphrase is not None else None
        try:
            if key_path.suffix.lower() in (".p12", ".pfx"):
                key, cert, _ = pkcs12.load_key_and_certificates(data, secret)
                if cert_path:
                    cert = _load_cert(cert_path)
            else:
                key = serialization.load_pem_private_key(data, secret)
                if cert_path is None:
                    raise UsageError(f"{key_path}: a PEM key needs --cert CERT.pem.")
                cert = _load_cert(cert_path)
        except (ValueError, TypeError) as exc:
            hint = ("give its passphrase with --passphrase-env VAR"
                    if "password" in str(exc).lower() or "encrypted" in str(exc).lower()
                    else "give a PEM or PKCS#12 private key")
            raise UsageError(f"{key_path}: cannot read the private key ({exc}); {hint}.") from None
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) or cert is None:
            raise UsageError(f"{key_path}: only RSA and ECDSA keys with a certificate are supported.")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():
            raise UsageError(f"{cert_path or key_path}: the certificate is not for this private key.")
        signer = cls(key, cert, allow_outside_validity)
        signer.check_validity(dt.datetime.now(dt.timezone.utc))  # fail before any work, not after it
        return signer


def _load_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise UsageError(f"{path}: not an X.509 certificate ({exc}).") from None


@dataclass
class SignatureResult:
    uid: str
    mac_id: int
    algorithm: str
    signed_tags: list[str]
    profile: str
    notes: list[str] = field(default_factory=list)  # e.g. leftovers of killed dvqa processes removed


def sign_dataset(ds: Dataset, signer: Signer, profile: str = "base", algorithm: str = "SHA256",
                 purpose: str | None = None, now: dt.datetime | None = None,
                 transfer_syntax: str = MAC_TRANSFER_SYNTAX, uid_root: str | None = None) -> SignatureResult:
    """Add one signature over every signable top-level element of `ds` (in memory); its Digital Signature
    UID under `uid_root` when given."""
    if profile not in PROFILES:
        raise UsageError(f"--signature-profile {profile!r}: use one of {', '.join(PROFILES)}.")
    if profile != "none" and not isinstance(signer.key, rsa.RSAPrivateKey):
        raise UsageError(f"the {profile} profile is an RSA profile (PS3.15 C.1-C.3); use an RSA key, "
                         "or --signature-profile none for ECDSA.")
    if algorithm not in SIGNING_ALGORITHMS:
        raise UsageError(f"--mac {algorithm!r}: dvqa signs with {', '.join(SIGNING_ALGORITHMS)}.")
    tags = [t for t in sorted(ds.keys()) if _signable_in(ds, t)]
    if profile == "creator" and not {Tag(0x0008, 0x0016), Tag(0x0008, 0x0018)} <= set(tags):
        raise InputError("the creator profile needs SOP Class and SOP Instance UID in the file.")
    # every signable element is signed, so the creator profile's list (CREATOR_REQUIRED, when
    # present) is always covered; verify reports which profiles a signature's coverage meets
    existing = [int(i.MACIDNumber) for i in ds.get("MACParametersSequence", [])]
    mac_id = max(existing, default=0) + 1
    moment = now or dt.datetime.now(dt.timezone.utc)
    signer.check_validity(moment)
    when = moment.strftime("%Y%m%d%H%M%S.%f+0000")
    item = Dataset()
    item.MACIDNumber = mac_id
    item.DigitalSignatureUID = signature_uid(uid_root)
    item.DigitalSignatureDateTime = when
    item.CertificateType = CERTIFICATE_TYPE
    item.CertificateOfSigner = signer.certificate.public_bytes(serialization.Encoding.DER)
    if purpose:
        coded = Dataset()
        coded.CodeValue, coded.CodingSchemeDesignator = purpose, "ASTM-sigpurpose"
        coded.CodeMeaning = PURPOSES.get(purpose, f"purpose {purpose}")
        item.DigitalSignaturePurposeCodeSequence = Sequence([coded])
    # the MAC is over the encoded signature item, so encode it the way it will be read back
    item = _round_trip(item)
    digest = mac_of(ds, tags, item, algorithm)
    hash_cls = SIGNING_ALGORITHMS[algorithm]
    if isinstance(signer.key, rsa.RSAPrivateKey):
        value = signer.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hash_cls()))
    else:
        value = signer.key.sign(digest, ec.ECDSA(utils.Prehashed(hash_cls())))
    item.Signature = value
    params = Dataset()
    params.MACIDNumber = mac_id
    params.MACCalculationTransferSyntaxUID = transfer_syntax
    params.MACAlgorithm = algorithm
    params.add_new(Tag(0x0400, 0x0020), "AT", list(tags))
    for tag, entry in ((MAC_PARAMETERS, params), (DIGITAL_SIGNATURES, item)):
        if tag in ds:
            ds[tag].value.append(entry)
        else:
            ds.add_new(tag, "SQ", Sequence([entry]))
    return SignatureResult(str(item.DigitalSignatureUID), mac_id, algorithm, [_tag(t) for t in tags], profile)


def _round_trip(item: Dataset) -> Dataset:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buffer, item)
    return pydicom.filereader.read_dataset(DicomBytesIO(buffer.getvalue()), False, True)


def _tag(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _explicit_little(uid: str) -> bool:
    """Explicit VR Little Endian, or an encapsulated syntax (all of which encode the same way)."""
    u = pydicom.uid.UID(uid)
    return u == MAC_TRANSFER_SYNTAX or (u.is_transfer_syntax and u.is_encapsulated)


def _der(value: bytes) -> bytes:
    """A DER structure without the pad byte DICOM adds to odd-length OB values (PS3.5 §7.1)."""
    if len(value) < 2 or value[1] < 0x80:
        return value[: 2 + (value[1] if len(value) > 1 else 0)]
    count = value[1] & 0x7F
    return value[: 2 + count + int.from_bytes(value[2 : 2 + count], "big")]


def sign_file(source: Path, output: Path, signer: Signer, profile: str = "base", algorithm: str = "SHA256",
              purpose: str | None = None, record: Callable[[SignatureResult], object] | None = None,
              uid_root: str | None = None) -> SignatureResult:
    """Sign `source` into `output` (which may be `source`): written beside it, checked, then placed.

    `record(result)` (the audit append) runs as part of placing it: if it fails, `output` is what it
    was before (dvqa.core.outputs.commit).

    Signing in place, read, sign and place happen under an exclusive lock on the file's folder, which
    every in-place dvqa sign takes: two signs of one file at once each add their signature in turn,
    instead of both reading the unsigned file and the second rename dropping the first signature its
    record claims. (With a separate output the last writer wins, as for any output file.)
    """
    in_place = source.resolve() == output.resolve()
    with _folder_lock(output.parent) if in_place else contextlib.nullcontext():
        ds = _read(source)
        syntax = str(ds.file_meta.get("TransferSyntaxUID", MAC_TRANSFER_SYNTAX))
        # encapsulated Pixel Data cannot be expressed in Explicit VR Little Endian: such files are
        # MACed in their own syntax (same element encoding), as DCMTK's dcmsign does
        mac_syntax = syntax if _explicit_little(syntax) else MAC_TRANSFER_SYNTAX
        result = sign_dataset(ds, signer, profile, algorithm, purpose, transfer_syntax=mac_syntax, uid_root=uid_root)
        result.notes = outputs.sweep(output.parent)
        fd, tmp = outputs.temp_file(output.parent, output.name)
        try:
            with os.fdopen(fd, "wb") as handle:
                ds.save_as(handle, enforce_file_format=True)
                handle.flush()
                os.fsync(handle.fileno())
            from dvqa.trust.verification import verify_dataset  # it imports this module: not at the top

            check = [v for v in verify_dataset(_read(tmp)) if v.uid == result.uid]
            # the MAC must hold; who signed is not the question here (sign has no trust anchors), but every
            # failure verify would report is, except a validity period the user chose to sign outside of
            outside_allowed = (bool(check) and signer.allow_outside_validity
                               and check[0].problems == [check[0].certificate])
            if not check or not check[0].intact or (check[0].verdict == "FAIL" and not outside_allowed):
                raise InputError(f"{source}: the signature dvqa wrote does not verify "
                                 f"({check[0].problem if check else 'not found'}); nothing was written.")
            outputs.commit(tmp, output, replace=True, record=(lambda: record(result)) if record else None)
        finally:
            tmp.unlink(missing_ok=True)
        return result


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """flock on the folder itself: no lock file to leave behind, released when the process dies."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a file system without flock (some network mounts): sign as before, unlocked
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> Dataset:
    ds = dicomread.read(path, pixels=True)  # to the last byte, or a FileProblem saying where it stopped
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and not syntax.is_little_endian:
        raise InputError(f"{path}: big endian files are not supported for signatures; convert it first.")
    return ds


# verification moved to dvqa.trust.verification; these names stay importable from here
_MOVED = ("VerifyPolicy", "Verification", "verify_dataset", "verify_file", "check_chain", "load_trust",
          "REQUIRED_COVERED", "WEAK_MACS", "WARNED_MACS", "VERDICTS")


def __getattr__(name: str) -> object:
    if name in _MOVED:
        from dvqa.trust import verification

        return getattr(verification, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
