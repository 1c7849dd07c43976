"""Storage Commitment Push Model (PS3.4 Annex J): the PACS's promise that it keeps what it stored."""

from __future__ import annotations

import threading

from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from dvqa.core.errors import EnvironmentProblem
from dvqa.pacs.association import (Peer, StoreResult, associate, association_failure, commitment_contexts,
                                   identified, new_ae, request_contexts)


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

    listener = identified(AE(ae_title=peer.calling_aet))
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
        ae = new_ae(peer)
        request_contexts(ae, commitment_contexts())
        assoc = associate(ae, peer)
        if not assoc.is_established:
            raise EnvironmentProblem(association_failure(peer, assoc))
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
