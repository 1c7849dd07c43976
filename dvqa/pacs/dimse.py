"""C-ECHO and C-STORE (pynetdicom), with the fallback copy for a file the PACS refused.

Network failures (refused connection, aborted association, timeouts) are retried with exponential
backoff; a PACS that answers is not retried - its answer stands.
"""

from __future__ import annotations

import time
from pathlib import Path

from pynetdicom import AE, _config

from dvqa.core.errors import EnvironmentProblem, InputError
from dvqa.pacs.association import (MAX_CONTEXTS, REASONS, STORED_STATUSES, Peer, StoreInterrupted, StoreResult,
                                   associate, association_failure, describe, drop_all, echo_contexts, interrupted,
                                   new_ae, record_attempt, request_contexts, store_contexts, uid_name,
                                   why_no_association)

# Send each file's own encoded bytes in PDU-sized chunks, never decoded and re-encoded by pydicom: what
# arrives is byte for byte what was validated and hashed, memory stays flat for large videos, and it is
# faster (pynetdicom 2.0 option; it needs an exact-match presentation context, which dvqa always asks for).
_config.STORE_SEND_CHUNKED_DATASET = True


def echo(peer: Peer) -> dict[str, object]:
    """C-ECHO: the PACS is there and speaks DICOM to this AE title."""
    ae = new_ae(peer)
    request_contexts(ae, echo_contexts())
    started = time.monotonic()
    try:
        assoc = associate(ae, peer)
        if not assoc.is_established:
            raise EnvironmentProblem(association_failure(peer, assoc))
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
    except KeyboardInterrupt:
        drop_all(ae)
        raise
    if not status or status.Status != 0x0000:
        code = getattr(status, "Status", None)
        raise EnvironmentProblem(f"{peer}: C-ECHO answered {code!r} instead of Success (0x0000).")
    return {"peer": str(peer), "status": "0x0000", "elapsed_s": round(time.monotonic() - started, 3)}


def identify(peer: Peer, pairs: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """How the server names its own software on the wire (A-ASSOCIATE-AC's Implementation Class UID and
    Version Name, PS3.7 D.3.3.2): what a measurement was made against, whatever name the server was given.
    The association proposes Verification and the (SOP class, transfer syntax) `pairs` about to be sent,
    so that a server accepting only some of them still answers; nothing is sent on it."""
    ae = new_ae(peer)
    request_contexts(ae, echo_contexts() + store_contexts(pairs or []))
    try:
        assoc = associate(ae, peer)
        if not assoc.is_established:
            raise EnvironmentProblem(association_failure(peer, assoc))
        said = {"implementation_class_uid": str(assoc.acceptor.implementation_class_uid or ""),
                "implementation_version_name": str(assoc.acceptor.implementation_version_name or "")}
        assoc.release()
    except KeyboardInterrupt:
        drop_all(ae)
        raise
    return said


def store(peer: Peer, paths: list[Path], retries: int = 3, backoff: float = 1.0) -> list[StoreResult]:
    """C-STORE every file; refusals are reported per file, network failures retried."""
    results = [describe(p, "TLS" if peer.tls else "clear text") for p in paths]
    sendable = [r for r in results if r.outcome != "unreadable"]
    pairs = sorted({(r.sop_class, r.transfer_syntax) for r in sendable})
    if len(pairs) > MAX_CONTEXTS:
        raise InputError(f"{len(pairs)} SOP class / transfer syntax pairs exceed the {MAX_CONTEXTS} presentation "
                         "contexts one association can offer; send the files in smaller groups.")
    pending = sendable
    attempt = 0
    try:
        while pending and attempt <= retries:
            if attempt:
                _wait(backoff * 2 ** (attempt - 1), pending, attempt)
            attempt += 1
            tried = list(pending)
            pending = _attempt(peer, pairs, pending, attempt)
            record_attempt(tried, attempt)
    except StoreInterrupted as exc:
        exc.results = results  # every file, stored ones included
        raise
    return results


def _wait(seconds: float, results: list[StoreResult], attempt: int) -> None:
    try:
        time.sleep(seconds)
    except KeyboardInterrupt as exc:
        raise interrupted(exc, results, attempt) from None


def _attempt(peer: Peer, pairs: list[tuple[str, str]], pending: list[StoreResult], attempt: int
             ) -> list[StoreResult]:
    """One association; returns the files worth retrying (an empty list when the PACS gave its answer)."""
    ae = new_ae(peer)
    request_contexts(ae, store_contexts(pairs))
    try:
        return _attempt_on(ae, peer, pending, attempt)
    except KeyboardInterrupt as exc:
        drop_all(ae)
        raise interrupted(exc, pending, attempt) from None


def _attempt_on(ae: AE, peer: Peer, pending: list[StoreResult], attempt: int) -> list[StoreResult]:
    assoc = associate(ae, peer)
    if not assoc.is_established and assoc.rejected_contexts and not assoc.accepted_contexts:
        _send(assoc, pending, attempt)  # the PACS answered: it accepts none of these contexts
        return []
    if not assoc.is_established:
        failure, rejected = why_no_association(peer, assoc)
        for r in pending:
            r.attempts, r.outcome, r.message = attempt, "failed", failure
        return [] if rejected else pending  # a rejection is an answer, not a network failure
    try:
        retry = _send(assoc, pending, attempt)
    except KeyboardInterrupt:
        raise  # no release: a frozen peer would never answer it (the caller drops the association)
    except BaseException:
        if assoc.is_established:
            assoc.release()
        raise
    if assoc.is_established:
        assoc.release()
    return retry


def _send(assoc, pending: list[StoreResult], attempt: int) -> list[StoreResult]:
    """Send what the PACS accepted a context for; return the files to retry (network failures)."""
    accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    retry = []
    for r in pending:
        r.attempts = attempt
        if (r.sop_class, r.transfer_syntax) not in accepted:
            # Said from this file's own context alone - what dvqa proposed for it and the PACS's answer to that
            # - so that the message does not change with what else was in the batch (the contexts the PACS
            # accepted for other files' transfer syntaxes are no answer about this one).
            r.outcome = "rejected"
            reason = next((REASONS.get(c.result, "") for c in assoc.rejected_contexts
                           if c.abstract_syntax == r.sop_class and r.transfer_syntax in (c.transfer_syntax or [])),
                          "") or next((REASONS.get(c.result, "") for c in assoc.rejected_contexts
                                       if c.abstract_syntax == r.sop_class), "")
            r.message = (f"dvqa proposed {uid_name(r.sop_class)} in {uid_name(r.transfer_syntax)} for this file and "
                         f"the PACS refused that presentation context{reason}; dvqa pacs matrix shows what it "
                         "accepts")
            continue
        if not assoc.is_established:
            r.outcome, r.message = "failed", "the association ended before this file was sent"
            retry.append(r)
            continue
        started = time.monotonic()
        r.sent = True
        status = assoc.send_c_store(Path(r.path))
        code = getattr(status, "Status", None) if status else None
        r.status = code
        if code is None:
            r.outcome = "failed"  # pynetdicom aborts the association itself when its DIMSE timeout expires
            r.message = (f"no progress or answer for {assoc.dimse_timeout:g} s (--timeout): the PACS stopped reading "
                         "or answering"
                         if time.monotonic() - started >= assoc.dimse_timeout else
                         "the association was aborted during the transfer (connection lost, or the PACS stopped "
                         "or aborted it)")
            retry.append(r)
        elif code in STORED_STATUSES:
            r.outcome, r.message = "stored", "" if code == 0 else f"stored with warning 0x{code:04X}"
        else:
            r.outcome = "rejected"
            r.message = f"the PACS answered C-STORE with failure status 0x{code:04X}" + (
                " (out of resources: retry later)" if 0xA700 <= code <= 0xA7FF else "")
    return retry


def store_with_fallback(peer: Peer, paths: list[Path], syntax: str, folder: Path, retries: int = 3
                        ) -> list[StoreResult]:
    """C-STORE; for each file the PACS refused, convert a copy to `syntax` and send that instead.

    The original is never changed or removed; the copy is a new SOP instance in the same series,
    written into `folder`, and what happened to it is recorded in the original's result.
    """
    from dvqa.pacs.fallback import transcode_dicom

    results = store(peer, paths, retries)
    for r in results:
        if r.outcome != "rejected":
            continue
        copy = folder / f"{Path(r.path).stem}.{syntax}.dcm"
        try:
            converted = transcode_dicom(Path(r.path), syntax, copy)
        except Exception as exc:  # noqa: BLE001 - a fallback that cannot be made is recorded, not raised
            r.fallback = {"syntax": syntax, "outcome": "not made", "message": f"{type(exc).__name__}: {exc}"}
            continue
        sent = store(peer, [copy], retries)[0]
        quality = converted.quality
        r.fallback = {"syntax": syntax, "path": str(copy), "sop_instance": sent.sop_instance,
                      "transfer_syntax": sent.transfer_syntax, "sha256": converted.output_sha256,
                      "psnr_y_mean": quality.statistic("psnr_y", "mean") if quality else None,
                      "outcome": sent.outcome, "message": sent.message, "sent": sent.sent}
    return results
