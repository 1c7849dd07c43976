"""`dvqa validate` on a Dask cluster against local worker processes, on the same files and machine.

Run: python bench/bench_cluster.py [--files 1000] [--repeat 3]

Uses bench_validate.py's corpus (320x240 DICOM video, all four codec families; generated once into
bench/.cache/validate/). Whole commands, medians of --repeat runs:
  --jobs 1, --jobs 2                 (local processes, no Dask)
  --scheduler local:1, local:2      (a LocalCluster of 1 or 2 worker processes, started by the command)
Prints files/s, and the cost of Dask per file: (cluster time - local time with as many workers) /
files, which includes the LocalCluster's start-up spread over the files.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_validate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = bench_validate.make_files(args.files)
    dvqa = [sys.executable, "-m", "dvqa", "validate", str(folder), "--format", "json"]
    runs = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"],
            "--scheduler local:1": ["--scheduler", "local:1"], "--scheduler local:2": ["--scheduler", "local:2"]}
    medians = {}
    for name, extra in runs.items():
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.run([*dvqa, *extra], capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode not in (0, 1) or '"files"' not in proc.stdout:
                raise SystemExit(f"{name} failed: {proc.stderr[-2000:]}")
        medians[name] = statistics.median(times)
        print(f"{name:<22} {medians[name]:6.1f} s  {args.files / medians[name]:6.1f} files/s  "
              f"(runs {[round(t, 1) for t in times]})")
    for workers in (1, 2):
        extra = medians[f"--scheduler local:{workers}"] - medians[f"--jobs {workers}"]
        print(f"Dask with {workers} worker(s): {extra:+.1f} s over local processes, "
              f"{1000 * extra / args.files:+.1f} ms per file (LocalCluster start-up included)")


if __name__ == "__main__":
    main()
