"""The bundle's manifest: every file with its size and SHA-256, signed as a whole.

What `dvqa evidence verify` proves: each listed file is there with its bytes unchanged, nothing
was added or removed, and the manifest itself is what the signer signed (so nobody rewrote a file
and its hash together). Paths are relative, '/'-separated and sorted, so the same bundle gives the
same manifest wherever it is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from dvqa import __version__
from dvqa.core.words import plural
from dvqa.core import outputs
from dvqa.core.digest import sha256_file
from dvqa.core.errors import DvqaError, InputError
from dvqa.core.regular import read_regular
from dvqa.evidence import reproducible
from dvqa.trust import detached
from dvqa.trust.chain import fingerprint
from dvqa.trust.signature import Signer
from dvqa.trust.verification import check_chain

MANIFEST, SIGNATURE, CERTIFICATE = "manifest.json", "manifest.sig", "manifest-signer.crt"
INDEX = "index.json"
MANIFEST_CAP = 64 * 1024 * 1024  # a bundle of thousands of files lists a few MiB; anything larger is not one
FORMAT = "dvqa-evidence-manifest/1"


def listed_files(folder: Path) -> tuple[list[str], list[str]]:
    """(regular files, anything else) below `folder`, relative; the manifest's own files excluded."""
    regular, other = [], []
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs):
            if (Path(root) / name).is_symlink():
                other.append((Path(root) / name).relative_to(folder).as_posix())
        for name in files:
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if relative in (MANIFEST, SIGNATURE, CERTIFICATE):
                continue
            (regular if path.is_file() and not path.is_symlink() else other).append(relative)
    return sorted(regular), sorted(other)


def write(folder: Path, signer: Signer | None, created: dt.datetime, deidentification: dict | None = None) -> dict:
    """Write manifest.json (and, with a signer, manifest.sig and the signer's certificate) into `folder`."""
    from cryptography.hazmat.primitives.serialization import Encoding

    files, _ = listed_files(folder)
    hashes = {p: sha256_file(folder / p) for p in files}
    content = reproducible.content_digests(folder, hashes, folder.name)
    manifest = {
        "format": FORMAT, "dvqa_version": __version__,
        "created_utc": created.isoformat(timespec="seconds"),
        "content_sha256": "SHA-256 without times, process ids, signatures and the build folder's name "
                          "(dvqa.evidence.reproducible): equal in every build from the same inputs and versions",
        "files": [{"path": p, "bytes": (folder / p).stat().st_size, "sha256": hashes[p],
                   **({"content_sha256": content[p]} if content[p] else {"volatile": reproducible.VOLATILE_FILES[p]})}
                  for p in files],
        "signature": None if signer is None else {
            "file": SIGNATURE, "certificate": CERTIFICATE, "algorithm": detached.algorithm_of(signer.certificate),
            "signer": signer.certificate.subject.rfc4514_string()},
        "deidentification": deidentification,  # None: the bundle holds patient data as the inputs did
    }
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    outputs.write_atomic(folder / MANIFEST, data)
    if signer is not None:
        outputs.write_atomic(folder / SIGNATURE, detached.sign(data, signer))
        outputs.write_atomic(folder / CERTIFICATE, signer.certificate.public_bytes(Encoding.PEM))
    return manifest


@dataclass
class Check:
    files: int = 0
    problems: list[str] = field(default_factory=list)
    signer: str = ""
    chain: str = ""
    fingerprint: str = ""  # SHA-256 of the manifest signer's certificate
    verdict: str = ""  # the build's own, from index.json

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, **self.__dict__}


def check(folder: Path, trust: list[x509.Certificate] | None = None, accept_unauthenticated: bool = False) -> Check:
    """Every hash, nothing added or removed, the manifest's signature and its signer: chained to `trust`, or
    (without anchors) a problem unless `accept_unauthenticated` - anyone can sign with a made-up certificate."""
    data = _read(folder / MANIFEST, folder)
    try:
        manifest = json.loads(data)
        entries = {e["path"]: e for e in manifest["files"]}
        signature = manifest["signature"]
        if manifest["format"] != FORMAT:
            raise ValueError(manifest["format"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InputError(f"{folder / MANIFEST}: not a dvqa evidence manifest; give the folder "
                         "'dvqa evidence build' wrote.") from None
    result = Check(files=len(entries))
    regular, other = listed_files(folder)
    for path in (SIGNATURE, CERTIFICATE):  # not in the listing, so looked at here: never a link or FIFO
        if os.path.lexists(folder / path) and not _is_regular(folder / path):
            other.append(path)
    for path in other:
        result.problems.append(f"{path}: not a regular file (a link or device), not in any manifest")
    for path in regular:
        if path not in entries:
            result.problems.append(f"{path}: added after the manifest was written")
    for path, entry in entries.items():
        target = folder / path
        if ".." in Path(path).parts or Path(path).is_absolute():
            result.problems.append(f"{path}: the manifest names a path outside the bundle")
        elif path not in regular:
            result.problems.append(f"{path}: removed (listed in the manifest, not in the bundle)")
        elif _member_sha256(target) != entry["sha256"] or target.stat().st_size != entry["bytes"]:
            result.problems.append(f"{path}: changed (its SHA-256 is not the manifest's)")
    _check_signature(folder, data, signature, manifest.get("created_utc", ""), trust, result)
    if result.signer and trust is None and not accept_unauthenticated:
        result.problems.append(f"{CERTIFICATE}: the signer is not authenticated: no --trust anchor, and anyone "
                               f"can make a certificate named {result.signer} (this one's SHA-256 fingerprint "
                               f"{result.fingerprint}); pass --trust CA.pem, or --accept-unauthenticated-signer "
                               "after comparing the fingerprint with the one you keep")
    _check_verdict(folder, entries, result)
    return result


def _check_verdict(folder: Path, entries: dict, result: Check) -> None:
    """The build's own verdict, from index.json (hashed in the manifest): a bundle whose build failed a
    step is not evidence that everything passed, so verify fails it too - a gate that runs only
    `evidence verify` must not pass a failed build."""
    if INDEX not in entries:
        result.problems.append(f"{INDEX}: not in the manifest, so the build's verdict is unknown")
        return
    try:
        index = json.loads(read_regular(folder / INDEX, "the bundle's index", MANIFEST_CAP))
        failed = [step["name"] for step in index["steps"] if step["status"] != "passed"]
        result.verdict = str(index["verdict"])
    except (DvqaError, ValueError, KeyError, TypeError):
        result.problems.append(f"{INDEX}: not the index 'dvqa evidence build' writes, so the build's verdict "
                               "is unknown")
        return
    if failed:
        result.problems.append(f"the build failed {len(failed)} of {plural(len(index['steps']), 'step')} "
                               f"({', '.join(failed)}): the bundle records them, but it is not evidence that "
                               "they passed")


def _is_regular(path: Path) -> bool:
    return stat.S_ISREG(os.lstat(path).st_mode)


def _member_sha256(path: Path) -> str | None:
    """The SHA-256 of a bundle member that is a regular file at its own path - opened without following
    a link and without waiting on a FIFO swapped in after the listing - or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()


def _check_signature(folder: Path, data: bytes, signature: dict | None, created: str,
                     trust: list[x509.Certificate] | None, result: Check) -> None:
    if not signature:
        result.problems.append(f"{MANIFEST}: not signed, so its hashes prove nothing against someone who "
                               "rewrote a file and the manifest together; build with --key and --cert")
        return
    try:
        certificate = x509.load_pem_x509_certificate(_read(folder / CERTIFICATE, folder))
    except ValueError:
        result.problems.append(f"{CERTIFICATE}: not a PEM certificate")
        return
    result.signer = certificate.subject.rfc4514_string()
    result.fingerprint = fingerprint(certificate)
    if not detached.verifies(data, _read(folder / SIGNATURE, folder), certificate):
        result.problems.append(f"{MANIFEST}: its signature does not verify (the manifest, the signature or the "
                               "certificate was changed)")
        return
    if trust is not None:
        when = created.replace("-", "").replace(":", "").replace("T", "")  # ISO to the DT form check_chain reads
        result.chain = check_chain(certificate, trust, when)
        if not result.chain.startswith("trusted"):
            result.problems.append(f"{CERTIFICATE}: {result.chain}")


def _read(path: Path, folder: Path) -> bytes:
    """The manifest, its signature or certificate: a regular file in the bundle (never a link or FIFO,
    which would make verify check or wait on something outside it), read to a size cap."""
    if path.name == MANIFEST and not os.path.lexists(path):
        raise InputError(f"{folder}: no {MANIFEST}; give the folder 'dvqa evidence build' wrote.")
    if not os.path.lexists(path):
        return b""
    if path.is_symlink():
        if path.name != MANIFEST:
            return b""  # reported as not a regular file; the signature then does not verify
        raise InputError(f"{path}: is a symbolic link, not the bundle's own manifest; give the folder "
                         "'dvqa evidence build' wrote.")
    try:
        return read_regular(path, f"the bundle's {path.name}", MANIFEST_CAP)
    except InputError:
        if path.name == MANIFEST:
            raise
        return b""
