"""The one table of DICOM video transfer syntaxes.

Every limit dvqa knows about a video transfer syntax lives here: `convert` picks
from it, `validate` checks against it, reports render it. Do not restate these
numbers anywhere else.

Sources: DICOM PS3.5 §8.2.5 (MPEG2 MP@ML), §8.2.6 (MPEG2 MP@HL), §8.2.7
(MPEG-4 AVC/H.264 High Profile / Level 4.1 and BD-compatible), §8.2.8 (High
Profile / Level 4.2), §8.2.9/§8.2.10 (HEVC/H.265 Main and Main 10 Profile /
Level 5.1), §8.2.1 and Table A.4-1 (JPEG Baseline, one fragment per frame),
PS3.6 Table A-1 (UIDs). Level limits (MaxFS, MaxMBPS) are from ITU-T H.264
Table A-1 and ITU-T H.265 Table A.8. The MPEG-2 and BD-compatible frame
formats are the discrete sets of PS3.5 Tables 8.2.5-1/-2, 8.2.6-1/-2 and 8.2.7-1,
checked by hand against the 2020a and 2024c text (MP@HL: 1080 lines only interlaced at
25/30 Hz frame rate, 720 lines progressive at 50/60 Hz); when the standard's data is
bundled (issue 4) a test should cross-check them mechanically.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

NTSC = Fraction(30000, 1001)
NTSC_DOUBLE = Fraction(60000, 1001)
FILM_NTSC = Fraction(24000, 1001)

# the rates cameras and recorders aim at: a measured or stated rate this close to one is taken as it
COMMON_RATES = (
    FILM_NTSC, Fraction(24), Fraction(25), NTSC, Fraction(30), Fraction(50), NTSC_DOUBLE, Fraction(60),
)


@dataclass(frozen=True)
class FrameFormat:
    """One frame size and rate the standard lists explicitly for a syntax."""

    columns: int
    rows: int
    rate: Fraction


@dataclass(frozen=True)
class VideoSyntax:
    """A video transfer syntax and what a stream must satisfy to be carried by it."""

    name: str
    uid: str
    title: str
    codec: str  # FFmpeg codec name of the elementary stream
    lossy_method: str  # Lossy Image Compression Method (0028,2114), PS3.3 C.7.6.1.1.5
    photometric: str  # Photometric Interpretation the stream implies, PS3.5 §8.2
    profile: str
    level: str
    bits: int = 8
    max_columns: int = 0  # 0: only the explicit formats below are allowed
    max_rows: int = 0
    max_rate: Fraction = Fraction(0)
    max_frame_macroblocks: int = 0  # level MaxFS in 16x16 macroblocks
    max_macroblock_rate: int = 0  # level MaxMBPS
    formats: tuple[FrameFormat, ...] = ()
    fragmentable: bool = False
    one_fragment_per_frame: bool = False  # JPEG: each frame its own fragment
    fragmentable_uid: str = ""  # the variant used when the stream exceeds one fragment
    support_rank: int = 99  # lower = more widely supported; auto picks the lowest that fits

    def allows(self, columns: int, rows: int, rate: Fraction) -> bool:
        """Whether a stream of this size and rate may be carried by this syntax."""
        if self.formats:
            return any(
                f.columns == columns and f.rows == rows and f.rate == rate for f in self.formats
            )
        if self.max_columns and (columns > self.max_columns or rows > self.max_rows):
            return False
        if self.max_rate and rate > self.max_rate:
            return False
        if self.max_frame_macroblocks:
            mbs = -(-columns // 16) * -(-rows // 16)
            if mbs > self.max_frame_macroblocks:
                return False
            if self.max_macroblock_rate and mbs * rate > self.max_macroblock_rate:
                return False
        return True

    @property
    def rates(self) -> tuple[Fraction, ...]:
        """Explicitly allowed rates, empty when any rate within the limits is allowed."""
        return tuple(sorted({f.rate for f in self.formats}))


# PS3.5 §8.2.6 Note 2: a "30 Hz" camera may run at 30 or 30/1.001 fps, a "60 Hz" one at 60 or
# 60/1.001, so both are listed; dvqa encodes at the one nearer the source's rate. The same
# holds for 525-line MP@ML (§8.2.5).
_MPEG2_ML = (FrameFormat(720, 480, NTSC), FrameFormat(720, 480, Fraction(30)),
             FrameFormat(720, 576, Fraction(25)))
_MPEG2_HL = (
    FrameFormat(1920, 1080, Fraction(25)),
    FrameFormat(1920, 1080, NTSC),
    FrameFormat(1920, 1080, Fraction(30)),
    FrameFormat(1280, 720, Fraction(50)),
    FrameFormat(1280, 720, NTSC_DOUBLE),
    FrameFormat(1280, 720, Fraction(60)),
)
_BD = (
    *(FrameFormat(c, 1080, r) for c in (1920, 1440) for r in (Fraction(25), NTSC, FILM_NTSC, Fraction(24))),
    *(FrameFormat(1280, 720, r) for r in (Fraction(50), NTSC_DOUBLE, FILM_NTSC, Fraction(24))),
    FrameFormat(720, 480, NTSC),
    FrameFormat(720, 576, Fraction(25)),
)

SYNTAXES: tuple[VideoSyntax, ...] = (
    VideoSyntax(
        name="h264-high-4.1", uid="1.2.840.10008.1.2.4.102",
        title="MPEG-4 AVC/H.264 High Profile / Level 4.1",
        codec="h264", lossy_method="ISO_14496_10", photometric="YBR_PARTIAL_420",
        profile="High", level="4.1", max_columns=1920, max_rows=1080, max_rate=Fraction(60),
        max_frame_macroblocks=8192, max_macroblock_rate=245760,
        fragmentable_uid="1.2.840.10008.1.2.4.102.1", support_rank=1,
    ),
    VideoSyntax(
        name="h264-high-4.2", uid="1.2.840.10008.1.2.4.104",
        title="MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        codec="h264", lossy_method="ISO_14496_10", photometric="YBR_PARTIAL_420",
        profile="High", level="4.2", max_columns=1920, max_rows=1080, max_rate=Fraction(60),
        max_frame_macroblocks=8704, max_macroblock_rate=522240,
        fragmentable_uid="1.2.840.10008.1.2.4.104.1", support_rank=3,
    ),
    VideoSyntax(
        name="h264-bd-4.1", uid="1.2.840.10008.1.2.4.103",
        title="MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        codec="h264", lossy_method="ISO_14496_10", photometric="YBR_PARTIAL_420",
        profile="High", level="4.1", formats=_BD,
        fragmentable_uid="1.2.840.10008.1.2.4.103.1", support_rank=4,
    ),
    VideoSyntax(
        name="mpeg2-mp-ml", uid="1.2.840.10008.1.2.4.100",
        title="MPEG2 Main Profile / Main Level",
        codec="mpeg2video", lossy_method="ISO_13818_2", photometric="YBR_PARTIAL_420",
        profile="Main", level="Main", formats=_MPEG2_ML,
        fragmentable_uid="1.2.840.10008.1.2.4.100.1", support_rank=2,
    ),
    VideoSyntax(
        name="mpeg2-mp-hl", uid="1.2.840.10008.1.2.4.101",
        title="MPEG2 Main Profile / High Level",
        codec="mpeg2video", lossy_method="ISO_13818_2", photometric="YBR_PARTIAL_420",
        profile="Main", level="High", formats=_MPEG2_HL,
        fragmentable_uid="1.2.840.10008.1.2.4.101.1", support_rank=5,
    ),
    VideoSyntax(
        name="hevc-main", uid="1.2.840.10008.1.2.4.107",
        title="HEVC/H.265 Main Profile / Level 5.1",
        codec="hevc", lossy_method="ISO_23008_2", photometric="YBR_PARTIAL_420",
        profile="Main", level="5.1", max_columns=4096, max_rows=2176, max_rate=Fraction(60),
        support_rank=6,
    ),
    VideoSyntax(
        name="hevc-main10", uid="1.2.840.10008.1.2.4.108",
        title="HEVC/H.265 Main 10 Profile / Level 5.1",
        codec="hevc", lossy_method="ISO_23008_2", photometric="YBR_PARTIAL_420",
        profile="Main 10", level="5.1", bits=10, max_columns=4096, max_rows=2176,
        max_rate=Fraction(60), support_rank=7,
    ),
    VideoSyntax(
        name="mjpeg", uid="1.2.840.10008.1.2.4.50",
        title="JPEG Baseline (Process 1), one frame per fragment",
        codec="mjpeg", lossy_method="ISO_10918_1", photometric="YBR_FULL_422",
        profile="Baseline", level="", max_columns=65535, max_rows=65535,
        one_fragment_per_frame=True, support_rank=8,
    ),
)

BY_NAME: dict[str, VideoSyntax] = {s.name: s for s in SYNTAXES}
BY_UID: dict[str, VideoSyntax] = {s.uid: s for s in SYNTAXES}
BY_UID.update({s.fragmentable_uid: s for s in SYNTAXES if s.fragmentable_uid})

# PS3.5 §A.4: a fragment's length is a 32-bit even value below 0xFFFFFFFF.
MAX_FRAGMENT_BYTES = 0xFFFFFFFE

AUTO_CANDIDATES: tuple[str, ...] = tuple(
    s.name for s in sorted(SYNTAXES, key=lambda s: s.support_rank)
    if not s.formats and s.codec != "mjpeg"
)


def get(name: str) -> VideoSyntax:
    """Look a syntax up by its dvqa name or its UID."""
    if name in BY_NAME:
        return BY_NAME[name]
    if name in BY_UID:
        return BY_UID[name]
    raise KeyError(name)


def names() -> list[str]:
    return [s.name for s in SYNTAXES]


def writable_names() -> list[str]:
    """The syntaxes dvqa writes: the VL video IODs allow only Bits Allocated 8 (PS3.3 C.8.12.1), so
    not HEVC Main 10, which `validate` still knows."""
    return [s.name for s in SYNTAXES if s.bits == 8]
