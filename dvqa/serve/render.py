"""One rendering of one instance: download it from the upstream to disk, take out its stream, write the
playable file into the cache - while any number of requests read what is written so far.

Requests for the same instance share one job, so ten viewers opening a video cost one download. The
job works on disk only (memory stays flat whatever the instance's size) and the file appears in the
cache only when complete; a failure removes what was written and every reader of the job ends with
the same one-line error.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import anyio

from dvqa.core.errors import DvqaError
from dvqa.dicom.syntaxes import VideoSyntax
from dvqa.serve import remux
from dvqa.serve.cache import Cache, private_file
from dvqa.serve.upstream import Upstream, UpstreamError

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

    @property
    def media_type(self) -> str:
        return remux.MEDIA_TYPE[self.syntax.codec]

    async def run(self, upstream: Upstream, cache: Cache, uids: tuple[str, str, str],
                  authorization: str | None) -> None:
        dicom = cache.temporary(self.key, ".dcm")
        stream = cache.temporary(self.key, ".es")
        try:
            await upstream.instance_to_file(*uids, dicom, authorization)
            await anyio.to_thread.run_sync(self._render, dicom, stream)
            self.final = cache.put(self.part, self.key, SUFFIX[self.media_type])
        except UpstreamError as exc:
            self.error = exc
        except DvqaError as exc:
            self.error = UpstreamError(502, f"upstream {upstream.base} sent an instance that cannot be "
                                            f"rendered: {exc}")
        except Exception as exc:  # a gateway bug: still one line for the client, never a hang
            self.error = UpstreamError(500, f"the gateway failed to render the instance ({type(exc).__name__})")
        finally:
            for path in (dicom, stream):
                path.unlink(missing_ok=True)
            if self.error is not None:
                self.part.unlink(missing_ok=True)
            self.finished.set()

    def _render(self, dicom: Path, stream: Path) -> None:
        source = remux.read_source(dicom)
        if source.media_type == "video/mpeg":  # the MPEG-2 elementary stream as it is (video/mpeg)
            with os.fdopen(private_file(self.part), "wb") as out:
                remux.extract_stream(dicom, out)
            return
        with os.fdopen(private_file(stream), "wb") as out:
            remux.extract_stream(dicom, out)
        dicom.unlink()  # the stream is all that is needed now: half the disk
        with os.fdopen(private_file(self.part), "wb") as out:
            remux.write_mp4(stream, source, out)

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
