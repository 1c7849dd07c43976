"""Frames kept, dropped and duplicated, and the timing error, for every reference clip.

Run: python bench/timing_table.py [--markdown]

Each clip is converted the way `dvqa convert` does by default (syntax auto, quality off: timing
does not depend on it), and the numbers are computed here from the conversion's timing map (which
source frame each output frame shows), not taken from dvqa's own summary:
- captured / kept / dropped: source frames, those some output frame shows, those none shows;
- duplicated: output frames that repeat the frame before them;
- worst shift: the largest |output time - capture time| of a kept frame's first output frame;
- worst on-screen error: for every output frame, how far its time lies outside the span during
  which the source frame it shows was on screen (0 when inside), in output frame intervals;
- output - source duration.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from dvqa.convert.pipeline import ConvertOptions, convert  # noqa: E402
from dvqa.core.errors import DvqaError  # noqa: E402

CLIPS = sorted((ROOT / "reference_videos" / "synthetic").iterdir()) + sorted(
    (ROOT / "reference_videos" / "chromium").iterdir())


def measure(timing) -> dict[str, object]:
    pts, shown, period = timing.source_pts, timing.output_source, 1 / float(timing.rate)
    first_slot: dict[int, int] = {}
    for k, i in enumerate(shown):
        first_slot.setdefault(i, k)
    shift = max(abs(timing.output_pts(k) - pts[i]) for i, k in first_slot.items())
    worst_screen = 0.0
    for k, i in enumerate(shown):
        t = timing.output_pts(k)
        since = pts[i] if i > 0 else -math.inf  # before the first capture the first frame is the truth
        until = pts[i + 1] if i + 1 < len(pts) else math.inf  # after the end, the last one
        worst_screen = max(worst_screen, since - t, t - until)
    return {"rate": f"{float(timing.rate):.3f}", "captured": len(pts), "kept": len(first_slot),
            "dropped": len(pts) - len(first_slot), "output": len(shown),
            "duplicated": sum(1 for k in range(1, len(shown)) if shown[k] == shown[k - 1]),
            "shift_ms": round(shift * 1000, 1), "screen_frames": round(max(0.0, worst_screen) / period, 2),
            "duration_ms": round((timing.output_duration - timing.source_duration) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    columns = ["rate", "captured", "kept", "dropped", "output", "duplicated", "shift_ms", "screen_frames",
               "duration_ms"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in CLIPS:
            if clip.suffix not in (".webm", ".mkv", ".mp4"):
                continue
            try:
                result = convert(clip, Path(tmp) / f"{clip.name}.dcm", ConvertOptions(quality=False))
            except DvqaError:
                continue  # refused inputs (audio only, stale parameter sets): no timing
            rows.append((f"{clip.parent.name}/{clip.name}", measure(result.timing)))
    if args.markdown:
        print("| clip | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for name, row in rows:
            print(f"| {name} | " + " | ".join(str(row[c]) for c in columns) + " |")
    else:
        print(f"{'clip':<34}" + "".join(f"{c:>14}" for c in columns))
        for name, row in rows:
            print(f"{name:<34}" + "".join(f"{row[c]!s:>14}" for c in columns))


if __name__ == "__main__":
    main()
