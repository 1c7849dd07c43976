"""Remux a video while it is still downloading: fragmented MP4 leaves as the coded stream arrives.

Why: a 10-minute instance is half a gigabyte; remuxing only once all of it had arrived made a viewer wait
for the whole download before the first picture. Here the download appends the coded stream to a spool
file (`Spool`) and a worker thread demuxes it right behind the download (`SpoolReader` waits for bytes
that have not come yet), writing MP4 fragments (one per key frame, or at most remux.FRAGMENT_S of
pictures) into the file readers are already being sent. Memory holds a window of pictures, not the video.

Display order from a stream that is not all there: each H.264 picture's sort key (IDR period, picture
order count) comes from its slice header (dvqa.video.poc). A picture's display position is the number of
pictures with a smaller key; pictures more than `WINDOW` apart in the stream are assumed to be in display
order (a decoder holds at most 16 frames, so real streams reorder over a few pictures), so a picture's
position is known once the `WINDOW` pictures after it have arrived. The assumption is checked for every
picture: a stream that breaks it is refused (the client sees the answer cut, never a wrong video), and a
stream whose order this reader cannot follow from its first pictures (HEVC, pic_order_cnt_type 1, field
pictures) is remuxed once it has arrived, the whole-file way (dvqa.serve.remux.write_mp4).
"""

from __future__ import annotations

import os
import time
from collections import deque
from fractions import Fraction
from pathlib import Path

import av

from dvqa.core.errors import InputError
from dvqa.serve.cache import private_file
from dvqa.serve.remux import DEMUXER, HEAD_BYTES, MP4_OPTIONS, TICKS, Source, write_mp4
from dvqa.video.poc import PictureOrder

WINDOW = 48  # pictures: a display position is final once this many more pictures have arrived
PROBE_BYTES = 1 << 20  # what FFmpeg's raw H.264 demuxer may read before its first packet
_WAIT_S = 0.005


class Spool:
    """The coded stream as it arrives, appended to a private file that a reader follows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = private_file(path)
        self.size = 0
        self.ended = False
        self.failed = False

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.size += len(data)

    def close(self, failed: bool) -> None:
        """No more bytes will come; `failed`: the download broke (readers stop at once)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.failed = failed
        self.ended = True

    def reader(self) -> "SpoolReader":
        return SpoolReader(self)


class SpoolReader:
    """A file object (read only, not seekable) over a growing spool: `read` waits for bytes that have not
    arrived, and answers end of file once the spool is closed and read - or at once if the download failed
    (the caller then looks at `spool.failed`)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._fd = os.open(spool.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else 1 << 20
        while True:
            if self.spool.failed:
                return b""
            ended = self.spool.ended  # read before the data: bytes appended before the end are seen
            data = os.pread(self._fd, size, self._at)
            if data:
                self._at += len(data)
                return data
            if ended:
                return b""
            time.sleep(_WAIT_S)

    def drain(self) -> None:
        """Wait until the spool has ended (the whole stream is on disk, or the download failed)."""
        while self.read(1 << 22):
            pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Clock:
    """Presentation time (90 kHz ticks) of display position k, as dvqa.serve.remux.presentation_ticks
    gives it, for a stream whose picture count is not known yet: Frame Time Vector when it covers the
    frames the header declares, else Frame Time or Cine Rate (30 fps when neither); positions beyond
    the vector and before the first picture continue at the first step."""

    def __init__(self, source: Source) -> None:
        vector = source.frame_time_vector_ms
        self._ticks: list[int] = []
        if vector and len(vector) >= max(source.frames, 2):
            total = Fraction(0)
            for increment in vector:
                total += Fraction(str(increment))
                self._ticks.append(round(total * TICKS / 1000))
            first = self._ticks[0]
            self._ticks = [t - first for t in self._ticks]
            self.step = self._ticks[1]
        else:
            self._rate = source.rate or Fraction(30)
            self.step = round(Fraction(TICKS) / self._rate)

    def at(self, k: int) -> int:
        if k < 0:
            return k * self.step
        if self._ticks:
            last = len(self._ticks) - 1
            return self._ticks[k] if k <= last else self._ticks[last] + (k - last) * self.step
        return round(Fraction(k * TICKS) / self._rate)


class NotStreamable(Exception):
    """The first pictures do not say their display order in a way this reader follows."""


def render(spool: Spool, source: Source, part: Path) -> None:
    """Write the playable MP4 of the stream arriving in `spool` to `part` (created 0600) - while it arrives
    when the display order can be read from slice headers, else once it has all arrived. Returns early
    (nothing complete written) if the download fails; the caller knows it did."""
    reader = spool.reader()
    try:
        if source.codec == "h264":
            try:
                stream_h264(reader, source, part)
                return
            except NotStreamable:
                pass
        reader.drain()
        if spool.failed:
            return
        with os.fdopen(private_file(part), "wb") as out:
            write_mp4(spool.path, source, out)
    finally:
        reader.close()


def stream_h264(reader: SpoolReader, source: Source, part: Path) -> int:
    """Remux the H.264 stream `reader` yields into fragmented MP4 at `part`, a window of pictures behind
    the download; returns the pictures written. Raises NotStreamable before writing anything when the
    first window's order cannot be read; InputError when a later picture breaks the window's assumption."""
    order = PictureOrder(keep=False)
    clock = Clock(source)
    time_base = Fraction(1, TICKS)
    held: deque[tuple[int, tuple[tuple[int, int], int], av.Packet]] = deque()  # read, not yet written
    keys: deque[tuple[int, tuple[tuple[int, int], int]]] = deque()  # (index, key) from the oldest held - WINDOW
    state: dict = {"muxer": None, "stream": None, "out": None, "depth": 0, "left": None, "sent": None}
    count = 0

    def open_muxer(template: av.video.stream.VideoStream) -> None:
        # the reorder depth of the first pictures: decoding times run that many pictures behind display
        known = sorted(k for _, k in keys)
        state["depth"] = max([i - known.index(k) for i, k in keys] + [0])
        out = os.fdopen(private_file(part), "wb", buffering=0)
        state["out"] = out
        muxer = av.open(out, "w", format="mp4", options=MP4_OPTIONS)
        state["muxer"] = muxer
        stream = muxer.add_stream_from_template(template)
        stream.time_base = time_base
        state["stream"] = stream

    def send(final_count: int | None) -> None:
        index, key, packet = held.popleft()
        while keys and keys[0][0] < index - WINDOW:
            dropped = keys.popleft()[1]
            state["left"] = dropped if state["left"] is None or dropped > state["left"] else state["left"]
        if state["left"] is not None and state["left"] > key:
            raise InputError(f"picture {index} of the stream is shown before one {WINDOW} or more pictures "
                             "earlier; the gateway cannot remux this stream while it arrives")
        shown = max(0, index - WINDOW) + sum(1 for _, k in keys if k < key)
        if index - shown > state["depth"]:
            raise InputError(f"picture {index} of the stream is reordered deeper than the stream's first "
                             "pictures; the gateway cannot remux this stream while it arrives")
        state["sent"] = key if state["sent"] is None or key > state["sent"] else state["sent"]
        pts = clock.at(shown)
        last = final_count is not None and shown + 1 >= final_count
        packet.stream = state["stream"]
        packet.time_base = time_base
        packet.pts = pts
        packet.dts = clock.at(index - state["depth"])
        packet.duration = clock.step if last else clock.at(shown + 1) - pts
        state["muxer"].mux(packet)

    try:
        with av.open(reader, format=DEMUXER["h264"], options={"probesize": str(PROBE_BYTES)}) as container:
            template = container.streams.video[0]
            for packet in container.demux(template):
                if not packet.size:
                    continue
                found = order.add(bytes(memoryview(packet)[:HEAD_BYTES]))
                if found is None:
                    if state["muxer"] is None:
                        raise NotStreamable()
                    raise InputError(f"picture {count} of the stream has a slice header the gateway does not "
                                     "follow; it cannot remux this stream while it arrives")
                key = (found, count)  # ties broken by stream order, so every picture has its own place
                if state["sent"] is not None and key < state["sent"]:
                    raise InputError(f"picture {count} of the stream is shown before one already sent; the "
                                     "gateway cannot remux this stream while it arrives")
                held.append((count, key, packet))
                keys.append((count, key))
                count += 1
                while held and count - held[0][0] >= WINDOW:
                    if state["muxer"] is None:
                        open_muxer(template)
                    send(None)
            if reader.spool.failed:
                return count
            if not count:
                raise InputError("the instance's video stream holds no pictures")
            if state["muxer"] is None:
                open_muxer(template)
            while held:
                send(count)
            state["muxer"].close()
            state["muxer"] = None
        return count
    finally:
        if state["muxer"] is not None:
            try:
                state["muxer"].close()
            except Exception:  # closing after a failure: the file is discarded anyway
                pass
        if state["out"] is not None:
            state["out"].close()
