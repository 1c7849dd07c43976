"""`dvqa pacs simulate`: a small Storage SCP that accepts exactly what it is told to, and misbehaves on
request, so senders can be tested against a PACS that refuses video, runs out of resources, drops
the association or stops answering - behaviour no real server here can be made to show on demand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

FAULTS = ("none", "out-of-resources", "abort", "silent")


@dataclass
class Behaviour:
    accept: dict[str, list[str]]  # SOP class UID -> transfer syntax UIDs it accepts
    fault: str = "none"  # what to do on C-STORE
    store_dir: Path | None = None  # where received files are written (None: not kept)
    received: list[str] = field(default_factory=list)


def _on_store(behaviour: Behaviour):
    def handle(event) -> int:
        if behaviour.fault == "out-of-resources":
            return 0xA700  # Refused: Out of Resources (PS3.4 Table B.2-1)
        if behaviour.fault == "abort":
            event.assoc.abort()
            return 0xC000
        if behaviour.fault == "silent":
            time.sleep(3600)  # never answers; the sender's timeout must end it
        ds = event.dataset
        ds.file_meta = event.file_meta
        behaviour.received.append(str(ds.SOPInstanceUID))
        if behaviour.store_dir:
            ds.save_as(str(behaviour.store_dir / f"{ds.SOPInstanceUID}.dcm"), enforce_file_format=True)
        return 0x0000
    return handle


def start(host: str, port: int, ae_title: str, behaviour: Behaviour, block: bool = False):
    """Start the SCP; a fault applies to every C-STORE. Non-blocking: returns the server (port 0 picks a
    free port: `server.server_address`); blocking: serves until interrupted."""
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    for sop_class, syntaxes in behaviour.accept.items():
        ae.add_supported_context(sop_class, syntaxes)
    ae.maximum_pdu_size = 0
    return ae.start_server((host, port), block=block, evt_handlers=[(evt.EVT_C_STORE, _on_store(behaviour))])
