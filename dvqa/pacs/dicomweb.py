"""STOW-RS (PS3.18 §10.5) with dicomweb-client, over HTTP sessions that always time out and apply
the site's TLS settings."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom

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
    """STOW-RS (PS3.18 §10.5) with dicomweb-client; the per-instance result is read from the response.

    An https:// server's certificate is verified against `tls.ca` (or the system's trusted
    certificates); `tls.cert`/`tls.key` are presented when given. A failed handshake is not retried.
    Each request waits at most `timeout` seconds for the server.
    """
    from dicomweb_client.api import DICOMwebClient

    results = [describe(p, "TLS" if url.startswith("https://") else "clear text") for p in paths]
    sendable = [r for r in results if r.outcome != "unreadable"]
    client = DICOMwebClient(url=url, session=http_session(tls, timeout))
    client.set_http_retry_params(retry=False)  # dvqa's own retries, with its own record of attempts
    attempt = 1
    try:
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


def _stow_attempt(client, url: str, results: list[StoreResult]) -> bool:
    """One STOW-RS request; True when it failed in a way worth retrying (no connection)."""
    import requests

    try:
        for r in results:
            r.sent = True  # until a failure below shows that nothing left
        response = client.store_instances([pydicom.dcmread(r.path) for r in results])
    except requests.exceptions.SSLError as exc:
        reason = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else type(exc).__name__
        for r in results:
            r.sent = False
            r.outcome, r.message = "failed", (f"{url}: the TLS handshake failed ({reason}); check --tls-ca (the "
                                              "server's certificate must be issued for this host by one in it)")
        return False
    except requests.Timeout:
        for r in results:
            r.outcome, r.message = "failed", f"{url}: no answer within the timeout (--timeout)"
        return True
    except requests.ConnectionError as exc:
        for r in results:
            r.sent = False
            r.outcome, r.message = "failed", f"{url}: cannot connect ({type(exc).__name__}); is the server up?"
        return True
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        for r in results:
            r.outcome, r.status = "rejected", status
            r.message = f"{url} answered HTTP {status} to STOW-RS"
        return False
    by_uid = {r.sop_instance: r for r in results}
    for item in response.get("ReferencedSOPSequence", []):
        r = by_uid.get(str(item.ReferencedSOPInstanceUID))
        if r:
            r.outcome, r.message = "stored", str(item.get("RetrieveURL", ""))
    for item in response.get("FailedSOPSequence", []):
        r = by_uid.get(str(item.ReferencedSOPInstanceUID))
        if r:
            reason = item.get("FailureReason")
            r.outcome, r.status = "rejected", int(reason) if reason is not None else None
            r.message = f"the server refused it (Failure Reason 0x{int(reason):04X})" if reason is not None \
                else "the server refused it"
    for r in results:
        if r.outcome == "not sent":
            r.outcome, r.message = "failed", "the STOW-RS response does not mention this instance"
    return False
