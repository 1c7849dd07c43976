"""Benchmark `dvqa convert` against the FFmpeg CLI doing the same work on the same machine.

Run: python bench/bench_convert.py [--repeat 3] [--skip-memory] [--transcode-only]

Prints medians and ratios (this machine is noisy; ratios are what to compare). The memory run uses
the defaults, quality included:
  1. 10 s 1080p browser-like VP9 -> H.264 High@4.1 (libx264 veryfast crf 18, limited range, CFR):
     the `ffmpeg` CLI's encode alone, `dvqa convert --no-quality` (the conversion alone) and `dvqa
     convert` with its per-frame evidence (the default), run alternately (issue 32's aims: 1.05x and
     1.2x the encode alone; bench_quality.py compares the evidence with an FFmpeg pipeline doing the
     same scoring), and the floor the evidence's own CPU time sets on this machine. Both use libx264, but dvqa's comes from the PyAV wheel's FFmpeg and the CLI is
     Debian's: both versions are printed.
  2. passthrough of a 10 s and a 60 s 1080p CFR H.264 stream, as a multiple of real time
     (aim >= 50x), for the whole command and for the conversion alone (dvqa's own elapsed time,
     without Python's ~0.5 s start-up), and against `ffmpeg -c copy` to Annex B.
  3. peak RSS of dvqa convert for a 10 s and a 60 s input (aim: equal within 10 %).
Inputs are generated once into bench/.cache/.
"""

from __future__ import annotations

import argparse
import os
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(ROOT / "reference_videos"))
sys.path.insert(0, str(ROOT))

import make_references as refs  # noqa: E402


def make_inputs(seconds: int) -> tuple[Path, Path]:
    CACHE.mkdir(exist_ok=True)
    vp9 = CACHE / f"vp9_1080p_{seconds}s.webm"
    h264 = CACHE / f"h264_1080p_{seconds}s_vui30.mkv"  # states 30 fps in its VUI, so it passes through
    frames = seconds * 30
    if not vp9.exists():
        refs.write_single(vp9, "webm", "libvpx-vp9", 1920, 1080,
                          refs.browser_times_ms(frames, 1000 / 30, seed=11),
                          {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0", "row-mt": "1"})
    if not h264.exists():
        refs.write_single(h264, "matroska", "libx264", 1920, 1080,
                          [round(i * 1000 / 30) for i in range(frames)],
                          {"preset": "ultrafast", "crf": "20", "profile": "high",
                           "x264-params": "level=4.1:keyint=30"}, unseekable=False, full_range=False, cfr=30)
    return vp9, h264


def timed(cmd: list[str]) -> float:
    """Elapsed seconds of one run; a failed run stops the benchmark with what the command said."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        shown = " ".join(cmd[:8]) + (" ..." if len(cmd) > 8 else "")
        raise SystemExit(f"failed: {shown}\n{proc.stdout[-1500:]}{proc.stderr[-2000:]}")
    return elapsed


def cpu_seconds(cmd: list[str]) -> float:
    """User + system CPU seconds of one run (its children included), whatever else the machine does."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "r = resource.getrusage(resource.RUSAGE_CHILDREN); print(r.ru_utime + r.ru_stime)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
    return float(out.stdout)


def evidence_floor(ffmpeg: str, ff_cmd: list[str], stream: Path, ff_wall: float, dv_wall: float) -> None:
    """What the per-frame evidence must cost on this machine at the least, from the FFmpeg CLI's own CPU
    time: decoding the written 1080p stream once (one thread: no thread overhead) and the psnr and ssim
    filters (a stream against itself, less its two decodes). When the encode alone already keeps every
    core busy, that CPU time can only be added to the wall time, shared by the cores."""
    cores = os.cpu_count() or 1
    encode_cpu = statistics.median(cpu_seconds(ff_cmd) for _ in range(3))
    one = [ffmpeg, "-v", "error", "-threads", "1", "-i", str(stream)]
    decode = statistics.median(cpu_seconds([*one, "-f", "null", "-"]) for _ in range(3))
    two = [*one, "-threads", "1", "-i", str(stream)]
    decodes = statistics.median(cpu_seconds([*two, "-map", "0:v", "-f", "null", "-", "-map", "1:v", "-f", "null", "-"])
                                for _ in range(3))
    scored = statistics.median(cpu_seconds([*two, "-filter_threads", "1", "-lavfi",
                                            "[0:v]split[a][b];[1:v]split[c][d];[a][c]psnr[p];[b][d]ssim[s]",
                                            "-map", "[p]", "-f", "null", "-", "-map", "[s]", "-f", "null", "-"])
                               for _ in range(3))
    evidence_cpu = decode + max(scored - decodes, 0.0)
    busy = encode_cpu / ff_wall
    floor = (dv_wall + evidence_cpu / cores) / ff_wall
    print(f"evidence floor: the encode alone uses {encode_cpu:.2f} s CPU in {ff_wall:.2f} s ({busy:.1f} of {cores} "
          f"cores busy); the evidence needs at least {evidence_cpu:.2f} s CPU (decode {decode:.2f} s, psnr+ssim "
          f"{max(scored - decodes, 0.0):.2f} s, FFmpeg CLI, one thread); with every core busy it adds at least "
          f"{evidence_cpu / cores:.2f} s to --no-quality: floor ratio {floor:.2f}")


def peak_rss_mb(cmd: list[str]) -> float:
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def dvqa_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dvqa", "convert", str(src), "-o", str(out), "--force", *extra]


def in_process_seconds(cmd: list[str]) -> float:
    """The conversion's own elapsed time, as dvqa measures it (Python start-up excluded)."""
    proc = subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True, check=True)
    return float(json.loads(proc.stdout)["elapsed_s"])


def passthrough(seconds: int, source: Path, out: Path, ffmpeg: str, repeat: int) -> None:
    """dvqa's wrap against FFmpeg's own stream copy to Annex B, the same bytes out."""
    ff_cmd = [ffmpeg, "-v", "error", "-y", "-i", str(source), "-map", "0:v:0", "-c", "copy",
              "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(CACHE / "copy.h264")]
    whole, inner, ff = [], [], []
    for _ in range(repeat):
        whole.append(timed(dvqa_cmd(source, out, "--no-quality")))
        inner.append(in_process_seconds(dvqa_cmd(source, out, "--no-quality")))
        ff.append(timed(ff_cmd))
    w, i, f = (statistics.median(x) for x in (whole, inner, ff))
    print(f"passthrough {seconds} s 1080p H.264: whole command {w:.2f} s = {seconds / w:.0f}x real time; "
          f"conversion alone {i:.2f} s = {seconds / i:.0f}x; ffmpeg -c copy {f:.2f} s = {seconds / f:.0f}x; "
          f"ratio dvqa/ffmpeg {w / f:.2f}")


def _runs(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--transcode-only", action="store_true", help="the VP9 -> H.264 rows only")
    args = parser.parse_args()
    import av

    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        raise SystemExit("ffmpeg CLI not found: apt-get install ffmpeg")
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"PyAV {av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}); {version}")
    vp9, h264 = make_inputs(10)
    out = CACHE / "out.dcm"
    ff_out = CACHE / "out.h264"
    ff_cmd = [ffmpeg, "-v", "error", "-y", "-i", str(vp9), "-an", "-vf", "scale=out_range=tv,fps=30",
              "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-profile:v", "high",
              "-level", "4.1", "-pix_fmt", "yuv420p", "-f", "h264", str(ff_out)]
    dv, dq, ff = [], [], []
    for _ in range(args.repeat):  # alternated, so a noisy spell hits all three alike
        ff.append(timed(ff_cmd))
        dv.append(timed(dvqa_cmd(vp9, out, "--syntax", "h264-high-4.1", "--no-quality")))
        dq.append(timed(dvqa_cmd(vp9, out, "--syntax", "h264-high-4.1")))
    print(f"transcode 10 s 1080p VP9 -> H.264: ffmpeg median {statistics.median(ff):.2f} s; dvqa --no-quality "
          f"{statistics.median(dv):.2f} s, ratio {statistics.median(dv) / statistics.median(ff):.2f} (aim <= 1.05); "
          f"dvqa with per-frame evidence {statistics.median(dq):.2f} s, ratio "
          f"{statistics.median(dq) / statistics.median(ff):.2f} (aim <= 1.2); load average {os.getloadavg()[0]:.1f}")
    print(f"  runs: ffmpeg {_runs(ff)}, dvqa --no-quality {_runs(dv)}, dvqa with evidence {_runs(dq)}")
    evidence_floor(ffmpeg, ff_cmd, ff_out, statistics.median(ff), statistics.median(dv))
    if args.transcode_only:
        return
    vp9_60, h264_60 = make_inputs(60)
    for seconds, source in ((10, h264), (60, h264_60)):
        passthrough(seconds, source, out, ffmpeg, args.repeat)
    if not args.skip_memory:
        m10 = peak_rss_mb(dvqa_cmd(vp9, out))
        m60 = peak_rss_mb(dvqa_cmd(vp9_60, out))
        print(f"peak RSS with per-frame quality on: 10 s input {m10:.0f} MB, 60 s input {m60:.0f} MB, "
              f"ratio {m60 / m10:.2f}")


if __name__ == "__main__":
    main()
