"""`dvqa quality REFERENCE DISTORTED`: re-measure an existing pair the way convert measured it.

The distorted side is a DICOM video (its encapsulated stream decoded fragment by
fragment from disk) or any video file. The reference is mapped onto the
distorted frame rate with the same schedule (dvqa.video.timing), and shaped with the same
scaling, letterboxing and range conversion, that `convert` uses, so re-checking
a dvqa output against its source reproduces the numbers in its report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import pydicom
from pydicom.errors import InvalidDicomError

from dvqa import __version__
from dvqa.core.digest import sha256_file
from dvqa.core.errors import InputError
from dvqa.dicom import dicomfile, syntaxes
from dvqa.dicom.iod import declared_rate
from dvqa.quality.meter import QualityMeter, QualityResult
from dvqa.video import timing
from dvqa.video.encode import FrameShaper
from dvqa.video.probe import decide_range, probe
from dvqa.video.scan import scan
from dvqa.video.threads import frame_threaded, parking
from dvqa.video.timing import Emitter, TimestampMismatch

# Photometric Interpretation -> (the decoder's pixel format, sample range) for 8-bit video
DICOM_PIXELS = {"YBR_PARTIAL_420": ("yuv420p", "limited"), "YBR_FULL_422": ("yuvj422p", "full")}


@dataclass
class Distorted:
    path: Path
    kind: str  # "dicom" or the container name
    codec: str
    width: int
    height: int
    rate: Fraction
    pix_fmt: str
    color_range: str
    frames: Iterator[av.VideoFrame]
    declared_frames: int | None = None


def _dicom_frames(path: Path, codec: str) -> Iterator[av.VideoFrame]:
    decoder = av.CodecContext.create(codec, "r")
    for piece in dicomfile.stream_pieces(path):  # never the whole stream in memory
        for packet in decoder.parse(piece):
            yield from decoder.decode(packet)
    for packet in decoder.parse(b""):
        yield from decoder.decode(packet)
    yield from decoder.decode(None)


def open_distorted(path: Path) -> Distorted:
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError):
        ds = None
    if ds is not None and "TransferSyntaxUID" in ds.file_meta:
        uid = str(ds.file_meta.TransferSyntaxUID)
        syntax = syntaxes.BY_UID.get(uid)
        if syntax is None:
            raise InputError(f"{path}: transfer syntax {uid} is not a video syntax dvqa decodes; "
                             f"give a file in one of: {', '.join(syntaxes.names())}.")
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric not in DICOM_PIXELS:
            raise InputError(f"{path}: Photometric Interpretation {photometric!r} is not one dvqa "
                             f"compares ({', '.join(DICOM_PIXELS)}).")
        rate = declared_rate(ds)
        if rate is None:
            raise InputError(f"{path}: neither Frame Time nor Cine Rate is present, so frame times "
                             "are unknown; the file is not a valid video object.")
        pix_fmt, color_range = DICOM_PIXELS[photometric]
        return Distorted(path, "dicom", syntax.codec, int(ds.Columns), int(ds.Rows), rate, pix_fmt,
                         color_range, _dicom_frames(path, syntax.codec), int(ds.get("NumberOfFrames", 0)))
    info = probe(path)
    container = av.open(str(path), format=info.container)
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or Fraction(30)
    pix_fmt = "yuvj422p" if info.pix_fmt in ("yuvj422p", "yuv422p") else "yuv420p"
    color_range = "full" if info.color_range == "full" else "limited"

    def frames() -> Iterator[av.VideoFrame]:
        with container:
            for frame in container.decode(stream):
                if frame.format.name != pix_fmt:
                    frame = frame.reformat(format=pix_fmt)
                yield frame

    return Distorted(path, info.container, info.codec, info.width, info.height, Fraction(rate), pix_fmt,
                     color_range, frames())


def measure_files(reference: Path, distorted_path: Path, ssim: str = "fast",
                  source_range: str = "auto") -> tuple[dict[str, object], QualityResult]:
    """Score every frame of `distorted_path` against the `reference` frame shown at its time."""
    started = time.monotonic()
    info = probe(reference)
    scanned = scan(info)
    distorted = open_distorted(distorted_path)
    ref_range, range_note = decide_range(info, source_range)
    shaper = FrameShaper(distorted.width, distorted.height, distorted.pix_fmt, distorted.color_range, ref_range)
    meter = QualityMeter(distorted.width, distorted.height, distorted.pix_fmt, ssim)
    mapped = timing.schedule(scanned.pts, scanned.end, distorted.rate)
    assert mapped is not None  # drops allowed: there is always a schedule
    cfr: Emitter[av.VideoFrame] = Emitter(mapped)
    pending = distorted.frames
    unmatched = 0

    def pair(index: int, shown: av.VideoFrame) -> None:
        nonlocal unmatched
        frame = next(pending, None)
        if frame is None:
            unmatched += 1
            return
        source = mapped.output_source[index]
        meter.add(index, source, mapped.source_pts[source], mapped.output_pts(index), shaper.shape(shown),
                  frame, shaper.placement(shown.width, shown.height).picture)

    with parking(), av.open(str(reference), format=info.container) as container:
        stream = container.streams.video[0]
        frame_threaded(stream.codec_context)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                for index, shown in cfr.push(float(frame.pts * frame.time_base), frame):
                    pair(index, shown)
        except TimestampMismatch as exc:
            raise InputError(f"{reference}: {exc}; the container's timestamps do not match the decoded video, "
                             "so dvqa cannot say which frame plays when.") from exc
    extra = sum(1 for _ in pending)
    result = meter.result(len(mapped.dropped), len(mapped.duplicated))
    notes = [range_note]
    if unmatched or extra:
        notes.append(f"frame counts differ: the reference maps to {mapped.output_frames} frames at "
                     f"{float(distorted.rate):g} fps, {distorted.path} holds {result.frames + extra}; "
                     f"the first {result.frames} were compared")
    transforms = [f"reference mapped to {float(distorted.rate):g} fps keeping every frame it can "
                  f"({len(mapped.duplicated)} duplicated, {len(mapped.dropped)} dropped)",
                  *shaper.describe(quality_measured=True)]
    record: dict[str, object] = {
        "command": "quality", "dvqa_version": __version__, "pyav_version": av.__version__,
        "ffmpeg_version": av.ffmpeg_version_info,
        "input": {"path": str(reference), "sha256": sha256_file(reference), "codec": info.codec,
                  "container": info.container},
        "distorted": {"path": str(distorted_path), "sha256": sha256_file(distorted_path), "kind": distorted.kind,
                      "codec": distorted.codec, "width": distorted.width, "height": distorted.height,
                      "rate": str(distorted.rate), "declared_frames": distorted.declared_frames},
        "transforms": transforms, "notes": notes, "elapsed_s": round(time.monotonic() - started, 3),
        # how the reference maps onto the distorted's frames, as convert's report gives it: the report marks
        # the duplicated frames on its plots from here
        "timing": mapped.summary(),
        "quality": result.to_dict(per_frame=True),
        "profile": None, "findings": [],  # `dvqa quality` writes no DICOM: no output, encoder or stream keys
    }
    return record, result
