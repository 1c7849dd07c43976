"""Timing decided while a recording arrives: the output rate from its start, the schedule window by window.

A whole-file conversion plans the constant-rate schedule over every timestamp (dvqa.video.timing).
A live conversion cannot wait for the last one, so:

- the output rate is decided once RATE_WINDOW_S seconds of timestamps have arrived (or the stream
  ends first): the nominal rate of that window, or the container's declared rate when it states one,
  and then the first rate candidate that keeps every frame of the window - the same rule as
  timing.choose, applied to the start instead of the whole. A recording whose cadence changes later
  (a browser that starts throttling after a minute) keeps the rate chosen at its start: frames may
  be dropped where the whole-file conversion would have chosen a higher rate. The report says which.
- the schedule is planned over a sliding window: each plan starts at the last frame already decided
  and covers every timestamp that has arrived; frames older than HORIZON_S before the newest are
  decided for good. The schedule's constraints reach DRIFT_FRAMES output intervals (a few tens of
  milliseconds), so a horizon of seconds leaves the decision of each frame to the same evidence the
  whole-file plan has. tests/test_live_timing.py compares the two: on every reference recording
  frame for frame (two choose another rate from their first two seconds; at the whole file's rate
  they match too); on random variable-rate streams always the same on-screen guarantee, and in 11 of
  1,500 (measured 2026-11-26) one dropped frame more - 10 of those because the first frame's slot (on
  time, or one interval early) is chosen from the first window, 1 because of the horizon. Where that
  slot is on time and the whole file, seeing the end, starts one interval early, the live schedule is
  also one frame shorter (found 2026-12-05 on short jittery streams; a stream that ends before any
  frame is handed out gets its first slot from every frame, as a whole file does). With a 6 s horizon
  0.2 % of output frames differ instead of 1.2 %, but the frames a live conversion holds decoded triple.

Only timestamps are kept (8 bytes a frame); the caller holds the decoded frames not yet decided,
at most HORIZON_S plus PLAN_EVERY_S of video.
"""

from __future__ import annotations

import math
from array import array
from fractions import Fraction
from typing import Callable, Sequence

from dvqa.core.rates import describe as _fps
from dvqa.video.timing import (
    TimingMap,
    _fits_tail,
    _grid_end,
    _origin,
    estimate_rate,
    plan_window,
    schedule,
)

RATE_WINDOW_S = 2.0  # timestamps seen before the output rate is fixed
HORIZON_S = 2.0  # frames this much older than the newest are decided for good
PLAN_EVERY_S = 0.5  # re-plan after this much new video (bounds the planning cost)

Candidates = Callable[[Fraction], Sequence[Fraction]]  # nominal rate -> allowed rates, preferred first


class LiveSchedule:
    """Feed capture times in presentation order; get (output index, source index) pairs as they are decided."""

    def __init__(self, candidates: Candidates, declared_rate: Fraction | None = None) -> None:
        self.candidates = candidates
        self.declared_rate = declared_rate
        self.times: list[float] = []
        self.rate: Fraction | None = None
        self.start = 0  # grid slot of the first frame
        self.slots: list[int] = []  # decided: each frame's first slot, -1 when dropped
        self.begin = 0  # the last decided kept frame: every plan starts from it
        self.next_output = 0  # output frames handed out so far
        self._planned_at = 0.0
        self.notes: list[str] = []
        self.rate_reason = ""  # why the rate decided is the rate (see _decide_rate)

    def add(self, pts: float) -> list[tuple[int, int]]:
        """A new capture time; returns the output frames this decided: (output index, source index)."""
        previous = self.times[-1] if self.times else None
        self.times.append(pts if previous is None or pts > previous else previous + 1e-6)
        newest = self.times[-1]
        if self.rate is None:
            if newest - self.times[0] < RATE_WINDOW_S:
                return []
            self._decide_rate(newest + self.typical_interval(), final=False)
        if newest - self._planned_at < PLAN_EVERY_S:
            return []
        self._planned_at = newest
        return self._plan(newest + self.typical_interval(), final=False)

    def finish(self, end: float) -> list[tuple[int, int]]:
        """The stream ended; `end` is when its last frame stops being shown. Returns the remaining pairs."""
        if not self.times:
            return []
        if self.rate is None:  # shorter than the rate window: decided on all of it, as a whole file is
            self._decide_rate(end, final=True)
        elif self.next_output == 0:  # nothing handed out yet: the first frame's slot from every frame, as a
            self._start_from(self.times, end, final=True)  # whole file's (the rate stays: it may be in use)
        return self._plan(end, final=True)

    def timing_map(self, end: float) -> TimingMap:
        """The whole schedule, as a whole-file conversion reports it (after finish)."""
        assert self.rate is not None
        r = float(self.rate)
        origin = _origin(self.times, r)
        timing = TimingMap(rate=self.rate, first_pts=origin + self.start / r, source_duration=end - self.times[0])
        timing.source_pts.extend(self.times)
        timing.output_source = array("l", self._output_source)
        return timing

    def output_pts(self, index: int) -> float:
        """When output frame `index` plays (once the rate is decided)."""
        r = float(self.rate or 1)
        return _origin(self.times, r) + (self.start + index) / r

    # -- internals

    _output_source: list[int]

    def typical_interval(self) -> float:
        """How long the newest frame will be on screen, for a plan made before the next one arrives."""
        recent = self.times[-16:]
        gaps = sorted(b - a for a, b in zip(recent, recent[1:]) if b > a)
        return gaps[len(gaps) // 2] if gaps else 1 / 30

    def _decide_rate(self, end: float, final: bool) -> None:
        times = list(self.times)
        estimate = estimate_rate([b - a for a, b in zip(times, times[1:])])
        nominal = self.declared_rate or estimate.rate
        options = list(self.candidates(nominal))
        keeping = next((rate for rate in options if schedule(times, end, rate, drops=False)), None)
        chosen = keeping or max(options)
        self.rate = chosen
        seen = times[-1] - times[0]
        measured = (f"the container declares {_fps(nominal)} fps" if self.declared_rate else estimate.reason)
        self.rate_reason = f"{_fps(chosen)} fps, decided from the first {seen:.1f} s of the stream: {measured}"
        if keeping is not None and chosen != options[0]:
            self.rate_reason += (f"; at {_fps(options[0])} fps some captured frames would have to be dropped, at "
                                 f"{_fps(chosen)} fps every one is kept")
        elif options[0] != nominal:
            self.rate_reason += f"; {_fps(options[0])} fps is the closest rate the syntax allows at this size"
        self.notes.append(f"output rate {float(chosen):g} fps decided from the first {seen:.1f} s of the stream "
                          f"({len(times)} frames; nominal {float(nominal):g} fps"
                          + (", as the container declares" if self.declared_rate else "") + ")")
        self._start_from(times, end, final)

    def _start_from(self, times: list[float], end: float, final: bool) -> None:
        """The first frame's slot (on time, or one interval early) by the whole-file rules over `times`."""
        assert self.rate is not None
        r = float(self.rate)
        first = self._best(times, end, final, fixed=None)
        self.start = first[0] if first else round((times[0] - _origin(times, r)) * r)
        self.slots = [self.start]
        self.begin = 0
        self._output_source = []

    def _plan(self, end: float, final: bool) -> list[tuple[int, int]]:
        assert self.rate is not None
        times = self.times  # strictly increasing (add sees to it)
        planned = self._best(times, end, final, fixed=(self.begin, self.slots[self.begin]))
        if planned is None:  # cannot happen: keeping only the settled frame is always a relaxed plan
            raise AssertionError("no schedule")
        r = float(self.rate)
        horizon = times[-1] - HORIZON_S
        settled = len(times) if final else next((i for i in range(self.begin, len(times)) if times[i] > horizon),
                                                len(times))
        self.slots = self.slots[:self.begin] + planned[:max(1, settled - self.begin)]
        kept = [i for i in range(self.begin, len(self.slots)) if self.slots[i] >= 0]
        out: list[tuple[int, int]] = []
        stop_at = kept[-1] if not final else None
        for number, i in enumerate(kept):
            if stop_at is not None and i == stop_at:
                break
            until = (self.slots[kept[number + 1]] if number + 1 < len(kept)
                     else _grid_end(self.slots[i], end, _origin(times, r), r))
            for _ in range(self.slots[i], until):
                out.append((self.next_output, i))
                self._output_source.append(i)
                self.next_output += 1
        if not final:
            self.begin = kept[-1]
            self.slots = self.slots[:self.begin + 1]
        return out

    def _best(self, times: list[float], end: float, final: bool,
              fixed: tuple[int, int] | None) -> list[int] | None:
        """Slots of the frames from the fixed one on (all frames when None), by the whole-file rules in
        their order: each frame at its nearest slot if that keeps all, else the best plan keeping all,
        else the fewest drops, else the on-screen guarantee relaxed."""
        assert self.rate is not None
        rate = self.rate
        if fixed is None:
            starts = [1, 0]
            begin = 0
        else:
            begin, slot = fixed
            starts = [slot]
        nearest = self._nearest(times, end, final, begin, starts[0] if fixed else None)
        if nearest is not None:
            return nearest
        for drops, strict in ((False, True), (True, True), (True, False)):
            plans = [plan_window(times, end, rate, drops, strict, self.start if fixed else s, begin=begin,
                                 begin_slot=s, final=final) for s in starts]
            found = [p for p in plans if p is not None]
            if found:
                return min(found, key=lambda p: p[0])[1]
        return None

    def _nearest(self, times: list[float], end: float, final: bool, begin: int, slot: int | None) -> list[int] | None:
        r = float(self.rate or 1)
        origin = _origin(times, r)
        slots = [math.floor((t - origin) * r + 0.5) for t in times[begin:]]
        if slot is not None:
            slots[0] = slot
        for k in range(1, len(slots)):
            i = begin + k
            if slots[k] <= slots[k - 1] or (slots[k] - 1) / r > times[i] - origin + 1 / r + 1e-9:
                return None
        first_slot = self.start if slot is not None else slots[0]
        if final and not _fits_tail(len(times) - 1, slots[-1], first_slot, times, end, r):
            return None
        return slots


