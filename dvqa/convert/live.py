"""`dvqa convert --follow INPUT` and `dvqa convert -`: convert a recording while it arrives.

A whole-file conversion scans every timestamp before it encodes a frame. Here frames are decoded,
scheduled (dvqa.video.live_timing: rate from the stream's first seconds, the schedule window by
window), scored and encoded as the chunks arrive, so when the stream ends only the last window and
the packaging are left. Everything after the stream - IOD, encapsulation, stream check, signature,
the atomic rename and the audit record - is the whole-file conversion's own code
(pipeline._package): the output is still written only when complete, with the same evidence.

What differs, and why: a live conversion always re-encodes (passing the bitstream through needs
every timestamp on a constant grid, known only at the end); the rate is decided from the start of
the stream; the input's SHA-256 is of the bytes as read (the audit record says `read_live`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import av.logging

from dvqa.convert.pipeline import (
    ConversionResult,
    ConvertOptions,
    Progress,
    _Attempt,
    _decoder_errors,
    _package,
    _Work,
    check_options,
    run_attempt,
    shaped_picture,
)
from dvqa.core import outputs
from dvqa.core.errors import InputError, UsageError
from dvqa.quality.meter import QualityMeter, WrittenStreamMeter
from dvqa.video.encode import Encoder, FrameShaper, settings_for
from dvqa.video.growing import Growing
from dvqa.video.live_timing import LiveSchedule
from dvqa.video.timing import source_end
from dvqa.video.plan import Plan, choose_live
from dvqa.video.probe import RECORDER_FORMATS, SourceInfo, decide_range, describe


def convert_live(reader: Growing, output: Path | str, options: ConvertOptions | None = None,
                 progress: Progress | None = None) -> ConversionResult:
    """Convert the stream `reader` delivers to `output`; the same guarantees as convert()."""
    options = options or ConvertOptions()
    output = Path(output)
    source = Path(reader.label)
    try:
        return run_attempt(source, output, options, lambda attempt: _live(reader, source, output, options, progress,
                                                                          attempt), reader.facts)
    finally:
        reader.close()


class _Encoding:
    """Shaper, quality meter and encoder, made once the stream's start has decided syntax, size and rate."""

    def __init__(self, info: SourceInfo, requested: str, source_range: str, ssim: str | None, stream_file,
                 stream_path: Path) -> None:
        self.info, self.requested, self.source_range, self.ssim = info, requested, source_range, ssim
        self.stream_file, self.stream_path = stream_file, stream_path
        self.schedule = LiveSchedule(self.decide)
        self.syntax = None
        self.width = self.height = 0
        self.reason = ""
        self.encoder: Encoder | None = None
        self.range_note = ""

    def decide(self, nominal: Fraction) -> list[Fraction]:
        self.syntax, self.width, self.height, candidates, self.reason = choose_live(self.info, nominal, self.requested)
        if self.syntax.bits != 8:
            raise UsageError(f"{self.syntax.name} carries {self.syntax.bits}-bit video, but the VL video IODs allow "
                             "only Bits Allocated 8 (PS3.3 C.8.12.1); choose hevc-main or an H.264 syntax.")
        return candidates

    def emit(self, index: int, source: int, frame: av.VideoFrame) -> None:
        if self.encoder is None:
            assert self.syntax is not None and self.schedule.rate is not None
            self.settings = settings_for(self.syntax, self.schedule.rate)
            self.shaper = FrameShaper(self.width, self.height, self.settings.pix_fmt, self.settings.color_range,
                                      self.source_range)
            self.meter = QualityMeter(self.width, self.height, self.settings.pix_fmt, self.ssim) if self.ssim else None
            self.checker = WrittenStreamMeter(self.syntax.codec, self.meter) if self.meter else None
            self.encoder = Encoder(self.settings, self.width, self.height, self.schedule.rate, self.stream_file,
                                   self.stream_path, on_packet=self.checker.written if self.checker else None)
        shaped = self.shaper.shape(frame)
        if self.checker:
            place = self.shaper.placement(frame.width, frame.height)
            self.checker.expect(index, source, self.schedule.times[source], self.schedule.output_pts(index), shaped,
                                place.picture)
        self.encoder.encode(shaped, index)


def _live(reader: Growing, source: Path, output: Path, options: ConvertOptions, progress: Progress | None,
          attempt: _Attempt) -> ConversionResult:
    started = time.monotonic()
    chosen_iod, profile = check_options(options, output)
    if reader.follow is not None and reader.follow.resolve() == output.resolve():
        raise UsageError(f"{output}: is the input file; choose another output name.")
    notes = outputs.sweep(output.parent)
    workdir = outputs.temp_dir(output.parent, output.name)
    stream_path, dicom_tmp = workdir / "stream.bin", workdir / "out.dcm"
    try:
        with open(stream_path, "wb") as stream_file:
            work, info, encoding = _encode_as_it_arrives(reader, source, options, stream_file, stream_path, progress)
        info = replace(info, size=reader.size)
        assert encoding.syntax is not None and encoding.schedule.rate is not None
        plan = Plan(encoding.syntax, encoding.width, encoding.height, encoding.schedule.rate, encoding.reason,
                    False, "a live conversion re-encodes: passing the bitstream through needs every timestamp on a "
                    "constant grid, known only when the stream has ended", work.timing)
        if info.audio:
            notes.append(f"audio dropped ({', '.join(info.audio)}): voices can carry patient information and the "
                         "video IODs hold no audio")
        notes += [encoding.range_note,
                  f"read live from {reader.label} ({reader.size} bytes); the stream ended at {reader.ended_by}",
                  *encoding.schedule.notes]
        return _package(source, output, options, info, plan, work, chosen_iod, profile, notes, started, stream_path,
                        dicom_tmp, attempt, reader.digest.hexdigest(), reader.facts())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _open(reader: Growing, source: Path) -> tuple[av.container.InputContainer, SourceInfo]:
    try:
        container = av.open(reader, "r")
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        reason = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).rstrip(".").lower()
        raise InputError(f"{source}: not a media stream FFmpeg can read ({reason}); give the WebM, Matroska or MP4 "
                         "chunks MediaRecorder writes.") from None
    fmt = container.format.name
    if fmt not in RECORDER_FORMATS:
        container.close()
        raise InputError(f"{source}: is {fmt!r} data, not a WebM, Matroska or MP4 recording.")
    try:
        return container, describe(container, source, 0, fmt)
    except InputError:
        container.close()
        raise


def _encode_as_it_arrives(reader: Growing, source: Path, options: ConvertOptions, stream_file, stream_path: Path,
                          progress: Progress | None) -> tuple[_Work, SourceInfo, _Encoding]:
    container, info = _open(reader, source)
    source_range, range_note = decide_range(info, options.source_range)
    encoding = _Encoding(info, options.syntax, source_range, options.ssim if options.quality else None,
                         stream_file, stream_path)
    schedule = encoding.schedule
    pending: dict[int, av.VideoFrame] = {}  # decoded frames whose output slots are not decided yet
    sizes: list[tuple[int, int, int]] = []
    last_duration: float | None = None
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture(False) as logs, container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None and packet.duration:  # as the whole-file scan reads it
                    last_duration = float(packet.duration * packet.time_base)
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    number = len(schedule.times)
                    if not sizes or sizes[-1][1:] != (frame.width, frame.height):
                        sizes.append((number, frame.width, frame.height))
                    pending[number] = frame
                    for index, shown in schedule.add(float(frame.pts * frame.time_base)):
                        encoding.emit(index, shown, pending[shown])
                    for done in [n for n in pending if n < schedule.begin]:
                        del pending[done]
                errors = _decoder_errors(logs, info)
                if errors:
                    raise InputError(f"{source}: the video does not decode cleanly from about source frame "
                                     f"{len(schedule.times)} on ({errors[0]}); nothing was written.")
                if progress:
                    progress(1)
        except av.error.FFmpegError as exc:
            raise InputError(f"{source}: the stream is damaged at about source frame {len(schedule.times)} "
                             f"({exc.strerror or exc}); nothing was written.") from exc
        cut = [m.strip() for _, name, m in logs if name and name.split(",")[0] in info.container]
    partial = ""
    if cut and not options.keep_partial:
        raise InputError(f"{source}: the stream stops in the middle of a chunk ({cut[0]}): the recorder did not "
                         "finish; nothing was written (--keep-partial converts the frames that arrived whole).")
    if not schedule.times:
        raise InputError(f"{source}: the stream ended before its first video frame; there is nothing to convert.")
    if cut:
        partial = (f"partial recording: the stream stopped in the middle of a chunk after {reader.size} bytes "
                   f"({cut[0]}); the {len(schedule.times)} frames that arrived whole were converted (--keep-partial)")
    end = source_end(schedule.times, last_duration)
    for index, shown in schedule.finish(end):
        encoding.emit(index, shown, pending[shown])
    assert encoding.encoder is not None
    es = encoding.encoder.finish()
    timing = schedule.timing_map(end)
    quality = None
    if encoding.checker and encoding.meter:
        encoding.checker.finish()
        quality = encoding.meter.result(len(timing.dropped), len(timing.duplicated))
    transforms, boxes = shaped_picture(encoding.shaper, sizes, quality is not None)
    encoding.range_note = range_note
    return _Work(es, timing, transforms, encoding.settings.to_dict(), boxes, quality, partial), info, encoding

