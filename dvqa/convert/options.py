"""What a conversion is asked to do: the options `convert`, live conversion, batch and the evidence
build share. Their own module, because the packaging step (package.py) and the pipeline that calls it
both need them: kept in pipeline.py they made an import circle."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from dvqa.core.profiles import Profile
from dvqa.dicom.iod import Metadata
from dvqa.trust.audit import AuditLog
from dvqa.trust.signature import Signer
from dvqa.video.plan import PinnedRate


@dataclass
class ConvertOptions:
    syntax: str = "auto"
    rate: Fraction | None = None  # --rate: the output rate, instead of the one measured (or a profile's)
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

    def pinned_rate(self, profile: Profile | None) -> PinnedRate | None:
        """The output rate set rather than measured: --rate first, then the profile's `output_rate`."""
        if self.rate is not None:
            return PinnedRate(self.rate, "--rate")
        if profile is not None and profile.output_rate is not None:
            return PinnedRate(profile.output_rate, f"the {profile.name} profile's output_rate",
                              profile.output_rate_source)
        return None


@dataclass(frozen=True)
class PatientStudyField:
    """One patient/study value a caller may give by itself: `dvqa convert --OPTION` and the same-named field of
    `dvqa serve`'s recording API (the option without its dashes, `-` as `_`). Each is checked against its VR by
    Metadata.check, so both refuse exactly the same values."""

    keyword: str  # the DICOM keyword it sets
    option: str  # the command-line option
    help: str
    choices: tuple[str, ...] = ()  # when the standard enumerates the values

    @property
    def field(self) -> str:
        return self.option.lstrip("-").replace("-", "_")


PATIENT_STUDY_FIELDS: tuple[PatientStudyField, ...] = (
    PatientStudyField("PatientName", "--patient-name", "Patient's Name (0010,0010), e.g. Doe^Jane."),
    PatientStudyField("PatientID", "--patient-id", "Patient ID (0010,0020)."),
    PatientStudyField("PatientBirthDate", "--patient-birth-date", "Patient's Birth Date (0010,0030), YYYYMMDD."),
    PatientStudyField("PatientSex", "--patient-sex", "Patient's Sex (0010,0040).", ("M", "F", "O")),
    PatientStudyField("AccessionNumber", "--accession-number", "Accession Number (0008,0050) of the order."),
    PatientStudyField("StudyInstanceUID", "--study-uid", "Study Instance UID to file the video under."),
    PatientStudyField("StudyDescription", "--study-description", "Study Description (0008,1030)."),
)
