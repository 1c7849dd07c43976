"""What `dvqa evidence build` costs beyond the conversions it runs.

Run: python bench/bench_evidence.py [--repeat 3]

Inputs: every bundled reference recording that dvqa converts (reference_videos/chromium and
synthetic; the ones it refuses by design are left out, as the list printed says). Side by side on
this machine, medians of --repeat runs:
  1. the conversions alone, as a user would run them for the same evidence: one
     `dvqa convert --audit --report .json --report .html` per recording (whole commands, Python
     start-up included);
  2. `dvqa evidence build` on the same recordings (whole command), and the time of each of its
     steps from the bundle's index.json.
Prints the build's time as a multiple of the conversions' time, and where the rest goes. The aim
(issue 16): the build is dominated by the conversions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIPS = sorted((ROOT / "reference_videos" / "chromium").glob("*.*")) + sorted(
    (ROOT / "reference_videos" / "synthetic").glob("*.*"))


def dvqa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvqa", *args], capture_output=True, text=True)


def timed(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = dvqa(*args)
    return time.perf_counter() - start, proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dvqa-bench-evidence-") as scratch:
        folder = Path(scratch)
        inputs = folder / "inputs"
        inputs.mkdir()
        refused = []
        for clip in CLIPS:
            if clip.suffix not in (".webm", ".mkv", ".mp4"):
                continue
            probe = dvqa("convert", str(clip), "-o", str(folder / "probe.dcm"), "--force", "--no-quality")
            if probe.returncode == 0:
                shutil.copy(clip, inputs / f"{clip.parent.name}_{clip.name}")
            else:
                refused.append(clip.name)
        recordings = sorted(inputs.iterdir())
        print(f"{len(recordings)} recordings; left out (dvqa refuses them by design): {', '.join(refused) or 'none'}")
        conversions, builds, steps = [], [], {}
        for run in range(args.repeat):
            total = 0.0
            for clip in recordings:
                out = folder / f"c{run}"
                out.mkdir(exist_ok=True)
                seconds, proc = timed("convert", str(clip), "-o", str(out / f"{clip.stem}.dcm"), "--force",
                                      "--audit", str(out / "audit.jsonl"), "--report", str(out / f"{clip.stem}.json"),
                                      "--report", str(out / f"{clip.stem}.html"))
                if proc.returncode != 0:
                    raise SystemExit(f"convert {clip.name} failed: {proc.stderr}")
                total += seconds
            conversions.append(total)
            bundle = folder / f"bundle{run}"
            seconds, proc = timed("evidence", "build", str(bundle), "--inputs", str(inputs))
            if proc.returncode not in (0, 1):  # 1: the traceability step fails without --junit, by design
                raise SystemExit(f"evidence build failed: {proc.stderr}")
            builds.append(seconds)
            per_run: dict[str, float] = {}
            for step in json.loads((bundle / "index.json").read_text())["steps"]:
                kind = "convert" if step["name"].startswith("convert ") else step["name"]
                per_run[kind] = per_run.get(kind, 0.0) + step["seconds"]
            for kind, value in per_run.items():
                steps.setdefault(kind, []).append(value)
    conv, build = statistics.median(conversions), statistics.median(builds)
    print(f"conversions alone ({len(recordings)} dvqa convert commands): median {conv:.1f} s of {conversions}")
    print(f"dvqa evidence build:                     median {build:.1f} s of {[round(b, 1) for b in builds]}")
    print(f"build / conversions: {build / conv:.2f}x; overhead {build - conv:.1f} s")
    print("steps inside the build (median s):")
    for kind, values in sorted(steps.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {kind:<24} {statistics.median(values):6.2f}")


if __name__ == "__main__":
    main()
