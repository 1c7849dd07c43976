"""STOW-RS (PS3.18 §10.5), streamed from the files with httpx; and the requests sessions of the other DICOMweb
clients (dicomweb-client: QIDO/WADO in dvqa pacs matrix), which always time out and apply the site's TLS
settings."""

from __future__ import annotations

import secrets
import ssl
import time
from pathlib import Path
from typing import Iterator

from pydicom import Dataset

from dvqa.pacs.association import StoreResult, Tls, describe, interrupted, record_attempt


def http_session(tls: Tls | None, timeout: float = 30.0):
    """A requests session for DICOMweb: every request bounded by `timeout`, and --tls-ca / --tls-cert
    applied to every HTTPS request.

    requests waits forever by default (a frozen server hangs dvqa); an adapter's `send` sets the timeout.
    `Session.verify` is not enough either: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the
    environment override it, so a site CA given on the command line would be silently ignored on many
    systems (it was on this one). The adapter gets the last word.
    """
    import requests  # imported here: every other dvqa command starts without requests
    import requests.adapters

    class Adapter(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            if tls and tls.ca:
                kwargs["verify"] = str(tls.ca)
            if tls and tls.cert:
                kwargs["cert"] = (str(tls.cert), str(tls.key)) if tls.key else str(tls.cert)
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("https://", Adapter())
    session.mount("http://", Adapter())
    return session


def stow(url: str, paths: list[Path], retries: int = 3, backoff: float = 1.0, tls: Tls | None = None,
         timeout: float = 30.0) -> list[StoreResult]:
    """STOW-RS (PS3.18 §10.5): one POST of every file as a part of a multipart/related body, each file's own
    bytes streamed from disk as they are sent (never parsed or re-encoded: what arrives is byte for byte what
    was validated and hashed, and a 500 MB video is not held in memory); the per-instance result is read from
    the response (PS3.18 §10.5.3).

    An https:// server's certificate is verified against `tls.ca` (or the system's trusted
    certificates); `tls.cert`/`tls.key` are presented when given. A failed handshake is not retried.
    Each request waits at most `timeout` seconds for the server to accept or answer.
    """
    import httpx  # imported here: every other dvqa command starts without it

    results = [describe(p, "TLS" if url.startswith("https://") else "clear text") for p in paths]
    sendable = [r for r in results if r.outcome != "unreadable"]
    verify: ssl.SSLContext | bool = (tls or Tls()).context() if url.startswith("https://") else False
    attempt = 1
    try:
        with httpx.Client(verify=verify, timeout=timeout) as client:
            for attempt in range(1, retries + 2):
                if not sendable:
                    break
                if attempt > 1:
                    time.sleep(backoff * 2 ** (attempt - 2))
                for r in sendable:
                    r.attempts = attempt
                retry = _stow_attempt(client, url, sendable)
                record_attempt(sendable, attempt)
                if not retry:
                    break
    except KeyboardInterrupt as exc:
        raise interrupted(exc, sendable, attempt) from None
    return results


def _body(paths: list[Path], boundary: str) -> tuple[int, Iterator[bytes]]:
    """The multipart/related body (PS3.18 §8.6.1.2, RFC 2046 §5.1): its length, and its bytes, each file read in
    1 MiB pieces while it is sent. The boundary must occur in no file: 128 random bits each time."""
    heads = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() for _ in paths]
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + p.stat().st_size + 2 for h, p in zip(heads, paths)) + len(tail)

    def pieces() -> Iterator[bytes]:
        for head, path in zip(heads, paths):
            yield head
            with open(path, "rb") as handle:
                yield from iter(lambda: handle.read(1 << 20), b"")
            yield b"\r\n"
        yield tail
    return length, pieces()


def _stow_attempt(client, url: str, results: list[StoreResult]) -> bool:
    """One STOW-RS request; True when it failed in a way worth retrying (no connection, no answer in time)."""
    import httpx

    boundary = f"dvqa-{secrets.token_hex(16)}"
    length, body = _body([Path(r.path) for r in results], boundary)
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Content-Length": str(length), "Accept": "application/dicom+json"}
    try:
        for r in results:
            r.sent = True  # until a failure below shows that nothing left
        response = client.post(f"{url.rstrip('/')}/studies", content=body, headers=headers)
    except httpx.TimeoutException:
        for r in results:
            r.outcome, r.message = "failed", f"{url}: no answer within the timeout (--timeout)"
        return True
    except httpx.TransportError as exc:
        handshake = _tls_failure(exc)
        for r in results:
            r.sent = not isinstance(exc, httpx.ConnectError)
            r.outcome, r.message = "failed", (
                f"{url}: the TLS handshake failed ({handshake}); check --tls-ca (the server's certificate must be "
                "issued for this host by one in it)" if handshake else
                f"{url}: cannot connect ({type(exc).__name__}); is the server up?")
        return handshake is None
    if response.status_code >= 400:
        for r in results:
            r.outcome, r.status = "rejected", response.status_code
            r.message = f"{url} answered HTTP {response.status_code} to STOW-RS"
        return False
    _read_answer(response, results)
    return False


def _tls_failure(exc: BaseException) -> str | None:
    """Why the TLS handshake failed, when that is what `exc` (or what caused it) is; None otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return "certificate verify failed"
        if isinstance(seen, ssl.SSLError):
            return seen.reason or type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else None


def _read_answer(response, results: list[StoreResult]) -> None:
    """Each instance's outcome from the Store Instances Response Module (PS3.18 §10.5.3, DICOM JSON)."""
    try:
        answer = Dataset.from_json(response.json()) if response.content else Dataset()
    except ValueError:
        answer = Dataset()
    by_uid = {r.sop_instance: r for r in results}
    for item in answer.get("ReferencedSOPSequence", []):
        r = by_uid.get(str(item.get("ReferencedSOPInstanceUID", "")))
        if r:
            r.outcome, r.message = "stored", str(item.get("RetrieveURL", ""))
    for item in answer.get("FailedSOPSequence", []):
        r = by_uid.get(str(item.get("ReferencedSOPInstanceUID", "")))
        if r:
            reason = item.get("FailureReason")
            r.outcome, r.status = "rejected", int(reason) if reason is not None else None
            r.message = f"the server refused it (Failure Reason 0x{int(reason):04X})" if reason is not None \
                else "the server refused it"
    for r in results:
        if r.outcome == "not sent":
            r.outcome, r.message = "failed", "the STOW-RS response does not mention this instance"
