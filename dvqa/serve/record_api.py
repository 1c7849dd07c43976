"""The HTTP face of recording ingestion (dvqa.serve.recordings holds the recordings themselves): the documents
that make its OpenAPI schema at /openapi.json, the routes, the bearer-token check, CORS scoped to the recorder's
origin, and the recorder page at /record.

    POST /recordings                 patient/study metadata (the values and checks of `dvqa convert`) -> an id
    PUT  /recordings/{id}/chunks/{n} chunk n, with its SHA-256 (Content-Digest: sha-256=:BASE64:, RFC 9530)
    POST /recordings/{id}/end        the chunk count and the whole recording's SHA-256
    GET  /recordings/{id}            the state, the acknowledged chunks and, once finished, the result and links:
    GET  /recordings/{id}/quality.html (and .json)  the quality report of the conversion
    GET  /recordings/{id}/audit      the records the recording added to the server's audit chain, as the chain
                                     holds them now, each checked against the hash its result gave

Every request carries a bearer token from the site's config (kept there as a SHA-256 digest); without one it
is refused with 401 before its body is read, and nothing is kept.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from pathlib import Path as PathLib
from typing import Any, Callable, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
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
from dvqa.trust import audit as audit_chain

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


class Refusal(BaseModel):
    """Why a request was refused (FastAPI's shape): one sentence that says what to do."""

    detail: str


def refused(why: str) -> dict[str, Any]:
    """An error answer as the OpenAPI schema documents it: its body is a Refusal."""
    return {"model": Refusal, "description": why}


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
    conversion: str = Field(description="not started | waiting for a conversion slot | running on the Dask cluster "
                                        "(--scheduler) | running | finished")
    acknowledged: list[int] = Field(description="The chunk numbers on the server's disk; send the others.")
    bytes: int
    next_chunk: int = Field(description="The lowest chunk number not acknowledged.")
    end: dict[str, Any] | None = None
    expires_in_s: float | None = Field(None, description="While receiving: seconds until it is abandoned unless "
                                                         "a chunk comes.")
    result: dict[str, Any] | None = Field(
        None, description="When finished: syntax and why, timing summary, quality summary, validation verdict, "
                          "signature, what the PACS answered (stored or why not), the DICOM file's path when the "
                          "server kept it, `audit` (each record it added to the server's audit chain: seq, the "
                          "SHA-256 of its line, command, outcome), `reports` (the quality reports written), and the "
                          "time from end to ready and to stored.")
    links: dict[str, str] = Field(default_factory=dict, description=(
        "When finished, the paths (on this server, with the same token) of what the result refers to: "
        "quality_html and quality_json (the quality report) and audit (its audit records)."))


def links(recording: Recording) -> dict[str, str]:
    """The paths of the quality report and the audit records a finished recording has."""
    result, base = recording.result or {}, f"{PREFIX}/{recording.id}"
    written = result.get("reports") or {}
    found = {f"quality_{kind}": f"{base}/quality.{kind}" for kind in REPORT_TYPES
             if written.get(kind) in ("writing", "written")}
    if result.get("audit"):
        found["audit"] = f"{base}/audit"
    return found


class AuditEntry(BaseModel):
    seq: int = Field(description="The record's number in the server's audit chain.")
    sha256: str = Field(description="The SHA-256 of the record's line when it was appended (the next record's "
                                    "`prev`): keep it to show later that the chain still holds this record.")
    unchanged: bool = Field(description="The chain holds a record numbered seq whose line has that SHA-256 now.")
    record: dict[str, Any] | None = Field(description="The record as the chain holds it now (null: not there).")


class AuditRecords(BaseModel):
    id: str
    records: list[AuditEntry]


def view(recording: Recording, idle_s: float) -> RecordingState:
    """What GET (and POST, PUT, end) answer about a recording."""
    acknowledged = sorted(recording.chunks)
    following = next((n for n, k in enumerate(acknowledged) if n != k), len(acknowledged))
    expires = None
    if recording.state == "receiving":
        expires = round(max(0.0, idle_s - (time.monotonic() - recording.last_activity)), 1)
    return RecordingState(id=recording.id, state=recording.state, conversion=recording.conversion,
                          acknowledged=acknowledged, bytes=sum(recording.chunks.values()), next_chunk=following,
                          end=recording.end, expires_in_s=expires, result=recording.result,
                          links=links(recording))


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


DIGEST_PARAMETER = {"name": "Content-Digest", "in": "header", "required": True,
                    "description": "The chunk's SHA-256 as RFC 9530 gives it: sha-256=:BASE64:",
                    "schema": {"type": "string"}}


# --- the routes ---------------------------------------------------------------------------------------------

REPORT_WAIT_S = 30.0  # a report asked for while its conversion process writes it
REPORT_TYPES = {"html": "text/html; charset=utf-8", "json": "application/json"}
REPORT_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
                 "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # the report is self-contained
PAGE = PathLib(__file__).with_name("static") / "record.html"
# img-src data:: a quality report the page opens (a blob: URL) inherits this policy, and its thumbnails are data:
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src data:; media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'self'")


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

    api = APIRouter(prefix=PREFIX, tags=["recordings"], dependencies=[Depends(authorized)], responses={
        401: refused("no valid bearer token; nothing was kept"),
        503: refused("recording ingestion is not configured on this server")})
    an_id = Path(pattern=ID_PATTERN, description="The id POST /recordings answered.")
    unknown = {404: refused("no recording with this id on this server")}

    @api.post("", status_code=201, response_model=RecordingState, summary="Open a recording with its metadata",
              responses={422: {"description": "a metadata value is refused (the field is named: `detail` a "
                                              "sentence), or the body is not a RecordingRequest (`detail` a list)",
                               "content": {"application/json": {"schema": {"anyOf": [
                                   {"$ref": "#/components/schemas/Refusal"},
                                   {"$ref": "#/components/schemas/HTTPValidationError"}]}}}},
                         429: refused("too many recordings are being uploaded at once")})
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

    @api.put("/{recording_id}/chunks/{n}", response_model=ChunkAck, status_code=201, summary="Upload chunk n",
             responses={**unknown, 200: {"model": ChunkAck, "description": "the same bytes were acknowledged before"},
                        201: {"description": "acknowledged: on disk, fsync'd"},
                        400: refused("the body does not match Content-Digest"),
                        409: refused("other bytes were acknowledged for this n, or the recording ended"),
                        413: refused("the chunk or the recording is too large"),
                        507: refused("the server cannot write its spool (full disk): send it again later")},
             openapi_extra={"parameters": [DIGEST_PARAMETER], "requestBody": {"required": True, "content": {
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

    @api.post("/{recording_id}/end", status_code=202, response_model=RecordingState, summary="End the recording",
              responses={**unknown, 400: refused("the chunks do not make the SHA-256 given"),
                         409: refused("chunks are missing, or it was ended otherwise")})
    async def end_recording(body: EndRequest, recording_id: str = an_id) -> RecordingState:
        """The recording is complete: conversion finishes, then validate, store, audit (GET for the result)."""
        recording = recordings.get(recording_id)
        await recordings.end(recording, body.chunks, body.sha256.lower())
        return view(recording, settings.idle_expiry_s)

    @api.get("/{recording_id}", response_model=RecordingState, responses=unknown,
             summary="The recording's state and, once finished, its result")
    async def recording_state(recording_id: str = an_id) -> RecordingState:
        """The state, the acknowledged chunks (resend the others after a failure), and the result."""
        return view(recordings.get(recording_id), settings.idle_expiry_s)

    no_report = {404: refused("no such recording, or it has no quality report (not finished, or nothing was "
                              "converted): the reason is given")}

    @api.get("/{recording_id}/quality.html", response_class=FileResponse, summary="Its quality report (HTML)",
             responses={**no_report, 200: {"description": "one self-contained HTML page",
                                           "content": {"text/html": {"schema": {"type": "string"}}}}})
    async def quality_html(recording_id: str = an_id) -> FileResponse:
        """The quality report of the conversion, as `dvqa convert --report quality.html` writes it (one
        self-contained page: plots, the worst frames' thumbnails), without the patient's identifiers. Asked
        while it is still being written (just after the result), it is answered once written."""
        return await report(recordings.get(recording_id), "html")

    @api.get("/{recording_id}/quality.json", response_class=FileResponse, summary="Its quality report (JSON)",
             responses={**no_report, 200: {
                 "description": "the conversion record with every frame's PSNR/SSIM and the timing map",
                 "content": {"application/json": {"schema": {"type": "object"}}}}})
    async def quality_json(recording_id: str = an_id) -> FileResponse:
        """The quality report as JSON (`dvqa convert --report quality.json`: per-frame values, timing map)."""
        return await report(recordings.get(recording_id), "json")

    @api.get("/{recording_id}/audit", response_model=AuditRecords, summary="Its records in the audit chain",
             responses={404: refused("no such recording, or it has no audit records (not finished, or no "
                                     "record.audit)"),
                        503: refused("recording ingestion is not configured, or the audit chain cannot be "
                                     "read")})
    async def audit_records(recording_id: str = an_id) -> AuditRecords:
        """The records the recording added to the server's audit chain (its conversion, each PACS answer, or its
        abandonment), read from the chain now and checked against the SHA-256 the result gave; the whole chain
        is proved by `dvqa audit verify`."""
        recording = recordings.get(recording_id)
        named = (recording.result or {}).get("audit") or []
        if not named or settings.audit is None:
            raise HTTPException(404, f"recording {recording_id} has no audit records "
                                     f"({'it is ' + recording.state if recording.result is None else 'none'}).")
        try:
            found = await asyncio.to_thread(audit_chain.find, settings.audit, {e["seq"] for e in named})
        except (OSError, DvqaError) as exc:
            raise HTTPException(503, f"the audit chain cannot be read ({exc}); ask the site's administrator.") \
                from None
        entries = []
        for e in named:
            record, line_hash = found.get(e["seq"], (None, ""))
            entries.append(AuditEntry(seq=e["seq"], sha256=e["sha256"], unchanged=line_hash == e["sha256"],
                                      record=record))
        return AuditRecords(id=recording_id, records=entries)

    return api


async def report(recording: Recording, kind: str) -> FileResponse:
    """The recording's quality report as a file answer (waiting while its conversion process writes it), or 404
    saying why there is none."""
    path = recording.folder.report_path(kind)

    def status() -> str | None:
        return ((recording.result or {}).get("reports") or {}).get(kind)

    deadline = time.monotonic() + REPORT_WAIT_S
    while status() == "writing" and recording.process is not None and not path.is_file() \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if not path.is_file():
        result = recording.result
        why = (f"it is {recording.state}" if result is None else
               f"nothing was converted: {result.get('reason')}" if status() is None else
               "the server stopped while it was being written" if status() == "writing" else status())
        raise HTTPException(404, f"recording {recording.id} has no {kind} quality report ({why}).")
    return FileResponse(path, media_type=REPORT_TYPES[kind], headers={
        "Content-Security-Policy": REPORT_POLICY, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
