"""Detached signatures over a file's bytes: the evidence bundle's manifest.

The key options are `dvqa sign`'s (PEM or PKCS#12, RSA or ECDSA, via Signer). The signature is
RSA PKCS#1 v1.5 or ECDSA (DER), with SHA-256 over the whole file - what
`openssl dgst -sha256 -sign KEY -out SIG FILE` makes - so anyone can check it without dvqa:
`openssl dgst -sha256 -verify <(openssl x509 -in CERT -pubkey -noout) -signature SIG FILE`.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from dvqa.trust.signature import Signer

ALGORITHM = {"rsa": "RSA PKCS#1 v1.5 with SHA-256", "ec": "ECDSA with SHA-256"}


def algorithm_of(certificate: x509.Certificate) -> str:
    return ALGORITHM["ec" if isinstance(certificate.public_key(), ec.EllipticCurvePublicKey) else "rsa"]


def sign(data: bytes, signer: Signer) -> bytes:
    if isinstance(signer.key, ec.EllipticCurvePrivateKey):
        return signer.key.sign(data, ec.ECDSA(hashes.SHA256()))
    return signer.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def verifies(data: bytes, signature: bytes, certificate: x509.Certificate) -> bool:
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True
