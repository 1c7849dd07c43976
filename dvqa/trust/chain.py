"""Who signed: the signer's certificate checked against the site's trust anchors.

A signature only proves that the holder of the certificate's key signed; the name in the
certificate is whatever its maker wrote. Anyone can make a self-signed certificate named
"O=Clinic,CN=QA Signer" and re-sign an edited file with it, so without a trust anchor (`--trust`)
the signer is *not authenticated*: dvqa says so, shows the certificate's SHA-256 fingerprint (which
a site can compare with the one it keeps) and fails unless the user explicitly accepts that.

With anchors the path is built and checked by cryptography's X.509 verification API
(`cryptography.x509.verification`, RFC 5280 path validation with the Web PKI profile for CA
certificates), at the signing time: every CA on the path must have basicConstraints CA:TRUE and
keyCertSign, every certificate must be valid at that time. On top of it, dvqa's signer policy:
the signer's own certificate must not be a CA (basicConstraints CA:TRUE is refused) and, when it
has keyUsage, that must allow digitalSignature or nonRepudiation; a trust anchor is a CA that
issued the signer's certificate, never the signer's certificate itself pinned in `--trust`; and
every key on the path must be at least RSA 2048 or EC 256 bits.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
MAX_CHAIN_DEPTH = 8


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, as `openssl x509 -fingerprint -sha256` prints it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def weak_key(cert: x509.Certificate) -> str:
    """Why the certificate's key is too small to trust a signature with, or "" when it is not."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"its RSA key has {key.key_size} bits (dvqa requires at least {MIN_RSA_BITS})"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_BITS:
        return f"its EC key has {key.curve.key_size} bits (dvqa requires at least {MIN_EC_BITS})"
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return "its key is neither RSA nor EC"
    return ""


def _not_a_ca(_policy: object, _cert: x509.Certificate, value: x509.BasicConstraints | None) -> None:
    if value is not None and value.ca:
        raise ValueError("the signer's certificate is a CA certificate (basicConstraints CA:TRUE); "
                         "signatures must come from an end-entity certificate")


def _may_sign(_policy: object, _cert: x509.Certificate, value: x509.KeyUsage | None) -> None:
    if value is not None and not (value.digital_signature or value.content_commitment):
        raise ValueError("the signer's certificate's keyUsage allows neither digitalSignature nor nonRepudiation")


def _signer_policy() -> ExtensionPolicy:
    """End-entity rules for a document signer (not a TLS client: no SAN or extendedKeyUsage needed)."""
    return (ExtensionPolicy.permit_all()
            .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _not_a_ca)
            .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _may_sign))


def check_path(cert: x509.Certificate, anchors: Sequence[x509.Certificate], when: dt.datetime,
               intermediates: Sequence[x509.Certificate] = ()) -> str:
    """"trusted: ..." when `cert` chains to one of `anchors` at `when`, else "untrusted: <why>"."""
    if not anchors:
        return "untrusted: the --trust file holds no certificate"
    verifier = (PolicyBuilder().store(Store(list(anchors))).time(when).max_chain_depth(MAX_CHAIN_DEPTH)
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_signer_policy())
                .build_client_verifier())
    try:
        chain = verifier.verify(cert, list(intermediates)).chain
    except VerificationError as exc:
        return f"untrusted: no valid path from {cert.subject.rfc4514_string()} to a --trust certificate at " \
               f"the signing time {when.isoformat()} ({_reason(exc)})"
    if len(chain) < 2:
        return (f"untrusted: the signer's own certificate {cert.subject.rfc4514_string()} is in --trust; give the "
                "CA that issued it, not the signer's certificate")
    for link in chain:
        weak = weak_key(link)
        if weak:
            return f"untrusted: {link.subject.rfc4514_string()} on the path: {weak}"
    return "trusted: issued by " + ", issued by ".join(c.subject.rfc4514_string() for c in chain[1:])


def _reason(exc: VerificationError) -> str:
    """The library's message without its Python object dump."""
    text = str(exc).removeprefix("validation failed: ")
    return text.split(" (encountered processing")[0]
