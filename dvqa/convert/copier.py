"""H.264 access units copied unchanged into the elementary stream a passthrough writes.

One copier for the whole-file passthrough (pipeline) and the live copy (live): MP4 and Matroska carry
H.264 length-prefixed (AVCC), DICOM's encapsulated H.264 is Annex B (PS3.5 §8.2.8), so the bytes go
through FFmpeg's h264_mp4toannexb filter - a framing change, not a re-encode - and, with quality on,
every written byte also goes to a second decoder whose pictures are scored against the source's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import av

from dvqa.quality.meter import QualityMeter, QualityResult, WrittenStreamMeter
from dvqa.video.encode import ElementaryStream


class AnnexBCopier:
    """The copy of one H.264 stream into `stream_file`, scored when `meter` is given."""

    def __init__(self, stream: av.video.stream.VideoStream, stream_file: BinaryIO, stream_path: Path,
                 meter: QualityMeter | None) -> None:
        self.stream_file = stream_file
        self.es = ElementaryStream(path=stream_path)
        self.meter = meter
        self.checker = WrittenStreamMeter("h264", meter) if meter else None
        needs_annexb = (stream.codec_context.extradata or b"").startswith(b"\x01")  # AVCC's version byte
        self.bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream) if needs_annexb else None

    def annexb(self, packet: av.Packet | None) -> Iterator[bytes]:
        """The Annex B bytes of `packet` (None: what the filter still holds). A damaged access unit
        raises av.error.FFmpegError."""
        if packet is not None and packet.size == 0:
            return
        if self.bsf is None:
            if packet is not None:
                yield bytes(packet)
            return
        for out in self.bsf.filter(packet):
            yield bytes(out)

    def write(self, data: bytes) -> None:
        self.es.append(self.stream_file, data)
        if self.checker:
            self.checker.written(data)

    def expect(self, index: int, source_pts: float, output_pts: float, frame: av.VideoFrame) -> None:
        """The source's own decode of output frame `index` (one output frame per source frame)."""
        if self.checker:
            self.checker.expect(index, index, source_pts, output_pts, frame)

    def result(self) -> QualityResult | None:
        """After the last bytes (annexb(None)) were written: the stream on disk, and its scores."""
        self.stream_file.flush()
        if self.checker is None or self.meter is None:
            return None
        self.checker.finish()
        return self.meter.result(0, 0)
