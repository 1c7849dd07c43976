"""Talking to a PACS (pynetdicom, dicomweb-client): C-ECHO, C-STORE, Storage Commitment, C-GET and
STOW-RS, optionally over TLS, with every refusal spelled out.

Each file is offered in exactly the transfer syntax it holds, under its own SOP class (one
presentation context per pair, PS3.7 Annex D / PS3.8 §9.3.2.2): dvqa never lets the toolkit
transcode silently. What the PACS accepted, refused, and answered is kept per file. Network
failures (refused connection, aborted association, timeouts) are retried with exponential
backoff; a PACS that answers is not retried - its answer stands. Local files are only read.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, _config, build_role, evt
from pynetdicom.sop_class import (
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from dvqa.core.errors import EnvironmentProblem, InputError, UsageError
from dvqa.dicom import dicomread
from dvqa.trust.audit import file_facts

# Send each file's own encoded bytes in PDU-sized chunks, never decoded and re-encoded by pydicom: what
# arrives is byte for byte what was validated and hashed, memory stays flat for large videos, and it is
# faster (pynetdicom 2.0 option; it needs an exact-match presentation context, which dvqa always asks for).
_config.STORE_SEND_CHUNKED_DATASET = True

MAX_CONTEXTS = 128  # PS3.8 §9.3.2.2: presentation context IDs are odd numbers 1-255

# the defaults of the `dvqa pacs` options (and of the conformance statement's configuration table)
DEFAULT_AET = "DVQA"
DEFAULT_CALLED_AET = "ANY-SCP"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_COMMIT_WAIT = 60.0

# C-STORE statuses dvqa takes as stored (PS3.4 B.2.3): success and the three warnings
STORED_STATUSES = {0x0000: "Success", 0xB000: "Warning: coercion of data elements",
                   0xB007: "Warning: data set does not match SOP class", 0xB006: "Warning: elements discarded"}

Context = tuple[str, tuple[str, ...]]  # (abstract syntax, the transfer syntaxes proposed for it)


def echo_contexts() -> list[Context]:
    """C-ECHO: Verification in pynetdicom's default transfer syntaxes (PS3.4 A.4)."""
    return [(Verification, tuple(DEFAULT_TRANSFER_SYNTAXES))]


def store_contexts(pairs: Iterable[tuple[str, str]]) -> list[Context]:
    """C-STORE: one presentation context per SOP class and transfer syntax of the files being sent, each
    proposing only that file's own syntax - dvqa never asks a PACS to take a file in another syntax."""
    return [(sop_class, (syntax,)) for sop_class, syntax in sorted(set(pairs))]


def commitment_contexts() -> list[Context]:
    """N-ACTION of the Storage Commitment Push Model (PS3.4 J.3), default transfer syntaxes."""
    return [(StorageCommitmentPushModel, tuple(DEFAULT_TRANSFER_SYNTAXES))]


def get_contexts(sop_class: str, syntax: str) -> list[Context]:
    """C-GET (Study Root, PS3.4 C.4.3) and the storage sub-operations' context: the instance's own
    syntax, and Explicit/Implicit VR Little Endian for a PACS that stored it transcoded."""
    contexts = [(StudyRootQueryRetrieveInformationModelGet, tuple(DEFAULT_TRANSFER_SYNTAXES)), (sop_class, (syntax,))]
    if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        contexts.append((sop_class, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)))
    return contexts


def _request(ae: AE, contexts: list[Context]) -> None:
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
# presentation context results (PS3.8 Table 9-18)
REASONS = {1: " (user rejection)", 2: " (no reason given)", 3: " (abstract syntax not supported)",
           4: " (transfer syntax not supported)"}


@dataclass(frozen=True)
class Tls:
    """DICOM over TLS (PS3.15 B.1): the PACS's certificate is always verified, against `ca` or the system's
    trusted certificates, including its host name; `cert`/`key` are dvqa's own, for PACS that require one."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
            if self.cert:
                context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"TLS: cannot load {'--tls-ca ' + str(self.ca) if self.ca else 'the certificates'}"
                             f"{' / --tls-cert ' + str(self.cert) if self.cert else ''} ({exc}); give PEM files "
                             "(the key unencrypted).") from None
        return context

    def server_context(self) -> ssl.SSLContext:
        """For dvqa's own listener (storage commitment reports): dvqa's certificate, and the PACS's verified."""
        if not self.cert:
            raise UsageError("--commit over TLS needs --tls-cert (and --tls-key): the PACS connects back to dvqa "
                             "to deliver its report, and dvqa must present a certificate.")
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca) if self.ca else None)
            context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"TLS: cannot load --tls-cert {self.cert} ({exc}); give PEM files (the key "
                             "unencrypted).") from None
        context.verify_mode = ssl.CERT_REQUIRED
        return context


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    called_aet: str = "ANY-SCP"
    calling_aet: str = "DVQA"
    timeout: float = 30.0
    tls: Tls | None = None

    def __str__(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}{' (TLS)' if self.tls else ''}"


@dataclass
class StoreResult:
    path: str
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    study_instance: str = ""
    patient_id: str = ""
    patient_name: str = ""
    outcome: str = "not sent"  # stored | committed | rejected | failed | not sent
    status: int | None = None
    message: str = ""
    attempts: int = 0
    history: list[str] = field(default_factory=list)  # one line per attempt: what happened then
    transport: str = ""  # "TLS" or "clear text": how the patient data travelled
    fallback: dict | None = None  # the copy sent instead when the original was refused

    @property
    def delivered(self) -> bool:
        """Stored (or committed) as itself, or as its fallback copy."""
        return self.outcome in ("stored", "committed") or bool(
            self.fallback and self.fallback.get("outcome") in ("stored", "committed"))

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _ae(peer: Peer) -> AE:
    ae = AE(ae_title=peer.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = peer.timeout
    return ae


def _on_connect(timeout: float):
    """Set up the association's socket once connected (pynetdicom then leaves it blocking, with no timeout).

    - A timeout on every send and receive: with none, a PACS that stops reading mid-transfer (frozen,
      SIGSTOPped, a dead link with no reset) blocks pynetdicom's sending thread forever, and with it the
      release, the abort and the exit of dvqa. A send that cannot progress for `timeout` seconds now ends
      the association like any network failure (and is retried as one).
    - TCP_NODELAY, as DCMTK sets it. Without it Nagle's algorithm holds every P-DATA PDU smaller than the
      segment size (16 KiB PDUs on a 64 KiB loopback MSS: all of them) until the previous one is
      acknowledged, and sending becomes latency-bound (measured to storescp on loopback: 40 MB/s
      without it, 54 MB/s with it).
    """
    def handle(event) -> None:
        sock = event.assoc.dul.socket.socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
    return handle


def _associate(ae: AE, peer: Peer, evt_handlers: list | None = None, **kwargs):
    tls_args = (peer.tls.context(), peer.host) if peer.tls else None
    return ae.associate(peer.host, peer.port, ae_title=peer.called_aet, tls_args=tls_args,
                        evt_handlers=[(evt.EVT_CONN_OPEN, _on_connect(peer.timeout)), *(evt_handlers or [])],
                        **kwargs)


def drop_all(ae: AE) -> None:
    """End every association of `ae` at once (Ctrl-C, SIGTERM): close the socket under it and stop its
    thread, instead of the A-ABORT handshake a frozen peer would never complete - pynetdicom's threads
    would otherwise keep dvqa alive after the interrupt."""
    for assoc in ae.active_associations:
        transport = getattr(assoc.dul, "socket", None)
        sock = getattr(transport, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        assoc.dul.kill_dul()
        assoc.is_established = False


def _name(uid: str) -> str:
    u = UID(uid)
    return f"{u.name} ({uid})" if u.name and u.name != uid else uid


def echo(peer: Peer) -> dict[str, object]:
    """C-ECHO: the PACS is there and speaks DICOM to this AE title."""
    ae = _ae(peer)
    _request(ae, echo_contexts())
    started = time.monotonic()
    try:
        assoc = _associate(ae, peer)
        if not assoc.is_established:
            raise EnvironmentProblem(_association_failure(peer, assoc))
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


def _unreachable(peer: Peer) -> str | None:
    """Why no TCP (or TLS) connection can be made, in words; None when one can (pynetdicom calls all of
    these "aborted")."""
    try:
        raw = socket.create_connection((peer.host, peer.port), timeout=peer.timeout)
    except OSError as exc:
        return (f"{peer}: no DICOM association could be opened: cannot connect to {peer.host}:{peer.port} "
                f"({exc.strerror or exc}); is the PACS running and reachable?")
    if not peer.tls:
        raw.close()
        return None
    try:
        with peer.tls.context().wrap_socket(raw, server_hostname=peer.host) as tls:
            tls.settimeout(1.0)  # TLS 1.3: a refused client certificate arrives as an alert after the handshake
            tls.recv(1)
    except ssl.SSLError as exc:
        reason = f"certificate verify failed: {exc.verify_message}" if isinstance(exc, ssl.SSLCertVerificationError) \
            else exc.reason or str(exc)
        return (f"{peer}: the TLS handshake failed ({reason}); check --tls-ca (the PACS's certificate must be "
                "issued for this host by a certificate in it) and, if the PACS requires one, --tls-cert/--tls-key.")
    except OSError:
        pass  # the PACS waits for an association request: TLS itself is fine
    return None


def _rejects(peer: Peer, asks: int = 3) -> bool:
    """Ask again with a bare Verification association (up to `asks` times): does the PACS reject it?

    A PACS that sends A-ASSOCIATE-RJ and closes at once can reach pynetdicom as an abort (about 1 in 12
    associations with Orthanc 1.10 here: the connection's reset overtakes the RJ PDU), which would turn a
    wrong AE title into a vague "aborted"."""
    for _ in range(asks):
        ae = _ae(peer)
        _request(ae, echo_contexts())
        assoc = _associate(ae, peer)
        if assoc.is_established:
            assoc.release()
            return False
        if assoc.is_rejected:
            return True
    return False


def _association_failure(peer: Peer, assoc) -> str:
    return _why_no_association(peer, assoc)[0]


def _why_no_association(peer: Peer, assoc) -> tuple[str, bool]:
    """One sentence on why no association was made, and whether the PACS rejected it - an answer, which
    is not retried (decided here once, so the message and the retry never disagree)."""
    unreachable = _unreachable(peer)
    if unreachable:
        return unreachable, False
    if assoc.is_rejected or (assoc.is_aborted and _rejects(peer)):
        return (f"{peer}: the association was rejected (check the called AE title "
                f"{peer.called_aet!r} and whether the PACS knows {peer.calling_aet!r})."), True
    if assoc.is_aborted:
        return f"{peer}: the PACS aborted the association" + (
            "." if peer.tls else " (if it expects DICOM over TLS, add --tls)."), False
    return f"{peer}: no DICOM association could be opened (is the PACS running and reachable?).", False


def _describe(path: Path, transport: str) -> StoreResult:
    """What will be sent. A damaged or unreadable file (read to its end by dvqa.dicom.dicomread) is that file's
    result, "unreadable", and is never sent; the other files still are."""
    try:
        ds = dicomread.read(path)
        result = StoreResult(str(path), str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                             str(ds.file_meta.TransferSyntaxUID), str(ds.get("StudyInstanceUID", "")),
                             str(ds.get("PatientID", "")), str(ds.get("PatientName", "")))
    except dicomread.FileProblem as exc:
        result = StoreResult(str(path), "", "", "", outcome="unreadable", message=f"{exc.reason}; it was not sent")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear sentence, and only that file's
        result = StoreResult(str(path), "", "", "", outcome="unreadable",
                             message=f"not a DICOM file that can be sent ({type(exc).__name__}: {exc})")
    result.transport = transport
    return result


def store(peer: Peer, paths: list[Path], retries: int = 3, backoff: float = 1.0) -> list[StoreResult]:
    """C-STORE every file; refusals are reported per file, network failures retried."""
    results = [_describe(p, "TLS" if peer.tls else "clear text") for p in paths]
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
            _record_attempt(tried, attempt)
    except StoreInterrupted as exc:
        exc.results = results  # every file, stored ones included
        raise
    return results


class StoreInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during a send; `results` says what each file's state was when it came."""

    def __init__(self, cause: KeyboardInterrupt, results: list[StoreResult]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.results = results

    @property
    def name(self) -> str:
        return getattr(self.cause, "name", "SIGINT")


def _interrupted(exc: KeyboardInterrupt, results: list[StoreResult], attempt: int) -> StoreInterrupted:
    name = getattr(exc, "name", "SIGINT")
    for r in results:
        if r.outcome not in ("stored", "committed", "rejected", "unreadable"):
            r.outcome, r.message = "interrupted", f"interrupted by {name} during attempt {attempt}; not stored"
            r.history.append(f"attempt {attempt}: interrupted by {name}")
    return StoreInterrupted(exc, results)


def _wait(seconds: float, results: list[StoreResult], attempt: int) -> None:
    try:
        time.sleep(seconds)
    except KeyboardInterrupt as exc:
        raise _interrupted(exc, results, attempt) from None


def _record_attempt(results: list[StoreResult], attempt: int) -> None:
    for r in results:
        r.history.append(f"attempt {attempt}: {r.outcome}" + (f" - {r.message}" if r.message else ""))


def _attempt(peer: Peer, pairs: list[tuple[str, str]], pending: list[StoreResult], attempt: int
             ) -> list[StoreResult]:
    """One association; returns the files worth retrying (an empty list when the PACS gave its answer)."""
    ae = _ae(peer)
    _request(ae, store_contexts(pairs))
    try:
        return _attempt_on(ae, peer, pending, attempt)
    except KeyboardInterrupt as exc:
        drop_all(ae)
        raise _interrupted(exc, pending, attempt) from None


def _attempt_on(ae: AE, peer: Peer, pending: list[StoreResult], attempt: int) -> list[StoreResult]:
    assoc = _associate(ae, peer)
    if not assoc.is_established and assoc.rejected_contexts and not assoc.accepted_contexts:
        _send(assoc, pending, attempt)  # the PACS answered: it accepts none of these contexts
        return []
    if not assoc.is_established:
        failure, rejected = _why_no_association(peer, assoc)
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
            offered = f"{_name(r.sop_class)} in {_name(r.transfer_syntax)}"
            took = sorted({_name(ts) for sop, ts in accepted if sop == r.sop_class})
            r.outcome = "rejected"
            # the A-ASSOCIATE-AC names no transfer syntax for a refused context: match on the SOP class
            reason = next((REASONS.get(c.result, "") for c in assoc.rejected_contexts
                           if c.abstract_syntax == r.sop_class), "")
            r.message = (f"the PACS refused the presentation context {offered}{reason}"
                         + (f"; for this SOP class it accepted only {', '.join(took)}" if took
                            else "; it accepted no transfer syntax for this SOP class"))
            continue
        if not assoc.is_established:
            r.outcome, r.message = "failed", "the association ended before this file was sent"
            retry.append(r)
            continue
        started = time.monotonic()
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

    results = [_describe(p, "TLS" if url.startswith("https://") else "clear text") for p in paths]
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
            _record_attempt(sendable, attempt)
            if not retry:
                break
    except KeyboardInterrupt as exc:
        raise _interrupted(exc, sendable, attempt) from None
    return results


def _stow_attempt(client, url: str, results: list[StoreResult]) -> bool:
    """One STOW-RS request; True when it failed in a way worth retrying (no connection)."""
    import requests

    try:
        response = client.store_instances([pydicom.dcmread(r.path) for r in results])
    except requests.exceptions.SSLError as exc:
        reason = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else type(exc).__name__
        for r in results:
            r.outcome, r.message = "failed", (f"{url}: the TLS handshake failed ({reason}); check --tls-ca (the "
                                              "server's certificate must be issued for this host by one in it)")
        return False
    except requests.Timeout:
        for r in results:
            r.outcome, r.message = "failed", f"{url}: no answer within the timeout (--timeout)"
        return True
    except requests.ConnectionError as exc:
        for r in results:
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


def get_instance(peer: Peer, sop_class: str, syntax: str, study: str, series: str, instance: str) -> Dataset:
    """C-GET one instance (PS3.4 C.4.3, Study Root, IMAGE level) as a PACS with only DIMSE returns it.

    dvqa offers the instance's own transfer syntax and, in a second context, Explicit/Implicit VR Little
    Endian, so a PACS that stored it transcoded can still send it and the caller sees the syntax it chose.
    """
    ae = _ae(peer)
    _request(ae, get_contexts(sop_class, syntax))
    received: list[Dataset] = []

    def on_store(event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    assoc = _associate(ae, peer, ext_neg=[build_role(sop_class, scp_role=True)],
                       evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        raise EnvironmentProblem(_association_failure(peer, assoc))
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID, query.SeriesInstanceUID, query.SOPInstanceUID = study, series, instance
    final = None
    try:
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status:
                final = status.Status
    finally:
        if assoc.is_established:
            assoc.release()
    if not received:
        answer = f"final status 0x{final:04X}" if final is not None else "no answer"
        raise EnvironmentProblem(f"{peer}: C-GET of {instance} returned no instance ({answer}).")
    return received[0]


EXIT_OF_OUTCOME = {"stored": 0, "committed": 0, "rejected": 1, "not committed": 1, "unreadable": 3}  # else 4


def exit_code_of(results: list[StoreResult], wanted: str = "stored") -> int:
    """The command's exit code: 4 if a PACS could not be reached for some file, else 3 if a file could not
    be read, else 1 if the PACS refused (or did not commit) some, else 0."""
    def code(r: StoreResult) -> int:
        if r.outcome == wanted or (wanted == "stored" and r.delivered):
            return 0
        if r.outcome == "stored":  # stored, but the commitment asked for did not come
            return 4
        return EXIT_OF_OUTCOME.get(r.outcome, 4)

    codes = {code(r) for r in results}
    return next((c for c in (4, 3, 1) if c in codes), 0)
STORAGE_COMMITMENT_INSTANCE = UID("1.2.840.10008.1.20.1.1")  # the well-known SOP instance (PS3.4 J.3.5)


def commit(peer: Peer, results: list[StoreResult], listen: tuple[str, int], wait: float = 60.0) -> None:
    """Storage Commitment Push Model (PS3.4 Annex J): ask the PACS to commit what it stored, and wait
    for its N-EVENT-REPORT on dvqa's own listening port (the PACS must know peer.calling_aet there).

    Each stored file becomes "committed", "not committed" (with the PACS's Failure Reason) or stays
    "stored" with a message when no report arrives within `wait` seconds.
    """
    stored = [r for r in results if r.outcome == "stored"]
    if not stored:
        return
    transaction = generate_uid()
    reports: list[Dataset] = []
    arrived = threading.Event()

    def on_report(event) -> tuple[int, None]:
        info = event.event_information
        if str(info.get("TransactionUID", "")) == transaction:
            reports.append(info)
            arrived.set()
        return 0x0000, None

    listener = AE(ae_title=peer.calling_aet)
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    try:
        server = listener.start_server(listen, block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
                                       ssl_context=peer.tls.server_context() if peer.tls else None)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot listen on {listen[0]}:{listen[1]} for the commitment report "
                                 f"({exc.strerror}); choose another --listen-port.") from None
    try:
        request = Dataset()
        request.TransactionUID = transaction
        request.ReferencedSOPSequence = [_reference(r) for r in stored]
        ae = _ae(peer)
        _request(ae, commitment_contexts())
        assoc = _associate(ae, peer)
        if not assoc.is_established:
            raise EnvironmentProblem(_association_failure(peer, assoc))
        try:
            status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE)
        finally:
            assoc.release()
        code = getattr(status, "Status", None) if status else None
        if code != 0x0000:
            for r in stored:
                r.message = f"storage commitment request refused (N-ACTION status {code!r})"
            return
        arrived.wait(wait)
    finally:
        server.shutdown()
    if not reports:
        for r in stored:
            r.message = (f"stored, but no commitment report arrived within {wait:g} s on "
                         f"{listen[0]}:{listen[1]} (does the PACS know {peer.calling_aet} at that address?)")
        return
    by_uid = {r.sop_instance: r for r in stored}
    for item in reports[0].get("ReferencedSOPSequence", []):
        if str(item.ReferencedSOPInstanceUID) in by_uid:
            by_uid[str(item.ReferencedSOPInstanceUID)].outcome = "committed"
    for item in reports[0].get("FailedSOPSequence", []):
        r = by_uid.get(str(item.ReferencedSOPInstanceUID))
        if r:
            r.outcome = "not committed"
            r.message = f"the PACS did not commit it (Failure Reason 0x{int(item.get('FailureReason', 0)):04X})"


def _reference(r: StoreResult) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = r.sop_class
    item.ReferencedSOPInstanceUID = r.sop_instance
    return item


def send_event(result: StoreResult, destination: str, protocol: str, interrupted_exit: int = 130
               ) -> dict[str, object]:
    """One audit record per file sent: where, how, and what the PACS answered."""
    return {
        "command": "pacs-store", "protocol": protocol, "destination": destination,
        # an interrupted send is recorded at once: its hash (seconds for a large video) is not taken
        "input": file_facts(Path(result.path), digest=result.outcome != "interrupted"),
        "transfer_syntax": result.transfer_syntax,
        "uids": {"sop_class": result.sop_class, "sop_instance": result.sop_instance,
                 "study_instance": result.study_instance},
        "patient": {"PatientID": result.patient_id, "PatientName": result.patient_name},
        "output": {"path": destination},
        "transport": result.transport,
        "outcome": result.outcome, "status": result.status, "attempts": result.attempts, "history": result.history,
        "exit_code": (0 if result.delivered else EXIT_OF_OUTCOME.get(result.outcome, 4))
        if result.outcome != "interrupted" else interrupted_exit, "message": result.message,
        "fallback": result.fallback,
    }


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
                      "outcome": sent.outcome, "message": sent.message}
    return results
