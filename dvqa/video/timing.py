"""From a browser's variable timestamps to a constant frame rate, keeping every captured frame.

Each captured frame is a picture the clinician saw; the archive should hold all of them. So the
output grid is filled by a *schedule*: a monotone assignment of source frames to output slots
(slot k plays at first_pts + k / rate) that keeps every frame when it can, found by dynamic
programming over the timestamps alone (the scan pass has them before anything is decoded):

- a kept frame's first slot lies within DRIFT_FRAMES output intervals after its capture time, or
  at most one interval before it (small jitter such as Chrome's second frame stamped 7 ms after
  the first moves a frame to a neighbouring free slot instead of dropping it);
- every output frame shows the source frame that was on screen at that time within +-1 output
  interval (the frame-accurate timing guarantee; checked for every slot, duplicates included);
- cost, in order of importance: frames dropped, then the on-screen time of the frames dropped (a
  frame replaced 5 ms later loses least), then the sum of |slot time - capture time|;
- empty slots repeat the frame before them (duplicates cost almost nothing in H.264/HEVC), and the
  output may run up to DRIFT_FRAMES intervals longer than the source.

Frames are dropped only when the source's rate exceeds the output rate for longer than the drift
bound absorbs; `choose` therefore prefers the lowest allowed rate that keeps every frame.
"""

from __future__ import annotations

import math
import statistics
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Generic, Iterator, Sequence, TypeVar

from dvqa.core.rates import describe as _fps
from dvqa.dicom.syntaxes import COMMON_RATES

T = TypeVar("T")

# how far (in output frame intervals) a kept frame may be shown after its capture time, and how much
# longer than the source the output may play
DRIFT_FRAMES = 2

@dataclass(frozen=True)
class RateEstimate:
    """The rate a recording was aiming at, and the measurement behind it in words."""

    rate: Fraction
    measured_fps: float  # periods / time, before snapping or rounding
    median_interval_s: float
    reason: str


def estimate_rate(intervals: list[float]) -> RateEstimate:
    """The frame rate a recording was aiming at, from its frame intervals in seconds.

    Each interval counts as a whole number of nominal periods (a dropped frame
    makes one interval two periods long; a short first interval counts as none),
    and the rate is periods / time over the whole recording, so the 1 ms clock's
    rounding averages out instead of deciding between 30 and 29.97 fps. A rate
    within 3 % of a common rate snaps to it; anything else rounds to a whole number
    (a browser asked for 30 fps that delivers 31 frames a second is written at 31:
    at 30, a frame in every 31 would have to go).
    """
    positive = [i for i in intervals if i > 0]
    if not positive:
        return RateEstimate(Fraction(30), 0.0, 0.0, "a single frame has no interval to measure: 30 fps assumed")
    median = statistics.median(positive)
    counted = [(round(i / median), i) for i in positive if i >= 0.5 * median and i <= 4.5 * median]
    periods = sum(n for n, _ in counted)
    span = sum(i for _, i in counted)
    fps = periods / span if periods else 1.0 / median
    measured = (f"the recording's frames came every {median * 1000:.1f} ms (median interval); counting each "
                "interval as a whole number of those (a longer one holds frames the browser skipped), "
                f"{periods} frame periods in {span:.3f} s = {fps:.2f} fps")
    best = min(COMMON_RATES, key=lambda r: abs(float(r) - fps))
    if abs(float(best) - fps) <= 0.03 * fps:
        return RateEstimate(best, fps, median, f"{measured}, within 3 % of the common rate {_fps(best)} fps")
    whole = Fraction(max(1, round(fps)))
    return RateEstimate(whole, fps, median, f"{measured}, more than 3 % from every common rate (nearest "
                                            f"{_fps(best)} fps), so rounded to {_fps(whole)} fps")


def nominal_rate(intervals: list[float]) -> Fraction:
    """The rate `estimate_rate` finds (see there)."""
    return estimate_rate(intervals).rate


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
    drop_reason: str = ""  # why frames were dropped, when any were

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

    def worst_shift(self) -> float:
        """Largest |output time - capture time| over the kept frames' first output frames, seconds."""
        worst, previous = 0.0, -1
        for k, i in enumerate(self.output_source):
            if i != previous:
                worst = max(worst, abs(self.output_pts(k) - self.source_pts[i]))
                previous = i
        return worst

    def worst_screen_error(self) -> float:
        """Largest distance, in output intervals, between an output frame's time and the span during
        which the source frame it shows was on screen (0 inside the span). Before the first capture
        the first frame, after the source's end the last one, counts as on screen."""
        worst, pts, last = 0.0, self.source_pts, len(self.source_pts) - 1
        for k, i in enumerate(self.output_source):
            t = self.output_pts(k)
            since = pts[i] if i > 0 else -math.inf
            until = pts[i + 1] if i < last else math.inf
            worst = max(worst, since - t, t - until)
        return worst * float(self.rate)

    def rows(self) -> Iterator[dict[str, float | int]]:
        for k, i in enumerate(self.output_source):
            yield {"output_frame": k, "output_pts": round(self.output_pts(k), 6),
                   "source_frame": i, "source_pts": round(self.source_pts[i], 6)}

    def summary(self) -> dict[str, object]:
        dropped = self.dropped
        return {
            "rate": str(self.rate), "rate_fps": round(float(self.rate), 6),
            "source_frames": len(self.source_pts), "kept_source_frames": len(self.source_pts) - len(dropped),
            "output_frames": self.output_frames,
            "source_duration_s": round(self.source_duration, 6),
            "output_duration_s": round(self.output_duration, 6),
            "output_minus_source_ms": round((self.output_duration - self.source_duration) * 1000, 3),
            "worst_shift_ms": round(self.worst_shift() * 1000, 3),
            "worst_on_screen_error_frames": round(self.worst_screen_error(), 3),
            "duplicated_output_frames": self.duplicated, "dropped_source_frames": dropped,
            "drop_reason": self.drop_reason if dropped else "",
        }


def source_end(pts: Sequence[float], last_duration: float | None) -> float:
    """When the last frame stops being shown: its duration if the file states one, else the median interval.

    A stated duration under a quarter of the median interval is a placeholder, not a fact: Chrome's
    WebM blocks carry no duration, and FFmpeg's Matroska demuxer then reports one tick (1 ms) when it
    has not probed the stream, 33 ms when it has - the same file would end at two different times."""
    intervals = [b - a for a, b in zip(pts, pts[1:]) if b > a]
    typical = statistics.median(intervals) if intervals else 0.0
    if not last_duration or last_duration <= 0 or last_duration < typical / 4:
        last_duration = typical
    return pts[-1] + last_duration


def schedule(pts: Sequence[float], end: float, rate: Fraction, drops: bool = True) -> TimingMap | None:
    """The timing map for frames captured at `pts` (sorted, seconds) shown until `end`, at `rate`.

    Keeps every frame if any schedule within the bounds does; otherwise, with `drops`, drops as few
    and as briefly shown frames as possible (without, None). If even that cannot keep the +-1
    interval guarantee (many frames per output interval for long), the guarantee is relaxed and the
    map's worst on-screen error says so.
    """
    times = _strictly_increasing(pts)
    slots = _nearest_if_it_keeps_all(times, end, rate) or _plan(times, end, rate, drops=False, strict=True)
    if slots is None and drops:
        slots = _plan(times, end, rate, drops=True, strict=True) or _plan(times, end, rate, drops=True,
                                                                           strict=False)
    return _as_map(times, end, rate, slots) if slots else None


def choose(pts: Sequence[float], end: float, candidates: Sequence[Fraction]) -> TimingMap:
    """The schedule at the first candidate rate (in order of preference) that drops no captured
    frame, else at the highest candidate with the fewest drops."""
    for rate in candidates:
        kept_all = schedule(pts, end, rate, drops=False)
        if kept_all:
            return kept_all
    chosen = schedule(pts, end, max(candidates))
    assert chosen is not None  # frame 0 alone at slot 0 is always a relaxed schedule
    return chosen


def _strictly_increasing(pts: Sequence[float]) -> list[float]:
    """Equal timestamps (a muxer's rounding) kept in order 1 us apart."""
    times: list[float] = []
    for t in pts:
        times.append(t if not times or t > times[-1] else times[-1] + 1e-6)
    return times


# The output grid starts one interval before the first capture, so that the first frame may be shown
# one interval early when that lets the frames after it keep their own slots (Chrome stamps its second
# frame ~7 ms after the first: without this, every later frame would be shown one interval late).
# Grid slots before the first frame's are not part of the output.


def _origin(times: list[float], rate: float) -> float:
    return times[0] - 1 / rate


def _window(t: float, origin: float, rate: float) -> tuple[int, int]:
    """Slots a frame captured at `t` may first appear in: one interval early to DRIFT_FRAMES late."""
    x = (t - origin) * rate
    return max(0, math.ceil(x - 1 - 1e-9)), math.floor(x + DRIFT_FRAMES + 1e-9)


def _grid_end(last_slot: int, end: float, origin: float, rate: float) -> int:
    """One past the last grid slot: the source's end, or the last kept frame's slot if that is later."""
    return max(last_slot + 1, math.floor((end - origin) * rate + 0.5))


def _fits_tail(last_kept: int, last_slot: int, first_slot: int, times: list[float], end: float,
               rate: float) -> bool:
    """The last kept frame fills the slots to the end: still within the guarantee, and the output
    holds at most DRIFT_FRAMES frames more than the source's duration rounds to."""
    origin = _origin(times, rate)
    stop = _grid_end(last_slot, end, origin, rate)
    replaced = times[last_kept + 1] if last_kept + 1 < len(times) else end
    return ((stop - 1) / rate <= replaced - origin + 1 / rate + 1e-9
            and stop - first_slot <= math.floor((end - times[0]) * rate + 0.5) + DRIFT_FRAMES)


def _nearest_if_it_keeps_all(times: list[float], end: float, rate: Fraction) -> list[int] | None:
    """Each frame in its nearest slot, when that already keeps every frame: the optimum, found cheaply."""
    r = float(rate)
    origin = _origin(times, r)
    slots = [math.floor((t - origin) * r + 0.5) for t in times]
    for i in range(1, len(slots)):
        if slots[i] <= slots[i - 1] or (slots[i] - 1) / r > times[i] - origin + 1 / r + 1e-9:
            return None
    return slots if _fits_tail(len(times) - 1, slots[-1], slots[0], times, end, r) else None


def _plan(times: list[float], end: float, rate: Fraction, drops: bool, strict: bool) -> list[int] | None:
    """The best schedule whose first frame is shown on time, or the one whose first frame is shown
    one interval early (the output's length depends on where it starts, so each start is planned
    on its own)."""
    plans = [_plan_from(times, end, rate, drops, strict, start) for start in (1, 0)]
    found = [p for p in plans if p is not None]
    return min(found, key=lambda p: p[0])[1] if found else None


def _plan_from(times: list[float], end: float, rate: Fraction, drops: bool, strict: bool,
               start: int) -> tuple[float, list[int]] | None:
    """The whole recording planned with its first frame at grid slot `start`: (cost, slots) or None."""
    return plan_window(times, end, rate, drops, strict, start, begin=0, begin_slot=start, final=True)


def plan_window(times: list[float], end: float, rate: Fraction, drops: bool, strict: bool, start: int,
                begin: int, begin_slot: int, final: bool) -> tuple[float, list[int]] | None:
    """Dynamic programming over (source frame, its first slot): per source frame the best way to
    reach each slot of its window from a kept predecessor at most `reach` frames back.

    Frames before `begin` are settled: frame `begin` is kept at `begin_slot` and the plan covers the
    frames after it (the whole recording when begin is 0 and begin_slot is `start`, the first frame's
    slot). `final`: `times` is the whole recording, so the last kept frame must fill the output to
    `end` (_fits_tail); otherwise more frames will follow and the plan only ranks ways to reach the
    latest ones (a live conversion plans window by window, dvqa.video.live). Slots are on the grid
    of the whole recording (its first frame's capture time), so windows join. (cost, slots of the
    frames from `begin` on) or None.
    """
    r, n = float(rate), len(times)
    origin = _origin(times, r)
    shown_for = [times[i + 1] - times[i] if i + 1 < n else end - times[i] for i in range(begin, n)]
    dropped_time = [0.0]
    for d in shown_for:
        dropped_time.append(dropped_time[-1] + d)
    heavy = (end - origin) + (n - begin) * (DRIFT_FRAMES + 1) / r + 1.0  # one drop outweighs all time costs
    reach = _reach(times[begin:], r) if drops else 1
    windows = [(begin_slot, begin_slot)] + [_window(t, origin, r) for t in times[begin + 1:]]
    inf = math.inf

    def prefix_minimum(row: list[float]) -> list[tuple[float, int]]:
        out, running = [], (inf, -1)
        for k, value in enumerate(row):
            if value < running[0]:
                running = (value, k)
            out.append(running)
        return out

    # indices below are relative to `begin`
    # cost[i][s - lo_i]: best cost with frame i kept, first shown at slot s; back[i][..]: (j, s_j)
    first_row = [abs(s / r - (times[begin] - origin)) for s in range(windows[0][0], windows[0][1] + 1)]
    cost: list[list[float]] = [first_row]
    back: list[list[tuple[int, int]]] = [[(-1, -1)] * len(first_row)]
    best_below = [prefix_minimum(first_row)]  # best over the window's slots up to each one
    count = n - begin
    for i in range(1, count):
        lo, hi = windows[i]
        row, links = [inf] * (hi - lo + 1), [(-1, -1)] * (hi - lo + 1)
        for j in range(max(0, i - reach), i):
            skipped = i - j - 1
            penalty = skipped * heavy + dropped_time[i] - dropped_time[j + 1]
            jlo, jhi = windows[j]
            replaced = times[begin + j + 1] - origin  # frame j is on screen until frame j+1 is captured
            for s in range(lo, hi + 1):
                if strict and (s - 1) / r > replaced + 1 / r + 1e-9:
                    break
                top = min(jhi, s - 1) - jlo
                if top < 0 or best_below[j][top][0] == inf:
                    continue
                value = best_below[j][top][0] + penalty + abs(s / r - (times[begin + i] - origin))
                if value < row[s - lo]:
                    row[s - lo], links[s - lo] = value, (j, jlo + best_below[j][top][1])
        cost.append(row)
        back.append(links)
        best_below.append(prefix_minimum(row))
    finish = (inf, -1, -1)
    for j in range(max(0, count - reach), count):
        jlo, _ = windows[j]
        for k, value in enumerate(cost[j]):
            if value == inf:
                continue
            if final and strict and not _fits_tail(begin + j, jlo + k, start, times, end, r):
                continue
            total = value + (count - 1 - j) * heavy + dropped_time[count] - dropped_time[j + 1]
            if total < finish[0]:
                finish = (total, j, jlo + k)
    return (finish[0], _trace(back, windows, finish[1], finish[2])) if finish[1] >= 0 else None


def _trace(back: list[list[tuple[int, int]]], windows: list[tuple[int, int]], j: int, s: int) -> list[int]:
    """Each source frame's first slot (-1: dropped), following the links back from frame j at slot s."""
    slots = [-1] * len(back)
    while j >= 0:
        slots[j] = s
        j, s = back[j][s - windows[j][0]]
    return slots


def _reach(times: list[float], rate: float) -> int:
    """How many source frames back a kept predecessor may lie: the most frames captured within
    DRIFT_FRAMES + 1 output intervals, plus one."""
    span, most, start = (DRIFT_FRAMES + 1) / rate, 1, 0
    for i, t in enumerate(times):
        while t - times[start] > span:
            start += 1
        most = max(most, i - start + 1)
    return most + 1


def _as_map(times: list[float], end: float, rate: Fraction, slots: list[int]) -> TimingMap:
    r = float(rate)
    origin = _origin(times, r)
    start = slots[0]  # the first frame's slot: the output begins there
    timing = TimingMap(rate=rate, first_pts=origin + start / r, source_duration=end - times[0])
    timing.source_pts.extend(times)
    kept = [(s, i) for i, s in enumerate(slots) if s >= 0]
    stop = _grid_end(kept[-1][0], end, origin, r)
    for number, (s, i) in enumerate(kept):
        until = kept[number + 1][0] if number + 1 < len(kept) else stop
        timing.output_source.extend([i] * (until - s))
    return timing


class TimestampMismatch(ValueError):
    """A decoded frame is not the frame the scan pass found at that place."""


class Emitter(Generic[T]):
    """Decoded frames in, (output index, frame) out, following a precomputed TimingMap.

    Holds no frames: each is emitted for its slots as it arrives, so memory does not grow with
    the video's length. The decoder must return the frames the scan pass timed, in presentation
    order; a frame whose timestamp differs by more than 1 ms from the scan's is a TimestampMismatch.
    """

    def __init__(self, timing: TimingMap) -> None:
        self.map = timing
        self._next_output = 0
        self.received = 0

    def push(self, pts: float, frame: T) -> Iterator[tuple[int, T]]:
        index = self.received
        expected = self.map.source_pts
        if index >= len(expected) or abs(pts - expected[index]) > 0.001:
            where = f"at {expected[index]:.3f} s" if index < len(expected) else "after the last"
            raise TimestampMismatch(f"decoded frame {index} has timestamp {pts:.3f} s but the container's "
                                    f"frame {index} is {where}")
        self.received += 1
        shown = self.map.output_source
        while self._next_output < len(shown) and shown[self._next_output] == index:
            yield self._next_output, frame
            self._next_output += 1

    @property
    def complete(self) -> bool:
        return self._next_output == len(self.map.output_source)
