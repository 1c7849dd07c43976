"""What `dvqa serve` adds to the DICOM Conformance Statement: its DICOMweb gateway and its HTTP recording
API, read from the code that serves them - the gateway's routes, the recording API's OpenAPI schema, the
syntax table with what the gateway renders each syntax as, the settings' defaults.

The statement itself is built by dvqa.report.conformance, a lower layer that may not import this one: the
commands that write it (`dvqa report conformance`, `dvqa evidence build`) hand these sections to it.
"""

from __future__ import annotations

from dataclasses import fields

from dvqa.dicom import syntaxes
from dvqa.serve import remux
from dvqa.serve.config import ServeConfig
from dvqa.serve.record_settings import RecordSettings

# what each of the gateway's routes does, by its endpoint's name (a route without one stops the statement)
GATEWAY_ROUTES = {
    "rendered": "Video instances (table below): the video as one file, remuxed from Pixel Data without re-encoding; "
                "Range, ETag/304, 406 when Accept excludes its media type; cached privately. Other instances: "
                "passed through.",
    "thumbnail": "Video instances: a JPEG of the picture in the middle of the video. Other instances: passed through.",
    "frame_rendered": "Video instances: frame n as image/jpeg (PS3.18 rendered frames; one frame number at a time, "
                      "quality 1-100; 400 for a list, 404 past the last frame). Other instances: passed through.",
    "passthrough": "Passed through unchanged and streamed (QIDO-RS PS3.18 §10.6, WADO-RS §10.4, STOW-RS §10.5 "
                   "and anything else): the client's method, path, query, body and Authorization header; the "
                   "PACS's status, content type and body. Exceptions: study, series and instance metadata and "
                   "QIDO-RS instance answers gain Available Transfer Syntax UID (0008,3002) and a Pixel Data "
                   "BulkDataURI for video instances, and URLs naming the upstream are rewritten to the gateway's; "
                   "the metadata of a study, series or instance whose instances are all videos is made from the "
                   "instances' own headers (PS3.18 Annex F), listed by the PACS's QIDO-RS answer to the client and "
                   "used only while that answer's attributes agree with them. A STOW-RS request's body is copied "
                   "on its way (at most the cache's size), and once the PACS's answer has been sent, the video "
                   "instances that answer lists as stored are rendered into the cache (prewarm, on by default).",
}
RECORD_LIMITS = ("max_chunk_mb", "max_recording_mb", "max_recordings", "conversions", "idle_expiry_s")


def _table(caption: str, columns: list[str], rows: list[list[object]]) -> dict:
    return {"caption": caption, "columns": columns, "rows": [[str(c) for c in row] for row in rows]}


def gateway_routes() -> list[tuple[str, str, str]]:
    """(path under /dicom-web, methods, what it does) for every route of the gateway."""
    from dvqa.serve.gateway import Gateway

    router = Gateway(None, None).router  # type: ignore[arg-type] - only its routes are read
    return [(route.path.replace("{path:path}", "{any other path}"), ", ".join(sorted(route.methods or ())),
             GATEWAY_ROUTES[route.endpoint.__name__]) for route in router.routes]


def rendered_media() -> list[list[str]]:
    rows = []
    for uid, syntax in syntaxes.BY_UID.items():
        video = remux.renderable(uid)
        how = (f"{remux.MEDIA_TYPE[video.codec]}: " + ("the elementary stream as stored" if video.codec == "mpeg2video"
                                                       else "fragmented MP4, the stream remuxed, not re-encoded")
               if video else "not rendered: /rendered and /thumbnail pass through to the PACS")
        rows.append([syntax.title + (" (fragmentable)" if uid == syntax.fragmentable_uid else ""), uid, how])
    return rows


def recording_operations() -> list[list[str]]:
    """(method, path, what it does, answers) of every operation of the recording API, from its OpenAPI schema."""
    from fastapi import FastAPI

    from dvqa.serve.record_api import router
    from dvqa.serve.recordings import Recordings

    app = FastAPI()
    app.include_router(router(Recordings(RecordSettings())))
    rows = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            rows.append([method.upper(), path, operation["summary"], ", ".join(sorted(operation["responses"]))])
    return rows


def sections() -> list[dict]:
    """The statement's sections on `dvqa serve` (titles, summaries for the overview, paragraphs, tables)."""
    defaults, record = ServeConfig(), RecordSettings()
    limits = {f.name: getattr(record, f.name) for f in fields(RecordSettings) if f.name in RECORD_LIMITS}
    gateway = {
        "title": "DICOMweb gateway (dvqa serve --upstream)",
        "summary": "`dvqa serve --upstream` is a DICOMweb origin server for web viewers in front of a PACS's "
                   "DICOMweb root, and a DICOMweb user agent towards it",
        "paragraphs": [
            "The gateway implements no DICOMweb service of its own: every request under /dicom-web goes to the "
            "configured upstream root, so what the PACS does not support, the gateway does not either, and access "
            "stays the PACS's decision. Its additions concern instances of the video transfer syntaxes below: they "
            "are retrieved from the PACS with transfer-syntax=* (PS3.18 §8.7.3.5.2), as stored (from an Orthanc "
            "PACS's REST file route instead when orthanc_rest is configured), and before a "
            "rendering or thumbnail is served from the cache a QIDO-RS query for the instance with the client's "
            "Authorization header must find it. With orthanc_watch, it also follows an Orthanc PACS's change log "
            "(REST GET /changes) and reads each newly stored video instance from the REST file route with its own "
            "credentials (environment variable DVQA_ORTHANC_WATCH_AUTH), to fill its cache before a viewer asks.",
            f"HTTP/1.1 on {defaults.host}:{defaults.port} unless --host/--port say otherwise; HTTPS with "
            "--tls-cert/--tls-key. CORS only for the configured cors_origins. Timeouts towards the PACS: connect "
            f"{defaults.connect_timeout_s:g} s, read {defaults.read_timeout_s:g} s; a PACS that fails, stalls or "
            "cuts its answer gives the client a one-line 502 or 504, never part of a video presented as whole. "
            f"Renderings are cached in a private folder (0700, files 0600), by default at most {defaults.cache_max_mb} "
            "MB."],
        "tables": [
            _table("Gateway resources (under /dicom-web)", ["Path", "Methods", "Behaviour"],
                   [list(row) for row in gateway_routes()]),
            _table("What /rendered answers for each video transfer syntax", ["Transfer syntax", "UID", "Answer"],
                   rendered_media())],
    }
    recording = {
        "title": "HTTP recording API (dvqa serve with record: in --config)",
        "summary": "with a `record:` configuration it takes browser recordings over an HTTP API (not a DICOM "
                   "service) and stores each as a DICOM video in the configured PACS",
        "paragraphs": [
            "A web application's MediaRecorder chunks are uploaded in order, each with its SHA-256, acknowledged "
            "once on disk; the conversion runs while they arrive (as `dvqa convert --follow`). The finished file "
            "is validated, signed when record.sign_key is set, and sent as `dvqa pacs store` sends it: a Storage "
            "SCU association with the presentation contexts of 3.2.2 (record.pacs.fallback as --fallback), or a "
            "STOW-RS request (3.3). Every conversion, PACS answer and abandoned upload is appended to the server's "
            "audit trail (section 6). The schema of the API is served at /openapi.json (OpenAPI 3.1).",
            "Every request needs a bearer token listed in the configuration as its SHA-256 digest; without one the "
            "answer is 401 and nothing is kept. HTTPS with --tls-cert/--tls-key. CORS only for record."
            "recorder_origin. Limits are answered 413 (chunk or recording too large) and 429 (too many uploads); "
            "refusals carry one sentence in `detail`. Without a token the server also answers GET /record (the "
            "recorder page, a static HTML page allowed to talk to its own origin only), GET /healthz and GET "
            "/openapi.json."],
        "tables": [
            _table("Recording API operations", ["Method", "Path", "Purpose", "HTTP answers"], recording_operations()),
            _table("Recording limits (record: in --config)", ["Setting", "Default"],
                   [[f"record.{name}", f"{value:g}" if isinstance(value, float) else value]
                    for name, value in limits.items()])],
    }
    return [gateway, recording]
