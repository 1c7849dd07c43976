"""The DICOMweb gateway: a drop-in for the upstream's root that makes DICOM video play in web viewers.

Everything passes through unchanged and streamed (QIDO-RS, WADO-RS, STOW-RS: status, content type and
body as the upstream sent them), except for instances whose transfer syntax is a video syntax of
dvqa's table (dvqa/dicom/syntaxes.py):
- `.../instances/{i}/rendered` answers video/mp4 (H.264, HEVC: the stream remuxed, not re-encoded) or
  video/mpeg (MPEG-2: the elementary stream), with Range, ETag and a cache;
- `.../thumbnail` answers a JPEG of a representative picture, `.../frames/{n}/rendered` a JPEG of frame n;
- `/metadata` and QIDO instance answers gain Available Transfer Syntax UID (0008,3002) and a Pixel Data
  BulkDataURI, which is what makes a viewer such as OHIF treat the instance as a video.
In the JSON answers the gateway rewrites (QIDO and metadata), URLs that point at the upstream's root are
made to point at the gateway's, so a client that follows them stays behind the gateway.

Access is the upstream's decision: every request for a rendering is first checked with a QIDO-RS
query for that instance carrying the client's Authorization header, so the cache never serves a
video to a client the upstream would refuse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, Router

from dvqa.dicom.iod import VideoIOD
from dvqa.dicom.syntaxes import VideoSyntax
from dvqa.serve import metadata, remux, stow
from dvqa.serve.cache import Cache, private_file
from dvqa.serve.entries import (RENDER_VERSION, THUMBNAIL_QUALITY, THUMBNAIL_SIZE, picture_key, progressive_key,
                                read_header, rendered_key, store_header)
from dvqa.serve.render import SUFFIX, RenderJob, write_progressive
from dvqa.serve.upstream import HOP_BY_HOP, InstanceBody, Upstream, UpstreamError

log = logging.getLogger("dvqa.serve")

VIDEO_SOP_CLASSES = {iod.sop_class for iod in VideoIOD}
AVAILABLE_TRANSFER_SYNTAX = "00083002"
PIXEL_DATA = "7FE00010"
_JSON_ANSWER = re.compile(r"^(studies/?|(studies/[^/]+/)?series/?|(studies/[^/]+/(series/[^/]+/)?)?instances/?"
                          r"|studies/[^/]+(/series/[^/]+(/instances/[^/]+)?)?/metadata/?)$")
_METADATA_PATH = re.compile(r"^studies/(?P<study>[^/]+)(/series/(?P<series>[^/]+)(/instances/(?P<instance>[^/]+))?)?"
                            r"/metadata$")
_LOOKUPS_AT_ONCE = 4
_KNOWN_SYNTAXES = 100_000  # SOP Instance UID -> transfer syntax, kept in memory
_PREFETCH_AT_ONCE = 2  # renderings a metadata request may start before the viewer asks for them
_RETIRED_S = 60  # a replaced cache file stays this long for requests already answering with it
_HEADERS_KEPT = 10_000  # SOP Instance UID -> its metadata made from its header, kept in memory


def one_line(error: UpstreamError) -> Response:
    return PlainTextResponse(str(error) + "\n", status_code=error.status)


class Gateway:
    """The routes under /dicom-web and what they share: the upstream client, the cache, the jobs."""

    def __init__(self, upstream: Upstream, cache: Cache, public_url: str = "", prewarm: bool = True) -> None:
        self.upstream = upstream
        self.cache = cache
        self.public_url = public_url
        self.prewarm = prewarm  # STOW-RS through the gateway: what the upstream stored is rendered at once
        self.prewarming: set[asyncio.Future] = set()
        self.warming: set[str] = set()  # SOP Instance UIDs being prewarmed from a STOW-RS copy
        self.jobs: dict[str, RenderJob] = {}
        self.syntaxes: OrderedDict[str, str] = OrderedDict()
        self.probing: dict[str, asyncio.Future] = {}  # SOP Instance UID -> its transfer syntax, being learnt
        self.headers: OrderedDict[str, dict] = OrderedDict()  # SOP Instance UID -> metadata from its header
        self.router = Router(routes=[
            Route("/studies/{study}/series/{series}/instances/{instance}/rendered", self.rendered),
            Route("/studies/{study}/series/{series}/instances/{instance}/thumbnail", self.thumbnail),
            Route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
                  self.frame_rendered),
            Route("/{path:path}", self.passthrough,
                  methods=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
        ])

    # -- pass-through --------------------------------------------------------------------------
    async def passthrough(self, request: Request) -> Response:
        path = request.path_params.get("path") or request.url.path.split("/dicom-web/", 1)[-1]
        rewrite = request.method == "GET" and bool(_JSON_ANSWER.match(path))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if rewrite:
            headers.pop("accept-encoding", None)  # the JSON is read and changed: ask for it uncompressed
        body = request.stream() if request.method in ("POST", "PUT", "PATCH") else None
        tee = stow.Tee.of(request.method, path, request.headers.get("content-type", ""), self.cache) \
            if self.prewarm else None
        if tee is not None:
            body = tee.copy(body)  # type: ignore[arg-type]
        if rewrite and path.rstrip("/").endswith("metadata"):
            made = await self._video_metadata(path.rstrip("/"), request)
            if made is not None:
                return Response(json.dumps(made), media_type="application/dicom+json")
        try:
            response = await self.upstream.open(request.method, path, request.url.query, headers, body)
        except UpstreamError as exc:
            if tee is not None:
                tee.discard()
            return one_line(exc)
        kept = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
        if rewrite and response.status_code == 200 and "json" in response.headers.get("content-type", ""):
            try:
                data = json.loads(await response.aread())
            except (httpx.HTTPError, ValueError) as exc:
                return one_line(self.upstream.failure(exc) if isinstance(exc, httpx.HTTPError) else
                                UpstreamError(502, f"upstream {self.upstream.base} sent JSON that does not parse"))
            finally:
                await response.aclose()
            if isinstance(data, list):
                await self.augment(data, request)
            kept.pop("content-length", None)
            kept.pop("etag", None)  # the body changed
            return Response(json.dumps(data), status_code=200, headers=kept)
        if tee is not None:  # the answer as the upstream sent it; the stored videos are rendered after it
            return StreamingResponse(self._relay(response, tee), status_code=response.status_code,
                                     headers=kept, background=BackgroundTask(self._after_stow, response, tee))
        return StreamingResponse(self._relay(response), status_code=response.status_code, headers=kept,
                                 background=BackgroundTask(response.aclose))

    async def _relay(self, response: httpx.Response, tee: stow.Tee | None = None):
        """The upstream's answer as it comes (for a STOW-RS request, kept in `tee.answer` as well: its
        copy is discarded unless the answer reached the client whole)."""
        relayed = False
        try:
            async for chunk in response.aiter_raw():
                if tee is not None and len(tee.answer) < stow.ANSWER_LIMIT:
                    tee.answer += chunk
                yield chunk
            relayed = True
        except httpx.HTTPError as exc:  # cut short: end the connection without the final chunk
            raise RuntimeError(str(self.upstream.failure(exc))) from None
        finally:
            if tee is not None and not relayed:
                tee.discard()

    async def _after_stow(self, response: httpx.Response, tee: stow.Tee) -> None:
        """Once the STOW-RS answer has been sent: render (in a worker thread) the instances the upstream
        says it stored; the client's answer is never waited for or changed, a failure only logged."""
        await response.aclose()
        stored = tee.stored(response.status_code, response.headers.get("content-type", ""),
                            response.headers.get("content-encoding", ""))
        if not stored:
            tee.discard()
            return
        task = asyncio.ensure_future(asyncio.to_thread(tee.prewarm, stored))
        self.prewarming.add(task)
        self.warming |= stored
        task.add_done_callback(lambda done: (self.prewarming.discard(done), self.warming.difference_update(stored)))

    def busy(self, instance: str) -> bool:
        """The instance is being rendered (a viewer's visit) or prewarmed (a STOW-RS) right now."""
        return instance in self.warming or rendered_key(instance) in self.jobs

    # -- metadata and QIDO ---------------------------------------------------------------------
    def _base(self, request: Request) -> str:
        return self.public_url or f"{request.url.scheme}://{request.url.netloc}/dicom-web"

    async def augment(self, datasets: list, request: Request) -> None:
        """Add 0008,3002 and a Pixel Data BulkDataURI to the video instances among `datasets`, and point
        URLs at the gateway.

        For a /metadata request (a viewer opening a study asks it just before the video) the retrieve that
        tells a video's transfer syntax is read on into its rendering (at most _PREFETCH_AT_ONCE at a
        time) instead of being closed: the viewer's /rendered then joins a download already under way
        instead of starting one - a PACS such as Orthanc 1.10 takes seconds to begin answering a large
        instance."""
        authorization = request.headers.get("authorization")
        prefetch = request.url.path.rstrip("/").endswith("/metadata")
        base = self._base(request)
        limit = asyncio.Semaphore(_LOOKUPS_AT_ONCE)

        async def one(item: dict) -> None:
            uids = _uids(item)
            if uids is None or not _maybe_video(item):
                return
            async with limit:
                try:
                    syntax = await self.transfer_syntax(*uids, authorization, prefetch=prefetch)
                except UpstreamError as exc:
                    log.warning("transfer syntax lookup failed: %s", exc)
                    return
            if remux.renderable(syntax):
                item[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [syntax]}
                study, series, instance = uids
                item[PIXEL_DATA] = {"vr": "OB", "BulkDataURI":
                                    f"{base}/studies/{study}/series/{series}/instances/{instance}/rendered"}

        await asyncio.gather(*(one(item) for item in datasets if isinstance(item, dict)))
        _rewrite_urls(datasets, self.upstream.base, base)

    async def _video_metadata(self, path: str, request: Request) -> list | None:
        """The metadata of a study, series or instance made by the gateway when every instance in it is a
        video whose header it has read (or reads now, sooner than a PACS such as Orthanc 1.10 answers
        metadata: dvqa.serve.metadata); None when the upstream must answer (an instance that is not a
        video, more videos than are rendered at once, a failed lookup) - their renderings are started
        all the same, so the viewer's /rendered joins a download under way.

        What the client sees is the upstream's decision: the instances are the upstream's answer to a
        QIDO-RS query made with the client's credentials, and a kept header is used only while every
        attribute that answer carries has the same value in it (a PACS that corrected a patient's name
        or ID under the same UIDs makes the gateway ask it again)."""
        found = _METADATA_PATH.match(path)
        if found is None:
            return None
        study, series, instance = found.group("study"), found.group("series"), found.group("instance")
        authorization = request.headers.get("authorization")
        where = f"studies/{study}/series/{series}/instances" if series else f"studies/{study}/instances"
        query = "includefield=all" + (f"&SOPInstanceUID={instance}" if instance else "")
        headers = {"Accept": "application/dicom+json"} | ({"Authorization": authorization} if authorization else {})
        try:
            response = await self.upstream.open("GET", where, query, headers)
            try:
                items = json.loads(await response.aread()) if response.status_code == 200 else None
            finally:
                await response.aclose()
        except (UpstreamError, httpx.HTTPError, ValueError):
            return None
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            return None
        uids = [_uids(item) if _maybe_video(item) else None for item in items]
        videos = [u for u in uids if u is not None]
        if len(videos) < len(items) or len(videos) > _PREFETCH_AT_ONCE:
            for u in videos:  # a head start for the viewer's /rendered
                asyncio.ensure_future(self._header(u, authorization, head_start=True))
            return None
        made = await asyncio.gather(*(self._header(u, authorization) for u in videos))
        answer = []
        for item, header in zip(items, made):
            if header is None:
                return None
            if not _agrees(item, header):
                self.headers.pop(str(_uids(item)[2]), None)  # type: ignore[index]
                return None
            answer.append(json.loads(json.dumps(header)))  # a copy: augment changes it
        await self.augment(answer, request)
        return answer

    async def _header(self, uids: tuple[str, str, str], authorization: str | None,
                      head_start: bool = False) -> dict | None:
        """The instance's metadata made from its header: kept, or read by its rendering (started now if
        need be). None when it is not a video, or its rendering cannot start now."""
        instance = uids[2]
        kept = self._kept_header(instance)
        if kept is not None:
            return kept
        try:
            syntax = await self.transfer_syntax(*uids, authorization, prefetch=True)
        except UpstreamError as exc:
            if not head_start:
                log.info("header lookup failed: %s", exc)
            return None
        if remux.renderable(syntax) is None:
            return None
        job = self.jobs.get(rendered_key(instance))
        if job is not None:
            await job.header_read.wait()
            if job.header is not None and job.error is None:
                return self._header_of(instance, job.header)
        return self._kept_header(instance)

    def _header_of(self, instance: str, header: Dataset) -> dict:
        """The header's metadata, made once (by whichever of the job and a metadata request asks first)."""
        return self._kept_header(instance) or self._remember_header(instance, metadata.dicom_json(header))

    def _store_header(self, instance: str, syntax: str, made: dict) -> None:
        """Keep the instance's transfer syntax and metadata on disk beside its rendering."""
        store_header(self.cache, instance, syntax, made)

    def _remember_header(self, instance: str, made: dict) -> dict:
        self.headers[instance] = made
        self.headers.move_to_end(instance)
        if len(self.headers) > _HEADERS_KEPT:
            self.headers.popitem(last=False)
        return made

    def _kept_header(self, instance: str) -> dict | None:
        if instance in self.headers:
            self.headers.move_to_end(instance)
            return self.headers[instance]
        kept = read_header(self.cache, instance)
        if kept is None:
            return None
        syntax, made = kept
        self._remember_syntax(instance, syntax)
        self._remember_header(instance, made)
        return made

    async def transfer_syntax(self, study: str, series: str, instance: str, authorization: str | None,
                              prefetch: bool = False) -> str:
        """The instance's transfer syntax: remembered, being learnt (awaited), or learnt now."""
        known = self._known_syntax(instance)
        if known is not None:
            return known
        pending = self.probing.get(instance)
        if pending is None:
            pending = asyncio.ensure_future(self._learn(study, series, instance, authorization, prefetch))
            self.probing[instance] = pending
            pending.add_done_callback(lambda done: (self.probing.pop(instance, None),
                                                    done.cancelled() or done.exception()))
        return await asyncio.shield(pending)

    def _known_syntax(self, instance: str) -> str | None:
        """The transfer syntax remembered, or kept on disk with the instance's header (no retrieve)."""
        known = self.syntaxes.get(instance)
        if known is not None:
            self.syntaxes.move_to_end(instance)
            return known
        if self._kept_header(instance) is not None:  # reading it remembers the syntax
            return self.syntaxes.get(instance)
        return None

    def _remember_syntax(self, instance: str, syntax: str) -> None:
        self.syntaxes[instance] = syntax
        self.syntaxes.move_to_end(instance)
        if len(self.syntaxes) > _KNOWN_SYNTAXES:
            self.syntaxes.popitem(last=False)

    async def _learn(self, study: str, series: str, instance: str, authorization: str | None,
                     prefetch: bool) -> str:
        syntax, body = await self._probe(study, series, instance, authorization)
        video = remux.renderable(syntax)
        if prefetch and video is not None and len(self.jobs) < _PREFETCH_AT_ONCE:
            self._job((study, series, instance), video, authorization, body)
        else:
            await body.aclose()
        return syntax

    async def _probe(self, study: str, series: str, instance: str,
                     authorization: str | None) -> tuple[str, InstanceBody]:
        """The instance's transfer syntax (remembered) and its retrieve, still open."""
        syntax, body = await self.upstream.probe(study, series, instance, authorization)
        self._remember_syntax(instance, syntax)
        return syntax, body

    def _job(self, uids: tuple[str, str, str], syntax: VideoSyntax, authorization: str | None,
             body: InstanceBody | None) -> RenderJob | Path | None:
        """The cached rendering, the job making it, or a new job (reading on from `body` if given; a
        `body` not needed is closed)."""
        instance = uids[2]
        key = rendered_key(instance)
        suffix = SUFFIX[remux.MEDIA_TYPE[syntax.codec]]
        found: RenderJob | Path | None = (self.cache.get(progressive_key(instance), suffix)
                                          or self.cache.get(key, suffix) or self.jobs.get(key))
        if found is not None:
            if body is not None:
                asyncio.ensure_future(body.aclose())
            return found
        job = RenderJob(key, syntax, self.cache.temporary(key, suffix))
        self.jobs[key] = job
        task = asyncio.create_task(job.run(self.upstream, self.cache, uids, authorization, body))
        task.add_done_callback(lambda _: self.jobs.pop(key, None))

        async def keep_header() -> None:  # in memory once read; on disk once the rendering is whole
            await job.header_read.wait()
            if job.header is None:
                return
            made = self._header_of(instance, job.header)
            await job.finished.wait()
            if job.error is None:
                self._store_header(instance, job.syntax.uid, made)
            else:
                self.headers.pop(instance, None)

        async def make_progressive() -> None:
            await job.finished.wait()
            if job.final is not None and job.media_type == "video/mp4":
                await self._progressive(instance, job.final)

        asyncio.ensure_future(keep_header())
        asyncio.ensure_future(make_progressive())
        return job

    async def _progressive(self, instance: str, fragmented: Path) -> None:
        """Replace a finished fragmented MP4 in the cache with the same pictures as a progressive MP4
        (its index first, remux.progressive): what later viewers get, with byte ranges to seek by."""
        key = progressive_key(instance)
        temporary = self.cache.temporary(key, ".mp4")
        try:
            await asyncio.to_thread(write_progressive, fragmented, temporary)
        except Exception as exc:  # the fragmented file still serves
            temporary.unlink(missing_ok=True)
            log.warning("could not index a rendering for seeking (%s)", type(exc).__name__)
            return
        self.cache.put(temporary, key, ".mp4")
        # no longer handed out; removed once requests that were just given its path have opened it
        asyncio.get_running_loop().call_later(_RETIRED_S, lambda: fragmented.unlink(missing_ok=True))

    async def _allowed(self, study: str, series: str, instance: str, authorization: str | None) -> None:
        """The upstream's word that this client may see this instance (a QIDO-RS query for it)."""
        headers = {"Accept": "application/dicom+json"}
        if authorization:
            headers["Authorization"] = authorization
        response = await self.upstream.open("GET", f"studies/{study}/series/{series}/instances",
                                            f"SOPInstanceUID={instance}", headers)
        try:
            body = await response.aread() if response.status_code == 200 else b""
        except httpx.HTTPError as exc:
            raise self.upstream.failure(exc) from None
        finally:
            await response.aclose()
        if response.status_code in (401, 403):
            raise UpstreamError(response.status_code, f"upstream {self.upstream.base} answered "
                                                      f"{response.status_code}")
        if response.status_code == 204 or (response.status_code == 200 and body.strip() in (b"", b"[]")):
            raise UpstreamError(404, "no such instance upstream")
        if response.status_code != 200:
            raise UpstreamError(502, f"upstream {self.upstream.base} answered {response.status_code} to a query")

    # -- rendered and thumbnail ----------------------------------------------------------------
    async def _video(self, request: Request) -> RenderJob | Path | Response | None:
        """The finished rendering (a path), a job making it, an error response, or None when the
        instance is not video (the upstream answers then)."""
        study, series, instance = (request.path_params[k] for k in ("study", "series", "instance"))
        authorization = request.headers.get("authorization")
        body: InstanceBody | None = None
        try:
            await self._allowed(study, series, instance, authorization)
            if instance in self.probing:  # a metadata request is learning it (and may start the rendering)
                await asyncio.shield(self.probing[instance])
            known = self._known_syntax(instance)
            if known is None:  # one retrieve: the transfer syntax from its start, the video from the rest
                known, body = await self._probe(study, series, instance, authorization)
        except UpstreamError as exc:
            return one_line(exc)
        syntax = remux.renderable(known)
        if syntax is None:
            if body is not None:
                await body.aclose()
            return None
        return self._job((study, series, instance), syntax, authorization, body)

    async def rendered(self, request: Request) -> Response:
        found = await self._video(request)
        if isinstance(found, Response):
            return found
        if found is None:
            return await self.passthrough(request)
        instance = request.path_params["instance"]
        media_type = _media_type(found)
        if not _accepts(request, media_type):
            return PlainTextResponse(f"this instance renders as {media_type} only\n", status_code=406)
        # the fragmented and the progressive file hold the same pictures in different bytes: a range of
        # one must never be taken for a range of the other (If-Range, RFC 9110 §13.1.5)
        form = "p" if isinstance(found, Path) and found.name.startswith(progressive_key(instance)) else "f"
        etag = f'"{self.cache.key("etag", RENDER_VERSION, instance)}-{form}"'
        headers = {"etag": etag, "cache-control": "private, max-age=86400"}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=headers)
        if isinstance(found, Path):
            return FileResponse(found, media_type=media_type, headers=headers)
        job = found
        wants_part = request.headers.get("range", "").replace(" ", "") not in ("", "bytes=0-")
        if wants_part:  # a byte range needs the whole file's size: wait for it
            await job.finished.wait()
        else:
            await job.started()
        if job.error is not None:
            return one_line(job.error)
        if job.final is not None:
            return FileResponse(job.final, media_type=media_type, headers=headers)
        # while it is written: 200 with the bytes so far and then the rest (RFC 9110 §14.2 lets a
        # server answer a range request with the whole representation)
        return StreamingResponse(job.tail(), media_type=media_type, headers=headers)

    async def thumbnail(self, request: Request) -> Response:
        return await self._picture(request, None, size=THUMBNAIL_SIZE, quality=THUMBNAIL_QUALITY)

    async def frame_rendered(self, request: Request) -> Response:
        """One frame of a video instance as image/jpeg (PS3.18 §8.3.5: rendered frames; frame numbers
        count from 1). A list of frames would need a multi-frame media type: the video itself is that,
        at the instance's /rendered."""
        frames = request.path_params["frames"].split(",")
        if len(frames) != 1 or not frames[0].strip().isdigit() or int(frames[0]) < 1:
            return PlainTextResponse("ask for one frame number (from 1) at a time; the whole video is the "
                                     "instance's /rendered\n", status_code=400)
        try:
            quality = int(request.query_params.get("quality", "90"))
        except ValueError:
            quality = -1
        if not 1 <= quality <= 100:
            return PlainTextResponse("quality must be a whole number from 1 to 100\n", status_code=400)
        return await self._picture(request, int(frames[0]) - 1, size=None, quality=quality)

    async def _picture(self, request: Request, index: int | None, size: int | None, quality: int) -> Response:
        """A JPEG of one picture of a video instance (None: the representative one), made from the
        rendering (waited for: the picture may be anywhere in it) and cached."""
        if not _accepts(request, "image/jpeg", "image/*"):
            return PlainTextResponse("this answer is image/jpeg only\n", status_code=406)
        found = await self._video(request)
        if isinstance(found, Response):
            return found
        if found is None:
            return await self.passthrough(request)
        if isinstance(found, RenderJob):
            await found.finished.wait()
            if found.error is not None:
                return one_line(found.error)
            media, codec = found.final, found.syntax.codec
        else:
            media = found
            codec = "mpeg2video" if found.suffix == ".mpg" else "h264"  # the MP4 demuxer reads H.264 and HEVC
        key = picture_key(request.path_params["instance"], None if index is None else index + 1, size, quality)
        cached = self.cache.get(key, ".jpg")
        if cached is None:
            try:
                picture = await asyncio.to_thread(
                    lambda: remux.jpeg(remux.picture(media, codec, index), size, quality))
            except remux.NoSuchFrame as exc:
                return PlainTextResponse(f"{exc}\n", status_code=404)
            except Exception as exc:
                return one_line(UpstreamError(502, f"the instance's video does not decode ({type(exc).__name__})"))
            temporary = self.cache.temporary(key, ".jpg")
            with open(private_file(temporary), "wb") as out:
                out.write(picture)
            cached = self.cache.put(temporary, key, ".jpg")
        return FileResponse(cached, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})


def _media_type(found: RenderJob | object) -> str:
    if isinstance(found, RenderJob):
        return found.media_type
    return "video/mpeg" if str(found).endswith(".mpg") else "video/mp4"


def _accepts(request: Request, media_type: str, family: str = "video/*") -> bool:
    """PS3.18 §8.3.3.1: the accept query parameter, else the Accept header; absent means anything."""
    wanted = request.query_params.get("accept") or request.headers.get("accept", "")
    if not wanted.strip():
        return True
    types = {part.split(";")[0].strip().lower() for part in wanted.split(",")}
    return bool(types & {media_type, family, "*/*", "*"})


def _uids(item: dict) -> tuple[str, str, str] | None:
    try:
        return tuple(str(item[tag]["Value"][0]) for tag in ("0020000D", "0020000E", "00080018"))  # type: ignore[return-value]
    except (KeyError, IndexError, TypeError):
        return None


def _maybe_video(item: dict) -> bool:
    """Only instances that can be video are looked up: a video SOP class, or more than one frame."""
    try:
        if str(item["00080016"]["Value"][0]) in VIDEO_SOP_CLASSES:
            return True
    except (KeyError, IndexError, TypeError):
        pass
    try:
        return int(item["00280008"]["Value"][0]) > 1
    except (KeyError, IndexError, TypeError, ValueError):
        return False


def _agrees(answer: dict, header: dict) -> bool:
    """Every attribute of the upstream's QIDO answer that the header also has holds the same value (the
    PACS's index is the current truth: a kept header that differs is out of date). Specific Character
    Set is not compared: JSON text is Unicode whatever the file's (Orthanc 1.10 names its own default)."""
    for tag, element in answer.items():
        kept = header.get(tag)
        if kept is None or not isinstance(element, dict) or element.get("vr") == "SQ" or tag == "00080005":
            continue
        if _normal(element.get("Value")) != _normal(kept.get("Value")):
            return False
    return True


def _normal(values: object) -> list[str]:
    """Values as text, for comparing two JSON encodings of one attribute (an IS as 3 or "3"; an empty
    person name as no value or as {"Alphabetic": ""})."""
    if not isinstance(values, list):
        return []
    texts = [json.dumps({k: c for k, c in v.items() if c}, sort_keys=True) if isinstance(v, dict)
             else str(v).strip() for v in values]
    return [] if all(t in ("", "{}") for t in texts) else texts


def _rewrite_urls(value: object, upstream: str, gateway: str) -> None:
    """Point URLs (UR values, BulkDataURIs) that start with the upstream's root at the gateway's."""
    if isinstance(value, list):
        for item in value:
            _rewrite_urls(item, upstream, gateway)
    elif isinstance(value, dict):
        uri = value.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith(upstream):
            value["BulkDataURI"] = gateway + uri[len(upstream):]
        if value.get("vr") == "UR" and isinstance(value.get("Value"), list):
            value["Value"] = [gateway + v[len(upstream):] if isinstance(v, str) and v.startswith(upstream) else v
                              for v in value["Value"]]
        for item in value.values():
            if isinstance(item, (list, dict)):
                _rewrite_urls(item, upstream, gateway)
