"""`dvqa convert`: a browser recording in, a DICOM video object out, and a record of every decision.

probe -> scan (timestamps) -> plan -> decode -> constant rate -> shape -> encode
(or pass the bitstream through) -> IOD -> encapsulate into a temporary file
beside OUT -> rename. Nothing appears at OUT unless all of it succeeded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import av
import av.logging

from dvqa import __version__, dicomfile, syntaxes
from dvqa.iod import Metadata, PixelFacts, VideoIOD, build as build_dataset
from dvqa.encode import ElementaryStream, Encoder, FrameShaper, settings_for
from dvqa.errors import DvqaError, EnvironmentProblem, InputError, UsageError
from dvqa.plan import Plan, choose
from dvqa.probe import SourceInfo, probe
from dvqa.scan import Scan, scan
from dvqa.timing import ConstantRate, TimingMap

Progress = Callable[[int], None]


@dataclass
class ConvertOptions:
    syntax: str = "auto"
    iod: str = "endoscopic"
    uid_root: str | None = None
    metadata: Metadata = field(default_factory=Metadata)
    force: bool = False
    passthrough: bool = True
    source_range: str = "auto"  # auto | full | limited


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

    def to_dict(self, mapping: bool = False) -> dict[str, object]:
        d: dict[str, object] = {
            "dvqa_version": __version__, "pyav_version": av.__version__,
            "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "input": self.source.to_dict(),
            "output": {"path": str(self.output), "size": self.output_size, "frames": self.frames,
                       "rows": self.plan.height, "columns": self.plan.width,
                       "transfer_syntax_uid": self.transfer_syntax_uid, "iod": self.iod,
                       "sop_instance_uid": self.sop_instance_uid,
                       "study_instance_uid": self.study_instance_uid,
                       "series_instance_uid": self.series_instance_uid},
            "plan": self.plan.to_dict(),
            "passthrough": self.plan.passthrough,
            "encoder": self.encoder,
            "elementary_stream_sha256": self.elementary_stream_sha256,
            "timing": self.timing.summary(),
            "transforms": self.transforms,
            "picture_boxes": self.picture_boxes,
            "notes": self.notes,
            "elapsed_s": round(self.elapsed_s, 3),
        }
        if mapping:
            d["timing_map"] = list(self.timing.rows())
        return d


def _check_output(output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise UsageError(f"{output}: already exists; pass --force to replace it.")
    if output.is_dir():
        raise UsageError(f"{output}: is a directory; give a file name such as {output / 'video.dcm'}.")
    if not output.parent.is_dir():
        raise UsageError(f"{output.parent}: the output folder does not exist; create it first.")
    if not os.access(output.parent, os.W_OK):
        raise EnvironmentProblem(f"{output.parent}: the output folder is not writable.")


def _source_range(info: SourceInfo, requested: str) -> tuple[str, str]:
    if requested in ("full", "limited"):
        return requested, f"source colour range taken as {requested} (--source-range)"
    if info.color_range in ("full", "limited"):
        return info.color_range, f"source colour range {info.color_range}, as the stream declares"
    return "limited", "source colour range not declared; taken as limited (use --source-range full to override)"


def _decoder_errors(logs: list, info: SourceInfo) -> list[str]:
    return [m.strip() for _, name, m in logs if name and name not in info.container]


def _stale_parameter_message(info: SourceInfo, first: str, at_frame: int) -> str:
    hint = "the recording is damaged; use an undamaged copy"
    if info.codec == "h264" and info.container.startswith("mov"):
        hint = ("Chrome's MP4 recorder keeps only the first SPS/PPS after a canvas size change, "
                "so later frames decode as garbage; record as WebM/Matroska instead")
    return (f"{info.path}: the video does not decode cleanly from about source frame {at_frame} "
            f"on ({first}); {hint}. Nothing was written.")


def _transcode(info: SourceInfo, plan: Plan, scanned: Scan, source_range: str,
               stream_file, stream_path: Path, progress: Progress | None):
    settings = settings_for(plan.syntax, plan.rate)
    shaper = FrameShaper(plan.width, plan.height, settings, source_range)
    encoder = Encoder(settings, plan.width, plan.height, plan.rate, stream_file, stream_path)
    cfr: ConstantRate[av.VideoFrame] = ConstantRate(plan.rate)
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
                        encoder.encode(shaper.shape(shown), index)
                if progress:
                    progress(1)
                errors = _decoder_errors(logs, info)
                if errors:
                    raise InputError(_stale_parameter_message(info, errors[0], decoded))
        except av.error.FFmpegError as exc:
            raise InputError(_stale_parameter_message(info, exc.strerror or str(exc), decoded)) from exc
        for index, shown in cfr.finish(scanned.last_duration):
            encoder.encode(shaper.shape(shown), index)
    es = encoder.finish()
    transforms = []
    if source_range != settings.color_range:
        transforms.append(f"colour range converted {source_range} -> {settings.color_range} "
                          f"(BT.709 matrix, swscale) for {plan.syntax.photometric}")
    for (w, h), place in shaper.placements.items():
        if (w, h) != (place.width, place.height):
            how = "letterboxed" if place.padded else "scaled"
            transforms.append(f"{w}x{h} {how} to {place.width}x{place.height} "
                              f"(picture at {place.x},{place.y} size {place.box_width}x{place.box_height})")
    for number, (at, w, h) in enumerate(sizes[1:], 1):
        pw, ph = sizes[number - 1][1:]
        transforms.append(f"canvas size changed at source frame {at} from {pw}x{ph} to {w}x{h}")
    boxes = [{"source_width": w, "source_height": h, "x": p.x, "y": p.y,
              "width": p.box_width, "height": p.box_height} for (w, h), p in shaper.placements.items()]
    return es, cfr.map, transforms, settings.to_dict(), boxes


def _passthrough(info: SourceInfo, scanned: Scan, plan: Plan, stream_file, stream_path: Path,
                 progress: Progress | None):
    """Copy the H.264 access units unchanged (AVCC -> Annex B is a framing change, not a re-encode)."""
    es = ElementaryStream(path=stream_path)
    cfr_map = TimingMap(rate=plan.rate, first_pts=scanned.pts[0])
    with av.open(str(info.path), "r", format=info.container) as container:
        stream = container.streams.video[0]
        needs_annexb = (stream.codec_context.extradata or b"").startswith(b"\x01")
        bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream) if needs_annexb else None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            for out in (bsf.filter(packet) if bsf else [packet]):
                es.append(stream_file, bytes(out))
            if progress:
                progress(1)
        for out in (bsf.filter(None) if bsf else []):
            es.append(stream_file, bytes(out))
    stream_file.flush()
    cfr_map.source_pts.extend(scanned.pts)
    cfr_map.output_source.extend(range(len(scanned.pts)))
    cfr_map.source_duration = len(scanned.pts) / float(plan.rate)
    box = {"source_width": info.width, "source_height": info.height, "x": 0, "y": 0,
           "width": info.width, "height": info.height}
    return es, cfr_map, ["none: the H.264 bitstream is wrapped unchanged (passthrough)"], None, [box]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(source: Path | str, output: Path | str, options: ConvertOptions | None = None,
            progress: Progress | None = None, on_plan: Callable[[Plan, Scan], None] | None = None
            ) -> ConversionResult:
    """Convert `source` to a DICOM video object at `output`; raise DvqaError on any failure.

    On failure nothing is left at `output`; the input is only ever read.
    """
    started = time.monotonic()
    options = options or ConvertOptions()
    source, output = Path(source), Path(output)
    chosen_iod = VideoIOD.named(options.iod)
    if options.source_range not in ("auto", "full", "limited"):
        raise UsageError(f"--source-range {options.source_range!r}: use auto, full or limited.")
    _check_output(output, options.force)
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
    source_range, range_note = _source_range(info, options.source_range)
    notes = [range_note]
    if info.audio:
        notes.append(f"audio dropped ({', '.join(info.audio)}): voices can carry patient "
                     "information and the video IODs hold no audio")

    workdir = tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent)
    stream_path = Path(workdir) / "stream.bin"
    dicom_tmp = Path(workdir) / "out.dcm"
    try:
        with open(stream_path, "wb") as stream_file:
            if plan.passthrough:
                es, timing, transforms, encoder, boxes = _passthrough(info, scanned, plan, stream_file,
                                                               stream_path, progress)
            else:
                es, timing, transforms, encoder, boxes = _transcode(info, plan, scanned, source_range,
                                                             stream_file, stream_path, progress)
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
        ds = build_dataset(chosen_iod, plan.syntax, pixels, options.metadata, options.uid_root, uid)
        pieces = dicomfile.fragments(stream_path, es.size, es.frame_offsets, es.frame_lengths,
                                     plan.syntax.one_fragment_per_frame, max_fragment)
        dicomfile.write(ds, dicom_tmp, pieces, basic_offset_table=plan.syntax.one_fragment_per_frame)
        es_hash = _sha256(stream_path)
        _move_into_place(dicom_tmp, output, options.force)
        return ConversionResult(
            source=info, plan=plan, output=output, output_size=output.stat().st_size,
            frames=frames, timing=timing, transforms=transforms, picture_boxes=boxes, encoder=encoder,
            elementary_stream_sha256=es_hash, sop_instance_uid=str(ds.SOPInstanceUID),
            study_instance_uid=str(ds.StudyInstanceUID), series_instance_uid=str(ds.SeriesInstanceUID),
            transfer_syntax_uid=uid, iod=chosen_iod.title, elapsed_s=time.monotonic() - started,
            notes=notes,
        )
    finally:
        for leftover in (stream_path, dicom_tmp):
            leftover.unlink(missing_ok=True)
        os.rmdir(workdir)


def _move_into_place(tmp: Path, output: Path, force: bool) -> None:
    if force:
        os.replace(tmp, output)
        return
    try:
        os.link(tmp, output)  # fails if OUT appeared meanwhile: never clobber without --force
    except FileExistsError:
        raise UsageError(f"{output}: already exists; pass --force to replace it.") from None
