"""Verifying DICOM digital signatures (PS3.15 Annex C): does each signature hold, who made it, what it covers.

A signature "holds" when its MAC over the signed elements matches and the signer's key made it. That
alone says little: anyone can make a certificate with any name (so without a trust anchor the signer
is UNAUTHENTICATED), a signature may cover two harmless elements of a file whose video was swapped
(PARTIAL), and PS3.15 still lists MD5 and SHA-1 MACs. The verdict - OK, PARTIAL, UNAUTHENTICATED or
FAIL - says which; `VerifyPolicy` holds what the caller demands. The MAC itself is computed by
dvqa.trust.signature, the same code that signs; the signer's certificate path by dvqa.trust.chain.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from dvqa.core.errors import InputError, UsageError
from dvqa.dicom.dicomread import FileProblem
from dvqa.trust import chain as trust_chain
from dvqa.trust.signature import (
    CREATOR_REQUIRED,
    DIGEST_INFO,
    DIGITAL_SIGNATURES,
    MAC_PARAMETERS,
    PIXEL_DATA,
    SIGNING_ALGORITHMS,
    _der,
    _explicit_little,
    _read,
    _signable_in,
    _tag,
    mac_of,
)

# MACs PS3.15 C.1 still lists but whose collisions are practical: a signature over them proves little
WEAK_MACS = ("MD5", "SHA1")
# accepted, with a warning: RIPEMD-160 is DCMTK dcmsign's default MAC, so files dcmsign signs keep verifying
WARNED_MACS = {"RIPEMD160": "MAC RIPEMD-160 (DCMTK dcmsign's default) is accepted but dated; sign with SHA256 or "
                            "stronger (dcmsign +m2) where you can"}
# what a signature must cover for verify to call it whole: the video and who and what it is of
REQUIRED_COVERED = (PIXEL_DATA, Tag(0x0010, 0x0010), Tag(0x0010, 0x0020), Tag(0x0020, 0x000D),
                    Tag(0x0020, 0x000E), Tag(0x0008, 0x0018))
VERDICTS = ("OK", "PARTIAL", "UNAUTHENTICATED", "FAIL")


@dataclass(frozen=True)
class VerifyPolicy:
    """What `verify` demands of a signature beyond a matching MAC; the defaults are the safe ones.

    Without `trust` the signer is not authenticated (anyone can make a certificate with any name):
    such a signature fails unless `accept_unauthenticated`. A signature at the top level of a file
    that leaves out any of `require_covered` (when the file has it) is PARTIAL: it would still say
    OK after the video was swapped for another patient's."""
    trust: tuple[x509.Certificate, ...] | None = None
    intermediates: tuple[x509.Certificate, ...] = ()
    accept_unauthenticated: bool = False
    accept_weak_mac: bool = False
    require_covered: tuple[BaseTag, ...] = REQUIRED_COVERED


@dataclass
class Verification:
    location: str  # "" for the top level, else the sequence path of the item
    uid: str
    mac_id: int
    algorithm: str
    datetime: str
    signer: str
    purpose: str
    ok: bool
    problem: str = ""
    covered: list[str] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)
    chain: str = ""  # result of --trust, when asked
    certificate: str = ""  # the signer's certificate validity at the signing time, always checked
    profiles_met: list[str] = field(default_factory=list)  # RSA profiles whose requirements it meets
    verdict: str = "FAIL"  # one of VERDICTS; `ok` is whether it passes (OK, or accepted UNAUTHENTICATED)
    intact: bool = False  # the MAC and signature match the signed elements (nothing more)
    fingerprint: str = ""  # SHA-256 of the signer's certificate
    problems: list[str] = field(default_factory=list)  # every reason it is not OK; `problem` is the first
    warnings: list[str] = field(default_factory=list)
    transfer_syntax: str = ""  # what was checked of the (never signed) file meta transfer syntax

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def verify_dataset(ds: Dataset, trust: list[x509.Certificate] | None = None, location: str = "",
                   policy: VerifyPolicy | None = None) -> list[Verification]:
    """Check every signature in `ds`, and in the items of its sequences, recursively.

    `policy` says what else a signature must meet (VerifyPolicy); without it, `trust` (if given) is
    its trust anchors and every other demand is the default."""
    if policy is None:
        policy = VerifyPolicy(trust=tuple(trust) if trust is not None else None)
    results: list[Verification] = []
    params = {}
    for p in ds.get("MACParametersSequence", []):
        try:
            params[int(p.MACIDNumber)] = p
        except (AttributeError, TypeError, ValueError):
            continue  # a damaged item: the signature that needs it fails with "no MAC Parameters item"
    present = [t for t in sorted(ds.keys()) if _signable_in(ds, t)]
    signatures = ds.get("DigitalSignaturesSequence", [])
    for item in signatures:
        results.append(_verify_one(ds, item, params, present, policy, location))
    if "MACParametersSequence" in ds and not signatures:  # signed once; its signature is gone or damaged
        results.append(_failed(location, "", "a MAC Parameters Sequence (4FFE,0001) is present but no Digital "
                               "Signatures Sequence (FFFA,FFFA): the signature was removed or damaged"))
    for tag in sorted(ds.keys()):
        if tag in (DIGITAL_SIGNATURES, MAC_PARAMETERS) or ds.get_item(tag).VR != "SQ":
            continue
        for number, child in enumerate(ds[tag].value):
            results += verify_dataset(child, None, f"{location}{ds[tag].keyword or _tag(tag)}[{number}]/", policy)
    return results


def _failed(location: str, uid: str, problem: str) -> Verification:
    return Verification(location, uid, -1 if uid else 0, "", "", "", "", False, problem, problems=[problem])


def _verify_one(ds: Dataset, item: Dataset, params: dict, present: list[BaseTag],
                policy: VerifyPolicy, location: str) -> Verification:
    """One signature; any damage to its item, its MAC parameters or its certificate is its failure."""
    try:
        return _check_one(ds, item, params, present, policy, location)
    except Exception as exc:  # noqa: BLE001 - a damaged signature item must fail, never crash the run
        return _failed(location, str(item.get("DigitalSignatureUID", "")),
                       f"the signature item cannot be read ({type(exc).__name__}: {exc})")


def _check_one(ds: Dataset, item: Dataset, params: dict, present: list[BaseTag],
               policy: VerifyPolicy, location: str) -> Verification:
    untouched = copy.deepcopy(item)  # reading a value re-encodes it when the MAC is taken: keep the raw bytes
    mac_id = int(item.get("MACIDNumber", -1))
    cert = None
    result = Verification(location, str(item.get("DigitalSignatureUID", "")), mac_id, "",
                          str(item.get("DigitalSignatureDateTime", "")), "", "", False)
    codes = item.get("DigitalSignaturePurposeCodeSequence", [])
    result.purpose = ", ".join(f"{c.CodeValue} {c.get('CodeMeaning', '')}".strip() for c in codes)
    failures: list[str] = []
    signed: list[BaseTag] = []
    try:
        cert = x509.load_der_x509_certificate(_der(bytes(item.CertificateOfSigner)))
        result.signer = cert.subject.rfc4514_string()
        result.fingerprint = trust_chain.fingerprint(cert)
        p = params.get(mac_id)
        if p is None:
            raise ValueError(f"no MAC Parameters item with MAC ID {mac_id}")
        result.algorithm = str(p.MACAlgorithm)
        mac_syntax = str(p.MACCalculationTransferSyntaxUID)
        if not _explicit_little(mac_syntax):
            raise ValueError(f"MAC transfer syntax {mac_syntax} is not an "
                             "explicit VR little endian one, the only encoding dvqa computes")
        value = p["DataElementsSigned"].value
        signed = [Tag(t) for t in (value if p["DataElementsSigned"].VM > 1 else [value])]
        missing = [t for t in signed if t not in ds]
        if missing:
            raise ValueError(f"signed element(s) {', '.join(_tag(t) for t in missing)} were removed")
        digest = mac_of(ds, signed, untouched, result.algorithm)
        _check(cert.public_key(), bytes(item.Signature), digest, result.algorithm)
        result.intact = True
        result.covered = [_tag(t) for t in signed]
        if isinstance(cert.public_key(), rsa.RSAPublicKey):  # the profiles of VERIFIED_PROFILES
            result.profiles_met = ["base"]
            if all(t in set(signed) for t in CREATOR_REQUIRED if t in ds):
                result.profiles_met.append("creator")
        result.not_covered = [_tag(t) for t in present if t not in set(signed)]
        if not location:
            relabelled = _relabelled(ds, mac_syntax, result)
            if relabelled:
                failures.append(relabelled)
    except InvalidSignature:
        failures.append("the signature does not match the signed elements: they were changed after signing")
    except (ValueError, KeyError, AttributeError, TypeError, InputError) as exc:
        failures.append(str(exc) or type(exc).__name__)
    if result.intact and cert is not None:
        failures += _signer_failures(cert, result, policy)
    result.problems = failures
    if failures:
        result.verdict = "FAIL"
    else:
        uncovered = _uncovered(ds, signed, policy) if not location else []
        if uncovered:
            result.problems.append(f"covers {len(signed)} elements but not {', '.join(uncovered)}: those could "
                                   "be replaced (another patient's video or identifiers) and this signature "
                                   "would still hold")
        if policy.trust is None:
            result.problems.append(
                f"the signer is not authenticated: no --trust anchor, and anyone can make a certificate named "
                f"{result.signer} (this one's SHA-256 fingerprint {result.fingerprint}); pass --trust CA.pem, or "
                "--accept-unauthenticated-signer after comparing the fingerprint with the one you keep")
        result.verdict = "PARTIAL" if uncovered else ("UNAUTHENTICATED" if policy.trust is None else "OK")
    result.problem = result.problems[0] if result.problems else ""
    result.ok = result.verdict == "OK" or (result.verdict == "UNAUTHENTICATED" and policy.accept_unauthenticated)
    return result


def _signer_failures(cert: x509.Certificate, result: Verification, policy: VerifyPolicy) -> list[str]:
    """The MAC holds: is the algorithm, the key and the certificate good enough to believe it?"""
    failures = []
    if result.algorithm in WEAK_MACS and not policy.accept_weak_mac:
        failures.append(f"MAC algorithm {result.algorithm} is too weak to prove the elements unchanged (its "
                        "collisions are practical; PS3.15 still lists it): re-sign with SHA256, or pass "
                        "--accept-weak-mac")
    elif result.algorithm in WARNED_MACS:
        result.warnings.append(WARNED_MACS[result.algorithm])
    elif result.algorithm in WEAK_MACS:
        result.warnings.append(f"MAC algorithm {result.algorithm} is weak; accepted because of --accept-weak-mac")
    weak = trust_chain.weak_key(cert)
    if weak:
        failures.append(f"the signer's certificate {result.signer}: {weak}")
    result.certificate = _validity_at(cert, result.datetime)
    if not result.certificate.startswith("valid"):
        failures.append(result.certificate)
    elif policy.trust is not None:
        result.chain = check_chain(cert, list(policy.trust), result.datetime, list(policy.intermediates))
        if not result.chain.startswith("trusted"):
            failures.append(result.chain)
    return failures


def _uncovered(ds: Dataset, signed: list[BaseTag], policy: VerifyPolicy) -> list[str]:
    """The required elements the file has and the signature leaves out, by name."""
    covered = set(signed)
    return [f"{pydicom.datadict.keyword_for_tag(t) or 'element'} {_tag(t)}"
            for t in policy.require_covered if t in ds and t not in covered]


def _relabelled(ds: Dataset, mac_syntax: str, result: Verification) -> str:
    """The file meta (and with it the Transfer Syntax UID) is outside every PS3.15 signature. For an
    encapsulated file the MAC transfer syntax is the file's own, so the one recorded at signing tells
    whether the file was relabelled since (e.g. an H.264 stream now claimed to be HEVC)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax:
        return ""
    encapsulated = {s for s in (syntax, mac_syntax) if pydicom.uid.UID(s).is_encapsulated}
    if encapsulated and syntax != mac_syntax:
        result.transfer_syntax = f"{syntax} is not the {mac_syntax} the file was signed in"
        return (f"the file's Transfer Syntax UID {syntax} is not the one it was signed in ({mac_syntax}): the file "
                "was relabelled after signing (the file meta is outside any DICOM signature)")
    result.transfer_syntax = (f"{syntax}, the one it was signed in (not itself signed: file meta)"
                              if encapsulated else f"{syntax} (file meta, not signed; the data set reads in it)")
    return ""


def _check(public_key, signature: bytes, digest: bytes, algorithm: str) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if algorithm not in SIGNING_ALGORITHMS:
            raise ValueError(f"ECDSA with {algorithm} is not supported")
        public_key.verify(_der(signature), digest, ec.ECDSA(utils.Prehashed(SIGNING_ALGORITHMS[algorithm]())))
        return
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("the certificate's key is neither RSA nor ECDSA")
    if algorithm in SIGNING_ALGORITHMS:
        public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(SIGNING_ALGORITHMS[algorithm]()))
        return
    # RIPEMD-160, SHA-1, MD5: check the PKCS#1 v1.5 encoding by hand (RFC 8017 §8.2.2)
    numbers = public_key.public_numbers()
    size = (numbers.n.bit_length() + 7) // 8
    if len(signature) != size:
        raise InvalidSignature()
    encoded = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(size, "big")
    expected_tail = DIGEST_INFO[algorithm] + digest
    padding_len = size - 3 - len(expected_tail)
    if padding_len < 8 or encoded != b"\x00\x01" + b"\xff" * padding_len + b"\x00" + expected_tail:
        raise InvalidSignature()


def _signing_time(value: str) -> dt.datetime | None:
    """Digital Signature DateTime (DT: YYYYMMDDHHMMSS.FFFFFF&ZZXX) as an aware UTC time."""
    body, offset = value.strip(), "+0000"
    for sign in "+-":
        at = body.find(sign, 8)
        if at > 0:
            body, offset = body[:at], body[at:]
    try:
        when = dt.datetime.strptime(body.split(".")[0].ljust(14, "0")[:14], "%Y%m%d%H%M%S")
        zone = dt.timezone((1 if offset[0] == "+" else -1)
                           * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    except (ValueError, IndexError):
        return None
    return when.replace(tzinfo=zone).astimezone(dt.timezone.utc)


def _validity_at(cert: x509.Certificate, signed_at: str) -> str:
    """Was the signer's certificate valid when the signature says it was made? A signature made with an
    expired or not-yet-valid certificate fails, with or without --trust."""
    when = _signing_time(signed_at)
    if when is None:
        return f"Digital Signature DateTime {signed_at!r} cannot be read, so the certificate cannot be checked"
    period = f"valid {cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()}"
    if when > cert.not_valid_after_utc:
        return f"the signer's certificate had expired at the signing time {when.isoformat()} ({period})"
    if when < cert.not_valid_before_utc:
        return f"the signer's certificate was not yet valid at the signing time {when.isoformat()} ({period})"
    return f"valid at the signing time ({period})"


def check_chain(cert: x509.Certificate, trust: list[x509.Certificate], signed_at: str,
                intermediates: list[x509.Certificate] | None = None) -> str:
    """Whether the signer's certificate chains to a --trust certificate at the signing time
    ("trusted: ..." or "untrusted: <why>"), by dvqa.trust.chain's policy."""
    when = _signing_time(signed_at)
    if when is None:
        return f"untrusted: Digital Signature DateTime {signed_at!r} cannot be read"
    return trust_chain.check_path(cert, trust, when, intermediates or ())


def load_trust(path: Path, option: str = "--trust") -> list[x509.Certificate]:
    data = path.read_bytes()
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise UsageError(f"{option} {path}: not a PEM file of CA certificates ({exc}).") from None


def verify_file(path: Path, trust: list[x509.Certificate] | None = None,
                policy: VerifyPolicy | None = None) -> list[Verification]:
    ds = _read(path)
    results = verify_dataset(ds, trust, policy=policy)
    required = (policy or VerifyPolicy()).require_covered
    if results and all(r.location for r in results) and any(t in ds for t in required):
        gap = ", ".join(f"{pydicom.datadict.keyword_for_tag(t)} {_tag(t)}" for t in required if t in ds)
        problem = (f"signed only inside sequence items: no signature covers {gap}, so the video or the patient "
                   "could be replaced and the item signatures would still hold")
        results.insert(0, Verification("", "", 0, "", "", "", "", False, problem, verdict="PARTIAL",
                                       problems=[problem]))
    if not results and _signature_tag_in_tail(path):
        raise FileProblem(path, "holds a Digital Signatures Sequence (FFFA,FFFA) that the data set does not reach: "
                          "the file was damaged after signing", "file.damaged", "PS3.15 C.1")
    return results


def _signature_tag_in_tail(path: Path, tail: int = 1 << 20) -> bool:
    """Defence in depth: a signature sits after Pixel Data, at the end; is its tag there in the raw bytes?"""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - tail))
        data = handle.read()
    return b"\xfa\xff\xfa\xffSQ" in data or b"\xff\xfa\xff\xfaSQ" in data
