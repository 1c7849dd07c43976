"""From a browser's variable timestamps to a constant frame rate, frame by frame, on record.

Each source frame is assigned to the output slot nearest its presentation time
(slot = round((pts - first_pts) * rate)), as FFmpeg's `fps` filter does with
round=near. An empty slot repeats the previous frame (a duplicate); when two
source frames fall in one slot the one nearer the slot time is kept and the
other is dropped. The output has round(duration * rate) frames, so its played
duration equals the source's within half an output frame interval.

Nearest-slot assignment is what makes a 1 ms capture clock with ±1-2 ms jitter
harmless: a frame 1 ms early or late still lands in its own slot.
"""

from __future__ import annotations

import math
import statistics
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")

COMMON_RATES = (
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(50), Fraction(60000, 1001), Fraction(60),
)


def nominal_rate(intervals: list[float]) -> Fraction:
    """The frame rate a recording was aiming at, from its frame intervals in seconds.

    Each interval counts as a whole number of nominal periods (a dropped frame
    makes one interval two periods long; a short first interval counts as none),
    and the rate is periods / time over the whole recording, so the 1 ms clock's
    rounding averages out instead of deciding between 30 and 29.97 fps. A rate
    within 3 % of a common rate snaps to it; anything else rounds to a whole number.
    """
    positive = [i for i in intervals if i > 0]
    if not positive:
        return Fraction(30)
    median = statistics.median(positive)
    counted = [(round(i / median), i) for i in positive if i >= 0.5 * median and i <= 4.5 * median]
    periods = sum(n for n, _ in counted)
    fps = periods / sum(i for _, i in counted) if periods else 1.0 / median
    best = min(COMMON_RATES, key=lambda r: abs(float(r) - fps))
    if abs(float(best) - fps) <= 0.03 * fps:
        return best
    return Fraction(max(1, round(fps)))


def closest_allowed(rate: Fraction, allowed: tuple[Fraction, ...], maximum: Fraction) -> Fraction:
    """The rate to encode at: the nearest allowed one, or the source rate capped at `maximum`."""
    if allowed:
        return min(allowed, key=lambda r: (abs(r - rate), -r))
    if maximum and rate > maximum:
        return maximum
    return rate


@dataclass
class TimingMap:
    """The source-to-output record a report needs: which source frame each output frame shows."""

    rate: Fraction
    first_pts: float = 0.0
    source_pts: array = field(default_factory=lambda: array("d"))  # by source index
    output_source: array = field(default_factory=lambda: array("l"))  # by output index
    source_duration: float = 0.0

    @property
    def output_frames(self) -> int:
        return len(self.output_source)

    def output_pts(self, index: int) -> float:
        return self.first_pts + index / float(self.rate)

    @property
    def duplicated(self) -> list[int]:
        """Output frames that repeat the source frame of the output frame before them."""
        s = self.output_source
        return [k for k in range(1, len(s)) if s[k] == s[k - 1]]

    @property
    def dropped(self) -> list[int]:
        """Source frames that no output frame shows."""
        shown = set(self.output_source)
        return [i for i in range(len(self.source_pts)) if i not in shown]

    @property
    def output_duration(self) -> float:
        return self.output_frames / float(self.rate)

    def rows(self) -> Iterator[dict[str, float | int]]:
        for k, i in enumerate(self.output_source):
            yield {"output_frame": k, "output_pts": round(self.output_pts(k), 6),
                   "source_frame": i, "source_pts": round(self.source_pts[i], 6)}

    def summary(self) -> dict[str, object]:
        return {
            "rate": str(self.rate), "rate_fps": round(float(self.rate), 6),
            "source_frames": len(self.source_pts), "output_frames": self.output_frames,
            "source_duration_s": round(self.source_duration, 6),
            "output_duration_s": round(self.output_duration, 6),
            "duplicated_output_frames": self.duplicated, "dropped_source_frames": self.dropped,
        }


class ConstantRate(Generic[T]):
    """Streams (pts, frame) pairs in, yields (output index, frame) at a constant rate.

    Holds at most one pending frame: memory does not grow with video length.
    """

    def __init__(self, rate: Fraction) -> None:
        self.map = TimingMap(rate=rate)
        self._period = 1.0 / float(rate)
        self._pending: tuple[int, float, T] | None = None  # (source index, pts, frame)
        self._pending_slot = -1
        self._emitted = 0
        self._intervals: list[float] = []

    def _slot(self, pts: float) -> int:
        return math.floor((pts - self.map.first_pts) * float(self.map.rate) + 0.5)

    def push(self, pts: float, frame: T) -> Iterator[tuple[int, T]]:
        index = len(self.map.source_pts)
        if index == 0:
            self.map.first_pts = pts
        elif pts <= self.map.source_pts[-1]:
            pts = self.map.source_pts[-1] + 1e-6  # non-increasing timestamps: keep order
        if index:
            interval = pts - self.map.source_pts[-1]
            if len(self._intervals) < 512:
                self._intervals.append(interval)
        self.map.source_pts.append(pts)
        slot = max(self._slot(pts), self._emitted)
        if self._pending is not None and slot == self._pending_slot:
            slot_time = self.map.first_pts + slot * self._period
            if abs(pts - slot_time) < abs(self._pending[1] - slot_time):
                self._pending = (index, pts, frame)  # the earlier frame is dropped
            return
        yield from self._flush_until(slot)
        self._pending, self._pending_slot = (index, pts, frame), slot

    def _flush_until(self, slot: int) -> Iterator[tuple[int, T]]:
        if self._pending is None:
            return
        source, _, frame = self._pending
        while self._emitted < slot:
            self.map.output_source.append(source)
            yield self._emitted, frame
            self._emitted += 1

    def finish(self, last_duration: float | None) -> Iterator[tuple[int, T]]:
        """Emit the tail; `last_duration` is the last frame's display time if the file states it."""
        if self._pending is None:
            return
        if not last_duration or last_duration <= 0:
            last_duration = statistics.median(self._intervals) if self._intervals else self._period
        last_pts = self.map.source_pts[-1]
        self.map.source_duration = last_pts + last_duration - self.map.first_pts
        # The last frame's slot can be one past the end when it is shown only briefly (Chrome's
        # rAF recordings: 6 ms); it is then dropped, as any frame losing its slot is, so that
        # the played duration stays within half an output interval of the source's.
        total = max(math.floor(self.map.source_duration * float(self.map.rate) + 0.5), 1)
        yield from self._flush_until(total)
        self._pending = None
