"""`dvqa convert`: a browser recording in, a DICOM video object out, and a record of every decision.

probe -> scan (timestamps) -> plan -> decode -> constant rate -> shape -> encode
(or pass the bitstream through) -> IOD -> encapsulate into a temporary file
beside OUT -> rename. Nothing appears at OUT unless all of it succeeded.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import av
import av.logging
import pydicom

from dvqa import __version__
from dvqa.core import outputs, profiles, signals
from dvqa.core.digest import sha256_file
from dvqa.core.errors import (
    DvqaError,
    EnvironmentProblem,
    ExitCode,
    InputError,
    UsageError,
)
from dvqa.core.findings import Finding, Severity, exit_code
from dvqa.core.profiles import Profile
from dvqa.dicom import dicomfile, syntaxes
from dvqa.dicom.iod import Metadata, PixelFacts, VideoIOD
from dvqa.dicom.iod import build as build_dataset
from dvqa.quality.meter import QualityMeter, QualityResult, WrittenStreamMeter
from dvqa.quality.metrics import SSIM_DEFINITIONS
from dvqa.trust.audit import AuditLog, AuditWriteFailed, conversion_event
from dvqa.trust.signature import SignatureResult, Signer, sign_file
from dvqa.validate import streamcheck
from dvqa.video.encode import ElementaryStream, Encoder, FrameShaper, settings_for
from dvqa.video.plan import Plan, choose
from dvqa.video.probe import SourceInfo, decide_range, probe
from dvqa.video.scan import Scan, scan
from dvqa.video.timing import Emitter, TimestampMismatch, TimingMap

Progress = Callable[[int], None]


@dataclass
class ConvertOptions:
    syntax: str = "auto"
    iod: str = "endoscopic"
    uid_root: str | None = None
    uid_seed: str | None = None  # derive the UIDs from this (dicom.iod.make_uid); None: at random
    metadata: Metadata = field(default_factory=Metadata)
    force: bool = False
    passthrough: bool = True
    source_range: str = "auto"  # auto | full | limited
    quality: bool = True  # score every written frame against its source frame
    ssim: str = "fast"  # fast | reference (dvqa.quality.metrics.SSIM_DEFINITIONS)
    profile: str | None = None  # rules/NAME.yaml whose quality floors must be met
    keep_failed: bool = False  # write OUT even when a floor is not met
    signer: Signer | None = None  # sign OUT (PS3.15 Annex C) before it is moved into place
    signature_profile: str = "base"
    audit: AuditLog | None = None  # append one record per attempt (dvqa.trust.audit)
    keep_partial: bool = False  # live input that stops mid-chunk: convert what arrived whole (dvqa.convert.live)


@dataclass
class ConversionResult:
    source: SourceInfo
    plan: Plan
    output: Path
    output_size: int
    frames: int
    timing: TimingMap
    transforms: list[str]
    picture_boxes: list[dict[str, int]]  # where each source size sits in the output frame
    encoder: dict[str, object] | None
    elementary_stream_sha256: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    iod: str
    elapsed_s: float
    notes: list[str]
    input_sha256: str = ""
    output_sha256: str = ""  # of the DICOM file as written (also when not kept)
    encoder_build: str = ""  # the encoder's own version string, from its SEI in the stream
    quality: QualityResult | None = None
    profile: Profile | None = None
    findings: list[Finding] = field(default_factory=list)
    written: bool = True  # False when a floor failed and --keep-failed was not given
    signature: SignatureResult | None = None
    patient: dict[str, str] = field(default_factory=dict)  # identifiers written (for the audit trail)
    sop_class_uid: str = ""
    validation: list[dict[str, str]] = field(default_factory=list)  # stream-layer findings on the output
    partial: str = ""  # why only part of the input was converted (--keep-partial), else empty

    @property
    def exit_code(self) -> ExitCode:
        return exit_code(self.findings)

    def to_dict(self, mapping: bool = False) -> dict[str, object]:
        d: dict[str, object] = {
            "command": "convert", "dvqa_version": __version__, "pyav_version": av.__version__,
            "ffmpeg_version": av.ffmpeg_version_info,
            "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "encoder_build": self.encoder_build,
            "input": {**self.source.to_dict(), "sha256": self.input_sha256},
            "output": {"path": str(self.output), "size": self.output_size, "frames": self.frames,
                       "sha256": self.output_sha256,
                       "rows": self.plan.height, "columns": self.plan.width,
                       "transfer_syntax_uid": self.transfer_syntax_uid, "iod": self.iod,
                       "sop_class_uid": self.sop_class_uid, "sop_instance_uid": self.sop_instance_uid,
                       "study_instance_uid": self.study_instance_uid,
                       "series_instance_uid": self.series_instance_uid, "patient": self.patient},
            "plan": self.plan.to_dict(),
            "passthrough": self.plan.passthrough,
            "encoder": self.encoder,
            "elementary_stream_sha256": self.elementary_stream_sha256,
            "timing": self.timing.summary(),
            "transforms": self.transforms,
            "picture_boxes": self.picture_boxes,
            "notes": self.notes,
            "elapsed_s": round(self.elapsed_s, 3),
            "written": self.written,
            "partial": self.partial or None,
            "profile": self.profile.to_dict() if self.profile else None,
            "findings": [f.to_dict() for f in self.findings],
            "validation": {"layers": ["stream"], "findings": self.validation},
            "quality": self.quality.to_dict(per_frame=mapping) if self.quality else None,
            "signature": ({k: v for k, v in self.signature.__dict__.items() if k != "signed_tags"}
                          if self.signature else None),
        }
        if mapping:
            d["timing_map"] = list(self.timing.rows())
        return d


def _check_output(output: Path, force: bool) -> None:
    if os.path.lexists(output) and not force:
        raise UsageError(f"{output}: already exists; pass --force to replace it.")
    if output.is_dir():
        raise UsageError(f"{output}: is a directory; give a file name such as {output / 'video.dcm'}.")
    outputs.require_folder(output.parent)
    if not os.access(output.parent, os.W_OK):
        raise EnvironmentProblem(f"{output.parent}: the output folder is not writable.")


def _decoder_errors(logs: list, info: SourceInfo) -> list[str]:
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
        stream.thread_type = "AUTO"
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
                errors = _decoder_errors(logs, info)
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
    es = ElementaryStream(path=stream_path)
    cfr_map = plan.timing  # one output frame per source frame
    meter = QualityMeter(info.width, info.height, "yuv420p", ssim) if ssim else None
    checker = WrittenStreamMeter("h264", meter) if meter else None
    shown = copied = 0
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture(False) as logs, av.open(str(info.path), "r", format=info.container) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        needs_annexb = (stream.codec_context.extradata or b"").startswith(b"\x01")
        bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream) if needs_annexb else None

        def write(data: bytes) -> None:
            es.append(stream_file, data)
            if checker:
                checker.written(data)

        try:
            for packet in container.demux(stream):
                if checker:
                    for frame in packet.decode():
                        if shown < len(scanned.pts):
                            checker.expect(shown, shown, scanned.pts[shown], cfr_map.output_pts(shown), frame)
                        shown += 1
                    errors = _decoder_errors(logs, info)
                    if errors:
                        raise InputError(_stale_parameter_message(info, errors[0], shown))
                if packet.size == 0:
                    continue
                for out in (bsf.filter(packet) if bsf else [packet]):
                    write(bytes(out))
                copied += 1
                if progress:
                    progress(1)
            for out in (bsf.filter(None) if bsf else []):
                write(bytes(out))
        except av.error.FFmpegError as exc:  # the bitstream filter found a damaged access unit
            at = shown if checker else copied
            raise InputError(_stale_parameter_message(info, exc.strerror or str(exc), at)) from exc
    stream_file.flush()
    quality = None
    if checker and meter:
        checker.finish()
        quality = meter.result(0, 0)
    box = {"source_width": info.width, "source_height": info.height, "x": 0, "y": 0,
           "width": info.width, "height": info.height}
    return es, cfr_map, ["none: the H.264 bitstream is wrapped unchanged (passthrough)"], None, [box], quality


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


def run_attempt(source: Path, output: Path, options: ConvertOptions, work: Callable[["_Attempt"], ConversionResult],
                input_facts: Callable[[], dict | None] = lambda: None) -> ConversionResult:
    """`work(attempt)`, with exactly one audit record for the attempt whatever happens (see convert)."""
    attempt = _Attempt()
    try:
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
    if profile and not options.quality:
        raise UsageError(f"--profile {options.profile} checks quality floors; drop --no-quality.")
    return chosen_iod, profile


@dataclass
class _Attempt:
    recorded: ConversionResult | None = None  # set once the outcome is final (output placed) and recorded


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
             on_plan: Callable[[Plan, Scan], None] | None, attempt: _Attempt) -> ConversionResult:
    started = time.monotonic()
    chosen_iod, profile = check_options(options, output)
    info = probe(source)
    if source.resolve() == output.resolve():
        raise UsageError(f"{output}: is the input file; choose another output name.")
    scanned = scan(info)
    plan = choose(info, scanned, options.syntax, options.passthrough)
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
                work = _Work(*_passthrough(info, scanned, plan, stream_file, stream_path, progress, ssim))
            else:
                work = _Work(*_transcode(info, plan, source_range, stream_file, stream_path, progress, ssim))
        return _package(source, output, options, info, plan, work, chosen_iod, profile, notes, started,
                        stream_path, dicom_tmp, attempt, sha256_file(source))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class _Work:
    """What the conversion loop produced: the stream and the facts about it, before it is packaged."""

    es: ElementaryStream
    timing: TimingMap
    transforms: list[str]
    encoder: dict[str, object] | None
    boxes: list[dict[str, int]]
    quality: QualityResult | None
    partial: str = ""  # set when a live stream was cut and --keep-partial converted what arrived


def _package(source: Path, output: Path, options: ConvertOptions, info: SourceInfo, plan: Plan, work: _Work,
             chosen_iod: VideoIOD, profile: Profile | None, notes: list[str], started: float, stream_path: Path,
             dicom_tmp: Path, attempt: _Attempt, input_sha256: str, input_facts: dict | None = None
             ) -> ConversionResult:
    """The stream made into the DICOM file: IOD, encapsulation, checks, signature, placed and recorded."""
    es, timing, transforms, encoder, boxes, quality = (work.es, work.timing, work.transforms, work.encoder,
                                                       work.boxes, work.quality)
    frames = timing.output_frames
    if plan.syntax.one_fragment_per_frame and len(es.frame_lengths) != frames:
        raise DvqaError(f"{source}: the encoder wrote {len(es.frame_lengths)} pictures for "
                        f"{frames} frames; report this as a dvqa bug.")
    uid = plan.syntax.uid
    max_fragment = syntaxes.MAX_FRAGMENT_BYTES  # looked up here so tests can lower it
    if es.size > max_fragment and not plan.syntax.one_fragment_per_frame:
        if not plan.syntax.fragmentable_uid:
            raise InputError(f"{source}: the {plan.syntax.name} stream is over 4 GiB and that "
                             "syntax has no fragmentable variant; split the recording.")
        uid = plan.syntax.fragmentable_uid
    uncompressed = plan.width * plan.height * 3 * frames
    pixels = PixelFacts(
        rows=plan.height, columns=plan.width, frames=frames, rate=plan.rate,
        lossy_ratio=uncompressed / max(1, es.size), passthrough=plan.passthrough,
        source_description=(f"Converted by dvqa {__version__} from {info.codec} in {info.container}"
                            + ("; bitstream passed through unchanged" if plan.passthrough
                               else f"; re-encoded with {encoder['encoder'] if encoder else ''}")),
    )
    ds = build_dataset(chosen_iod, plan.syntax, pixels, options.metadata, options.uid_root, uid,
                       options.uid_seed)
    pieces = dicomfile.fragments(stream_path, es.size, es.frame_offsets, es.frame_lengths,
                                 plan.syntax.one_fragment_per_frame, max_fragment)
    dicomfile.write(ds, dicom_tmp, pieces, basic_offset_table=plan.syntax.one_fragment_per_frame)
    es_hash = sha256_file(stream_path)
    if quality:  # the bytes that were decoded and scored are the bytes in the file
        _check_pixel_data(dicom_tmp, es, es_hash, plan.syntax.one_fragment_per_frame)
    findings = profiles.check_quality(profile, quality, str(output)) if profile and quality else []
    if work.partial:
        findings.append(Finding(Severity.WARNING, "convert.partial-stream", work.partial, str(output)))
    # the file as written, checked the way `dvqa validate` checks anyone's (stream layer): an
    # error here is a dvqa bug, and the file is not kept unless --keep-failed
    validation = [replace(f, file=str(output)) for f in streamcheck.check(dicom_tmp, pydicom.dcmread(
        str(dicom_tmp), stop_before_pixels=True))]
    findings += validation
    written = exit_code(findings) == ExitCode.OK or options.keep_failed
    signed = None
    if options.signer and written:  # signed last: the signature covers the final file
        signed = sign_file(dicom_tmp, dicom_tmp, options.signer, options.signature_profile)
    os.chmod(dicom_tmp, outputs.file_mode())
    output_size, output_sha256 = dicom_tmp.stat().st_size, sha256_file(dicom_tmp)
    result = ConversionResult(
        source=info, plan=plan, output=output, output_size=output_size,
        frames=frames, timing=timing, transforms=transforms, picture_boxes=boxes, encoder=encoder,
        elementary_stream_sha256=es_hash, sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID), series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=uid, iod=chosen_iod.title, elapsed_s=time.monotonic() - started,
        notes=notes, quality=quality, profile=profile, findings=findings, written=written,
        input_sha256=input_sha256, output_sha256=output_sha256, signature=signed,
        patient={k: str(ds.get(k, "")) for k in ("PatientID", "PatientName", "AccessionNumber")},
        validation=[f.to_dict() for f in validation],
        sop_class_uid=str(ds.SOPClassUID),
        encoder_build="" if plan.passthrough else _encoder_build(stream_path),
        partial=work.partial,
    )
    event = conversion_event(source, output, result, int(result.exit_code),
                             "; ".join(f.message for f in result.findings), input_facts)
    record = (lambda: options.audit.append(event)) if options.audit else None
    try:
        if written:
            outputs.commit(dicom_tmp, output, options.force, record)
        elif record:
            with signals.deferred():
                record()
    except signals.Interrupted as exc:
        if exc.held:  # the signal came during the commit, which completed
            attempt.recorded = result
        raise
    attempt.recorded = result
    return result

def _encoder_build(stream_path: Path) -> str:
    """x264 and x265 write their version and options into an SEI message at the stream's start."""
    with open(stream_path, "rb") as handle:
        head = handle.read(1 << 16)
    found = re.search(rb"(x264 - core [ -~]{1,80}|x265 \(build [ -~]{1,80})", head)
    return found.group(1).decode("ascii").split(" - Copyleft")[0].split(" - H.265")[0] if found else ""


def _check_pixel_data(path: Path, es: ElementaryStream, es_hash: str, per_frame: bool) -> None:
    """Read the written file's fragments back and prove they hold the scored stream, byte for byte."""
    digest, total, item_bytes = hashlib.sha256(), 0, 0
    current = 0
    for number, piece in dicomfile.read_chunks(path):  # piece by piece: memory stays flat
        if number == 0:
            continue  # the Basic Offset Table
        if number != current:
            current, item_bytes = number, 0
        if per_frame:  # each JPEG in its own fragment, padded to even length
            piece = piece[: max(0, es.frame_lengths[number - 1] - item_bytes)]
            item_bytes += len(piece)
        digest.update(piece[: max(0, es.size - total)])
        total += len(piece)
    if digest.hexdigest() != es_hash or total - es.size not in (0, 1):
        raise DvqaError(f"{path}: the Pixel Data written differs from the stream that was scored; "
                        "nothing was written - report this as a dvqa bug.")
