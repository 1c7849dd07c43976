"""The video IODs dvqa writes, built in one place (PS3.3 A.32.5 - A.32.7).

Video Endoscopic, Video Microscopic and Video Photographic Image share their
modules: Patient, General Study, General Series, General Equipment, General
Image, Image Pixel, Cine, Multi-frame, Acquisition Context, VL Image and SOP
Common. Every Type 1 and Type 2 attribute of those modules is written here;
Type 2 values the caller does not know stay empty, as PS3.5 §7.4 allows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, generate_uid

from dvqa import __version__
from dvqa.core.errors import InputError, UsageError
from dvqa.core.regular import MIB, open_regular, read_regular
from dvqa.dicom import dicomread, implementation
from dvqa.dicom.syntaxes import COMMON_RATES, VideoSyntax
from dvqa.dicom.values import REFERENCE, check_dataset


class VideoIOD(Enum):
    """The SOP class, its Modality (PS3.3 C.7.3.1.1.1) and the option name."""

    ENDOSCOPIC = ("endoscopic", "1.2.840.10008.5.1.4.1.1.77.1.1.1", "ES", "Video Endoscopic Image Storage")
    MICROSCOPIC = ("microscopic", "1.2.840.10008.5.1.4.1.1.77.1.2.1", "GM", "Video Microscopic Image Storage")
    PHOTOGRAPHIC = ("photographic", "1.2.840.10008.5.1.4.1.1.77.1.4.1", "XC", "Video Photographic Image Storage")

    def __init__(self, option: str, sop_class: str, modality: str, title: str) -> None:
        self.option = option
        self.sop_class = sop_class
        self.modality = modality
        self.title = title

    @classmethod
    def named(cls, option: str) -> "VideoIOD":
        for iod in cls:
            if iod.option == option:
                return iod
        raise UsageError(f"unknown IOD {option!r}; use one of {', '.join(i.option for i in cls)}.")


# Attributes that identify patient and study; copied from a worklist result or
# a DICOM JSON file. Anything outside this list is ignored, never written.
COPYABLE = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDsSequence", "PatientAge", "PatientWeight", "PatientSize",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription", "RequestAttributesSequence", "AnatomicRegionSequence",
    "IssuerOfAccessionNumberSequence", "SpecificCharacterSet",
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "BodyPartExamined", "Laterality",
    "InstitutionName", "InstitutionalDepartmentName", "StationName", "OperatorsName",
)


@dataclass
class Metadata:
    """Patient / study / series facts supplied by the caller; unset Type 2 values stay empty."""

    values: dict[str, object] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # keyword -> where the value came from, for messages

    def update_from_dataset(self, ds: Dataset, origin: str = "") -> None:
        for keyword in COPYABLE:
            if keyword in ds:
                self.values[keyword] = ds[keyword].value
                self.origins[keyword] = origin

    def merge(self, other: "Metadata") -> None:
        self.values.update(other.values)
        self.origins.update(other.origins)

    def set(self, keyword: str, value: object, origin: str) -> None:
        self.values[keyword] = value
        self.origins[keyword] = origin

    def check(self) -> None:
        """Every value against its VR and VM (dvqa.dicom.values) before anything is written: a value a PACS or
        dciodvfy would reject - too long, control characters, a backslash making two IDs, patient data in
        a UID - is refused here with the option or file it came from."""
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"  # what build() writes, unless the caller's data says otherwise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's own length warnings: reported below, in one sentence
            for keyword, value in self.values.items():
                try:
                    setattr(ds, keyword, value)
                except (ValueError, TypeError, OverflowError) as exc:
                    raise UsageError(f"{self._origin(keyword)}: {keyword} cannot be encoded ({exc}); fix the value.") \
                        from None
        problems = list(check_dataset(ds))
        if problems:
            first = problems[0]
            keyword = first.where.split(" ")[0]
            more = f" ({len(problems) - 1} more problem(s) after this one)" if len(problems) > 1 else ""
            raise UsageError(f"{self._origin(keyword)}: {first.message} [{REFERENCE}]{more}; fix the value - "
                             "nothing was written.")

    def _origin(self, keyword: str) -> str:
        return self.origins.get(keyword) or "the patient/study metadata"

    @classmethod
    def from_json_file(cls, path: Path, what: str = "the DICOM JSON metadata file", cap: int = 0,
                       source: str = "") -> "Metadata":
        """PS3.18 F.2 DICOM JSON model: {"00100010": {"vr": "PN", "Value": [...]}, ...}.

        Read as a regular file of at most `cap` bytes (METADATA_JSON_CAP by default; dvqa.core.regular):
        a FIFO given here would wait forever, /dev/zero would fill memory. `what` names the file in
        messages, `source` says where its values came from (default: the --metadata-json option)."""
        text = read_regular(Path(path), what, cap or METADATA_JSON_CAP)
        try:
            raw = json.loads(text.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{path}: {what} is not a DICOM JSON object (PS3.18 F.2) ({exc}); fix the file.") \
                from None
        return cls.from_json_object(raw, source or f"--metadata-json {path}", f"{path}: {what}")

    @classmethod
    def from_json_object(cls, raw: object, origin: str, named: str = "") -> "Metadata":
        """The patient/study attributes of a parsed DICOM JSON object (or of the first object of a QIDO-RS answer);
        `origin` says where the values came from (a file, or a field of `dvqa serve`'s recording API), `named`
        what messages call it (default: `origin`)."""
        named = named or origin
        try:
            if isinstance(raw, list):  # a QIDO-RS answer: take the first object
                raw = raw[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's value warnings: check() reports them in one sentence
                ds = Dataset.from_json(raw)  # type: ignore[arg-type]
        except RecursionError:
            raise InputError(f"{named} is nested too deeply to be DICOM JSON; fix it.") from None
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise InputError(f"{named} is not a DICOM JSON object (PS3.18 F.2) ({exc}); fix it.") from None
        meta = cls()
        meta.update_from_dataset(ds, origin)
        return meta

    @classmethod
    def from_dicom_file(cls, path: Path, what: str = "the DICOM metadata file", source: str = "") -> "Metadata":
        """The patient/study attributes of a DICOM file (a worklist result, or an earlier video of the study).

        Opened as a regular file (dvqa.core.regular.open_regular: a FIFO or a device is refused on the
        descriptor, never waited on or read without end). Only the attributes before Pixel Data are read,
        so no size cap is needed beyond the file's own: a video's many megabytes of pixels are skipped."""
        fd = open_regular(Path(path), what)
        try:
            with os.fdopen(fd, "rb") as handle:
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise InputError(f"{path}: {what} is not a readable DICOM file ({dicomread.why_unreadable(exc)}); give "
                             "a worklist or study file.") from None
        meta = cls()
        meta.update_from_dataset(ds, source or f"--metadata-from {path}")
        return meta


METADATA_JSON_CAP = 16 * MIB  # patient/study attributes are kilobytes; a QIDO-RS answer of many studies, megabytes

# VL Image Module (C.8.12.1): Anatomic Region Sequence is Type 1C and may not be
# empty. dvqa does not know the anatomy, so unless the caller gives a region it
# says so explicitly with SNOMED CT 87100004 "Topography unknown".
UNKNOWN_TOPOGRAPHY = ("87100004", "SCT", "Topography unknown")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


@dataclass(frozen=True)
class PixelFacts:
    rows: int
    columns: int
    frames: int
    rate: Fraction
    lossy_ratio: float
    passthrough: bool
    source_description: str


@dataclass(frozen=True)
class Written:
    """One attribute of the data sets `build` writes, as a DICOM Conformance Statement describes it
    (PS3.2 Annex "IOD contents": presence ALWAYS / VNAP / ANAP / EMPTY, source USER / AUTO / MWL / CONFIG)."""

    keyword: str
    presence: str
    source: str
    origin: str  # where the value comes from, in words


_USER_OR_MWL = "--patient-*/--study-* options, or copied from --metadata-from (a worklist result) / --metadata-json"
_COPIED = "copied when --metadata-from / --metadata-json holds it"
_PIXELS = "from the encoded stream (PS3.5 §8.2)"

# What `build` writes, in its order; a test converts a file and compares it with this table, attribute by
# attribute, so the conformance statement (`dvqa report conformance`) cannot drift from the writer.
WRITTEN: tuple[Written, ...] = (
    Written("SpecificCharacterSet", "ALWAYS", "AUTO", "ISO_IR 192 (UTF-8), or the character set of copied metadata"),
    Written("PatientName", "VNAP", "USER, MWL", _USER_OR_MWL),
    Written("PatientID", "VNAP", "USER, MWL", _USER_OR_MWL),
    Written("PatientBirthDate", "VNAP", "USER, MWL", _USER_OR_MWL),
    Written("PatientSex", "VNAP", "USER, MWL", _USER_OR_MWL),
    Written("StudyInstanceUID", "ALWAYS", "AUTO, USER, MWL", "generated (--uid-root), or --study-uid / copied"),
    Written("StudyDate", "ALWAYS", "AUTO, MWL", "the conversion's date, or copied"),
    Written("StudyTime", "ALWAYS", "AUTO, MWL", "the conversion's time, or copied"),
    Written("ReferringPhysicianName", "VNAP", "MWL", _COPIED),
    Written("StudyID", "VNAP", "MWL", _COPIED),
    Written("AccessionNumber", "VNAP", "USER, MWL", _USER_OR_MWL),
    Written("Modality", "ALWAYS", "CONFIG", "ES, GM or XC by --iod"),
    Written("SeriesInstanceUID", "ALWAYS", "AUTO, MWL", "generated (--uid-root), or copied"),
    Written("SeriesNumber", "ALWAYS", "AUTO, MWL", "1, or copied"),
    Written("Laterality", "VNAP", "MWL", _COPIED),
    Written("Manufacturer", "EMPTY", "AUTO", "empty (Type 2): dvqa is software, not the recording device"),
    Written("SoftwareVersions", "ALWAYS", "AUTO", "dvqa's version"),
    Written("InstanceNumber", "ALWAYS", "AUTO", "1"),
    Written("PatientOrientation", "EMPTY", "AUTO", "empty (Type 2C): not known for video"),
    Written("ContentDate", "ALWAYS", "AUTO", "the conversion's date"),
    Written("ContentTime", "ALWAYS", "AUTO", "the conversion's time"),
    Written("AcquisitionDateTime", "ALWAYS", "AUTO", "the conversion's date and time with its UTC offset"),
    Written("ImageType", "ALWAYS", "AUTO", "ORIGINAL\\PRIMARY"),
    Written("LossyImageCompression", "ALWAYS", "AUTO", "01: every video syntax is lossy"),
    Written("LossyImageCompressionRatio", "ALWAYS", "AUTO", "uncompressed size / stream size"),
    Written("LossyImageCompressionMethod", "ALWAYS", "AUTO", "the syntax table's method (ISO_14496_10, ...)"),
    Written("AnatomicRegionSequence", "ALWAYS", "AUTO, MWL", "SNOMED CT 87100004 Topography unknown, or copied"),
    Written("DerivationDescription", "ALWAYS", "AUTO", "the source's codec and container, re-encoded or passed through"),
    Written("AcquisitionContextSequence", "EMPTY", "AUTO", "empty (Type 2)"),
    Written("SamplesPerPixel", "ALWAYS", "AUTO", _PIXELS),
    Written("PhotometricInterpretation", "ALWAYS", "AUTO", _PIXELS),
    Written("PlanarConfiguration", "ALWAYS", "AUTO", _PIXELS),
    Written("Rows", "ALWAYS", "AUTO", _PIXELS),
    Written("Columns", "ALWAYS", "AUTO", _PIXELS),
    Written("BitsAllocated", "ALWAYS", "AUTO", _PIXELS),
    Written("BitsStored", "ALWAYS", "AUTO", _PIXELS),
    Written("HighBit", "ALWAYS", "AUTO", _PIXELS),
    Written("PixelRepresentation", "ALWAYS", "AUTO", _PIXELS),
    Written("NumberOfFrames", "ALWAYS", "AUTO", "frames written (the timing map)"),
    Written("FrameIncrementPointer", "ALWAYS", "AUTO", "Frame Time (0018,1063)"),
    Written("FrameTime", "ALWAYS", "AUTO", "1000 / the output rate (ms)"),
    Written("CineRate", "ALWAYS", "AUTO", "the output rate, rounded"),
    Written("RecommendedDisplayFrameRate", "ALWAYS", "AUTO", "the output rate, rounded"),
    Written("PreferredPlaybackSequencing", "ALWAYS", "AUTO", "0 (looping)"),
    Written("StartTrim", "ALWAYS", "AUTO", "1"),
    Written("StopTrim", "ALWAYS", "AUTO", "the number of frames"),
    Written("ActualFrameDuration", "ALWAYS", "AUTO", "the frame time, rounded (ms)"),
    Written("EffectiveDuration", "ALWAYS", "AUTO", "frames x frame time (s)"),
    Written("SOPClassUID", "ALWAYS", "CONFIG", "the video SOP class of --iod"),
    Written("SOPInstanceUID", "ALWAYS", "AUTO", "generated (--uid-root)"),
    Written("InstanceCreationDate", "ALWAYS", "AUTO", "the conversion's date"),
    Written("InstanceCreationTime", "ALWAYS", "AUTO", "the conversion's time"),
    Written("PixelData", "ALWAYS", "AUTO", "the encapsulated stream (PS3.5 §A.4)"),
    *(Written(keyword, "ANAP", "MWL", _COPIED) for keyword in COPYABLE if keyword not in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
        "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "AnatomicRegionSequence",
        "SpecificCharacterSet", "SeriesInstanceUID", "SeriesNumber", "Laterality")),
    Written("StudyDescription", "ANAP", "USER, MWL", "--study-description, or copied"),
    Written("DigitalSignaturesSequence", "ANAP", "AUTO", "with --sign (PS3.15 Annex C)"),
    Written("MACParametersSequence", "ANAP", "AUTO", "with --sign"),
)


# namespace of dvqa's name-based UIDs (a UUID drawn once for dvqa; ISO/IEC 9834-8 §14)
UID_NAMESPACE = uuid.UUID("5f0c4f33-6d1e-4b3e-9a59-1f2f3b0d8a41")


def make_uid(root: str | None, seed: str | None = None, role: str = "") -> UID:
    """A new UID under `root` (PS3.5 §9: at most 64 characters), or the 2.25 UUID form (PS3.5 §B.2).

    With a `seed`, the UID is derived from it and `role` instead of drawn at random: a name-based
    UUID (version 5, ISO/IEC 9834-8) without a root, pydicom's SHA-512 derivation under one. The
    caller must make the seed name the object exactly (same seed, same object), as dvqa evidence
    does with the input's hash, the versions and the options, so a rebuild gives the same UIDs.
    """
    if root:
        prefix = root if root.endswith(".") else root + "."
        if not UID(prefix[:-1]).is_valid or len(prefix) > 40:
            raise UsageError(f"--uid-root {root!r} is not a valid UID root of at most 39 characters.")
        return generate_uid(prefix=prefix, entropy_srcs=[seed, role] if seed else None)
    if seed:
        return UID(f"2.25.{uuid.uuid5(UID_NAMESPACE, f'{seed}/{role}').int}")
    return generate_uid(prefix=None)


def build(iod: VideoIOD, syntax: VideoSyntax, pixels: PixelFacts, metadata: Metadata,
          uid_root: str | None, transfer_syntax_uid: str, uid_seed: str | None = None) -> Dataset:
    """The whole dataset except Pixel Data, ready to be written before the stream."""
    now = dt.datetime.now(dt.timezone.utc).astimezone()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    sop_uid = make_uid(uid_root, uid_seed, "sop")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = iod.sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax_uid
    identity = implementation.current()
    meta.ImplementationClassUID = identity.class_uid
    meta.ImplementationVersionName = identity.version_name

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    # Patient (C.7.1.1) - Type 2
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = make_uid(uid_root, uid_seed, "study")
    ds.StudyDate = date
    ds.StudyTime = time
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    # General Series (C.7.3.1)
    ds.Modality = iod.modality
    ds.SeriesInstanceUID = make_uid(uid_root, uid_seed, "series")
    ds.SeriesNumber = "1"
    ds.Laterality = ""  # Type 2C: empty = unknown, which it is until the caller says otherwise
    # General Equipment (C.7.5.1)
    ds.Manufacturer = ""
    ds.SoftwareVersions = f"dvqa {__version__}"
    # General Image (C.7.6.1) and VL Image (C.8.12.1)
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ""
    ds.ContentDate = date
    ds.ContentTime = time
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S.%f%z")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [f"{pixels.lossy_ratio:.2f}"[:16]]
    ds.LossyImageCompressionMethod = [syntax.lossy_method]
    ds.AnatomicRegionSequence = [_code(*UNKNOWN_TOPOGRAPHY)]
    ds.DerivationDescription = pixels.source_description[:1024]
    # Acquisition Context (C.7.6.14): Type 2 sequence, empty
    ds.AcquisitionContextSequence = []
    # Image Pixel (C.7.6.3) as PS3.5 §8.2 requires for the video syntaxes
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = syntax.photometric
    ds.PlanarConfiguration = 0
    ds.Rows = pixels.rows
    ds.Columns = pixels.columns
    ds.BitsAllocated = 8 if syntax.bits == 8 else 16
    ds.BitsStored = syntax.bits
    ds.HighBit = syntax.bits - 1
    ds.PixelRepresentation = 0
    # Cine (C.7.6.5) and Multi-frame (C.7.6.6)
    frame_ms = 1000.0 / float(pixels.rate)
    ds.NumberOfFrames = pixels.frames
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.FrameTime = f"{frame_ms:.6g}"
    ds.CineRate = round(float(pixels.rate))
    ds.RecommendedDisplayFrameRate = round(float(pixels.rate))
    ds.PreferredPlaybackSequencing = 0
    ds.StartTrim = 1
    ds.StopTrim = pixels.frames
    ds.ActualFrameDuration = max(1, round(frame_ms))
    ds.EffectiveDuration = f"{pixels.frames * frame_ms / 1000.0:.6g}"
    # SOP Common (C.12.1)
    ds.SOPClassUID = iod.sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time

    for keyword, value in metadata.values.items():
        setattr(ds, keyword, value)
    return ds


def declared_rate(ds: Dataset) -> Fraction | None:
    """The frame rate a DICOM video header states: Frame Time first, else Cine Rate.

    Frame Time is a decimal string of at most 16 characters (33.3333 for 30 fps), so a rate within
    0.01 fps of a common video rate is taken as that rate.
    """
    if "FrameTime" in ds and ds.FrameTime not in (None, "") and float(ds.FrameTime) > 0:
        rate = Fraction(1000) / Fraction(str(ds.FrameTime)).limit_denominator(1_000_000)
        nearest = min(COMMON_RATES, key=lambda r: abs(r - rate))
        return nearest if abs(nearest - rate) < Fraction(1, 100) else rate
    if "CineRate" in ds and ds.CineRate not in (None, "") and int(ds.CineRate) > 0:
        return Fraction(int(ds.CineRate))
    return None
