"""Latency of live conversion: from the recorder's last chunk to the DICOM file in place.

Run: python bench/bench_live.py [--size 1080p] [--seconds 60] [--repeat 3] [--margin-seconds 20]
                                [--only reencode,passthrough] [--skip-after] [--skip-margins]
                                [--margins-only] [--margin-syntaxes h264-high-4.1,...]

Two recordings, both remuxed the way a browser writes them with a timeslice (to an unseekable stream,
so without Cues or Duration):
  reencode     bench/format_table.py's camera-like recording: VP8 in WebM, Chrome's jittered 1 ms
               timestamps, 0.1 bit per pixel - re-encoded to H.264 High@4.1;
  passthrough  the same pictures as H.264 (x264, Constrained Baseline, the rate stated in the stream,
               timestamps on an exact 30 fps grid: a camera's encoder) in Matroska at the same bit rate -
               copied as it arrives.
Recordings longer than 60 s are the 60 s one played again, timestamps continued (a keyframe at each
start): generating 10 minutes of the camera-like scene takes over an hour here, and the conversion's
work per second of video is the same. A writer thread appends the recording to a growing file in
pieces of one second of video, one per second (MediaRecorder's timeslice), then writes the marker
INPUT.done. Measured, medians of --repeat, both with per-frame quality (the default):

  live      `dvqa convert --follow` started with the first chunk: latency = time from the marker to the
            output file appearing (a watcher polls every 10 ms; the process exit is not counted);
            peak memory = the process's maximum resident set (VmHWM, sampled every 50 ms)
  after     `dvqa convert` of the finished file started when the recording ended: its whole run time
            is the latency a user waits today

Then the real-time margin per syntax at 720p and 1080p: `dvqa convert -` fed the VP8 recording as fast
as a pipe takes it, margin = video duration / conversion time (above 1: the encoder keeps up with a live
recording). For H.264 the FFmpeg CLI encodes the same pipe with the same libx264 settings, alternately
with dvqa: the encoder's own margin, which dvqa's scoring and packaging can only lower. The issue's aim is a 10-minute 1080p30 recording ready within 5 s: --seconds 600 measures
that (over 10 minutes per repeat and kind, most of it waiting for the recording to "happen").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from fractions import Fraction
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


LOOP_S = 60  # longer recordings: this much played again, timestamps continued


def recording(label: str, seconds: int, kind: str = "reencode") -> Path:
    """The camera-like recording (`kind`: reencode = VP8 WebM, passthrough = H.264 Matroska), as a browser
    streams it."""
    suffix = ".webm" if kind == "reencode" else "_h264.mkv"
    target = CACHE / f"{label}30_{seconds}s_live{suffix}"
    if target.exists():
        return target
    if seconds > LOOP_S and seconds % LOOP_S:
        raise SystemExit(f"--seconds over {LOOP_S} must be a multiple of {LOOP_S}")
    CACHE.mkdir(parents=True, exist_ok=True)
    base = format_table.make_input(label, 30, min(seconds, LOOP_S))
    if kind == "passthrough":
        base = _camera_h264(base, min(seconds, LOOP_S), CACHE / f"{label}30_{min(seconds, LOOP_S)}s_camera_h264.mkv")
    sink = _Unseekable(target.with_suffix(".part"))
    with av.open(str(base)) as src, av.open(sink, "w", format="matroska" if kind == "passthrough" else "webm") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        tb = src.streams.video[0].time_base
        for loop in range(max(1, seconds // LOOP_S)):
            shift = round(loop * LOOP_S / tb)
            src.seek(0)
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is None:
                    continue
                packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                packet.stream = stream
                out.mux(packet)
    sink.close()
    target.with_suffix(".part").rename(target)
    return target


def _camera_h264(source: Path, seconds: int, target: Path) -> Path:
    """`source`'s pictures as a camera's H.264 encoder writes them: constant 30 fps stated in the stream,
    Constrained Baseline (what Chrome's encoder writes), limited range, at the source's bit rate."""
    if target.exists():
        return target
    partial = target.with_suffix(".part")
    with av.open(str(source)) as src, av.open(str(partial), "w", format="matroska") as out:
        video = src.streams.video[0]
        stream = out.add_stream("libx264", rate=30, options={"preset": "veryfast", "profile": "baseline"})
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.bit_rate = int(source.stat().st_size * 8 / seconds)
        stream.codec_context.time_base, stream.codec_context.framerate = Fraction(1, 30), Fraction(30)
        stream.codec_context.color_range = 1  # limited, as DICOM's YBR_PARTIAL_420 needs
        for number, frame in enumerate(src.decode(video)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = number, Fraction(1, 30)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    partial.rename(target)
    return target


def chunks(path: Path, seconds: int) -> list[bytes]:
    """The recording in `seconds` pieces of about one second of video each (byte ranges at cluster-ish cuts)."""
    data = path.read_bytes()
    step = -(-len(data) // seconds)
    return [data[start:start + step] for start in range(0, len(data), step)]


def _run(command: list[str], folder: Path, stdin: Path | None = None) -> tuple[float, dict, float]:
    """Run a dvqa command: (seconds, its JSON summary, peak resident memory in MB).

    The peak is the child's VmHWM, read every 50 ms until it exits (exec starts it afresh). Not
    getrusage: its ru_maxrss counts the forked copy of this process before exec - here the recording
    held in memory - which made every run look like ~1 GB."""
    out, err = folder / "stdout.json", folder / "stderr.txt"
    start = time.perf_counter()
    peak_kb = 0
    with open(out, "wb") as o, open(err, "wb") as e, open(stdin or os.devnull, "rb") as i:
        proc = subprocess.Popen(command, stdin=i, stdout=o, stderr=e)
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
            except (FileNotFoundError, IndexError, ProcessLookupError):
                pass
            time.sleep(0.05)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed: {err.read_text()}")
    return elapsed, json.loads(out.read_text()), peak_kb / 1024


def live_once(source: Path, seconds: int, folder: Path) -> tuple[float, dict, float]:
    growing, output = folder / f"upload{source.suffix}", folder / "live.dcm"
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
    _, record, peak = _run([*DVQA, "convert", "--follow", str(growing), "-o", str(output), "--format", "json"],
                           folder)
    threads[0].join()
    while "at" not in appeared:
        time.sleep(0.01)
    return appeared["at"] - ended["at"], record, peak


def after_once(source: Path, folder: Path) -> tuple[float, dict, float]:
    output = folder / "after.dcm"
    output.unlink(missing_ok=True)
    return _run([*DVQA, "convert", str(source), "-o", str(output), "--format", "json"], folder)


def margin(source: Path, seconds: int, syntax: str, folder: Path) -> float:
    output = folder / f"margin-{syntax}.dcm"
    output.unlink(missing_ok=True)
    elapsed, _, _ = _run([*DVQA, "convert", "-", "-o", str(output), "--syntax", syntax, "--format", "json"], folder,
                         stdin=source)
    return seconds / elapsed


MARGIN_SYNTAXES = ("h264-high-4.1", "hevc-main", "mpeg2-mp-hl", "mjpeg")
# what the FFmpeg CLI runs for the same encode (dvqa's settings for the syntax, dvqa.video.encode)
FFMPEG_ALONE = {"h264-high-4.1": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-profile:v", "high",
                                  "-level", "4.1", "-pix_fmt", "yuv420p", "-f", "h264"]}


def ffmpeg_margin(source: Path, seconds: int, encode: list[str]) -> float:
    """The same pipe encoded by the FFmpeg CLI alone (no scoring, no DICOM): the encoder's own margin."""
    command = ["ffmpeg", "-v", "error", "-y", "-i", "-", "-an", "-vf", "scale=out_range=tv", *encode, os.devnull]
    with open(source, "rb") as stdin:
        start = time.perf_counter()
        subprocess.run(command, stdin=stdin, check=True, capture_output=True)
    return seconds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1080p", choices=sorted(format_table.SIZES))
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--margin-seconds", type=int, default=20)
    parser.add_argument("--skip-margins", action="store_true")
    parser.add_argument("--skip-after", action="store_true", help="no conversion started after the end")
    parser.add_argument("--only", default="reencode,passthrough", help="reencode, passthrough or both")
    parser.add_argument("--margins-only", action="store_true", help="only the real-time margins")
    parser.add_argument("--margin-syntaxes", default=",".join(MARGIN_SYNTAXES), help="comma-separated")
    args = parser.parse_args()
    folder = CACHE / "work"
    folder.mkdir(parents=True, exist_ok=True)
    for kind in [] if args.margins_only else args.only.split(","):
        source = recording(args.size, args.seconds, kind)
        print(f"{kind}: {args.size}30, {args.seconds} s, {source.stat().st_size / 1e6:.1f} MB, appended 1 s at a time")
        lives, peaks, afters, after_peaks = [], [], [], []
        for _ in range(args.repeat):
            latency, record, peak = live_once(source, args.seconds, folder)
            if record["passthrough"] != (kind == "passthrough"):
                raise SystemExit(f"{kind}: the live conversion's passthrough is {record['passthrough']}: "
                                 f"{record['plan']['passthrough_refusal']}")
            lives.append(latency)
            peaks.append(peak)
            seconds, _, after_peak = (float("nan"), None, float("nan")) if args.skip_after else after_once(source,
                                                                                                           folder)
            afters.append(seconds)
            after_peaks.append(after_peak)
            print(f"  live: ready {latency:.2f} s after the last chunk, peak memory {peak:.0f} MB "
                  f"({record['timing']['output_frames']} frames, PSNR-Y min {record['quality']['summary']['psnr_y']['min']}"
                  f"); after the end: {seconds:.1f} s, peak memory {after_peak:.0f} MB", flush=True)
        print(f"  median latency: live {statistics.median(lives):.2f} s (peak memory {statistics.median(peaks):.0f} MB), "
              f"converted after the end {statistics.median(afters):.1f} s (peak memory "
              f"{statistics.median(after_peaks):.0f} MB; x{statistics.median(afters) / statistics.median(lives):.0f})",
              flush=True)
    if args.skip_margins:
        return
    print(f"real-time margin (video seconds / conversion seconds, {args.margin_seconds} s clips, `dvqa convert -`"
          "; for H.264 also Debian's ffmpeg CLI encoding the same pipe with the same libx264 settings and no "
          "quality evidence, run alternately with dvqa):")
    for label in ("720p", "1080p"):
        clip = recording(label, args.margin_seconds)
        for syntax in args.margin_syntaxes.split(","):
            runs, alone = [], []
            for _ in range(args.repeat):
                runs.append(margin(clip, args.margin_seconds, syntax, folder))
                if syntax in FFMPEG_ALONE:
                    alone.append(ffmpeg_margin(clip, args.margin_seconds, FFMPEG_ALONE[syntax]))
            value = statistics.median(runs)
            versus = (f"; ffmpeg alone x{statistics.median(alone):.2f} (runs {[round(r, 2) for r in alone]})"
                      if alone else "")
            print(f"  {label}30 {syntax:<14} x{value:.2f} {'keeps up' if value >= 1 else 'falls behind'} "
                  f"(runs {[round(r, 2) for r in runs]}){versus}")


if __name__ == "__main__":
    main()
