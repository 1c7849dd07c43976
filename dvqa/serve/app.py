"""The ASGI application `dvqa serve` runs: the DICOMweb gateway under /dicom-web, /healthz, and the
recording-ingestion API under /recordings (dvqa.serve.record_api, dvqa.serve.recordings). A server
configured without an upstream has no gateway: /dicom-web answers 404 saying so.

FastAPI, so the HTTP APIs dvqa defines itself get their OpenAPI schema at /openapi.json; the gateway
is a plain Starlette router mounted inside it (its interface is PS3.18's, not dvqa's).

Access logs carry no patient data: method, path, status, bytes and time - never the query string
(QIDO queries may hold patient names and IDs: `?PatientName=...` is logged as `?<query>`), and never
headers. Paths hold only UIDs, which identify objects but not people.
"""

from __future__ import annotations

import contextlib
import logging
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dvqa import __version__
from dvqa.serve.cache import Cache
from dvqa.serve.config import ServeConfig
from dvqa.serve.gateway import Gateway
from dvqa.serve.record_api import ScopedCors, is_recording_path, page_router, recorder_cors
from dvqa.serve.record_api import router as recordings_router
from dvqa.serve.prewarm import warm_target
from dvqa.serve.recordings import Recordings
from dvqa.serve.upstream import Upstream
from dvqa.serve.watch import OrthancWatch

access = logging.getLogger("dvqa.serve.access")


class AccessLog:
    """One line per request, written when the response has ended."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, sent = time.monotonic(), 0, 0

        async def counting(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        outcome = ""
        try:
            await self.app(scope, receive, counting)
        except BaseException:
            outcome = " cut"  # the connection was ended without a complete answer
            raise
        finally:
            query = "?<query>" if scope.get("query_string") else ""
            access.info("%s %s%s %s %d bytes %.0f ms%s", scope["method"], scope["path"], query, status or "-",
                        sent, (time.monotonic() - started) * 1000, outcome)


NO_GATEWAY = JSONResponse({"detail": "this dvqa serve has no DICOMweb gateway: it was started without an upstream "
                                     "(--upstream URL, or upstream: in the config file); it takes recordings only."},
                           status_code=404)


def create_app(config: ServeConfig) -> FastAPI:
    """The application for one configuration; the upstream client lives as long as the app."""
    upstream = gateway = watch = None
    if config.upstream:
        upstream = Upstream.create(config.upstream, config.connect_timeout_s, config.read_timeout_s,
                                   orthanc_rest=config.orthanc_rest)
        cache = Cache(config.cache_dir, config.cache_max_mb * 1024 * 1024)  # type: ignore[arg-type]
        gateway = Gateway(upstream, cache, config.public_url, prewarm=config.prewarm)
        if config.orthanc_watch:
            watch = OrthancWatch(config.orthanc_rest, cache, gateway.busy, timeout_s=config.read_timeout_s)
    recordings = Recordings(config.record, warm_target(config))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        await recordings.start()
        if watch is not None:
            await watch.start()
        yield
        if watch is not None:
            await watch.stop()
        await recordings.stop()
        if upstream is not None:
            await upstream.close()

    app = FastAPI(title="dvqa serve", version=__version__, lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers (it does not probe the upstream: a PACS outage is not a gateway failure)."""
        return {"status": "ok", "version": __version__}

    app.mount("/dicom-web", gateway.router if gateway else NO_GATEWAY)
    app.include_router(recordings_router(recordings))
    app.include_router(page_router())
    if config.record.recorder_origin:  # the recording page, served from the clinic's web application
        app.add_middleware(ScopedCors, **recorder_cors(config.record.recorder_origin))
    if config.cors_origins:  # a web viewer served from another origin: browsers need CORS to call us
        app.add_middleware(ScopedCors, inside=lambda path: not is_recording_path(path),
                           allow_origins=list(config.cors_origins), allow_credentials=True,
                           allow_methods=["GET", "HEAD", "POST", "OPTIONS"], allow_headers=["*"],
                           expose_headers=["Content-Range", "Accept-Ranges", "Content-Length", "ETag"])
    app.add_middleware(AccessLog)
    app.state.gateway = gateway
    app.state.recordings = recordings
    return app
