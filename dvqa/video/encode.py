"""Fixed, documented encoder settings per syntax, and the frame shaping in front of them.

The settings are chosen for diagnostic quality and for staying inside the
syntax's profile and level (see docs/regulatory/encoder-settings.md); they are
never left to FFmpeg's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from dvqa.dicom.syntaxes import VideoSyntax

RANGE_CODE = {"limited": 1, "full": 2}


@dataclass(frozen=True)
class EncoderSettings:
    encoder: str  # FFmpeg encoder name
    pix_fmt: str
    color_range: str  # range written into the stream: "limited" or "full"
    options: dict[str, str]
    bit_rate: int = 0
    gop: int = 0
    max_b_frames: int = -1
    qscale: int = 0

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"encoder": self.encoder, "pix_fmt": self.pix_fmt,
                                "color_range": self.color_range, "options": dict(self.options)}
        for key in ("bit_rate", "gop", "qscale"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        if self.max_b_frames >= 0:
            d["max_b_frames"] = self.max_b_frames
        return d


def settings_for(syntax: VideoSyntax, rate: Fraction) -> EncoderSettings:
    """The one place encoder settings are decided."""
    gop = max(1, round(float(rate)))  # an intra picture every second: seekable in viewers
    if syntax.codec == "h264":
        # CRF 18: x264's documented "visually lossless" point. VBV capped at the
        # level's MaxBR for High profile (H.264 Table A-1: 50 Mbit/s x 1.25).
        return EncoderSettings(
            "libx264", "yuv420p", "limited",
            {"preset": "veryfast", "crf": "18", "profile": "high", "level": syntax.level,
             "x264-params": f"keyint={gop}:min-keyint={gop}:vbv-maxrate=50000:vbv-bufsize=62500"
                            ":colorprim=bt709:transfer=bt709:colormatrix=bt709:range=tv"},
        )
    if syntax.codec == "hevc":
        ten = syntax.bits == 10
        return EncoderSettings(
            "libx265", "yuv420p10le" if ten else "yuv420p", "limited",
            {"preset": "veryfast", "crf": "20",
             "x265-params": f"profile={'main10' if ten else 'main'}:level-idc=5.1:keyint={gop}"
                            ":vbv-maxrate=40000:vbv-bufsize=40000:range=limited:colorprim=bt709"
                            ":transfer=bt709:colormatrix=bt709:log-level=error"},
        )
    if syntax.codec == "mpeg2video":
        main_level = syntax.level == "Main"
        # MP@ML: 15 Mbit/s, VBV 1,835,008 bits; MP@HL: 80 Mbit/s, VBV 9,781,248 bits
        # (ISO/IEC 13818-2 Table 8-13/8-14). Near the ceiling: MPEG-2 needs bits.
        return EncoderSettings(
            "mpeg2video", "yuv420p", "limited",
            {"maxrate": "15000000" if main_level else "80000000",
             "bufsize": "1835008" if main_level else "9781248",
             "minrate": "0", "intra_vlc": "1"},
            bit_rate=9_000_000 if main_level else 40_000_000, gop=15 if main_level else 12,
            max_b_frames=2,
        )
    if syntax.codec == "mjpeg":
        return EncoderSettings("mjpeg", "yuvj422p", "full", {"huffman": "optimal"}, qscale=2)
    raise ValueError(f"no encoder settings for {syntax.name}")


@dataclass(frozen=True)
class Placement:
    """Where the source picture sits inside the output frame (letterbox when aspects differ)."""

    width: int
    height: int
    x: int
    y: int
    box_width: int
    box_height: int

    @property
    def padded(self) -> bool:
        return (self.box_width, self.box_height) != (self.width, self.height)

    @property
    def picture(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the picture inside the output frame."""
        return self.x, self.y, self.box_width, self.box_height


def fit(src_w: int, src_h: int, out_w: int, out_h: int) -> Placement:
    """Scale to fit inside out_w x out_h keeping the aspect ratio, centred on even offsets."""
    scale = min(out_w / src_w, out_h / src_h)
    bw = min(out_w, max(2, int(round(src_w * scale / 2)) * 2))
    bh = min(out_h, max(2, int(round(src_h * scale / 2)) * 2))
    x = ((out_w - bw) // 2) & ~1
    y = ((out_h - bh) // 2) & ~1
    return Placement(out_w, out_h, x, y, bw, bh)


def _black(fmt: str, full: bool) -> tuple[int, int]:
    deep = fmt.endswith("10le")
    luma = 0 if full else 16
    return (luma << 2 if deep else luma), (512 if deep else 128)


class FrameShaper:
    """Scale, letterbox and convert range/format so every frame matches the encoder's input."""

    def __init__(self, width: int, height: int, pix_fmt: str, out_range: str, source_range: str) -> None:
        self.width, self.height = width, height
        self.pix_fmt, self.out_range = pix_fmt, out_range
        self.source_range = source_range
        self.placements: dict[tuple[int, int], Placement] = {}
        # One swscale context for the whole stream: frame.reformat() makes a new one per frame, and with
        # it a set of slice threads created and joined every frame (py-spy: a tenth of a 1080p
        # re-encode's main thread). One thread: the encoder's threads already own the cores.
        self._reformatter = VideoReformatter()

    def placement(self, src_w: int, src_h: int) -> Placement:
        key = (src_w, src_h)
        if key not in self.placements:
            self.placements[key] = fit(src_w, src_h, self.width, self.height)
        return self.placements[key]

    def describe(self, quality_measured: bool) -> list[str]:
        """What shaping did to the frames, worded once for every report (convert and `dvqa quality`)."""
        lines = []
        if self.source_range != self.out_range:
            lines.append(f"colour range converted {self.source_range} -> {self.out_range} (BT.709 matrix, swscale)")
        for (w, h), place in self.placements.items():
            if (w, h) != (place.width, place.height):
                how = "letterboxed" if place.padded else "scaled"
                lines.append(f"{w}x{h} {how} to {place.width}x{place.height} "
                             f"(picture at {place.x},{place.y} size {place.box_width}x{place.box_height})")
        if quality_measured and any(p.padded for p in self.placements.values()):
            lines.append("quality measured inside the picture only: letterbox bars are excluded")
        return lines

    def shape(self, frame: av.VideoFrame) -> av.VideoFrame:
        place = self.placement(frame.width, frame.height)
        src_range = RANGE_CODE.get(self.source_range, 1)
        dst_range = RANGE_CODE[self.out_range]
        fmt = self.pix_fmt
        scaled = self._reformatter.reformat(
            frame, width=place.box_width, height=place.box_height, format=fmt,
            src_colorspace="ITU709", dst_colorspace="ITU709",
            src_color_range=src_range, dst_color_range=dst_range,
            interpolation="BICUBIC", threads=1,
        )
        if not place.padded:
            out = scaled
        else:
            out = av.VideoFrame(place.width, place.height, fmt)
            y_black, c_black = _black(fmt, self.out_range == "full")
            dtype = np.uint16 if fmt.endswith("10le") else np.uint8
            for number, (dst, src) in enumerate(zip(out.planes, scaled.planes)):
                sx = 1 if number == 0 else place.width // dst.width
                sy = 1 if number == 0 else place.height // dst.height
                d = np.frombuffer(dst, dtype=dtype).reshape(dst.height, dst.line_size // dtype().itemsize)
                s = np.frombuffer(src, dtype=dtype).reshape(src.height, src.line_size // dtype().itemsize)
                d[:] = y_black if number == 0 else c_black
                d[place.y // sy : place.y // sy + src.height, place.x // sx : place.x // sx + src.width] = (
                    s[:, : src.width]
                )
        out.color_range = dst_range
        out.colorspace = 1
        return out


@dataclass
class ElementaryStream:
    """The encoded stream on disk, and where each frame starts (needed for Motion JPEG)."""

    path: Path
    frame_offsets: list[int] = field(default_factory=list)
    frame_lengths: list[int] = field(default_factory=list)
    size: int = 0

    def append(self, handle: BinaryIO, data: bytes) -> None:
        """Write one coded picture (or access unit) and remember where it starts."""
        self.frame_offsets.append(self.size)
        self.frame_lengths.append(len(data))
        handle.write(data)
        self.size += len(data)


class Encoder:
    """Encodes shaped frames at a constant rate into an elementary stream file."""

    def __init__(self, settings: EncoderSettings, width: int, height: int, rate: Fraction,
                 out: BinaryIO, path: Path, on_packet: Callable[[bytes], None] | None = None) -> None:
        cc = av.CodecContext.create(settings.encoder, "w")
        cc.width, cc.height, cc.pix_fmt = width, height, settings.pix_fmt
        cc.time_base = 1 / rate
        cc.framerate = rate
        cc.color_range = RANGE_CODE[settings.color_range]
        cc.colorspace = 1
        cc.color_primaries = 1
        cc.color_trc = 1
        if settings.bit_rate:
            cc.bit_rate = settings.bit_rate
        if settings.gop:
            cc.gop_size = settings.gop
        if settings.max_b_frames >= 0:
            cc.max_b_frames = settings.max_b_frames
        if settings.qscale:
            cc.flags |= av.codec.context.Flags.qscale
            cc.global_quality = settings.qscale * 118  # FF_QP2LAMBDA
            cc.qmin = cc.qmax = settings.qscale
        cc.options = dict(settings.options)
        cc.thread_count = 0
        cc.open()
        self._cc = cc
        self._out = out
        self._on_packet = on_packet
        self.stream = ElementaryStream(path=path)

    def _write(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            data = bytes(packet)
            self.stream.append(self._out, data)
            if self._on_packet:
                self._on_packet(data)

    def encode(self, frame: av.VideoFrame, index: int) -> None:
        frame.pts = index
        frame.time_base = self._cc.time_base
        self._write(self._cc.encode(frame))

    def finish(self) -> ElementaryStream:
        self._write(self._cc.encode(None))
        self._out.flush()
        return self.stream
