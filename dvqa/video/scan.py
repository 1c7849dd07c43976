"""A demux-only pass over the video track: timestamps, parameter sets, damage. No decoding.

It runs before any frame is encoded because the output rate and the
passthrough decision must be known before the first frame is written. It
costs one read of the file and keeps 8 bytes per frame.
"""

from __future__ import annotations

import math
import statistics
from array import array
from dataclasses import dataclass, field

import av
import av.logging

from dvqa.core.errors import InputError
from dvqa.video.probe import DEMUX_ONLY, SourceInfo
from dvqa.video.timing import nominal_rate, source_end

H264_SPS = 7


@dataclass
class Scan:
    pts: array = field(default_factory=lambda: array("d"))  # presentation order, seconds
    packets: int = 0
    bytes: int = 0
    last_duration: float | None = None
    parameter_sets: set[bytes] = field(default_factory=set)  # distinct H.264 SPS seen in-band
    annexb: bool = True  # how the stream frames its H.264 NAL units (set by follow)
    codec: str = ""

    def follow(self, stream: av.video.stream.VideoStream, codec: str) -> None:
        """Start reading `stream`'s packets: its out-of-band parameter sets count as seen."""
        extradata = stream.codec_context.extradata or b""
        self.codec, self.annexb = codec, not extradata.startswith(b"\x01")
        if codec == "h264" and not self.annexb:
            self.parameter_sets.update(avcc_sps(extradata))

    def add(self, packet: av.Packet) -> None:
        """One demuxed packet: its timestamp, size and any in-band SPS (presentation order is restored by
        `in_order`). A live conversion feeds the packets it demuxes here, so it judges them by these rules."""
        if packet.size == 0 or packet.pts is None:
            return
        self.packets += 1
        self.bytes += packet.size
        self.pts.append(float(packet.pts * packet.time_base))
        if packet.duration:
            self.last_duration = float(packet.duration * packet.time_base)
        if self.codec == "h264":
            for nal in h264_nal_units(bytes(packet), self.annexb):
                if nal[0] & 0x1F == H264_SPS:
                    self.parameter_sets.add(nal)

    def in_order(self, until: float = math.inf) -> "Scan":
        """The same facts with the timestamps in presentation order (packets arrive in decoding order), up to
        `until`: while a stream is still arriving, a frame after the newest decoded one may be in while
        frames before it (B-frames) are not."""
        return Scan(array("d", sorted(p for p in self.pts if p <= until)), self.packets, self.bytes,
                    self.last_duration, set(self.parameter_sets), self.annexb, self.codec)

    @property
    def intervals(self) -> list[float]:
        p = self.pts
        return [p[i + 1] - p[i] for i in range(len(p) - 1)]

    @property
    def rate(self):
        return nominal_rate(self.intervals)

    @property
    def end(self) -> float:
        return source_end(self.pts, self.last_duration)

    def timing_summary(self) -> dict[str, float | int]:
        iv = self.intervals or [0.0]
        return {"frames": len(self.pts), "first_pts": round(self.pts[0], 6) if self.pts else 0.0,
                "median_interval_ms": round(statistics.median(iv) * 1000, 3),
                "min_interval_ms": round(min(iv) * 1000, 3), "max_interval_ms": round(max(iv) * 1000, 3)}


def _nal_units_avcc(data: bytes, length_size: int = 4):
    pos = 0
    while pos + length_size <= len(data):
        n = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if n <= 0 or pos + n > len(data):
            return
        yield data[pos : pos + n]
        pos += n


def _nal_units_annexb(data: bytes):
    parts = data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    for part in parts:
        if part:
            yield part


def h264_nal_units(data: bytes, annexb: bool):
    return _nal_units_annexb(data) if annexb else _nal_units_avcc(data)


def avcc_sps(extradata: bytes) -> list[bytes]:
    """The SPS NAL units of an avcC record (ISO/IEC 14496-15 §5.3.3.1)."""
    if len(extradata) < 7:
        return []
    count, pos, found = extradata[5] & 0x1F, 6, []
    for _ in range(count):
        n = int.from_bytes(extradata[pos : pos + 2], "big")
        found.append(extradata[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return found


def scan(info: SourceInfo) -> Scan:
    """Read every video packet once; InputError if the file is cut short or unreadable."""
    result = Scan()
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture(False) as logs:
        try:
            with av.open(str(info.path), "r", format=info.container, options=DEMUX_ONLY) as container:
                stream = container.streams.video[0]
                result.follow(stream, info.codec)
                for packet in container.demux(stream):
                    result.add(packet)
        except av.error.FFmpegError as exc:
            raise InputError(
                f"{info.path}: the file is damaged or cut short ({exc.strerror}); "
                "use the complete recording."
            ) from exc
    demuxer_errors = [m for _, name, m in logs if name and name.split(",")[0] in info.container]
    if demuxer_errors:
        raise InputError(
            f"{info.path}: the file is cut short or damaged ({demuxer_errors[0].strip()}); "
            "the recording did not finish writing - use the complete file."
        )
    if not result.pts:
        raise InputError(f"{info.path}: the video track has no frames; there is nothing to convert.")
    return result.in_order()
