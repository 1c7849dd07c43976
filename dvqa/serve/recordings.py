"""The recording-ingestion API of `dvqa serve`: a browser's MediaRecorder chunks in, a DICOM video in the PACS out.

    POST /recordings                 patient/study metadata (the values and checks of `dvqa convert`) -> an id
    PUT  /recordings/{id}/chunks/{n} chunk n, with its SHA-256 (Content-Digest: sha-256=:BASE64:, RFC 9530)
    POST /recordings/{id}/end        the chunk count and the whole recording's SHA-256
    GET  /recordings/{id}            the state, the acknowledged chunks and, once finished, the result

The recordings a server holds, their conversion processes and their expiry; the routes are in
dvqa.serve.record_api. A chunk is acknowledged (201, or 200 for the same bytes again) only once it is on disk
and fsync'd (dvqa.serve.spool); other bytes for the same n are 409, a body that does not match its digest 400. The
conversion starts with chunk 0, in a process of its own (dvqa.serve.ingest), and follows the chunks as they
arrive, so the DICOM is ready moments after `end`. After a restart - a SIGKILL included - every recording
under way is taken up again from the spool: GET tells the client which chunks were acknowledged, it sends
the others, and the result is the same DICOM.

Every request carries a bearer token from the site's config (kept there as a SHA-256 digest); without one it
is refused with 401 before its body is read, and nothing is kept. Limits are answered with a reason: a chunk
or a recording too large 413, too many recordings at once 429. A recording without a chunk for
idle_expiry_s is abandoned: its conversion stops, the audit chain records it, its spool is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from dvqa.core import outputs
from dvqa.core.errors import DvqaError
from dvqa.serve import ingest, remote
from dvqa.serve.prewarm import WarmTarget
from dvqa.serve.record_settings import RecordSettings
from dvqa.serve.spool import Conflict, RecordingFolder, Spool

STOP_WAIT_S = 10.0  # a conversion process gets this long to record its interruption when the server stops
log = logging.getLogger("dvqa.serve.record")


@dataclass
class Recording:
    folder: RecordingFolder
    chunks: dict[int, int] = field(default_factory=dict)  # n -> size, as on disk
    end: dict | None = None
    result: dict | None = None
    last_activity: float = field(default_factory=time.monotonic)
    conversion: str = "not started"
    task: asyncio.Task | None = None
    process: Any = None  # the multiprocessing.Process converting it
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    abandoning: bool = False
    hasher: Any = field(default_factory=hashlib.sha256)  # chunks 0 .. hashed-1, in order, as they were acknowledged
    hashed: int = 0

    @property
    def id(self) -> str:
        return self.folder.id

    @property
    def state(self) -> str:
        if self.result is not None:
            return str(self.result.get("state", "failed"))
        return "finishing" if self.end is not None else "receiving"


class Recordings:
    """Every recording of this server, their conversion processes and their expiry."""

    def __init__(self, settings: RecordSettings, warm: WarmTarget | None = None) -> None:
        self.settings = settings
        self.warm = warm  # the gateway cache a stored recording is prepared in for its first viewer
        self.spool: Spool | None = None
        if settings.enabled:  # every mistake here is named before the server starts listening
            assert settings.spool_dir is not None
            self.spool = Spool(settings.spool_dir)
            ingest.audit_log(settings)  # a key variable that is not set
            ingest.signer(settings)  # a key that cannot be read
        self.held: dict[str, Recording] = {}
        self.slots: asyncio.Semaphore | None = None
        # Conversion processes are forked from a fork server that imported dvqa.serve.ingest once (FFmpeg,
        # pydicom, NumPy: seconds on a loaded machine), not from the server itself: forking a process that runs
        # threads (the event loop's executor) is unsafe, and a fresh interpreter per recording would start
        # seconds late.
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["dvqa.serve.ingest"])
        self.stopping = False
        self.expiry: asyncio.Task | None = None
        self.cluster = contextlib.ExitStack()  # the Dask client, with --scheduler (dvqa.serve.remote)
        # One thread opens and closes it: distributed's Client keeps itself in a context variable that must be
        # reset in the context that set it (asyncio.to_thread runs each call in a new copy of the context).
        self.cluster_thread = ThreadPoolExecutor(1, thread_name_prefix="dvqa-dask")
        self.dask: Any = None

    async def start(self) -> None:
        """Open the spool and take up every recording under way (after a restart or a SIGKILL)."""
        if self.spool is None:
            return
        self.slots = asyncio.Semaphore(self.settings.conversions)
        await asyncio.to_thread(self.prepare)  # done already when dvqa.serve.server.run started us
        for folder in await asyncio.to_thread(self.spool.all):
            recording = await asyncio.to_thread(self._load, folder)
            if recording is None:
                continue
            self.held[recording.id] = recording
            if recording.result is None and recording.folder.abandoned_path.exists():
                await self._abandon(recording, "it had been abandoned when the server stopped")
            elif recording.result is None and (recording.end is not None if self.dask else 0 in recording.chunks):
                self._convert(recording)
        self.expiry = asyncio.create_task(self._expire())

    def prepare(self) -> None:
        """The fork server (its imports now, not at the first recording), then the Dask client for the server's
        life. dvqa.serve.server.run calls this before the server listens, so that a cluster it cannot reach is
        named in one line (uvicorn would print a failed start-up's traceback). The fork server first: a local
        cluster keeps the secrets' variables out of the environment while it runs, and conversion processes
        need them."""
        from multiprocessing import forkserver

        if self.spool is None:
            return
        forkserver.ensure_running()
        if self.settings.scheduler is not None and self.dask is None:
            self.cluster_thread.submit(self._connect).result()

    def _connect(self) -> None:
        """Its secrets' variables never reach local workers."""
        from dvqa.core import cluster

        for variable in (self.settings.audit_key_env, self.settings.passphrase_env):
            if variable:
                cluster.keep_from_workers(variable)
        assert self.settings.scheduler is not None
        self.dask = self.cluster.enter_context(cluster.client(self.settings.scheduler))
        log.info("recordings are converted on the Dask cluster %s once they end", self.settings.scheduler.scheduler)

    @staticmethod
    def _load(folder: RecordingFolder) -> Recording | None:
        result = folder.result()
        if result is not None:
            folder.clean()  # a server stopped between writing the result and removing the rest
            return Recording(folder, result=result, conversion="finished")
        if not folder.request_path.exists():
            return None  # a folder whose request was never written whole: never acknowledged to anyone
        folder.sweep()
        recording = Recording(folder, chunks=folder.acknowledged(), end=folder.end())
        return recording

    async def stop(self) -> None:
        """Stop every conversion process (SIGTERM: each records its interruption); the spool stays for the next
        start."""
        self.stopping = True
        if self.expiry:
            self.expiry.cancel()
        running = [r.process for r in self.held.values() if r.process is not None and r.process.pid is not None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_WAIT_S
        for process in running:
            await asyncio.to_thread(process.join, max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        await asyncio.wrap_future(self.cluster_thread.submit(self.cluster.close))
        self.cluster_thread.shutdown(wait=False)

    def get(self, recording_id: str) -> Recording:
        recording = self.held.get(recording_id)
        if recording is None:
            raise HTTPException(404, f"no recording {recording_id} on this server.")
        return recording

    def receiving(self) -> int:
        return sum(1 for r in self.held.values() if r.state == "receiving")

    async def create(self, request: dict) -> Recording:
        assert self.spool is not None
        recording = Recording(self.spool.folder(secrets.token_hex(16)))
        stored = {"request": request, "created_at": time.time()}
        await asyncio.to_thread(recording.folder.create, {**request, **stored})
        self.held[recording.id] = recording
        return recording

    def _convert(self, recording: Recording) -> None:
        if recording.task is None:
            recording.conversion = "waiting for a conversion slot"
            recording.task = asyncio.create_task(self._run(recording))

    async def _run(self, recording: Recording) -> None:
        assert self.slots is not None and self.spool is not None
        async with self.slots:
            if self.stopping or recording.abandoning:
                return
            remote_outcome = None
            if self.dask is not None:  # converted on the cluster; validated, signed, stored, audited here
                recording.conversion = "running on the Dask cluster"
                remote_outcome = await asyncio.to_thread(remote.convert_on, self.dask, self.settings,
                                                         recording.folder.path, self.spool.root)
                if self.stopping:
                    return
            recording.conversion = "running"
            process = self.context.Process(  # daemonic: should the server end without stop(), it is stopped too
                target=ingest.run, name=f"dvqa-record-{recording.id[:8]}", daemon=True,
                args=(str(recording.folder.path), self.settings, str(self.spool.root), os.getpid(), remote_outcome,
                      self.warm))
            recording.process = process
            await asyncio.to_thread(process.start)
            if self.stopping:  # the server began to stop while this process was starting
                process.terminate()
            result = None
            while process.is_alive():
                await asyncio.sleep(0.1)
                if result is None and recording.folder.result_path.exists():  # told at once, not after the
                    result = await asyncio.to_thread(recording.folder.result)  # process has wound down
                    recording.result, recording.conversion = result, "finished"
            if result is not None:  # read again: the process completed it with its quality reports' outcome
                recording.result = result = await asyncio.to_thread(recording.folder.result) or result
            recording.process = None
        if self.stopping or recording.abandoning:
            return
        result = result or await asyncio.to_thread(recording.folder.result)
        if result is None:  # the process died without its result (killed, or a dvqa bug): said, not hidden
            result = {"state": "failed", "stored": False, "dicom": None,
                      "reason": f"the conversion process ended (exit code {process.exitcode}) without a result; "
                                "the recording was not converted - upload it again, and report this"}
            await asyncio.to_thread(recording.folder.finish, result)
        recording.result, recording.conversion = result, "finished"
        log.info("recording %s %s%s", recording.id, result.get("state"),
                 "" if result.get("state") != "done" else f", stored: {bool(result.get('stored'))}")

    async def _expire(self) -> None:
        idle, kept = self.settings.idle_expiry_s, self.settings.retention_s
        while True:
            await asyncio.sleep(min(5.0, max(0.2, min(idle, kept or idle) / 4)))
            now = time.monotonic()
            for recording in list(self.held.values()):
                if recording.state == "receiving" and not recording.abandoning and now - recording.last_activity > idle:
                    await self._abandon(recording, f"no chunk came for {idle:g} s (record.idle_expiry_s)")
                elif kept is not None and recording.result is not None and recording.process is None:
                    finished_at = await asyncio.to_thread(recording.folder.finished_at)
                    if finished_at is not None and time.time() - finished_at > kept:
                        await self._retire(recording)

    async def _retire(self, recording: Recording) -> None:
        """Past record.retention_days: remove its result, its reports and a stored DICOM copy kept with
        keep_stored, after the audit chain records the removal (its earlier records stay: the chain is
        append-only). A DICOM file the PACS never took is kept: it may be the only copy of the video."""
        assert self.spool is not None
        result = recording.result or {}
        unsent = Path(result["dicom"]) if result.get("dicom") and not result.get("stored") else None
        unsent = unsent if unsent is not None and unsent.exists() else None
        audit = ingest.audit_log(self.settings)
        if audit is not None:
            event = {"command": "serve-record", "recording": recording.id, "outcome": "expired", "exit_code": 0,
                     "message": f"removed {self.settings.retention_days:g} day(s) after it finished "
                                "(record.retention_days)" + (f"; {unsent} was never stored and is kept"
                                                            if unsent else ""),
                     "earlier_records": [e["seq"] for e in result.get("audit") or []]}
            try:
                await asyncio.to_thread(audit.append, event)
            except DvqaError as exc:  # nothing is removed that the chain does not say was removed
                log.error("recording %s: %s", recording.id, exc)
                return
        if result.get("stored"):  # copies kept with keep_stored (and a fallback copy the PACS took)
            for copy in [self.spool.dicom / f"{recording.id}.dcm", *self.spool.dicom.glob(f"{recording.id}.*.dcm")]:
                await asyncio.to_thread(copy.unlink, missing_ok=True)
        await asyncio.to_thread(recording.folder.remove)
        self.held.pop(recording.id, None)
        log.info("recording %s removed (record.retention_days)%s", recording.id,
                 f"; its DICOM file {unsent} was never stored and is kept" if unsent else "")

    async def _abandon(self, recording: Recording, why: str) -> None:
        """Stop its conversion, record it in the audit chain, remove its spool (the chunks and the request)."""
        recording.abandoning = True
        await asyncio.to_thread(recording.folder.mark_abandoned)
        if recording.task is not None:  # the process stops at the next chunk it waits for; one that does not
            try:                           # (stuck in FFmpeg) is stopped as a shutdown stops it
                await asyncio.wait_for(asyncio.shield(recording.task), STOP_WAIT_S)
            except asyncio.TimeoutError:
                if recording.process is not None:
                    recording.process.terminate()
                with contextlib.suppress(asyncio.CancelledError):
                    await recording.task
            except asyncio.CancelledError:
                pass
        chunks, size = len(recording.chunks), sum(recording.chunks.values())
        result = {"state": "abandoned", "stored": False, "dicom": None,
                  "reason": f"abandoned: {why}; the {chunks} chunk(s) received ({size} bytes) were removed"}
        audit = ingest.audit_log(self.settings)
        if audit is not None:
            event = {"command": "serve-record", "recording": recording.id, "outcome": "abandoned", "exit_code": 1,
                     "input": {"chunks": chunks, "size": size}, "message": result["reason"]}
            try:
                await asyncio.to_thread(audit.append, event)
            except DvqaError as exc:  # the spool is kept: the record of its removal could not be written
                log.error("recording %s: %s", recording.id, exc)
                return
            result["audit"] = audit.named()
        await asyncio.to_thread(recording.folder.finish, result)
        recording.result, recording.conversion = result, "finished"
        log.info("recording %s abandoned", recording.id)

    # --- chunks and end ---

    async def put_chunk(self, recording: Recording, n: int, data: bytes, sha256: str) -> bool:
        async with recording.lock:
            finished = HTTPException(409, f"recording {recording.id} is {recording.state}; it takes no more chunks.")
            if recording.result is not None or (recording.state != "receiving" and n not in recording.chunks):
                raise finished
            if n not in recording.chunks and sum(recording.chunks.values()) + len(data) > \
                    self.settings.max_recording_bytes:
                raise HTTPException(413, f"the recording would exceed {self.settings.max_recording_mb:g} MB "
                                         "(record.max_recording_mb); stop recording and end it.")
            try:
                new = await asyncio.to_thread(recording.folder.put_chunk, n, data, sha256)
            except Conflict as exc:
                raise HTTPException(409, f"chunk {n} was already received with other bytes ({exc.stored.size} bytes, "
                                         f"SHA-256 {exc.stored.sha256}); a chunk number is never reused.") from None
            except (OSError, DvqaError) as exc:
                if recording.folder.result_path.exists():  # the conversion failed meanwhile and the spool went
                    raise HTTPException(409, f"recording {recording.id} has finished; it takes no more chunks.") \
                        from None
                problem = outputs.environment_error(exc) if isinstance(exc, OSError) else exc
                if problem is None:
                    raise
                log.error("recording %s: chunk %d not kept: %s", recording.id, n, problem)
                raise HTTPException(507, f"chunk {n} was not kept: the server cannot write its spool ({problem}); "
                                         "send it again later.") from None
            recording.chunks[n] = len(data)
            recording.last_activity = time.monotonic()
            if n == recording.hashed:  # the whole recording's SHA-256, kept up to date for `end`
                recording.hasher.update(data)
                recording.hashed += 1
                while recording.hashed in recording.chunks:  # those that came early
                    piece = await asyncio.to_thread(recording.folder.chunk(recording.hashed).read_bytes)
                    recording.hasher.update(piece)
                    recording.hashed += 1
        if 0 in recording.chunks and recording.result is None and self.dask is None:  # live: from chunk 0
            self._convert(recording)
        return new

    async def end(self, recording: Recording, chunks: int, sha256: str) -> None:
        async with recording.lock:
            if recording.end is not None:
                if (recording.end["chunks"], recording.end["sha256"]) != (chunks, sha256):
                    raise HTTPException(409, f"recording {recording.id} was already ended with "
                                             f"{recording.end['chunks']} chunks and another SHA-256.")
                return
            if recording.state != "receiving":
                raise HTTPException(409, f"recording {recording.id} is {recording.state}.")
            missing = [n for n in range(chunks) if n not in recording.chunks]
            beyond = sorted(n for n in recording.chunks if n >= chunks)
            if missing or beyond:
                raise HTTPException(409, (f"chunks {_ranges(missing)} are not acknowledged; send them, then end again."
                                          if missing else f"chunks {_ranges(beyond)} lie beyond the {chunks} chunks "
                                                          "given; give the right count."))
            known = (recording.hasher.copy(), recording.hashed) if recording.hashed <= chunks else (None, 0)
            whole = await asyncio.to_thread(recording.folder.whole_digest, chunks, *known)
            if whole != sha256:
                raise HTTPException(400, f"the {chunks} chunks received have SHA-256 {whole}, not {sha256}: the "
                                         "recording the client holds differs from what it sent; nothing was converted.")
            recording.end = await asyncio.to_thread(recording.folder.mark_end, chunks, sha256)
            recording.last_activity = time.monotonic()
        self._convert(recording)


def _ranges(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


