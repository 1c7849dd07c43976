"""Conversions of ended recordings on a Dask cluster: `dvqa serve --scheduler ADDRESS` (record.scheduler), as
`dvqa batch convert --scheduler` sends its rows (dvqa.core.cluster: the same addresses, TLS and credentials,
local:N for a TLS LocalCluster on this machine).

Only the work after `end` goes to the cluster; the live path stays on the server. Converting live means
following the upload chunk by chunk for the recording's whole length: on a worker it would hold a task (and
with FFmpeg's process-wide log, a whole worker process) for minutes while it mostly waits, and read every
chunk through shared storage as it is written, for a gain of seconds after `end` - the cluster's gain is
the CPU the server does not have, which is what the whole conversion after `end` uses. So with a scheduler a
recording is converted once it has ended: its latency is a whole conversion (see docs/serve.md), and the
server's own CPU goes to taking uploads.

A task converts one recording from its spool folder (storage every worker mounts at the same path) with the
live path's own code (so the DICOM is the one a live conversion would have written: same timing map, same
UIDs) and writes its quality reports there. It never signs and never touches the audit chain: the signing
key stays on the server, which validates the file itself before it signs it, and the server alone appends
the worker's audit record to its chain (DESIGN: workers return records, the client appends). Workers must
run one task at a time per process (`dask worker --nthreads 1`; local:N does): FFmpeg's log, through which
the conversion learns of a damaged stream, is per process.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from dvqa.core.errors import DvqaError, ExitCode
from dvqa.serve.record_settings import RecordSettings
from dvqa.serve.spool import ChunkFeed, RecordingFolder, Spool


class Collected:
    """Stands in for the audit chain on a worker: keeps the records the conversion would append, for the
    server to append."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def append(self, event: dict) -> dict:
        self.events.append(event)
        return event


def convert_ended(folder: str, settings: RecordSettings, spool_root: str) -> dict:
    """Run on a worker: the ended recording in `folder` converted to spool_root/dicom/ID.dcm, its quality reports
    written beside its chunks. Returns `result` (the summary a client is told), `written`, `reports`, `events`
    (the audit records, unsigned), `worker`; or `error` and `exit_code` (with the failure's record in events)."""
    from dvqa.convert.live import convert_live
    from dvqa.serve import ingest
    from dvqa.video.growing import Growing

    recording, spool = RecordingFolder(Path(folder)), Spool(Path(spool_root))
    collected = Collected()
    here = replace(settings, sign_key=None, sign_cert=None)  # the server signs, after validating the file itself
    worker = _worker_name()
    try:
        options = ingest.conversion_options(recording.request(), here, recording.id, collected)  # type: ignore
        # every chunk is on disk (the recording has ended), so the feed never waits for one, nor for the server
        reader = Growing(ChunkFeed(recording, os.getpid()), f"recording {recording.id}")  # type: ignore[arg-type]
        converted = convert_live(reader, spool.dicom / f"{recording.id}.dcm", options)
    except DvqaError as exc:
        return {"error": str(exc), "exit_code": int(exc.exit_code), "events": collected.events, "worker": worker}
    return {"result": ingest.summary(converted), "written": converted.written, "events": collected.events,
            "reports": ingest.reports(recording, converted) if converted.written else {}, "worker": worker}


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def convert_on(client, settings: RecordSettings, folder: Path, spool_root: Path) -> dict:
    """Submit one ended recording and wait for its outcome (blocking: run it off the event loop). A lost
    cluster, or a task that raised, is an outcome with `error`: the recording fails with the reason, the
    spool keeps its DICOM if one was written."""
    from dvqa.core.cluster import completed

    assert settings.scheduler is not None
    future = client.submit(convert_ended, str(folder), settings, str(spool_root), pure=False,
                           key=f"dvqa-serve-recording-{folder.name}-{os.urandom(4).hex()}")
    try:
        for done in completed(client, [future], settings.scheduler):
            return done.result()
    except DvqaError as exc:  # ClusterLost: no worker, or the scheduler went away
        return {"error": str(exc), "exit_code": int(exc.exit_code), "events": [], "worker": None}
    except Exception as exc:  # noqa: BLE001 - the task raised on the worker (a dvqa bug there): said, not hidden
        return {"error": f"the conversion on the Dask cluster failed ({type(exc).__name__}: {exc})",
                "exit_code": int(ExitCode.ENVIRONMENT), "events": [], "worker": None}
    return {"error": "the Dask cluster returned no outcome", "exit_code": int(ExitCode.ENVIRONMENT), "events": [],
            "worker": None}
