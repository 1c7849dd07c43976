"""The recording-ingestion API of `dvqa serve`: a browser's MediaRecorder chunks in, a DICOM video in the PACS out.

    POST /recordings                 patient/study metadata (the values and checks of `dvqa convert`) -> an id
    PUT  /recordings/{id}/chunks/{n} chunk n, with its SHA-256 (Content-Digest: sha-256=:BASE64:, RFC 9530)
    POST /recordings/{id}/end        the chunk count and the whole recording's SHA-256
    GET  /recordings/{id}            the state, the acknowledged chunks and, once finished, the result

A chunk is acknowledged (201, or 200 for the same bytes again) only once it is on disk and fsync'd
(dvqa.serve.spool); other bytes for the same n are 409, a body that does not match its digest 400. The
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
import base64
import binascii
import contextlib
import hashlib
import logging
import multiprocessing
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path as PathLib
from typing import Any, Callable, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from dvqa.convert.options import PATIENT_STUDY_FIELDS
from dvqa.core import outputs
from dvqa.core.errors import DvqaError
from dvqa.dicom import syntaxes
from dvqa.dicom.iod import VideoIOD
from dvqa.serve import ingest
from dvqa.serve.record_settings import RecordSettings
from dvqa.serve.spool import MAX_CHUNKS, Conflict, RecordingFolder, Spool

PREFIX = "/recordings"
ID_PATTERN = r"^[0-9a-f]{32}$"
STOP_WAIT_S = 10.0  # a conversion process gets this long to record its interruption when the server stops
log = logging.getLogger("dvqa.serve.record")


def is_recording_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class ScopedCors:
    """CORS for some of the app's paths only: the recorder's origin may call the recording API and nothing else,
    a viewer's origin the gateway and not the recording API (Starlette's CORSMiddleware covers a whole app)."""

    def __init__(self, app: ASGIApp, inside: Callable[[str], bool], **cors: Any) -> None:
        self.app, self.inside = app, inside
        self.cors = CORSMiddleware(app, **cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.inside(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def recorder_cors(origin: str) -> dict[str, Any]:
    return {"inside": is_recording_path, "allow_origins": [origin], "allow_credentials": False,
            "allow_methods": ["GET", "POST", "PUT", "OPTIONS"],
            "allow_headers": ["Authorization", "Content-Type", "Content-Digest"]}


# --- the API's documents (they make /openapi.json) ------------------------------------------------------------

def _optional(choices: tuple[str, ...]) -> Any:
    return (Literal[choices] if choices else str) | None  # type: ignore[valid-type]


RecordingRequest = create_model(
    "RecordingRequest",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Who and what the recording is of, and how to convert it: the values `dvqa convert` takes, with its "
            "checks (each value against its VR; a bad value is 422 with the field named).",
    **{f.field: (_optional(f.choices), Field(None, description=f"{f.help} As `dvqa convert {f.option}`."))
       for f in PATIENT_STUDY_FIELDS},
    metadata=(dict[str, Any] | list[dict[str, Any]] | None,
              Field(None, description="Patient/study attributes as DICOM JSON (PS3.18 F.2), e.g. a worklist or "
                                      "QIDO-RS result, as `dvqa convert --metadata-json`; the fields above override "
                                      "it.")),
    iod=(_optional(tuple(i.option for i in VideoIOD)), Field(None, description="Video IOD (default: the server's).")),
    syntax=(_optional(("auto", *syntaxes.writable_names())),
            Field(None, description="Transfer syntax (default: the server's, normally auto).")),
)


class EndRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chunks: int = Field(ge=1, le=MAX_CHUNKS, description="How many chunks the recording has (0 .. chunks-1).")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$",
                        description="SHA-256 (hex) of the whole recording: every chunk's bytes, in order.")


class ChunkAck(BaseModel):
    n: int
    size: int
    sha256: str
    acknowledged: bool = Field(description="The chunk is on the server's disk (fsync'd).")


class RecordingState(BaseModel):
    id: str
    state: Literal["receiving", "finishing", "done", "failed", "abandoned"] = Field(
        description="receiving chunks; finishing (ended: converting, checking, storing); done (see result.stored); "
                    "failed (see result.reason); abandoned (no chunk for the idle time; nothing kept).")
    conversion: str = Field(description="not started | waiting for a conversion slot | running | finished")
    acknowledged: list[int] = Field(description="The chunk numbers on the server's disk; send the others.")
    bytes: int
    next_chunk: int = Field(description="The lowest chunk number not acknowledged.")
    end: dict[str, Any] | None = None
    expires_in_s: float | None = Field(None, description="While receiving: seconds until it is abandoned unless "
                                                         "a chunk comes.")
    result: dict[str, Any] | None = Field(
        None, description="When finished: syntax and why, timing summary, quality summary, validation verdict, "
                          "signature, what the PACS answered (stored or why not), the DICOM file's path when the "
                          "server kept it, the audit records, and the time from end to ready and to stored.")


# --- the recordings the server holds ------------------------------------------------------------------------

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

    @property
    def id(self) -> str:
        return self.folder.id

    @property
    def state(self) -> str:
        if self.result is not None:
            return str(self.result.get("state", "failed"))
        return "finishing" if self.end is not None else "receiving"

    def view(self, idle_s: float) -> RecordingState:
        acknowledged = sorted(self.chunks)
        following = next((n for n, k in enumerate(acknowledged) if n != k), len(acknowledged))
        expires = max(0.0, idle_s - (time.monotonic() - self.last_activity)) if self.state == "receiving" else None
        return RecordingState(id=self.id, state=self.state, conversion=self.conversion, acknowledged=acknowledged,
                              bytes=sum(self.chunks.values()), next_chunk=following, end=self.end,
                              expires_in_s=None if expires is None else round(expires, 1), result=self.result)


class Recordings:
    """Every recording of this server, their conversion processes and their expiry."""

    def __init__(self, settings: RecordSettings) -> None:
        self.settings = settings
        self.spool: Spool | None = None
        if settings.enabled:  # every mistake here is named before the server starts listening
            assert settings.spool_dir is not None
            self.spool = Spool(settings.spool_dir)
            ingest.audit_log(settings)  # a key variable that is not set
            ingest.signer(settings)  # a key that cannot be read
        self.held: dict[str, Recording] = {}
        self.slots: asyncio.Semaphore | None = None
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of the server's threads
        self.stopping = False
        self.expiry: asyncio.Task | None = None

    async def start(self) -> None:
        """Open the spool and take up every recording under way (after a restart or a SIGKILL)."""
        if self.spool is None:
            return
        self.slots = asyncio.Semaphore(self.settings.conversions)
        for folder in await asyncio.to_thread(self.spool.all):
            recording = await asyncio.to_thread(self._load, folder)
            if recording is None:
                continue
            self.held[recording.id] = recording
            if recording.result is None and recording.folder.abandoned_path.exists():
                await self._abandon(recording, "it had been abandoned when the server stopped")
            elif recording.result is None and 0 in recording.chunks:
                self._convert(recording)
        self.expiry = asyncio.create_task(self._expire())

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
        running = [r.process for r in self.held.values() if r.process is not None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_WAIT_S
        for process in running:
            await asyncio.to_thread(process.join, max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()

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
            recording.conversion = "running"
            process = self.context.Process(
                target=ingest.run, name=f"dvqa-record-{recording.id[:8]}",
                args=(str(recording.folder.path), self.settings, str(self.spool.root), os.getpid()))
            await asyncio.to_thread(process.start)
            recording.process = process
            result = None
            while process.is_alive():
                await asyncio.sleep(0.1)
                if result is None and recording.folder.result_path.exists():  # told at once, not after the
                    result = await asyncio.to_thread(recording.folder.result)  # process has wound down
                    recording.result, recording.conversion = result, "finished"
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
        idle = self.settings.idle_expiry_s
        while True:
            await asyncio.sleep(min(5.0, max(0.2, idle / 4)))
            now = time.monotonic()
            for recording in list(self.held.values()):
                if recording.state == "receiving" and not recording.abandoning and now - recording.last_activity > idle:
                    await self._abandon(recording, f"no chunk came for {idle:g} s (record.idle_expiry_s)")

    async def _abandon(self, recording: Recording, why: str) -> None:
        """Stop its conversion, record it in the audit chain, remove its spool (the chunks and the request)."""
        recording.abandoning = True
        await asyncio.to_thread(recording.folder.mark_abandoned)
        if recording.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await recording.task
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
        if 0 in recording.chunks and recording.result is None:
            self._convert(recording)
        return new

    async def end(self, recording: Recording, chunks: int, sha256: str) -> None:
        async with recording.lock:
            if recording.end is not None:
                if (recording.end["chunks"], recording.end["sha256"]) != (chunks, sha256):
                    raise HTTPException(409, f"recording {recording.id} was already ended with {recording.end['chunks']} "
                                             "chunks and another SHA-256.")
                return
            if recording.state != "receiving":
                raise HTTPException(409, f"recording {recording.id} is {recording.state}.")
            missing = [n for n in range(chunks) if n not in recording.chunks]
            beyond = sorted(n for n in recording.chunks if n >= chunks)
            if missing or beyond:
                raise HTTPException(409, (f"chunks {_ranges(missing)} are not acknowledged; send them, then end again."
                                          if missing else f"chunks {_ranges(beyond)} lie beyond the {chunks} chunks "
                                                          "given; give the right count."))
            whole = await asyncio.to_thread(recording.folder.whole_digest, chunks)
            if whole != sha256:
                raise HTTPException(400, f"the {chunks} chunks received have SHA-256 {whole}, not {sha256}: the "
                                         "recording the client holds differs from what it sent; nothing was converted.")
            recording.end = await asyncio.to_thread(recording.folder.mark_end, chunks, sha256)
            recording.last_activity = time.monotonic()
        self._convert(recording)


def _ranges(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def digest_of(header: str | None) -> str:
    """The SHA-256 (hex) a Content-Digest header gives (RFC 9530: `sha-256=:BASE64:`), or 400."""
    for member in (header or "").split(","):
        name, _, value = member.strip().partition("=")
        if name.strip().lower() == "sha-256" and value.startswith(":") and value.endswith(":"):
            try:
                raw = base64.b64decode(value[1:-1], validate=True)
            except (binascii.Error, ValueError):
                break
            if len(raw) == 32:
                return raw.hex()
    raise HTTPException(400, "give the chunk's SHA-256 as the header Content-Digest: sha-256=:BASE64: (RFC 9530).")


# --- the routes ---------------------------------------------------------------------------------------------

PAGE = PathLib(__file__).with_name("static") / "record.html"
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")


def page_router() -> APIRouter:
    """GET /record: the recorder page (static, same origin as the API it calls)."""
    page = APIRouter()

    @page.get("/record", response_class=HTMLResponse, include_in_schema=False)
    async def recorder_page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={
            "Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    return page


def router(recordings: Recordings) -> APIRouter:
    settings = recordings.settings
    bearer = HTTPBearer(auto_error=False, description="A token the site configured (record.tokens_sha256).")

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not settings.enabled:
            raise HTTPException(503, "recording ingestion is not configured on this server (record.tokens_sha256).")
        if credentials is None or credentials.scheme.lower() != "bearer" or not settings.allows(credentials.credentials):
            raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer TOKEN); nothing "
                                     "was kept.", headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(prefix=PREFIX, tags=["recordings"], dependencies=[Depends(authorized)])
    an_id = Path(pattern=ID_PATTERN, description="The id POST /recordings answered.")

    @api.post("", status_code=201, response_model=RecordingState,
              responses={422: {"description": "a metadata value is refused (the field is named)"},
                         429: {"description": "too many recordings are being uploaded at once"}})
    async def create_recording(request: RecordingRequest) -> RecordingState:  # type: ignore[valid-type]
        """Open a recording: its patient/study metadata, checked as `dvqa convert` checks its options."""
        wanted = request.model_dump(exclude_none=True)  # type: ignore[attr-defined]
        try:
            ingest.metadata_of(wanted)
        except DvqaError as exc:
            raise HTTPException(422, str(exc)) from None
        if recordings.receiving() >= settings.max_recordings:
            raise HTTPException(429, f"{settings.max_recordings} recordings are being uploaded already "
                                     "(record.max_recordings); try again when one has ended.",
                                headers={"Retry-After": "5"})
        recording = await recordings.create(wanted)
        return recording.view(settings.idle_expiry_s)

    @api.put("/{recording_id}/chunks/{n}", response_model=ChunkAck,
             responses={200: {"description": "the same bytes were acknowledged before"},
                        201: {"description": "acknowledged: on disk, fsync'd"},
                        400: {"description": "the body does not match Content-Digest"},
                        409: {"description": "other bytes were acknowledged for this n, or the recording ended"},
                        413: {"description": "the chunk or the recording is too large"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                 "video/webm": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put_chunk(request: Request, response: Response, recording_id: str = an_id,
                        n: int = Path(ge=0, lt=MAX_CHUNKS, description="The chunk's number, from 0, in recording "
                                                                       "order."),
                        ) -> ChunkAck:
        """One MediaRecorder chunk (a `dataavailable` blob), with `Content-Digest: sha-256=:BASE64:`."""
        recording = recordings.get(recording_id)
        expected = digest_of(request.headers.get("content-digest"))
        limit = settings.max_chunk_bytes
        too_big = HTTPException(413, f"a chunk may hold at most {settings.max_chunk_mb:g} MB "
                                     "(record.max_chunk_mb); record with a shorter timeslice.")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise too_big
        data = bytes(body)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise HTTPException(400, f"the body's SHA-256 is {actual}, not the {expected} Content-Digest gives: it "
                                     "was damaged on the way; send the chunk again.")
        new = await recordings.put_chunk(recording, n, data, actual)
        response.status_code = 201 if new else 200
        return ChunkAck(n=n, size=len(data), sha256=actual, acknowledged=True)

    @api.post("/{recording_id}/end", status_code=202, response_model=RecordingState,
              responses={400: {"description": "the chunks do not make the SHA-256 given"},
                         409: {"description": "chunks are missing, or it was ended otherwise"}})
    async def end_recording(body: EndRequest, recording_id: str = an_id) -> RecordingState:
        """The recording is complete: conversion finishes, then validate, store, audit (GET for the result)."""
        recording = recordings.get(recording_id)
        await recordings.end(recording, body.chunks, body.sha256.lower())
        return recording.view(settings.idle_expiry_s)

    @api.get("/{recording_id}", response_model=RecordingState)
    async def recording_state(recording_id: str = an_id) -> RecordingState:
        """The state, the acknowledged chunks (resend the others after a failure), and the result."""
        return recordings.get(recording_id).view(settings.idle_expiry_s)

    return api
