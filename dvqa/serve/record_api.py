"""The HTTP face of recording ingestion (dvqa.serve.recordings holds the recordings themselves): the documents
that make its OpenAPI schema at /openapi.json, the routes, the bearer-token check, CORS scoped to the recorder's
origin, and the recorder page at /record.

    POST /recordings                 patient/study metadata (the values and checks of `dvqa convert`) -> an id
    PUT  /recordings/{id}/chunks/{n} chunk n, with its SHA-256 (Content-Digest: sha-256=:BASE64:, RFC 9530)
    POST /recordings/{id}/end        the chunk count and the whole recording's SHA-256
    GET  /recordings/{id}            the state, the acknowledged chunks and, once finished, the result

Every request carries a bearer token from the site's config (kept there as a SHA-256 digest); without one it
is refused with 401 before its body is read, and nothing is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from pathlib import Path as PathLib
from typing import Any, Callable, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from dvqa.convert.options import PATIENT_STUDY_FIELDS
from dvqa.core.errors import DvqaError
from dvqa.dicom import syntaxes
from dvqa.dicom.iod import VideoIOD
from dvqa.serve import ingest
from dvqa.serve.recordings import Recording, Recordings
from dvqa.serve.spool import MAX_CHUNKS

PREFIX = "/recordings"
ID_PATTERN = r"^[0-9a-f]{32}$"


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


def view(recording: Recording, idle_s: float) -> RecordingState:
    """What GET (and POST, PUT, end) answer about a recording."""
    acknowledged = sorted(recording.chunks)
    following = next((n for n, k in enumerate(acknowledged) if n != k), len(acknowledged))
    expires = None
    if recording.state == "receiving":
        expires = round(max(0.0, idle_s - (time.monotonic() - recording.last_activity)), 1)
    return RecordingState(id=recording.id, state=recording.state, conversion=recording.conversion,
                          acknowledged=acknowledged, bytes=sum(recording.chunks.values()), next_chunk=following,
                          end=recording.end, expires_in_s=expires, result=recording.result)


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
        given = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
        if given is None or not settings.allows(given):
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
        return view(recording, settings.idle_expiry_s)

    @api.put("/{recording_id}/chunks/{n}", response_model=ChunkAck,
             responses={200: {"description": "the same bytes were acknowledged before"},
                        201: {"description": "acknowledged: on disk, fsync'd"},
                        400: {"description": "the body does not match Content-Digest"},
                        409: {"description": "other bytes were acknowledged for this n, or the recording ended"},
                        413: {"description": "the chunk or the recording is too large"},
                        507: {"description": "the server cannot write its spool (full disk): send it again later"}},
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
        return view(recording, settings.idle_expiry_s)

    @api.get("/{recording_id}", response_model=RecordingState)
    async def recording_state(recording_id: str = an_id) -> RecordingState:
        """The state, the acknowledged chunks (resend the others after a failure), and the result."""
        return view(recordings.get(recording_id), settings.idle_expiry_s)

    return api
