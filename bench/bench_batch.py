"""`dvqa batch convert` in one process, on a LocalCluster of 1 and 2 workers, and the shell loop it replaces.

Run: python bench/bench_batch.py [--copies 2] [--repeat 3]

The reference recordings that dvqa converts (18 clips of 2-4 s: passthrough and re-encodes), each
listed --copies times in one manifest, with --audit. Whole commands, medians of --repeat runs:
  loop of dvqa convert     one `dvqa convert --audit` per row, as a shell script would run them
  batch --jobs 1           all rows in one process
  batch --scheduler local:1, local:2   a LocalCluster of 1 or 2 worker processes started by the command
Prints conversions per minute and Dask's cost per row: (local:1 - jobs 1) / rows, LocalCluster
start-up included, and the same without start-up: wall time minus the conversions' own time
(each row's elapsed_s as its worker measured it), per row.
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


def dvqa(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dvqa", *args], capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dvqa-bench-batch-") as scratch:
        folder = Path(scratch)
        clips = []
        for clip in CLIPS:
            if clip.suffix not in (".webm", ".mkv", ".mp4"):
                continue
            probe = dvqa("convert", str(clip), "-o", str(folder / "probe.dcm"), "--force", "--no-quality")[1]
            if probe.returncode == 0:
                clips.append(clip)
        rows = [(clip, f"{copy}_{clip.parent.name}_{clip.stem}.dcm") for copy in range(args.copies) for clip in clips]
        manifest = folder / "manifest.csv"
        manifest.write_text("input,output\n" + "".join(f"{clip},out/{name}\n" for clip, name in rows))
        print(f"{len(rows)} rows ({len(clips)} recordings x {args.copies})")
        modes = {"loop of dvqa convert": None, "batch --jobs 1": ["--jobs", "1"],
                 "batch --scheduler local:1": ["--scheduler", "local:1"],
                 "batch --scheduler local:2": ["--scheduler", "local:2"]}
        medians, work = {}, {}
        for name, extra in modes.items():
            times, inside = [], []
            for _ in range(args.repeat):
                out = folder / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                log = folder / "audit.jsonl"
                log.unlink(missing_ok=True)
                if extra is None:
                    total = 0.0
                    for clip, output in rows:
                        seconds, proc = dvqa("convert", str(clip), "-o", str(out / output), "--audit", str(log))
                        if proc.returncode != 0:
                            raise SystemExit(f"convert {clip.name}: {proc.stderr}")
                        total += seconds
                    times.append(total)
                    continue
                seconds, proc = dvqa("batch", "convert", str(manifest), "--audit", str(log), "--format", "json",
                                     *extra)
                if proc.returncode != 0:
                    raise SystemExit(f"{name}: {proc.stderr[-2000:]}")
                times.append(seconds)
                inside.append(sum(r["summary"]["elapsed_s"] for r in json.loads(proc.stdout)["rows"]))
            medians[name] = statistics.median(times)
            work[name] = statistics.median(inside) if inside else None
            print(f"{name:<28} {medians[name]:6.1f} s  {60 * len(rows) / medians[name]:6.1f} conversions/min  "
                  f"(runs {[round(t, 1) for t in times]})")
        base = medians["batch --jobs 1"]
        for workers in (1, 2):
            name = f"batch --scheduler local:{workers}"
            print(f"local:{workers}: {medians[name] - base:+.1f} s against --jobs 1, "
                  f"{1000 * (medians[name] - base) / len(rows):+.0f} ms per row with LocalCluster start-up; "
                  f"speed-up x{base / medians[name]:.2f}")
        idle = medians["batch --scheduler local:1"] - (work["batch --scheduler local:1"] or 0)
        print(f"local:1 wall time not spent converting: {idle:.1f} s = {1000 * idle / len(rows):.0f} ms per row "
              "(process start, LocalCluster start-up, scheduling, the client's commits and audit appends)")
        print(f"loop of dvqa convert / batch --jobs 1: x{medians['loop of dvqa convert'] / base:.2f}")


if __name__ == "__main__":
    main()
