"""Latency of live conversion: from the recorder's last chunk to the DICOM file in place.

Run: python bench/bench_live.py [--size 1080p] [--seconds 60] [--repeat 3] [--margin-seconds 20]

The input is bench/format_table.py's camera-like recording (VP8 in WebM, Chrome's jittered 1 ms
timestamps, 0.1 bit per pixel), remuxed the way a browser writes it with a timeslice: to an
unseekable stream, so without Cues or Duration. A writer thread appends it to a growing file in
pieces of one second of video, one per second (MediaRecorder's timeslice), then writes the marker
INPUT.done. Measured, medians of --repeat:

  live      `dvqa convert --follow` started with the first chunk: latency = time from the marker to the
            output file appearing (a watcher polls every 10 ms; the process exit is not counted)
  after     `dvqa convert` of the finished file started when the recording ended: its whole run time
            is the latency a user waits today

Both re-encode to H.264 High@4.1 with per-frame quality (the defaults). Then the real-time margin
per syntax at 720p and 1080p: `dvqa convert -` fed the recording as fast as a pipe takes it,
margin = video duration / conversion time (above 1: the encoder keeps up with a live recording).
The issue's aim is a 10-minute 1080p30 recording ready within 5 s: --seconds 600 measures that
(about 35 minutes per repeat on 2 cores, most of it waiting for the recording to "happen").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import av

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import format_table  # noqa: E402

CACHE = HERE / ".cache" / "live"
DVQA = [sys.executable, "-m", "dvqa"]


class _Unseekable:
    """A sink without seek: the muxer writes what a browser's MediaRecorder hands over (no Cues, no Duration)."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "wb")

    def write(self, data: bytes) -> int:
        return self.handle.write(data)

    def close(self) -> None:
        self.handle.close()


def recording(label: str, seconds: int) -> Path:
    """The camera-like WebM, as a browser streams it."""
    target = CACHE / f"{label}30_{seconds}s_live.webm"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    source = format_table.make_input(label, 30, seconds)
    sink = _Unseekable(target.with_suffix(".part"))
    with av.open(str(source)) as src, av.open(sink, "w", format="webm") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    sink.close()
    target.with_suffix(".part").rename(target)
    return target


def chunks(path: Path, seconds: int) -> list[bytes]:
    """The recording in `seconds` pieces of about one second of video each (byte ranges at cluster-ish cuts)."""
    data = path.read_bytes()
    step = -(-len(data) // seconds)
    return [data[start:start + step] for start in range(0, len(data), step)]


def live_once(source: Path, seconds: int, folder: Path) -> tuple[float, dict]:
    growing, output = folder / "upload.webm", folder / "live.dcm"
    for stale in (growing, output, growing.with_name(growing.name + ".done")):
        stale.unlink(missing_ok=True)
    pieces = chunks(source, seconds)
    growing.write_bytes(pieces[0])
    ended = {}

    def writer() -> None:
        with open(growing, "ab", buffering=0) as out:
            for piece in pieces[1:]:
                time.sleep(1.0)
                out.write(piece)
        growing.with_name(growing.name + ".done").write_text("")
        ended["at"] = time.perf_counter()

    appeared = {}

    def watcher() -> None:
        while "at" not in appeared:
            if output.exists():
                appeared["at"] = time.perf_counter()
            time.sleep(0.01)

    threads = [threading.Thread(target=writer), threading.Thread(target=watcher, daemon=True)]
    for thread in threads:
        thread.start()
    proc = subprocess.run([*DVQA, "convert", "--follow", str(growing), "-o", str(output), "--format", "json"],
                          capture_output=True, text=True)
    threads[0].join()
    if proc.returncode != 0:
        raise SystemExit(f"live conversion failed: {proc.stderr}")
    while "at" not in appeared:
        time.sleep(0.01)
    return appeared["at"] - ended["at"], json.loads(proc.stdout)


def after_once(source: Path, folder: Path) -> tuple[float, dict]:
    output = folder / "after.dcm"
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([*DVQA, "convert", str(source), "-o", str(output), "--format", "json"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"conversion failed: {proc.stderr}")
    return time.perf_counter() - start, json.loads(proc.stdout)


def margin(source: Path, seconds: int, syntax: str, folder: Path) -> float:
    output = folder / f"margin-{syntax}.dcm"
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(source, "rb") as handle:
        proc = subprocess.run([*DVQA, "convert", "-", "-o", str(output), "--syntax", syntax, "--format", "json"],
                              stdin=handle, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{syntax}: {proc.stderr}")
    return seconds / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1080p", choices=sorted(format_table.SIZES))
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--margin-seconds", type=int, default=20)
    parser.add_argument("--skip-margins", action="store_true")
    parser.add_argument("--skip-after", action="store_true", help="no conversion started after the end")
    args = parser.parse_args()
    folder = CACHE / "work"
    folder.mkdir(parents=True, exist_ok=True)
    source = recording(args.size, args.seconds)
    print(f"{args.size}30, {args.seconds} s, {source.stat().st_size / 1e6:.1f} MB, appended 1 s at a time")
    lives, afters = [], []
    for _ in range(args.repeat):
        latency, record = live_once(source, args.seconds, folder)
        lives.append(latency)
        seconds = float("nan") if args.skip_after else after_once(source, folder)[0]
        afters.append(seconds)
        print(f"  live: ready {latency:.2f} s after the last chunk ({record['timing']['output_frames']} frames, "
              f"PSNR-Y min {record['quality']['summary']['psnr_y']['min']}); after the end: {seconds:.1f} s",
              flush=True)
    print(f"median latency: live {statistics.median(lives):.2f} s, converted after the end "
          f"{statistics.median(afters):.1f} s (x{statistics.median(afters) / statistics.median(lives):.0f})")
    if args.skip_margins:
        return
    print(f"real-time margin (video seconds / conversion seconds, {args.margin_seconds} s clips, `dvqa convert -`):")
    for label in ("720p", "1080p"):
        clip = recording(label, args.margin_seconds)
        for syntax in ("h264-high-4.1", "hevc-main", "mpeg2-mp-hl", "mjpeg"):
            runs = [margin(clip, args.margin_seconds, syntax, folder) for _ in range(args.repeat)]
            value = statistics.median(runs)
            print(f"  {label}30 {syntax:<14} x{value:.2f} {'keeps up' if value >= 1 else 'falls behind'} "
                  f"(runs {[round(r, 2) for r in runs]})")


if __name__ == "__main__":
    main()
