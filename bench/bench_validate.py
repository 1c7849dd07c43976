"""Benchmark `dvqa validate` against dciodvfy on the same 1,000 files.

Run: python bench/bench_validate.py [--files 1000] [--repeat 3]
     python bench/bench_validate.py --smoke   (8 files, one repeat, a few seconds: CI runs it, tests/test_bench.py)

The files are copies of dvqa outputs in every codec family (H.264, HEVC, MPEG-2, Motion JPEG,
320x240, 90 frames), made once into bench/.cache/validate/. dvqa runs as one command over the
folder (its real use: one process, the syntax table, the rules and the DICOM edition loaded once
per process), with --jobs 1 and --jobs 2; dciodvfy runs once per file, as it must. Prints medians
and files per second. Both check the IOD; dvqa also parses every picture of the stream and reads
each file to its last byte. Also printed: what loading the bundled edition costs a process (the
first-run cost of the IOD layer), median of 5 fresh processes, and `dvqa validate one.dcm` beside
`dciodvfy one.dcm` (start-up included, medians of 5) on a dvqa output and on an SC image DCMTK's img2dcm
wrote, with the load average the runs saw. dvqa's bytecode is compiled first, as an installation has it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "validate"
sys.path.insert(0, str(ROOT))


def make_files(count: int) -> Path:
    from dvqa.convert.pipeline import ConvertOptions, convert

    folder = CACHE / str(count)
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    source = ROOT / "reference_videos" / "synthetic" / "h264_cfr_high.mkv"
    bases = []
    for syntax in ("auto", "hevc-main", "mpeg2-mp-ml", "mjpeg"):
        out = CACHE / f"base-{syntax}.dcm"
        if not out.exists():
            convert(source, out, ConvertOptions(syntax=syntax, quality=False))
        bases.append(out)
    for n in range(count):
        shutil.copy(bases[n % len(bases)], folder / f"{n:05d}.dcm")
    return folder


def timed(cmd: list[str], check: bool = False) -> float:
    """Seconds `cmd` took; with `check`, a run that did not validate (exit 2 or more) stops the bench: a
    crash must not pass as a fast run."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode > 1:
        raise SystemExit(f"{' '.join(cmd)} failed with exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def _load_seconds() -> float:
    code = ("import time; from dvqa.validate import standard; t = time.perf_counter(); "
            "standard.load(standard.default()); print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def dcmtk_file() -> Path:
    """An SC image DCMTK's img2dcm writes from a JPEG FFmpeg makes: a small file of another writer."""
    out = CACHE / "img2dcm-sc.dcm"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        picture = CACHE / "picture.jpg"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v",
                        "1", str(picture)], check=True)
        subprocess.run(["img2dcm", "-i", "JPEG", str(picture), str(out)], check=True, capture_output=True)
    return out


def one_file(path: Path, dciodvfy: str, repeat: int) -> str:
    """`dvqa validate one.dcm` (start-up included: what a user waits for) beside `dciodvfy one.dcm`, interleaved
    run by run so that both see the same load; medians."""
    ours, theirs = [], []
    for _ in range(repeat):
        ours.append(timed([sys.executable, "-m", "dvqa", "validate", str(path)], check=True))
        theirs.append(timed([dciodvfy, str(path)]))
    return (f"one file ({path.name}): dvqa validate {statistics.median(ours):.3f} s, dciodvfy "
            f"{statistics.median(theirs):.3f} s (medians of {repeat})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="8 files, one repeat: that the bench still runs")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.repeat = 8, 1
    dciodvfy = shutil.which("dciodvfy")
    if not dciodvfy:
        raise SystemExit("dciodvfy not found: apt-get install dicom3tools")
    folder = make_files(args.files)
    files = sorted(folder.iterdir())
    # as installed: pip compiles dvqa's bytecode at install time, which a checkout run with PYTHONDONTWRITEBYTECODE=1
    # never has (every run would compile dvqa's modules again, ~50 ms of each start-up)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "dvqa")], check=True)
    dvqa = [sys.executable, "-m", "dvqa", "validate", str(folder), "--format", "json"]
    one = statistics.median(timed(dvqa, check=True) for _ in range(args.repeat))
    two = statistics.median(timed([*dvqa, "--jobs", "2"], check=True) for _ in range(args.repeat))
    script = f"for f in {folder}/*.dcm; do {dciodvfy} \"$f\" >/dev/null 2>&1; done"
    ref = statistics.median(timed(["bash", "-c", script]) for _ in range(args.repeat))
    load = statistics.median(_load_seconds() for _ in range(5))
    n = len(files)
    lines = [f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
             *(one_file(path, dciodvfy, 5 if not args.smoke else 1) for path in (files[0], dcmtk_file())),
             f"loading the bundled DICOM edition: {load:.2f} s per process",
             f"{n} files: dvqa validate --jobs 1 {one:.1f} s ({n / one:.0f} files/s), --jobs 2 {two:.1f} s "
             f"({n / two:.0f} files/s); dciodvfy per file {ref:.1f} s ({n / ref:.0f} files/s); "
             f"speed dciodvfy time / dvqa (jobs 2) time {ref / two:.2f}x"]
    print("\n".join(lines))
    if args.smoke:  # the numbers mean nothing; that every row is made does
        assert len(lines) == 5 and all(re.search(r"\d\.\d+ s", line) for line in lines[1:]), lines


if __name__ == "__main__":
    main()
