"""`dvqa convert --follow INPUT` and `dvqa convert -`: convert a recording while it arrives.

A whole-file conversion scans every timestamp before it encodes a frame. Here frames are decoded,
scheduled (dvqa.video.live_timing: rate from the stream's first seconds, the schedule window by
window), scored and encoded as the chunks arrive, so when the stream ends only the last window and
the packaging are left. Everything after the stream - IOD, encapsulation, stream check, signature,
the atomic rename and the audit record - is the whole-file conversion's own code
(dvqa.convert.package): the output is still written only when complete, with the same evidence.

Passing the bitstream through needs every timestamp on a constant grid and one parameter set -
known only at the end. So an H.264 stream whose first seconds qualify (the whole-file rule,
plan.choose, applied to them) is copied as it arrives and scored against its own decode, while the
bytes read are kept; at the end the whole-file rule is applied to the whole stream. It almost always
agrees; where it does not (a canvas size change or a timing jump later on), the kept bytes are
re-encoded after the end, as a live re-encode would have done them, and the report says why - late,
but never a stream that breaks the passthrough rules. Otherwise the rate is decided from the start of
the stream. The input's SHA-256 is of the bytes as read (the audit record says `read_live`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import av.logging

from dvqa.convert.copier import AnnexBCopier
from dvqa.convert.package import Attempt, ConversionResult, Work, package
from dvqa.convert.pipeline import (
    ConvertOptions,
    Progress,
    check_options,
    decoder_errors,
    run_attempt,
    shaped_picture,
    wrapped_picture,
)
from dvqa.core import outputs
from dvqa.core.errors import DvqaError, InputError, UsageError
from dvqa.quality.meter import QualityMeter, QualityResult, WrittenStreamMeter
from dvqa.video.encode import Encoder, FrameShaper, settings_for
from dvqa.video.growing import Growing
from dvqa.video.live_timing import LiveSchedule
from dvqa.video.plan import PinnedRate, Plan, choose, choose_live, passthrough_refusal
from dvqa.video.scan import Scan
from dvqa.video.threads import frame_threaded
from dvqa.video.timing import source_end
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


@dataclass
class _Done:
    """A stream converted: the work to package, and what the report says about it."""

    work: Work
    info: SourceInfo
    plan: Plan
    notes: list[str]


@dataclass
class _CopyRefused:
    """The bitstream was copied while it arrived, but the whole stream may not pass through."""

    reason: str


class _Copy:
    """The H.264 access units copied as they arrive (dvqa.convert.copier, as a whole-file passthrough
    copies them), each scored against the source's own decode. Held in memory until the start of the
    stream has decided whether to copy at all."""

    def __init__(self, info: SourceInfo, stream, ssim: str | None, stream_file, stream_path: Path) -> None:
        meter = QualityMeter(info.width, info.height, "yuv420p", ssim) if ssim else None
        self.copier = AnnexBCopier(stream, stream_file, stream_path, meter)
        self.es = self.copier.es
        self.held: list[bytes] | None = []  # Annex B bytes, until the copy is decided
        self.held_frames: list[tuple[float, av.VideoFrame]] = []
        self.rate: Fraction | None = None  # set when copying was decided
        self.first_pts = 0.0
        self.shown = 0

    def packet(self, packet: av.Packet) -> None:
        for data in self.copier.annexb(packet):
            self._write(data)

    def frame(self, pts: float, frame: av.VideoFrame) -> None:
        if self.copier.checker is None:
            return
        if self.rate is None:
            self.held_frames.append((pts, frame))
            return
        self.copier.expect(self.shown, pts, self.first_pts + self.shown / float(self.rate), frame)
        self.shown += 1

    def start(self, rate: Fraction, first_pts: float) -> None:
        """Copying is decided: what was held goes to the stream file and the checker."""
        self.rate, self.first_pts = rate, first_pts
        held, frames = self.held or [], self.held_frames
        self.held, self.held_frames = None, []
        for pts, frame in frames:
            self.frame(pts, frame)
        for data in held:
            self._write(data)

    def finish(self) -> QualityResult | None:
        for data in self.copier.annexb(None):
            self._write(data)
        return self.copier.result()

    def _write(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
            return
        self.copier.write(data)


class _Encoding:
    """What the start of the stream decides - copy the bitstream, or the syntax, size and rate of a re-encode
    - and the shaper, quality meter and encoder of a re-encode."""

    def __init__(self, info: SourceInfo, requested: str, source_range: str, ssim: str | None, stream_file,
                 stream_path: Path, scanned: Scan, copy: _Copy | None, on_no_copy: Callable[[], None],
                 pinned: PinnedRate | None = None) -> None:
        self.info, self.requested, self.source_range, self.ssim = info, requested, source_range, ssim
        self.pinned = pinned
        self.stream_file, self.stream_path = stream_file, stream_path
        self.scanned, self.copy, self.on_no_copy = scanned, copy, on_no_copy
        self.schedule = LiveSchedule(self.decide)
        self.syntax = None
        self.width = self.height = 0
        self.reason = ""
        self.copy_refusal = ""  # why the start of the stream may not pass through, when it was judged
        self.notes: list[str] = []  # how copying was decided
        self.encoder: Encoder | None = None

    @property
    def copying(self) -> bool:
        return self.copy is not None and self.copy.rate is not None

    def decide(self, nominal: Fraction) -> list[Fraction]:
        if self.copy is not None:
            start = self.scanned.in_order(until=self.schedule.times[-1])
            plan = choose(self.info, start, self.requested, True, self.pinned)
            if plan.passthrough:
                self.copy.start(plan.rate, start.pts[0])
                seen = start.pts[-1] - start.pts[0]
                self.notes = [f"passthrough decided from the first {seen:.1f} s of the stream ({len(start.pts)} "
                              "frames) and confirmed over the whole stream at its end"]
                return [plan.rate]
            self.copy_refusal = (f"{plan.passthrough_refusal} (in the first {start.pts[-1] - start.pts[0]:.1f} s "
                                 "of the stream, where a live conversion decides whether to copy the bitstream)")
            self.copy = None
            self.on_no_copy()
        self.syntax, self.width, self.height, candidates, self.reason = choose_live(self.info, nominal, self.requested,
                                                                                   self.pinned)
        if self.syntax.bits != 8:
            raise UsageError(f"{self.syntax.name} carries {self.syntax.bits}-bit video, but the VL video IODs allow "
                             "only Bits Allocated 8 (PS3.3 C.8.12.1); choose hevc-main or an H.264 syntax.")
        return candidates

    def emit(self, index: int, source: int, frame: av.VideoFrame) -> None:
        if self.copying:
            return
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
          attempt: Attempt) -> ConversionResult:
    started = time.monotonic()
    chosen_iod, profile = check_options(options, output)
    pinned = options.pinned_rate(profile)
    if reader.follow is not None and reader.follow.resolve() == output.resolve():
        raise UsageError(f"{output}: is the input file; choose another output name.")
    notes = outputs.sweep(output.parent)
    workdir = outputs.temp_dir(output.parent, output.name)
    stream_path, dicom_tmp, kept = workdir / "stream.bin", workdir / "out.dcm", workdir / "input.bin"
    try:
        if options.passthrough:
            reader.keep_copy(kept)

        def no_copy() -> None:
            reader.end_copy()
            kept.unlink(missing_ok=True)

        try:
            with open(stream_path, "wb") as stream_file:
                done = _convert_stream(reader, source, options, stream_file, stream_path, progress,
                                       may_copy=options.passthrough, on_no_copy=no_copy, pinned=pinned)
        except DvqaError:
            reader.raise_if_interrupted()  # the stream "ended" because a signal came while FFmpeg was reading
            reader.verify()  # or because the followed file changed: that is the cause to report
            reader.raise_if_changed(options.keep_partial)
            raise
        reader.raise_if_interrupted()
        reader.verify()
        reader.raise_if_changed(options.keep_partial)
        reader.end_copy()
        if isinstance(done, _CopyRefused):
            done = _re_encode_kept(reader, kept, source, options, stream_path, progress, done.reason, pinned)
        if reader.changed:  # --keep-partial: what was read before the change, and the report says so
            done.work.partial = reader.partial_note() + (f"; {done.work.partial}" if done.work.partial else "")
        info = replace(done.info, size=reader.size)
        if info.audio:
            notes.append(f"audio dropped ({', '.join(info.audio)}): voices can carry patient information and the "
                         "video IODs hold no audio")
        notes += [f"read live from {reader.label} ({reader.size} bytes); the stream ended at {reader.ended_by}",
                  *done.notes]
        return package(source, output, options, info, done.plan, done.work, chosen_iod, profile, notes, started,
                        stream_path, dicom_tmp, attempt, reader.digest.hexdigest(), reader.facts())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _re_encode_kept(reader: Growing, kept: Path, source: Path, options: ConvertOptions, stream_path: Path,
                    progress: Progress | None, reason: str, pinned: PinnedRate | None) -> _Done:
    """The whole stream may not pass through after all: re-encode the bytes read, as a live re-encode would."""
    replay = Growing(open(kept, "rb"), reader.label)
    try:
        with open(stream_path, "wb") as stream_file:  # the copied stream is discarded
            done = _convert_stream(replay, source, options, stream_file, stream_path, progress, may_copy=False,
                                   on_no_copy=lambda: None, refusal=reason, pinned=pinned)
    finally:
        replay.close()
    if replay.digest.hexdigest() != reader.digest.hexdigest():
        raise DvqaError(f"{source}: the bytes kept for the re-encode differ from the bytes read; nothing was "
                        "written - report this as a dvqa bug.")
    assert isinstance(done, _Done)
    done.notes.insert(0, f"the bitstream was copied while it arrived, but the whole stream may not pass through "
                         f"({reason}); the {reader.size} bytes read were re-encoded after the stream ended, so this "
                         "conversion finished a whole re-encode later than a live one")
    return done


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


def _convert_stream(reader: Growing, source: Path, options: ConvertOptions, stream_file, stream_path: Path,
                    progress: Progress | None, may_copy: bool, on_no_copy: Callable[[], None], refusal: str = "",
                    pinned: PinnedRate | None = None) -> _Done | _CopyRefused:
    container, info = _open(reader, source)
    source_range, range_note = decide_range(info, options.source_range)
    ssim = options.ssim if options.quality else None
    scanned = Scan()
    copy = None
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture(False) as logs, container:
        stream = container.streams.video[0]
        frame_threaded(stream.codec_context)
        scanned.follow(stream, info.codec)
        if may_copy and info.codec == "h264":
            copy = _Copy(info, stream, ssim, stream_file, stream_path)
        elif may_copy:
            on_no_copy()
        encoding = _Encoding(info, options.syntax, source_range, ssim, stream_file, stream_path, scanned, copy,
                             on_no_copy, pinned)
        schedule = encoding.schedule
        pending: dict[int, av.VideoFrame] = {}  # decoded frames whose output slots are not decided yet
        sizes: list[tuple[int, int, int]] = []
        decoded = 0
        try:
            for packet in container.demux(stream):
                scanned.add(packet)
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    pts = float(frame.pts * frame.time_base)
                    if not sizes or sizes[-1][1:] != (frame.width, frame.height):
                        sizes.append((decoded, frame.width, frame.height))
                    decoded += 1
                    if encoding.copy is not None:
                        encoding.copy.frame(pts, frame)
                    if encoding.copying:
                        continue
                    pending[len(schedule.times)] = frame
                    for index, shown in schedule.add(pts):
                        encoding.emit(index, shown, pending[shown])
                    for done in [n for n in pending if n < schedule.begin or encoding.copying]:
                        del pending[done]
                if encoding.copy is not None:  # after decoding: the bitstream filter takes the packet's data
                    encoding.copy.packet(packet)
                errors = decoder_errors(logs, info)
                if errors:
                    raise InputError(f"{source}: the video does not decode cleanly from about source frame "
                                     f"{decoded} on ({errors[0]}); nothing was written.")
                if progress:
                    progress(1)
        except av.error.FFmpegError as exc:
            raise InputError(f"{source}: the stream is damaged at about source frame {decoded} "
                             f"({exc.strerror or exc}); nothing was written.") from exc
        cut = [m.strip() for _, name, m in logs if name and name.split(",")[0] in info.container]
    partial = ""
    if cut and not options.keep_partial:
        raise InputError(f"{source}: the stream stops in the middle of a chunk ({cut[0]}): the recorder did not "
                         "finish; nothing was written (--keep-partial converts the frames that arrived whole).")
    if not decoded:
        raise InputError(f"{source}: the stream ended before its first video frame; there is nothing to convert.")
    if cut:
        partial = (f"partial recording: the stream stopped in the middle of a chunk after {reader.size} bytes "
                   f"({cut[0]}); the {decoded} frames that arrived whole were converted (--keep-partial)")
    if not encoding.copying:
        end = source_end(schedule.times, scanned.last_duration)
        for index, shown in schedule.finish(end):  # may decide to copy, when the stream is shorter than the window
            encoding.emit(index, shown, pending[shown])
    if encoding.copying:
        return _copied(encoding, scanned, info, options, partial, range_note)
    assert encoding.encoder is not None and encoding.syntax is not None and schedule.rate is not None
    es = encoding.encoder.finish()
    timing = schedule.timing_map(end)
    quality = None
    if encoding.checker and encoding.meter:
        encoding.checker.finish()
        quality = encoding.meter.result(len(timing.dropped), len(timing.duplicated))
    transforms, boxes = shaped_picture(encoding.shaper, sizes, quality is not None)
    if not refusal:
        refusal = ("disabled by option" if not options.passthrough else encoding.copy_refusal
                   or passthrough_refusal(encoding.syntax, info, scanned.in_order(), schedule.rate))
    why_rate = encoding.pinned.explain() if encoding.pinned else schedule.rate_reason
    plan = Plan(encoding.syntax, encoding.width, encoding.height, schedule.rate, encoding.reason, False, refusal,
                timing, why_rate, encoding.pinned.by if encoding.pinned else "")
    work = Work(es, timing, transforms, encoding.settings.to_dict(), boxes, quality, partial)
    return _Done(work, info, plan, [range_note, *schedule.notes])


def _copied(encoding: _Encoding, scanned: Scan, info: SourceInfo, options: ConvertOptions, partial: str,
            range_note: str) -> _Done | _CopyRefused:
    """The stream has ended and was copied: the whole-file rule on all of it says whether that stands."""
    copy = encoding.copy
    assert copy is not None and copy.rate is not None
    quality = copy.finish()
    plan = choose(info, scanned.in_order(), options.syntax, True, encoding.pinned)
    if not plan.passthrough:
        return _CopyRefused(plan.passthrough_refusal)
    if plan.rate != copy.rate:
        return _CopyRefused(f"the whole stream's rate is {float(plan.rate):g} fps, not the {float(copy.rate):g} fps "
                            "of its first seconds")
    transforms, boxes = wrapped_picture(info)
    return _Done(Work(copy.es, plan.timing, transforms, None, boxes, quality, partial), info, plan,
                 [range_note, *encoding.notes])
