"""A DICOM video instance as a file a browser plays: the elementary stream from Pixel Data, rewrapped
without re-encoding (PS3.18 rendered media types: video/mp4 for H.264 and HEVC, video/mpeg for MPEG-2).

Why remux and not pass the raw stream: a browser's demuxer cannot open an Annex B elementary stream,
but plays the same bytes inside MP4. The coded pictures are copied as they are - the stream that
ffmpeg's h264_mp4toannexb takes back out of the MP4 is byte-identical to Pixel Data - and only the
container's timing is made, from Frame Time (0018,1063), Frame Time Vector (0018,1065) or Cine Rate.
The MP4 is fragmented (a fragment per key frame or FRAGMENT_S, the moov box first and empty) so it can
be sent while it is being written: dvqa.serve.liveremux writes it while the instance is still downloading;
`write_mp4` here is the whole-stream way, for streams whose display order only the decoder can tell.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import pydicom
from pydicom.dataset import Dataset

from dvqa.core.errors import InputError
from dvqa.dicom import syntaxes
from dvqa.dicom.iod import declared_rate
from dvqa.video.poc import PictureOrder
from dvqa.video.threads import frame_threaded, parking

TICKS = 90000  # the MPEG clock: every common frame rate (24, 25, 30000/1001, 60 ...) is whole ticks
DEMUXER = {"h264": "h264", "hevc": "hevc", "mpeg2video": "mpegvideo"}  # FFmpeg's raw-stream demuxers
MEDIA_TYPE = {"h264": "video/mp4", "hevc": "video/mp4", "mpeg2video": "video/mpeg"}
HEAD_BYTES = 16384  # parameter sets, SEI and the first slice header sit in an access unit's first bytes
MP4_FLAGS = "frag_keyframe+empty_moov+delay_moov+default_base_moof"
FRAGMENT_S = 2  # a fragment holds at most this long of pictures, even in a stream with rare key frames
MP4_OPTIONS = {"movflags": MP4_FLAGS, "avoid_negative_ts": "disabled",
               "frag_duration": str(FRAGMENT_S * 1_000_000)}


@dataclass(frozen=True)
class Source:
    """What the header says about the video: codec (from the transfer syntax) and frame timing."""

    codec: str
    frames: int
    rate: Fraction | None
    frame_time_vector_ms: tuple[float, ...]

    @property
    def media_type(self) -> str:
        return MEDIA_TYPE[self.codec]


def renderable(transfer_syntax: str) -> syntaxes.VideoSyntax | None:
    """The video syntax of dvqa's table this gateway renders as a video file (MJPEG is a frame stack)."""
    syntax = syntaxes.BY_UID.get(transfer_syntax)
    return syntax if syntax is not None and syntax.codec in MEDIA_TYPE else None


def source_of(ds: Dataset) -> Source:
    """The header facts of a data set read up to Pixel Data (with its File Meta Information)."""
    syntax = renderable(str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", "")))
    if syntax is None:
        raise InputError("the instance is not in a video transfer syntax this gateway renders")
    return Source(codec=syntax.codec, frames=int(ds.get("NumberOfFrames", 0) or 0), rate=_rate(ds),
                  frame_time_vector_ms=tuple(float(v) for v in _values(ds, "FrameTimeVector")))


def _values(ds: Dataset, keyword: str) -> list:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return []
    value = ds[keyword].value
    return list(value) if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]


def _rate(ds: Dataset) -> Fraction | None:
    try:
        return declared_rate(ds)
    except (ValueError, ZeroDivisionError):
        return None


def presentation_ticks(source: Source, count: int) -> list[int]:
    """Presentation time (90 kHz ticks) of each of `count` pictures, in display order.

    Frame Time Vector (PS3.3 C.7.6.5.1.2) gives each frame's increment from the previous one (the first
    is 0); else Frame Time or Cine Rate gives a constant rate; with none, 30 fps (and the file says
    nothing a viewer could do better with). Times are rounded from the exact sum, so they do not drift.
    """
    vector = source.frame_time_vector_ms
    if len(vector) >= count > 0:
        times, total = [], Fraction(0)
        for increment in vector[:count]:
            total += Fraction(str(increment))
            times.append(round(total * TICKS / 1000))
        return [t - times[0] for t in times]
    rate = source.rate or Fraction(30)
    return [round(Fraction(i * TICKS) / rate) for i in range(count)]


def presentation_order(es_path: Path, codec: str) -> list[int]:
    """For each access unit in stream (decoding) order, its position in display order.

    Raw elementary streams carry no timestamps, and with B-pictures display order differs from the
    order of the stream. For H.264 the slice headers say it (dvqa.video.poc, a few bytes a picture);
    otherwise, or when they use what that reader does not follow, the decoder is asked."""
    if codec == "h264":
        reader = PictureOrder()
        with av.open(str(es_path), format=DEMUXER[codec]) as container:
            for packet in container.demux(video=0):
                if packet.size:
                    reader.add(bytes(memoryview(packet)[:HEAD_BYTES]))  # the headers, not the picture
        order = reader.order()
        if order is not None:
            return order
    return decoded_order(es_path, codec)


def decoded_order(es_path: Path, codec: str) -> list[int]:
    """The display order the decoder gives: the stream is decoded once (nothing is encoded and nothing
    decoded is kept), each picture tagged with its stream position. Costs a full decode."""
    with parking():
        return _decoded_order(es_path, codec)


def _decoded_order(es_path: Path, codec: str) -> list[int]:
    decoder = frame_threaded(av.CodecContext.create(codec, "r"))
    shown: list[int] = []
    count = 0
    with av.open(str(es_path), format=DEMUXER[codec]) as container:
        for packet in container.demux(video=0):
            if not packet.size:
                continue
            packet.pts = packet.dts = count
            count += 1
            try:
                shown += [frame.pts for frame in decoder.decode(packet)]
            except av.error.FFmpegError:
                pass  # a damaged picture: it is still copied, and placed in stream order below
    try:
        shown += [frame.pts for frame in decoder.decode(None)]
    except av.error.FFmpegError:
        pass
    position = {index: k for k, index in enumerate(i for i in shown if i is not None)}
    if len(position) != count:  # a picture the decoder dropped: stream order is the best guess left
        return list(range(count))
    return [position[i] for i in range(count)]


def write_mp4(es_path: Path, source: Source, out: BinaryIO) -> int:
    """Rewrap the H.264/HEVC stream at `es_path` as fragmented MP4 into `out`; returns the pictures written.

    Decoding timestamps are the display times shifted by the stream's reorder depth, so every picture
    has dts <= pts, as MP4 requires (ISO/IEC 14496-12 §8.6.1)."""
    order = presentation_order(es_path, source.codec)
    count = len(order)
    if not count:
        raise InputError("the instance's video stream holds no pictures")
    ticks = presentation_ticks(source, count)
    step = ticks[1] - ticks[0] if count > 1 else round(TICKS / (source.rate or 30))
    depth = max(0, max(i - shown for i, shown in enumerate(order)))

    def at(k: int) -> int:  # display time of display position k, extrapolated before the first
        return ticks[k] if k >= 0 else k * step

    time_base = Fraction(1, TICKS)
    with av.open(str(es_path), format=DEMUXER[source.codec]) as container:
        template = container.streams.video[0]
        with av.open(out, "w", format="mp4", options=MP4_OPTIONS) as muxer:
            stream = muxer.add_stream_from_template(template)
            stream.time_base = time_base
            index = 0
            for packet in container.demux(template):
                if not packet.size:
                    continue
                if index >= count:
                    break
                shown = order[index]
                packet.stream = stream
                packet.time_base = time_base
                packet.pts = at(shown)
                packet.dts = at(index - depth)
                packet.duration = (at(shown + 1) if shown + 1 < count else at(shown) + step) - at(shown)
                muxer.mux(packet)
                index += 1
    return count


def progressive(fragmented: Path, out: Path) -> None:
    """The fragmented MP4 at `fragmented` rewritten at `out` (by name: FFmpeg moves the index to the
    front by opening the file again; the caller creates it private first) as a progressive one (moov
    with every sample's index first, then the pictures): the same packets and times, no re-encode.

    Why both: a fragmented MP4 can be sent while it is written, but a player given byte ranges on it
    (Chromium's, through FFmpeg's demuxer) reads every fragment's header across the whole file before
    its first frame - one range request per fragment, 40 s for a 2-minute 1080p video here. With the
    index first it reads the start and plays, and seeks with one range request."""
    with av.open(str(fragmented), format="mp4") as source:
        template = source.streams.video[0]
        with av.open(str(out), "w", format="mp4",
                     options={"movflags": "faststart", "avoid_negative_ts": "disabled"}) as muxer:
            stream = muxer.add_stream_from_template(template)
            stream.time_base = template.time_base
            for packet in source.demux(template):
                if packet.dts is None and not packet.size:
                    continue  # the demuxer's end-of-stream marker
                packet.stream = stream
                muxer.mux(packet)


class NoSuchFrame(InputError):
    """A frame number outside the instance (PS3.18 frame numbers count from 1)."""


def picture(media: Path, codec: str, index: int | None = None) -> av.VideoFrame:
    """The picture at display position `index` (0-based; None: the first shown at or after the middle,
    since the first of a recording is often black and the middle shows what was recorded).

    An MP4 is demuxed once for its presentation times (no decoding), then decoded from the key frame
    before the wanted picture: a frame of a 10-minute video costs at most one group of pictures, not the
    pictures before it. Where that seek does not land (an open group of pictures whose leading pictures
    are dropped), and for an MPEG-2 elementary stream (no timestamps to seek by), the stream is decoded
    from its start."""
    fmt = "mp4" if MEDIA_TYPE[codec] == "video/mp4" else DEMUXER[codec]
    with av.open(str(media), format=fmt) as container:
        stream = container.streams.video[0]
        if fmt == "mp4":
            times = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
            count = len(times)
        else:
            times, count = [], sum(1 for p in container.demux(stream) if p.size)
        if not count:
            raise InputError("the video stream holds no pictures")
        wanted = count // 2 if index is None else index
        if not 0 <= wanted < count:
            raise NoSuchFrame(f"frame {wanted + 1} is not in this instance (it has {count})")
        if times:
            container.seek(times[wanted], stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts == times[wanted]:
                    return frame
                if frame.pts is not None and frame.pts > times[wanted]:
                    break
    with av.open(str(media), format=fmt) as container:  # from the start (a raw stream has no times to seek by)
        for n, frame in enumerate(container.decode(video=0)):
            if n == wanted:
                return frame
    raise InputError(f"frame {wanted + 1} of the video stream does not decode")


def jpeg(frame: av.VideoFrame, size: int | None = None, quality: int = 85) -> bytes:
    """The picture as a JPEG (`size`: the longest side at most, aspect kept)."""
    image = frame.to_image()
    if size is not None:
        image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def thumbnail(media: Path, codec: str, size: int = 256) -> bytes:
    """A JPEG of a representative picture (see `picture`)."""
    return jpeg(picture(media, codec), size)
