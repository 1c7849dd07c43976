"""The last step of every conversion: the written stream made into the DICOM file, checked, signed,
placed and recorded - one code path for a whole file (dvqa.convert.pipeline) and for a stream read
while it arrives (dvqa.convert.live), so both give the same evidence.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import pydicom

from dvqa import __version__
from dvqa.convert.options import ConvertOptions
from dvqa.core import outputs, profiles, signals
from dvqa.core.digest import sha256_file
from dvqa.core.errors import DvqaError, ExitCode, InputError
from dvqa.core.findings import Finding, Severity, exit_code
from dvqa.core.profiles import Profile
from dvqa.dicom import dicomfile, syntaxes
from dvqa.dicom.iod import PixelFacts, VideoIOD
from dvqa.dicom.iod import build as build_dataset
from dvqa.quality.meter import QualityResult
from dvqa.trust.audit import conversion_event
from dvqa.trust.signature import SignatureResult, sign_file
from dvqa.validate import streamcheck
from dvqa.video.encode import ElementaryStream
from dvqa.video.plan import Plan
from dvqa.video.probe import SourceInfo
from dvqa.video.timing import TimingMap


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


@dataclass
class Attempt:
    recorded: ConversionResult | None = None  # set once the outcome is final (output placed) and recorded


@dataclass
class Work:
    """What the conversion loop produced: the stream and the facts about it, before it is packaged."""

    es: ElementaryStream
    timing: TimingMap
    transforms: list[str]
    encoder: dict[str, object] | None
    boxes: list[dict[str, int]]
    quality: QualityResult | None
    partial: str = ""  # set when a live stream was cut and --keep-partial converted what arrived


def package(source: Path, output: Path, options: ConvertOptions, info: SourceInfo, plan: Plan, work: Work,
             chosen_iod: VideoIOD, profile: Profile | None, notes: list[str], started: float, stream_path: Path,
             dicom_tmp: Path, attempt: Attempt, input_sha256: str, input_facts: dict | None = None
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
    dicomfile.write(ds, dicom_tmp, pieces, basic_offset_table=plan.syntax.one_fragment_per_frame, sync=False)
    synced = outputs.BackgroundSync(dicom_tmp)  # on disk while it is checked, before anything else happens to it
    # unsigned, the file is final now: its hash is made beside the checks below (hashlib runs without the GIL)
    final_hash = None if options.signer else _hashed_aside(dicom_tmp)
    stream_hash = _hashed_aside(stream_path)
    if quality:  # the bytes that were decoded and scored are the bytes in the file
        _check_pixel_data(dicom_tmp, es, stream_hash, plan.syntax.one_fragment_per_frame)
    es_hash = stream_hash.result()
    findings = profiles.check_quality(profile, quality, str(output)) if profile and quality else []
    if work.partial:
        findings.append(Finding(Severity.WARNING, "convert.partial-stream", work.partial, str(output)))
    # the file as written, checked the way `dvqa validate` checks anyone's (stream layer): an
    # error here is a dvqa bug, and the file is not kept unless --keep-failed
    validation = [replace(f, file=str(output)) for f in streamcheck.check(dicom_tmp, pydicom.dcmread(
        str(dicom_tmp), stop_before_pixels=True))]
    findings += validation
    synced.wait()
    written = exit_code(findings) == ExitCode.OK or options.keep_failed
    signed = None
    if options.signer and written:  # signed last: the signature covers the final file
        signed = sign_file(dicom_tmp, dicom_tmp, options.signer, options.signature_profile,
                           uid_root=options.uid_root)
    os.chmod(dicom_tmp, outputs.file_mode())
    output_size = dicom_tmp.stat().st_size
    output_sha256 = final_hash.result() if final_hash else sha256_file(dicom_tmp)
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

def _hashed_aside(path: Path) -> Future[str]:
    """The SHA-256 of `path`, made in a thread of its own."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="dvqa-sha256")
    try:
        return pool.submit(sha256_file, path)
    finally:
        pool.shutdown(wait=False)


def _encoder_build(stream_path: Path) -> str:
    """x264 and x265 write their version and options into an SEI message at the stream's start."""
    with open(stream_path, "rb") as handle:
        head = handle.read(1 << 16)
    found = re.search(rb"(x264 - core [ -~]{1,80}|x265 \(build [ -~]{1,80})", head)
    return found.group(1).decode("ascii").split(" - Copyleft")[0].split(" - H.265")[0] if found else ""


def _check_pixel_data(path: Path, es: ElementaryStream, es_hash: Future[str], per_frame: bool) -> None:
    """Read the written file's fragments back and prove they hold the scored stream, byte for byte (`es_hash`:
    the stream file's SHA-256, being made meanwhile)."""
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
    if digest.hexdigest() != es_hash.result() or total - es.size not in (0, 1):
        raise DvqaError(f"{path}: the Pixel Data written differs from the stream that was scored; "
                        "nothing was written - report this as a dvqa bug.")
