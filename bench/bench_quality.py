"""Benchmark convert's per-frame quality evidence against the FFmpeg CLI doing the same work.

Run: python bench/bench_quality.py [--repeat 3]

Prints medians and ratios (this 2-core machine is noisy; compare ratios):
  1. 10 s 1080p browser VP9 -> H.264 High@4.1 with per-frame PSNR + fast SSIM of the written
     stream: `dvqa convert` (default: quality on) vs an FFmpeg CLI pipeline that transcodes with
     the same libx264 settings and, concurrently, decodes its own output and runs the psnr and
     ssim filters against the range-converted, rate-converted source (Debian's FFmpeg 5.1 has no
     loopback decoder, so the second half is a second process on a pipe). Aim: ratio <= 1.1.
  2. The same conversion with `--no-quality`: what the evidence costs dvqa.
  3. Passthrough of 10 s 1080p H.264 with and without quality (two decodes + metrics vs a copy).
  4. `--ssim reference` cost per frame at 720p and 1080p (dvqa's float32 implementation and
     scikit-image's, on the same planes), against `fast` (FFmpeg's ssim filter) per frame.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_convert import CACHE, dvqa_cmd, make_inputs, timed  # noqa: E402


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def planes(source: Path, width: int, height: int):
    """Two consecutive luma planes of the source at the given size, as the metric sees them."""
    import av
    import numpy as np

    out = []
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            f = frame.reformat(width=width, height=height, format="yuv420p")
            p = f.planes[0]
            out.append(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :width].copy())
            if len(out) == 2:
                return out
    raise SystemExit(f"{source}: fewer than 2 frames")


def ssim_costs(source: Path, repeat: int) -> None:
    import av
    from skimage.metrics import structural_similarity

    from dvqa.quality.metrics import FrameComparer, gaussian_ssim

    for width, height in ((1280, 720), (1920, 1080)):
        a, b = planes(source, width, height)
        ours = median_time(lambda: gaussian_ssim(a, b), repeat)
        theirs = median_time(lambda: structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255), repeat)
        fa, fb = (av.VideoFrame(width, height, "yuv420p") for _ in range(2))
        for frame, plane in ((fa, a), (fb, b)):
            frame.planes[0].update(plane.tobytes())
            for chroma in frame.planes[1:]:
                chroma.update(bytes([128]) * chroma.buffer_size)
        comparer = FrameComparer(width, height, "yuv420p", "fast")
        counter = iter(range(10**9))
        fast = median_time(lambda: comparer.score(next(counter), fa, fb), repeat)
        print(f"SSIM per frame at {width}x{height}: reference (dvqa float32) {ours * 1000:.0f} ms, "
              f"scikit-image {theirs * 1000:.0f} ms, fast PSNR+SSIM (FFmpeg filters in PyAV) "
              f"{fast * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        raise SystemExit("ffmpeg CLI not found: apt-get install ffmpeg")
    vp9, h264 = make_inputs(10)
    out = CACHE / "out.dcm"
    encode = (f"{ffmpeg} -v error -y -i {vp9} -an -vf scale=out_range=tv,fps=30 -c:v libx264 -preset veryfast "
              "-crf 18 -profile:v high -level 4.1 -pix_fmt yuv420p -f h264 -")
    score = (f"{ffmpeg} -v error -f h264 -i - -i {vp9} -lavfi "
             "'[1:v]scale=out_range=tv,fps=30,format=yuv420p[r];[0:v]settb=AVTB,setpts=N[d];"
             "[r]settb=AVTB,setpts=N[r2];[d]split[d1][d2];[r2]split[r3][r4];"
             f"[d1][r3]psnr=stats_file={CACHE / 'psnr.log'};[d2][r4]ssim=stats_file={CACHE / 'ssim.log'}' "
             "-f null -")
    pipeline = ["bash", "-o", "pipefail", "-c", f"{encode} | tee {CACHE / 'out.h264'} | {score}"]
    with_q, without_q, ff = [], [], []
    for _ in range(args.repeat):
        with_q.append(timed(dvqa_cmd(vp9, out, "--syntax", "h264-high-4.1")))
        without_q.append(timed(dvqa_cmd(vp9, out, "--syntax", "h264-high-4.1", "--no-quality")))
        ff.append(timed(pipeline))
    w, n, f = (statistics.median(x) for x in (with_q, without_q, ff))
    print(f"10 s 1080p VP9 -> H.264 + per-frame PSNR/SSIM: dvqa {w:.2f} s, ffmpeg pipeline {f:.2f} s, "
          f"ratio dvqa/ffmpeg {w / f:.2f} (aim <= 1.1); dvqa --no-quality {n:.2f} s "
          f"(evidence costs {100 * (w / n - 1):.0f} %)")
    frames = json.loads(subprocess.run([*dvqa_cmd(h264, out), "--format", "json"], capture_output=True,
                                       text=True, check=True).stdout)["output"]["frames"]
    pt_q = statistics.median(timed(dvqa_cmd(h264, out)) for _ in range(args.repeat))
    pt_n = statistics.median(timed(dvqa_cmd(h264, out, "--no-quality")) for _ in range(args.repeat))
    print(f"passthrough 10 s 1080p H.264 ({frames} frames): with quality {pt_q:.2f} s = {10 / pt_q:.0f}x real "
          f"time, --no-quality {pt_n:.2f} s = {10 / pt_n:.0f}x (whole commands)")
    ssim_costs(vp9, max(5, args.repeat))


if __name__ == "__main__":
    main()
