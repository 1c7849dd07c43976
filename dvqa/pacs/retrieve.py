"""C-GET of one instance (Study Root), as a PACS that speaks only DIMSE returns it."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom import build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from dvqa.core.errors import EnvironmentProblem
from dvqa.pacs.association import Peer, associate, association_failure, get_contexts, new_ae, request_contexts


def get_instance(peer: Peer, sop_class: str, syntax: str, study: str, series: str, instance: str) -> Dataset:
    """C-GET one instance (PS3.4 C.4.3, Study Root, IMAGE level) as a PACS with only DIMSE returns it.

    dvqa offers the instance's own transfer syntax and, in a second context, Explicit/Implicit VR Little
    Endian, so a PACS that stored it transcoded can still send it and the caller sees the syntax it chose.
    """
    ae = new_ae(peer)
    request_contexts(ae, get_contexts(sop_class, syntax))
    received: list[Dataset] = []

    def on_store(event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    assoc = associate(ae, peer, ext_neg=[build_role(sop_class, scp_role=True)],
                       evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        raise EnvironmentProblem(association_failure(peer, assoc))
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
