"""An output frame rate as a user or a profile writes it: `30`, `29.97`, `30000/1001`.

Its own small module because two places read it - `convert --rate` and a profile's `output_rate`
(dvqa.core.profiles) - and both must read "29.97" as the NTSC rate 30000/1001 that cameras and
encoders use, not as 2997/100, which no encoder time base matches.
"""

from __future__ import annotations

from fractions import Fraction

# the highest rate accepted at all: above every rate a video syntax in PS3.5 allows (HEVC: 60 fps at
# 4K, 120 fps only at lower levels); a typing mistake such as 300 is refused up front
MAX_RATE = Fraction(240)


def parse_rate(text: str | int | float) -> Fraction:
    """The rate `text` names, as a fraction; ValueError (a phrase saying what is accepted) otherwise.

    A decimal within 0.01 of N x 1000/1001 for a whole N (23.976, 29.97, 59.94) is that NTSC rate.
    """
    raw = str(text).strip()
    try:
        value = Fraction(raw)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{raw!r} is not a frame rate; give frames per second such as 30, 29.97 or "
                         "30000/1001") from None
    if value <= 0 or value > MAX_RATE:
        raise ValueError(f"{raw} fps is not a rate a video can have; give more than 0 and at most {MAX_RATE} fps")
    if value.denominator != 1 and "/" not in raw:
        whole = round(value * Fraction(1001, 1000))
        ntsc = Fraction(whole * 1000, 1001)
        if whole > 0 and abs(ntsc - value) < Fraction(1, 100):
            return ntsc
        value = value.limit_denominator(1001)
    return value


def describe(rate: Fraction) -> str:
    """A rate as people read it: 30, 29.97, 12.5."""
    return f"{float(rate):.3f}".rstrip("0").rstrip(".")
