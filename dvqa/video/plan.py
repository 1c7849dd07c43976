"""Deciding what to write: syntax, output size and rate, and whether the bitstream may pass through.

Kept apart from the conversion loop so the decision and its reasons can be
shown (and tested) without encoding anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from dvqa.core.errors import InputError, UsageError
from dvqa.core.rates import describe as fps
from dvqa.dicom import syntaxes
from dvqa.dicom.syntaxes import COMMON_RATES, VideoSyntax
from dvqa.video import timing
from dvqa.video.h264 import sps_frame_rate
from dvqa.video.probe import SourceInfo
from dvqa.video.scan import Scan
from dvqa.video.timing import RateEstimate, TimingMap, closest_allowed

# Passthrough timing tolerance: every frame within 2 ms of a constant-rate grid.
# Browsers stamp frames on a 1 ms clock, so exact timestamps are rounded by up
# to 0.5 ms; 2 ms leaves room for that and for muxer rounding, and is 6 % of a
# 30 fps interval - far below anything a viewer could show.
PASSTHROUGH_TOLERANCE_S = 0.002

# H.264 profiles a High-profile decoder must decode (ITU-T H.264 §A.2.4: High
# decoders decode Main; §A.2.1.1: Constrained Baseline streams obey Main's
# constraints via constraint_set1_flag). Plain Baseline may use FMO/ASO: not allowed.
H264_PASSABLE_PROFILES = ("Constrained Baseline", "Main", "High")


@dataclass(frozen=True)
class PinnedRate:
    """An output rate set by the user (`--rate`) or a profile (`output_rate`), instead of the measured one."""

    rate: Fraction
    by: str  # who sets it, as a message names it: "--rate", "the endoscopy profile's output_rate"
    source: str = ""  # why, when a profile sets it

    def explain(self) -> str:
        return f"{fps(self.rate)} fps, as {self.by} sets" + (f" ({self.source})" if self.source else "")


@dataclass(frozen=True)
class Plan:
    syntax: VideoSyntax
    width: int
    height: int
    rate: Fraction
    reason: str
    passthrough: bool
    passthrough_refusal: str  # why not, when passthrough is False
    # the schedule a re-encode follows (which source frame each output frame shows); a passthrough
    # keeps the stream's own frames instead
    timing: TimingMap = field(repr=False, compare=False)
    rate_reason: str = ""  # why this output rate: measured (and how), raised to keep frames, capped, or pinned
    rate_set_by: str = ""  # "--rate" or a profile, when the rate was pinned rather than measured

    def to_dict(self) -> dict[str, object]:
        return {"syntax": self.syntax.name, "uid": self.syntax.uid, "title": self.syntax.title,
                "reason": self.reason, "width": self.width, "height": self.height,
                "rate": str(self.rate), "rate_fps": round(float(self.rate), 6), "rate_reason": self.rate_reason,
                "rate_set_by": self.rate_set_by or None, "passthrough": self.passthrough,
                "passthrough_refusal": self.passthrough_refusal}


def _level_number(syntax: VideoSyntax) -> int:
    major, _, minor = syntax.level.partition(".")
    return int(major) * 10 + int(minor or 0)


def _even(n: int) -> int:
    return n + (n & 1)


def _generic_size(syntax: VideoSyntax, width: int, height: int) -> tuple[int, int]:
    """Source size (made even for 4:2:0), shrunk to the syntax's maximum when it is larger."""
    w, h = _even(width), _even(height)
    if syntax.max_columns and (w > syntax.max_columns or h > syntax.max_rows):
        scale = min(syntax.max_columns / w, syntax.max_rows / h)
        w, h = int(w * scale) & ~1, int(h * scale) & ~1
    return w, h


def _fixed_format(syntax: VideoSyntax, width: int, height: int, rate: Fraction):
    """For syntaxes with a list of formats: nearest rate, then the smallest frame holding the source."""
    def key(f: syntaxes.FrameFormat):
        holds = f.columns >= width and f.rows >= height
        return (abs(f.rate - rate), not holds, f.columns * f.rows if holds else -f.columns * f.rows)
    return min(syntax.formats, key=key)


def _cap_rate(syntax: VideoSyntax, w: int, h: int, rate: Fraction) -> Fraction:
    rate = closest_allowed(rate, (), syntax.max_rate)
    if syntax.max_macroblock_rate:
        mbs = -(-w // 16) * -(-h // 16)
        limit = Fraction(syntax.max_macroblock_rate, mbs)
        if rate > limit:
            below = [r for r in COMMON_RATES if r <= limit]
            rate = max(below) if below else Fraction(int(limit))
    return rate


def size_and_rate(syntax: VideoSyntax, info: SourceInfo, rate: Fraction) -> tuple[int, int, Fraction]:
    if syntax.formats:
        f = _fixed_format(syntax, info.width, info.height, rate)
        return f.columns, f.rows, f.rate
    w, h = _generic_size(syntax, info.width, info.height)
    return w, h, _cap_rate(syntax, w, h, rate)


def passthrough_refusal(syntax: VideoSyntax, info: SourceInfo, scan: Scan, rate: Fraction) -> str:
    """Empty when the source bitstream may be wrapped as `syntax` unchanged; else why not."""
    if info.codec != syntax.codec or syntax.codec != "h264":
        return f"source codec {info.codec} is not carried by {syntax.name} without re-encoding"
    if info.profile not in H264_PASSABLE_PROFILES:
        return f"H.264 profile {info.profile!r} is not decodable by a High-profile decoder"
    if info.level <= 0 or info.level > _level_number(syntax):
        return f"H.264 level {info.level / 10:.1f} exceeds the syntax's level {syntax.level}"
    if info.color_range == "full":
        return "the stream is full range; DICOM's YBR_PARTIAL_420 requires limited range"
    if info.width % 2 or info.height % 2 or not syntax.allows(info.width, info.height, rate):
        return f"{info.width}x{info.height} at {float(rate):.3f} fps is outside {syntax.name}"
    if len(scan.parameter_sets) > 1:
        return "the sequence parameter set changes mid-stream (canvas size change)"
    for sps in scan.parameter_sets:
        stated = sps_frame_rate(sps)
        if stated is not None and abs(stated - rate) > rate / 100:
            return (f"the stream's own timing (H.264 VUI) says {float(stated):g} fps, not {float(rate):g}: "
                    "a viewer decoding it from the DICOM file would play it at the wrong speed")
    first = scan.pts[0]
    period = 1 / float(rate)
    worst = max(abs(p - (first + i * period)) for i, p in enumerate(scan.pts))
    if worst > PASSTHROUGH_TOLERANCE_S:
        return (f"timestamps are variable (a frame is {worst * 1000:.1f} ms off a constant "
                f"{float(rate):.3f} fps grid; tolerance {PASSTHROUGH_TOLERANCE_S * 1000:.0f} ms)")
    return ""


def rate_candidates(syntax: VideoSyntax, width: int, height: int, nominal: Fraction) -> list[Fraction]:
    """Rates `syntax` allows at this size, in order of preference: the recording's nominal rate
    (capped), then higher ones.

    Higher rates are offered so that a recording whose frames come irregularly can keep all of them
    (duplicates of a still picture cost almost nothing); only rates of the nominal rate's family
    (whole numbers, or the /1.001 rates of a 29.97 fps camera) are offered.
    """
    if syntax.formats:  # a list of formats: the nearest rate first
        return sorted({f.rate for f in syntax.formats if (f.columns, f.rows) == (width, height)},
                      key=lambda r: (abs(r - nominal), -r))
    base = _cap_rate(syntax, width, height, nominal)
    family = [r for r in COMMON_RATES if (r.denominator == 1001) == (nominal.denominator == 1001)]
    return [base] + [r for r in family if r > base and syntax.allows(width, height, r)]


def _schedule(syntax: VideoSyntax, w: int, h: int, nominal: Fraction, scan: Scan,
              pinned: PinnedRate | None) -> TimingMap:
    candidates = [pinned.rate] if pinned else rate_candidates(syntax, w, h, nominal)
    chosen = timing.choose(scan.pts, scan.end, candidates)
    if chosen.dropped:
        limit = (f"the rate {pinned.by} sets" if pinned
                 else f"the highest rate {syntax.name} allows at {w}x{h}")
        chosen.drop_reason = (f"the recording's frames come faster than {fps(chosen.rate)} fps, {limit}, for longer "
                              f"than a shift of {timing.DRIFT_FRAMES} frame intervals absorbs; the frames shown "
                              "briefest were dropped")
    return chosen


def _passed_through(scan: Scan, rate: Fraction) -> TimingMap:
    """A passthrough keeps the stream's frames one to one (its timestamps are on the grid)."""
    kept = TimingMap(rate=rate, first_pts=scan.pts[0], source_duration=len(scan.pts) / float(rate))
    kept.source_pts.extend(scan.pts)
    kept.output_source.extend(range(len(scan.pts)))
    return kept


def _allowed_text(syntax: VideoSyntax, w: int, h: int) -> str:
    """What rates `syntax` carries at w x h, in words."""
    if syntax.formats:
        rates = sorted({f.rate for f in syntax.formats if (f.columns, f.rows) == (w, h)})
        return f"carries {w}x{h} only at {' or '.join(fps(r) for r in rates)} fps"
    return f"carries {w}x{h} at no more than {fps(_cap_rate(syntax, w, h, Fraction(10 ** 6)))} fps"


def pinned_refusal(pinned: PinnedRate, syntax: VideoSyntax, w: int, h: int) -> UsageError:
    return UsageError(f"{pinned.by} sets {fps(pinned.rate)} fps, but {syntax.name} {_allowed_text(syntax, w, h)}; "
                      "choose a rate it carries, or another --syntax.")


def explain_rate(estimate: RateEstimate, pinned: PinnedRate | None, syntax: VideoSyntax, w: int, h: int,
                 capped: Fraction, chosen: Fraction, kept_all: bool, passthrough: bool) -> str:
    """Why the output plays at `chosen` fps, from the measurement up (DICOM video has one constant rate).

    `capped`: the measured rate after the syntax's limits; `chosen`: the rate the schedule settled on.
    """
    if pinned:
        return f"{pinned.explain()}; measured: {estimate.reason}"
    if passthrough:
        return (f"{fps(chosen)} fps, the stream's own constant rate, which passing it through keeps; "
                f"measured: {estimate.reason}")
    text = f"{fps(chosen)} fps: {estimate.reason}"
    if capped != estimate.rate:
        text += f"; {syntax.name} {_allowed_text(syntax, w, h)}"
    if chosen != capped and kept_all:
        text += (f"; at {fps(capped)} fps some captured frames would have to be dropped, at {fps(chosen)} fps "
                 "every one is kept")
    return text + " (--rate sets another)"


def choose(info: SourceInfo, scan: Scan, requested: str, allow_passthrough: bool,
           pinned: PinnedRate | None = None) -> Plan:
    estimate = timing.estimate_rate(scan.intervals)
    rate = estimate.rate
    target = pinned.rate if pinned else rate
    set_by = pinned.by if pinned else ""
    if requested != "auto":
        try:
            syntax = syntaxes.get(requested)
        except KeyError:
            raise UsageError(
                f"unknown syntax {requested!r}; use auto or one of {', '.join(syntaxes.names())}."
            ) from None
        w, h, out_rate = size_and_rate(syntax, info, target)
        if pinned and out_rate != pinned.rate:
            raise pinned_refusal(pinned, syntax, w, h)
        refusal = passthrough_refusal(syntax, info, scan, out_rate) if allow_passthrough else "disabled by option"
        chosen = _passed_through(scan, out_rate) if not refusal else _schedule(syntax, w, h, rate, scan, pinned)
        why_rate = explain_rate(estimate, pinned, syntax, w, h, out_rate, chosen.rate, not chosen.dropped,
                                not refusal)
        return Plan(syntax, w, h, chosen.rate, "requested with --syntax", not refusal, refusal, chosen, why_rate,
                    set_by)

    fitting: list[tuple[VideoSyntax, int, int, TimingMap, str]] = []
    tried, limits = [], []
    for name in syntaxes.AUTO_CANDIDATES:
        syntax = syntaxes.BY_NAME[name]
        w, h, out_rate = size_and_rate(syntax, info, target)
        if (w, h) != (_even(info.width), _even(info.height)) or out_rate != target:
            tried.append(f"{name} cannot carry {info.width}x{info.height} at {float(target):.3f} fps")
            limits.append(f"{name} {_allowed_text(syntax, w, h)}")
            continue
        refusal = passthrough_refusal(syntax, info, scan, out_rate) if allow_passthrough else "disabled by option"
        chosen = _passed_through(scan, out_rate) if not refusal else _schedule(syntax, w, h, rate, scan, pinned)
        fitting.append((syntax, w, h, chosen, refusal))
    if fitting:
        # A syntax that takes the bitstream unchanged wins: no second generation of loss; then one
        # that keeps every captured frame.
        passing = [f for f in fitting if not f[4]]
        complete = [f for f in fitting if not f[3].dropped]
        syntax, w, h, chosen, refusal = (passing or complete or fitting)[0]
        reason = (f"{syntax.name} is the most widely supported video syntax that carries "
                  f"{info.width}x{info.height} at {float(target):.3f} fps without loss of resolution or rate")
        if passing and syntax is not fitting[0][0]:
            reason = (f"{syntax.name} carries the source bitstream unchanged, which "
                      f"{fitting[0][0].name} cannot ({fitting[0][4]})")
        elif complete and syntax is not fitting[0][0]:
            reason = (f"{syntax.name} keeps every captured frame, which {fitting[0][0].name} cannot "
                      f"({fitting[0][3].drop_reason})")
        if tried:
            reason += " (" + "; ".join(tried) + ")"
        why_rate = explain_rate(estimate, pinned, syntax, w, h, target, chosen.rate, not chosen.dropped,
                                not refusal)
        return Plan(syntax, w, h, chosen.rate, reason, not refusal, refusal, chosen, why_rate, set_by)
    if pinned:
        raise UsageError(f"{pinned.by} sets {fps(pinned.rate)} fps, but no video syntax carries "
                         f"{info.width}x{info.height} at that rate without scaling ({'; '.join(limits)}); choose "
                         "another rate.")
    raise InputError(
        f"{info.path}: no video syntax carries {info.width}x{info.height} at {float(rate):.3f} fps "
        "without loss; choose one with --syntax (dvqa will scale or change the rate)."
    )


def choose_live(info: SourceInfo, nominal: Fraction, requested: str, pinned: PinnedRate | None = None
                ) -> tuple[VideoSyntax, int, int, list[Fraction], str]:
    """For a stream re-encoded while it arrives: the syntax, output size and rate candidates, decided from
    the stream's start (its first frame's size, the nominal rate of its first seconds).

    The rule is `choose`'s without what only the whole recording shows: the first syntax that carries
    the size and rate (or the requested one). Whether to copy the bitstream instead is `choose` itself,
    applied to the start and then to the whole stream (dvqa.convert.live).
    """
    target = pinned.rate if pinned else nominal
    if requested != "auto":
        try:
            syntax = syntaxes.get(requested)
        except KeyError:
            raise UsageError(f"unknown syntax {requested!r}; use auto or one of {', '.join(syntaxes.names())}.") \
                from None
        w, h, out_rate = size_and_rate(syntax, info, target)
        if pinned:
            if out_rate != pinned.rate:
                raise pinned_refusal(pinned, syntax, w, h)
            return syntax, w, h, [pinned.rate], "requested with --syntax"
        return syntax, w, h, rate_candidates(syntax, w, h, nominal), "requested with --syntax"
    for name in syntaxes.AUTO_CANDIDATES:
        syntax = syntaxes.BY_NAME[name]
        w, h, out_rate = size_and_rate(syntax, info, target)
        if (w, h) == (_even(info.width), _even(info.height)) and out_rate == target:
            return syntax, w, h, [pinned.rate] if pinned else rate_candidates(syntax, w, h, nominal), (
                f"{syntax.name} is the most widely supported video syntax that carries {info.width}x{info.height} "
                f"at {float(target):.3f} fps without loss of resolution or rate")
    if pinned:
        raise UsageError(f"{pinned.by} sets {fps(pinned.rate)} fps, but no video syntax carries "
                         f"{info.width}x{info.height} at that rate without scaling; choose another rate.")
    raise InputError(f"{info.path}: no video syntax carries {info.width}x{info.height} at {float(nominal):.3f} fps "
                     "without loss; choose one with --syntax (dvqa will scale or change the rate).")
