"""`dvqa pacs simulate`: a small Storage SCP that accepts exactly what it is told to, and misbehaves on
request, so senders can be tested against a PACS that refuses video, runs out of resources, drops
the association or stops answering - behaviour no real server here can be made to show on demand.

It is a test tool, not a PACS: it listens on 127.0.0.1 unless told otherwise, accepts any calling AE
title unless `allow_aet` names some, and treats everything a peer sends as hostile - a received file
is named by its SOP Instance UID only when that is a valid UID (digits and dots, at most 64
characters, PS3.5 §9.1), and only ever inside the store folder, created privately (dvqa.core.outputs).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from dvqa.core import outputs
from dvqa.dicom import values
from dvqa.pacs.association import identified

FAULTS = ("none", "out-of-resources", "abort", "silent")


@dataclass
class Behaviour:
    accept: dict[str, list[str]]  # SOP class UID -> transfer syntax UIDs it accepts
    fault: str = "none"  # what to do on C-STORE
    store_dir: Path | None = None  # where received files are written (None: not kept)
    received: list[str] = field(default_factory=list)
    allow_aet: tuple[str, ...] = ()  # calling AE titles accepted (empty: any)
    refused: list[str] = field(default_factory=list)  # why a C-STORE was refused, for tests and the log


def stored_path(folder: Path, sop_instance_uid: str) -> Path | None:
    """Where a received instance is kept, or None when the peer's UID cannot name a file safely.

    A valid UID is digits and dots with no empty component, so it can hold no "/" and no "..": the
    path stays in `folder` by construction (and is not resolved, which would follow a planted link)."""
    if not values.valid_uid(sop_instance_uid):
        return None
    return folder / f"{sop_instance_uid}.dcm"


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
        uid = str(ds.get("SOPInstanceUID", ""))
        if behaviour.store_dir:
            target = stored_path(behaviour.store_dir, uid)
            if target is None:
                behaviour.refused.append(f"SOP Instance UID {uid[:80]!r} is not a valid UID; not stored")
                return 0xA900  # Error: data set does not match SOP class (PS3.4 Table B.2-1)
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            outputs.write_atomic(target, buffer.getvalue())
        behaviour.received.append(uid)
        return 0x0000
    return handle


def start(host: str, port: int, ae_title: str, behaviour: Behaviour, block: bool = False):
    """Start the SCP; a fault applies to every C-STORE. Non-blocking: returns the server (port 0 picks a
    free port: `server.server_address`); blocking: serves until interrupted."""
    ae = identified(AE(ae_title=ae_title))
    ae.require_calling_aet = list(behaviour.allow_aet)
    ae.add_supported_context(Verification)
    for sop_class, syntaxes in behaviour.accept.items():
        ae.add_supported_context(sop_class, syntaxes)
    ae.maximum_pdu_size = 0
    return ae.start_server((host, port), block=block, evt_handlers=[(evt.EVT_C_STORE, _on_store(behaviour))])
