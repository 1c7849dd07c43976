"""What every exchange with a PACS shares: peers, TLS, presentation contexts, associations with their
failures spelled out, per-file results and the exit code and audit record made from them.

Each file is offered in exactly the transfer syntax it holds, under its own SOP class (one
presentation context per pair, PS3.7 Annex D / PS3.8 §9.3.2.2): dvqa never lets the toolkit
transcode silently. What the PACS accepted, refused, and answered is kept per file. Local files
are only read.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, StudyRootQueryRetrieveInformationModelGet, Verification

from dvqa.core.errors import UsageError
from dvqa.dicom import dicomread, implementation
from dvqa.trust.audit import file_facts


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


def request_contexts(ae: AE, contexts: list[Context]) -> None:
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
    sent: bool = False  # the file's bytes went on the wire (a refused context or no connection sends nothing)
    fallback: dict | None = None  # the copy sent instead when the original was refused

    @property
    def delivered(self) -> bool:
        """Stored (or committed) as itself, or as its fallback copy."""
        return self.outcome in ("stored", "committed") or bool(
            self.fallback and self.fallback.get("outcome") in ("stored", "committed"))

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def identified(ae: AE) -> AE:
    """`ae` naming dvqa (or the site's product) in its associations, not pynetdicom (dicom.implementation)."""
    identity = implementation.current()
    ae.implementation_class_uid = identity.class_uid
    ae.implementation_version_name = identity.version_name
    return ae


def new_ae(peer: Peer) -> AE:
    ae = identified(AE(ae_title=peer.calling_aet))
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


def associate(ae: AE, peer: Peer, evt_handlers: list | None = None, **kwargs):
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


def uid_name(uid: str) -> str:
    u = UID(uid)
    return f"{u.name} ({uid})" if u.name and u.name != uid else uid


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
        ae = new_ae(peer)
        request_contexts(ae, echo_contexts())
        assoc = associate(ae, peer)
        if assoc.is_established:
            assoc.release()
            return False
        if assoc.is_rejected:
            return True
    return False


def association_failure(peer: Peer, assoc) -> str:
    return why_no_association(peer, assoc)[0]


def why_no_association(peer: Peer, assoc) -> tuple[str, bool]:
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


def describe(path: Path, transport: str) -> StoreResult:
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


class StoreInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during a send; `results` says what each file's state was when it came."""

    def __init__(self, cause: KeyboardInterrupt, results: list[StoreResult]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.results = results

    @property
    def name(self) -> str:
        return getattr(self.cause, "name", "SIGINT")


def interrupted(exc: KeyboardInterrupt, results: list[StoreResult], attempt: int) -> StoreInterrupted:
    name = getattr(exc, "name", "SIGINT")
    for r in results:
        if r.outcome not in ("stored", "committed", "rejected", "unreadable"):
            r.outcome, r.message = "interrupted", f"interrupted by {name} during attempt {attempt}; not stored"
            r.history.append(f"attempt {attempt}: interrupted by {name}")
    return StoreInterrupted(exc, results)


def record_attempt(results: list[StoreResult], attempt: int) -> None:
    for r in results:
        r.history.append(f"attempt {attempt}: {r.outcome}" + (f" - {r.message}" if r.message else ""))


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


def send_event(result: StoreResult, destination: str, protocol: str, interrupted_exit: int = 130,
               known: tuple[int, str] | None = None) -> dict[str, object]:
    """One audit record per file sent: where, how, and what the PACS answered. `known`: the file's (size,
    SHA-256) as its writer made them (dvqa.trust.audit.file_facts), so that it is not read again."""
    return {
        "command": "pacs-store", "protocol": protocol, "destination": destination,
        # an interrupted send is recorded at once: its hash (seconds for a large video) is not taken
        "input": file_facts(Path(result.path), digest=result.outcome != "interrupted", known=known),
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
