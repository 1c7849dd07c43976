"""`dvqa convert`: a browser recording in, a DICOM video object out, and a record of every decision.

probe -> scan (timestamps) -> plan -> decode -> constant rate -> shape -> encode
(or pass the bitstream through) -> IOD -> encapsulate into a temporary file
beside OUT -> rename. Nothing appears at OUT unless all of it succeeded.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import av
import av.logging

from dvqa.convert.copier import AnnexBCopier
from dvqa.convert.options import ConvertOptions
from dvqa.convert.package import Attempt, ConversionResult, Work, package
from dvqa.core import outputs, profiles, signals
from dvqa.core.digest import sha256_file
from dvqa.core.errors import (
    DvqaError,
    EnvironmentProblem,
    ExitCode,
    InputError,
    UsageError,
)
from dvqa.core.profiles import Profile
from dvqa.dicom.iod import VideoIOD
from dvqa.quality.meter import QualityMeter, WrittenStreamMeter
from dvqa.quality.metrics import SSIM_DEFINITIONS
from dvqa.trust.audit import AuditWriteFailed, conversion_event
from dvqa.video.encode import Encoder, FrameShaper, settings_for
from dvqa.video.plan import Plan, choose
from dvqa.video.probe import SourceInfo, decide_range, probe
from dvqa.video.scan import Scan, scan
from dvqa.video.threads import frame_threaded, parking
from dvqa.video.timing import Emitter, TimestampMismatch

Progress = Callable[[int], None]


def _check_output(output: Path, force: bool) -> None:
    if os.path.lexists(output) and not force:
        raise UsageError(f"{output}: already exists; pass --force to replace it.")
    if output.is_dir():
        raise UsageError(f"{output}: is a directory; give a file name such as {output / 'video.dcm'}.")
    outputs.require_folder(output.parent)
    if not os.access(output.parent, os.W_OK):
        raise EnvironmentProblem(f"{output.parent}: the output folder is not writable.")


def decoder_errors(logs: list, info: SourceInfo) -> list[str]:
    return [m.strip() for _, name, m in logs if name and name not in info.container]


def _stale_parameter_message(info: SourceInfo, first: str, at_frame: int) -> str:
    hint = "the recording is damaged; use an undamaged copy"
    if info.codec == "h264" and info.container.startswith("mov"):
        hint = ("Chrome's MP4 recorder keeps only the first SPS/PPS after a canvas size change, "
                "so later frames decode as garbage; record as WebM/Matroska instead")
    return (f"{info.path}: the video does not decode cleanly from about source frame {at_frame} "
            f"on ({first}); {hint}. Nothing was written.")


def _transcode(info: SourceInfo, plan: Plan, source_range: str,
               stream_file, stream_path: Path, progress: Progress | None, ssim: str | None):
    settings = settings_for(plan.syntax, plan.rate)
    shaper = FrameShaper(plan.width, plan.height, settings.pix_fmt, settings.color_range, source_range)
    meter = QualityMeter(plan.width, plan.height, settings.pix_fmt, ssim) if ssim else None
    checker = WrittenStreamMeter(plan.syntax.codec, meter) if meter else None
    encoder = Encoder(settings, plan.width, plan.height, plan.rate, stream_file, stream_path,
                      on_packet=checker.written if checker else None)
    cfr: Emitter[av.VideoFrame] = Emitter(plan.timing)

    def emit(index: int, shown: av.VideoFrame) -> None:
        shaped = shaper.shape(shown)
        if checker:  # before encoding: an intra-only codec's picture decodes at once
            source = plan.timing.output_source[index]
            place = shaper.placement(shown.width, shown.height)
            checker.expect(index, source, plan.timing.source_pts[source], plan.timing.output_pts(index), shaped,
                           place.picture)
        encoder.encode(shaped, index)
    sizes: list[tuple[int, int, int]] = []  # (source frame, width, height) at each size change
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture(False) as logs, av.open(str(info.path), "r", format=info.container) as container:
        stream = container.streams.video[0]
        frame_threaded(stream.codec_context)
        decoded = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    if not sizes or sizes[-1][1:] != (frame.width, frame.height):
                        sizes.append((decoded, frame.width, frame.height))
                    decoded += 1
                    for index, shown in cfr.push(float(frame.pts * frame.time_base), frame):
                        emit(index, shown)
                if progress:
                    progress(1)
                errors = decoder_errors(logs, info)
                if errors:
                    raise InputError(_stale_parameter_message(info, errors[0], decoded))
        except av.error.FFmpegError as exc:
            raise InputError(_stale_parameter_message(info, exc.strerror or str(exc), decoded)) from exc
        except TimestampMismatch as exc:
            raise InputError(f"{info.path}: {exc}; the container's timestamps do not match the decoded "
                             "video, so dvqa cannot say which frame plays when. Nothing was written.") from exc
    if not cfr.complete:
        raise InputError(f"{info.path}: the decoder returned {cfr.received} of the {len(plan.timing.source_pts)} "
                         "frames the container holds; the recording is damaged. Nothing was written.")
    es = encoder.finish()
    quality = None
    if checker and meter:
        checker.finish()
        quality = meter.result(len(plan.timing.dropped), len(plan.timing.duplicated))
    transforms, boxes = shaped_picture(shaper, sizes, quality is not None)
    return es, plan.timing, transforms, settings.to_dict(), boxes, quality


def shaped_picture(shaper: FrameShaper, sizes: list[tuple[int, int, int]], quality_measured: bool
                   ) -> tuple[list[str], list[dict[str, int]]]:
    """What a re-encode did to the picture, and where each source size sits in the output frame.
    `sizes`: (source frame, width, height) at each canvas size change."""
    transforms = shaper.describe(quality_measured=quality_measured)
    for number, (at, w, h) in enumerate(sizes[1:], 1):
        pw, ph = sizes[number - 1][1:]
        transforms.append(f"canvas size changed at source frame {at} from {pw}x{ph} to {w}x{h}")
    boxes = [{"source_width": w, "source_height": h, "x": p.x, "y": p.y,
              "width": p.box_width, "height": p.box_height} for (w, h), p in shaper.placements.items()]
    return transforms, boxes


def _passthrough(info: SourceInfo, scanned: Scan, plan: Plan, stream_file, stream_path: Path,
                 progress: Progress | None, ssim: str | None):
    """Copy the H.264 access units unchanged (AVCC -> Annex B is a framing change, not a re-encode).

    With quality on, the source's own packets are decoded as references and the
    written Annex B bytes by a second decoder: equal pictures give PSNR infinity,
    and a damaged source stream is caught here instead of being archived.
    """
    cfr_map = plan.timing  # one output frame per source frame
    meter = QualityMeter(info.width, info.height, "yuv420p", ssim) if ssim else None
    shown = copied = 0
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture(False) as logs, av.open(str(info.path), "r", format=info.container) as container:
        stream = container.streams.video[0]
        frame_threaded(stream.codec_context)
        copier = AnnexBCopier(stream, stream_file, stream_path, meter)
        try:
            for packet in container.demux(stream):
                if meter:
                    for frame in packet.decode():
                        if shown < len(scanned.pts):
                            copier.expect(shown, scanned.pts[shown], cfr_map.output_pts(shown), frame)
                        shown += 1
                    errors = decoder_errors(logs, info)
                    if errors:
                        raise InputError(_stale_parameter_message(info, errors[0], shown))
                if packet.size == 0:
                    continue
                for data in copier.annexb(packet):
                    copier.write(data)
                copied += 1
                if progress:
                    progress(1)
            for data in copier.annexb(None):
                copier.write(data)
        except av.error.FFmpegError as exc:  # the bitstream filter found a damaged access unit
            at = shown if meter else copied
            raise InputError(_stale_parameter_message(info, exc.strerror or str(exc), at)) from exc
    quality = copier.result()
    transforms, boxes = wrapped_picture(info)
    return copier.es, cfr_map, transforms, None, boxes, quality


def wrapped_picture(info: SourceInfo) -> tuple[list[str], list[dict[str, int]]]:
    """What a passthrough did to the picture (nothing), and where it sits (everywhere)."""
    box = {"source_width": info.width, "source_height": info.height, "x": 0, "y": 0,
           "width": info.width, "height": info.height}
    return ["none: the H.264 bitstream is wrapped unchanged (passthrough)"], [box]


def convert(source: Path | str, output: Path | str, options: ConvertOptions | None = None,
            progress: Progress | None = None, on_plan: Callable[[Plan, Scan], None] | None = None
            ) -> ConversionResult:
    """Convert `source` to a DICOM video object at `output`; raise DvqaError on any failure.

    On failure nothing is left at `output`; the input is only ever read. With `options.audit`,
    exactly one record is appended per attempt, and a written output always has its record: the
    output is placed and recorded as one step (dvqa.core.outputs.commit), so an audit log that cannot
    be written leaves no output, and a signal cannot fall between the two. An interruption
    (KeyboardInterrupt, also for SIGTERM/SIGHUP) that comes after that step carries the result
    as `exc.result`.
    """
    options = options or ConvertOptions()
    source, output = Path(source), Path(output)
    return run_attempt(source, output, options,
                       lambda attempt: _convert(source, output, options, progress, on_plan, attempt))


def run_attempt(source: Path, output: Path, options: ConvertOptions, work: Callable[[Attempt], ConversionResult],
                input_facts: Callable[[], dict | None] = lambda: None) -> ConversionResult:
    """`work(attempt)`, with exactly one audit record for the attempt whatever happens (see convert)."""
    attempt = Attempt()
    try:
        signals.take_pending()  # a signal since start-up is this attempt's: recorded below
        with parking():
            return work(attempt)
    except KeyboardInterrupt as exc:
        if attempt.recorded is not None:
            exc.result = attempt.recorded  # type: ignore[attr-defined]
            raise
        record_failure(options, source, output, signals.exit_code_of(exc),
                       f"interrupted by {getattr(exc, 'name', 'SIGINT')}; nothing was written", input_facts())
        raise
    except AuditWriteFailed:
        raise  # the log cannot take a record: not even this failure's
    except DvqaError as exc:
        record_failure(options, source, output, int(exc.exit_code), str(exc), input_facts())
        raise
    except OSError as exc:
        problem = outputs.environment_error(exc, output.parent)
        if problem is None:
            record_failure(options, source, output, int(ExitCode.ENVIRONMENT),
                           f"internal error: {type(exc).__name__}: {exc}", input_facts())
            raise
        record_failure(options, source, output, int(problem.exit_code), f"{problem} Nothing was written.",
                       input_facts())
        raise EnvironmentProblem(f"{problem} Nothing was written.") from exc
    except Exception as exc:
        record_failure(options, source, output, int(ExitCode.ENVIRONMENT),
                       f"internal error: {type(exc).__name__}: {exc}", input_facts())
        raise


def check_options(options: ConvertOptions, output: Path) -> tuple[VideoIOD, Profile | None]:
    """Everything about the options and the output checked before the input is read: (IOD, profile)."""
    chosen_iod = VideoIOD.named(options.iod)
    if options.source_range not in ("auto", "full", "limited"):
        raise UsageError(f"--source-range {options.source_range!r}: use auto, full or limited.")
    _check_output(output, options.force)
    if options.ssim not in SSIM_DEFINITIONS:
        raise UsageError(f"--ssim {options.ssim!r}: use {' or '.join(SSIM_DEFINITIONS)}.")
    profile = profiles.load(options.profile) if options.profile else None
    if profile and profile.quality_floors and not options.quality:
        raise UsageError(f"--profile {options.profile} checks quality floors; drop --no-quality.")
    return chosen_iod, profile


def record_failure(options: ConvertOptions, source: Path, output: Path, code: int, message: str,
                   input_facts: dict | None = None) -> None:
    """The audit record of an attempt that wrote nothing (when the options carry an audit log)."""
    if options.audit is None:
        return
    try:
        options.audit.append(conversion_event(source, output, None, code, message, input_facts))
    except EnvironmentProblem as exc:
        raise EnvironmentProblem(f"{message.rstrip('.')}; and {exc}", ExitCode.ENVIRONMENT) from None


def _convert(source: Path, output: Path, options: ConvertOptions, progress: Progress | None,
             on_plan: Callable[[Plan, Scan], None] | None, attempt: Attempt) -> ConversionResult:
    started = time.monotonic()
    chosen_iod, profile = check_options(options, output)
    info = probe(source)
    if source.resolve() == output.resolve():
        raise UsageError(f"{output}: is the input file; choose another output name.")
    scanned = scan(info)
    plan = choose(info, scanned, options.syntax, options.passthrough, options.pinned_rate(profile))
    if plan.syntax.bits != 8:
        raise UsageError(
            f"{plan.syntax.name} carries {plan.syntax.bits}-bit video, but the VL video IODs allow "
            "only Bits Allocated 8 (PS3.3 C.8.12.1); choose hevc-main or an H.264 syntax."
        )
    if on_plan:
        on_plan(plan, scanned)
    source_range, range_note = decide_range(info, options.source_range)
    notes = [range_note]
    if info.audio:
        notes.append(f"audio dropped ({', '.join(info.audio)}): voices can carry patient "
                     "information and the video IODs hold no audio")

    notes += outputs.sweep(output.parent)
    workdir = outputs.temp_dir(output.parent, output.name)
    stream_path = workdir / "stream.bin"
    dicom_tmp = workdir / "out.dcm"
    try:
        with open(stream_path, "wb") as stream_file:
            ssim = options.ssim if options.quality else None
            if plan.passthrough:
                work = Work(*_passthrough(info, scanned, plan, stream_file, stream_path, progress, ssim))
            else:
                work = Work(*_transcode(info, plan, source_range, stream_file, stream_path, progress, ssim))
        return package(source, output, options, info, plan, work, chosen_iod, profile, notes, started,
                        stream_path, dicom_tmp, attempt, sha256_file(source))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


