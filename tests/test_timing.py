from fractions import Fraction

from dvqa.timing import ConstantRate, nominal_rate


def _run(times_ms: list[int], rate: int, last: float | None = None):
    cfr = ConstantRate(Fraction(rate))
    out = []
    for i, t in enumerate(times_ms):
        out += [src for _, src in cfr.push(t / 1000, i)]
    out += [src for _, src in cfr.finish(last)]
    return out, cfr.map


def test_constant_input_maps_one_to_one() -> None:
    out, m = _run([round(i * 1000 / 30) for i in range(30)], 30)
    assert out == list(range(30)) and m.duplicated == [] and m.dropped == []


def test_gap_duplicates_and_crowding_drops() -> None:
    # 0, 7 (crowds slot 0), 40, 73, then a 100 ms gap, then 207
    out, m = _run([0, 7, 40, 73, 173, 207], 30)
    assert out == [0, 2, 3, 3, 3, 4, 5]
    assert m.dropped == [1] and m.duplicated == [3, 4]
    assert abs(m.output_duration - m.source_duration) <= 1 / 30


def test_briefly_shown_last_frame_does_not_lengthen_the_video() -> None:
    # as Chromium's rAF recording vp9_raf.webm ends: the last frame lands in the slot past the
    # end (1.992 s at 60 fps -> slot 120) and is shown for only 6 ms
    times = [round(i * 1000 / 60) for i in range(120)] + [1992]
    out, m = _run(times, 60, last=0.006)
    assert m.source_duration == 1.998 and m.output_frames == 120
    assert m.dropped == [120] and out[-1] == 119
    assert abs(m.output_duration - m.source_duration) <= 0.5 / 60


def test_one_ms_jitter_never_moves_a_frame() -> None:
    times = [round(i * 1000 / 30) + (1 if i % 2 else -1) for i in range(1, 300)]
    out, m = _run([0] + times, 30)
    assert m.dropped == [] and m.duplicated == []


def test_nominal_rate_snaps_and_ignores_stalls() -> None:
    assert nominal_rate([0.0167] * 50 + [0.3, 0.6]) == Fraction(60000, 1001)
    assert nominal_rate([0.033, 0.033, 0.034] * 20) == Fraction(30)  # 1 ms clock at 30 fps
    assert nominal_rate([0.040] * 20 + [0.080]) == Fraction(25)
    assert nominal_rate([0.1] * 10) == Fraction(10)
