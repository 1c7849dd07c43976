"""What an input file really is, found from its content, never its name.

MediaRecorder's MIME names lie (Chrome writes Matroska for `video/webm;codecs=h264`
and VP9 for bare `video/mp4`), so the container is detected by handing
libavformat a file object without a name: only the bytes decide. The file is
then reopened by path with that format forced, for speed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from dvqa.core import signals
from dvqa.core.errors import InputError

# libav messages reach Python's logging; dvqa reads them through av.logging.Capture
# where it needs them and must not spray them on the user's terminal.
logging.getLogger("libav").addHandler(logging.NullHandler())
logging.getLogger("libav").propagate = False

SUPPORTED_VIDEO_CODECS = ("vp8", "vp9", "av1", "h264", "hevc", "mpeg2video", "mjpeg")
RECORDER_FORMATS = ("matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2")


@dataclass(frozen=True)
class SourceInfo:
    path: Path
    size: int
    container: str  # libavformat demuxer name, e.g. "matroska,webm"
    codec: str  # decoder name of the video track
    profile: str
    level: int  # codec level as the stream header states it (H.264: 41 = 4.1), -99 unknown
    width: int
    height: int
    pix_fmt: str
    color_range: str  # "full", "limited" or "unspecified"
    video_index: int  # index of the video track among all tracks (audio may be track 0)
    time_base: Fraction
    audio: tuple[str, ...] = field(default_factory=tuple)  # codecs of audio tracks, dropped
    declared_duration: float | None = None  # None: no Duration element (timeslice recording)

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path), "size": self.size, "container": self.container,
            "codec": self.codec, "profile": self.profile, "level": self.level,
            "width": self.width, "height": self.height, "pix_fmt": self.pix_fmt,
            "color_range": self.color_range, "video_track": self.video_index,
            "audio_tracks": list(self.audio), "declared_duration": self.declared_duration,
        }


def decide_range(info: SourceInfo, requested: str) -> tuple[str, str]:
    """The colour range to read the source in, and the sentence that says why."""
    if requested in ("full", "limited"):
        return requested, f"source colour range taken as {requested} (--source-range)"
    if info.color_range in ("full", "limited"):
        return info.color_range, f"source colour range {info.color_range}, as the stream declares"
    return "limited", "source colour range not declared; taken as limited (use --source-range full to override)"


def color_range_name(value: int) -> str:
    return {1: "limited", 2: "full"}.get(int(value), "unspecified")


# For opens that only need the container's name or its packets: FFmpeg's stream-info probe (which
# decodes frames, ~25 ms per open of 1080p H.264) is cut to the minimum. The container format itself is
# still detected from the bytes, and codec parameters still come from the container's headers.
DEMUX_ONLY = {"probesize": "32", "analyzeduration": "0"}


def detect_format(path: Path) -> str:
    """Name the container from the bytes alone (libavformat probe on an anonymous stream)."""
    with open(path, "rb") as handle, signals.deferred():  # a signal inside FFmpeg's read callback would be lost
        try:
            with av.open(handle, "r", options=DEMUX_ONLY) as container:
                return container.format.name
        except (av.error.InvalidDataError, ValueError, EOFError) as exc:
            raise InputError(
                f"{path}: not a media file FFmpeg can read ({_reason(exc)}); "
                "give a WebM, Matroska or MP4 recording from MediaRecorder."
            ) from exc
        except av.error.FFmpegError as exc:
            raise InputError(
                f"{path}: cannot be read as a media file ({_reason(exc)}); "
                "check that the recording finished and the file is complete."
            ) from exc


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip().rstrip(".").lower() or type(exc).__name__


def probe(path: Path) -> SourceInfo:
    """Describe `path`, or raise InputError with one sentence saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path.")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a recording file.")
    if not path.is_file():
        raise InputError(f"{path}: is not a regular file (a pipe or a device); give a recording file.")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); the recording was never written.")
    fmt = detect_format(path)
    if fmt not in RECORDER_FORMATS:
        raise InputError(
            f"{path}: is {fmt!r} data, not a WebM, Matroska or MP4 recording; "
            "give the file MediaRecorder wrote."
        )
    try:
        container = av.open(str(path), "r", format=fmt)
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: cannot be opened as {fmt} ({_reason(exc)}).") from exc
    with container:
        return describe(container, path, size, fmt)


def describe(container, path: Path, size: int, fmt: str) -> SourceInfo:
    """SourceInfo of an open container (a file, or a stream read while it arrives); InputError if unusable."""
    audio = tuple(s.codec_context.name for s in container.streams.audio)
    if not container.streams.video:
        kinds = f"audio only ({', '.join(audio)})" if audio else "no video track"
        raise InputError(f"{path}: has {kinds}; there is no video to convert.")
    stream = container.streams.video[0]
    cc = stream.codec_context
    codec = cc.codec.canonical_name  # "av1", whichever decoder (libdav1d) reads it
    if codec not in SUPPORTED_VIDEO_CODECS:
        raise InputError(
            f"{path}: video codec {codec!r} is not one a browser records; "
            f"dvqa reads {', '.join(SUPPORTED_VIDEO_CODECS)}."
        )
    if not cc.width or not cc.height:
        raise InputError(f"{path}: the video track has no frame size; the file is damaged.")
    duration = None if container.duration is None else container.duration / av.time_base
    return SourceInfo(
        path=path, size=size, container=fmt, codec=codec,
        profile=cc.profile or "", level=int(getattr(cc, "level", -99) or -99),
        width=cc.width, height=cc.height, pix_fmt=cc.pix_fmt or "",
        color_range=color_range_name(cc.color_range), video_index=stream.index,
        time_base=stream.time_base or Fraction(1, 1000), audio=audio,
        declared_duration=duration,
    )
