"""One rendering of one instance: read it from the upstream as it arrives, take out its stream, write the
playable file into the cache - while any number of requests read what is written so far.

Requests for the same instance share one job, so ten viewers opening a video cost one download. The
download and the remux run side by side (dvqa.serve.dicomstream parses the instance as it arrives,
dvqa.serve.liveremux remuxes right behind it), so the first fragments leave while later bytes are still
on their way. The job works on disk (memory stays flat whatever the instance's size) and the file
appears in the cache only when complete; a failure removes what was written and every reader of the
job ends with the same one-line error - or, if the answer had begun, with the connection cut before
its end, so no client takes a half video for a whole one.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import anyio
from pydicom.dataset import Dataset

from dvqa.core.errors import DvqaError, InputError
from dvqa.dicom.syntaxes import VideoSyntax
from dvqa.serve import liveremux, remux
from dvqa.serve.cache import Cache, private_file
from dvqa.serve.dicomstream import DicomStream
from dvqa.serve.upstream import InstanceBody, Upstream, UpstreamError

POLL_S = 0.02
READ_PIECE = 1 << 20
SUFFIX = {"video/mp4": ".mp4", "video/mpeg": ".mpg"}


@dataclass
class RenderJob:
    """The rendering of one instance into `part` (in the cache's work folder), then into the cache."""

    key: str
    syntax: VideoSyntax
    part: Path
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: UpstreamError | None = None
    final: Path | None = None
    header: Dataset | None = None  # the data set up to Pixel Data, once read
    header_read: asyncio.Event = field(default_factory=asyncio.Event)  # set then, or when the job ended

    @property
    def media_type(self) -> str:
        return remux.MEDIA_TYPE[self.syntax.codec]

    async def run(self, upstream: Upstream, cache: Cache, uids: tuple[str, str, str],
                  authorization: str | None, body: InstanceBody | None = None) -> None:
        """Render; `body`: the retrieve already opened (to learn the transfer syntax), read on from there."""
        spool: liveremux.Spool | None = None
        try:
            body = body or await upstream.open_instance(*uids, authorization)
            spool, remuxing = await self._download(body, cache)
            if remuxing is not None:
                await remuxing
            self.final = cache.put(self.part, self.key, SUFFIX[self.media_type])
        except UpstreamError as exc:
            self.error = exc
        except DvqaError as exc:
            self.error = UpstreamError(502, f"upstream {upstream.base} sent an instance that cannot be "
                                            f"rendered: {exc}")
        except Exception as exc:  # a gateway bug: still one line for the client, never a hang
            self.error = UpstreamError(500, f"the gateway failed to render the instance ({type(exc).__name__})")
        finally:
            if body is not None:
                await body.aclose()
            if spool is not None and spool.path != self.part:
                spool.path.unlink(missing_ok=True)
            if self.error is not None:
                self.part.unlink(missing_ok=True)
            self.header_read.set()
            self.finished.set()

    async def _download(self, body: InstanceBody, cache: Cache
                        ) -> tuple[liveremux.Spool | None, asyncio.Future | None]:
        """Read the instance to its end: the header parsed, the stream appended to a spool that the
        remux thread (started once the header is known) follows. MPEG-2 is its own rendering: its
        stream goes straight into `part`."""
        parser = DicomStream()
        spool: liveremux.Spool | None = None
        remuxing: asyncio.Future | None = None
        try:
            async for piece in body.pieces():
                stream = parser.feed(piece)
                if spool is None and parser.header_done:
                    self.header = parser.header()
                    self.header_read.set()
                    source = remux.source_of(self.header)
                    if source.media_type == "video/mpeg":  # the MPEG-2 elementary stream as it is
                        spool = liveremux.Spool(self.part)
                    else:
                        spool = liveremux.Spool(cache.temporary(self.key, ".es"))
                        remuxing = asyncio.ensure_future(
                            anyio.to_thread.run_sync(liveremux.render, spool, source, self.part))
                for data in stream:
                    spool.append(data)  # type: ignore[union-attr]
                if remuxing is not None and remuxing.done():
                    remuxing.result()  # the remux refused the stream: stop downloading, say why
                    raise InputError("the instance's video stream ended before its Pixel Data did")
            if not parser.header_done:
                raise InputError("the upstream's instance holds no encapsulated Pixel Data")
            if not parser.done:
                raise InputError("the upstream's instance has a cut-short or damaged Pixel Data element")
            if not spool.size:  # type: ignore[union-attr]
                raise InputError("the instance's Pixel Data holds no video stream")
            spool.close(failed=False)  # type: ignore[union-attr]
            return spool, remuxing
        except BaseException:
            if spool is not None:
                spool.close(failed=True)  # the remux thread stops at its next read
                if remuxing is not None:
                    await asyncio.wait([remuxing])
                    if not remuxing.cancelled():
                        remuxing.exception()  # retrieved: the download's error is the one reported
                if spool.path != self.part:
                    spool.path.unlink(missing_ok=True)
            raise

    async def started(self) -> None:
        """Wait until the first bytes are written (the response can begin) or the job has ended."""
        while not self.finished.is_set():
            try:
                if self.part.stat().st_size > 0:
                    return
            except FileNotFoundError:
                pass
            await asyncio.sleep(POLL_S)

    async def tail(self) -> AsyncIterator[bytes]:
        """The file's bytes as they are written; an exception (the connection is then cut without its
        final chunk, so no client takes a half file for a whole one) if the job fails."""
        try:
            fd = os.open(self.part, os.O_RDONLY)
        except FileNotFoundError:  # finished (moved to the cache) or failed between the checks
            if self.final is None:
                raise RuntimeError(self.error or "rendering failed") from None
            fd = os.open(self.final, os.O_RDONLY)
        try:
            position = 0
            while True:
                data = await anyio.to_thread.run_sync(os.pread, fd, READ_PIECE, position)
                if data:
                    position += len(data)
                    yield data
                    continue
                if self.finished.is_set():
                    if os.fstat(fd).st_size > position:
                        continue
                    if self.error is not None:
                        raise RuntimeError(str(self.error))
                    return
                await asyncio.sleep(POLL_S)
        finally:
            os.close(fd)


def write_progressive(fragmented: Path, temporary: Path) -> None:
    """The progressive form of a finished fragmented MP4 (dvqa.serve.remux.progressive) at `temporary`."""
    os.close(private_file(temporary))  # made 0600 in the cache's private work folder, then written by name
    remux.progressive(fragmented, temporary)
