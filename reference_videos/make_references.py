"""Make the synthetic reference clips the tests rely on, deterministically, with PyAV.

Run: python reference_videos/make_references.py [OUTDIR [NAME...]]   (default: reference_videos/synthetic,
every clip; with names, only those clips are written)

Each clip imitates one thing Chromium's MediaRecorder really writes (see
reference_videos/README.md). Every frame carries its source index as a
`dvqa.video.framecode` band plus the number as text, so tests can prove which source
frame was shown at which output time.
"""

from __future__ import annotations

import io
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dvqa.video import framecode  # noqa: E402

MS = Fraction(1, 1000)
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration banner otherwise


class _Unseekable(io.RawIOBase):
    """A write-only stream: the muxer cannot seek back, like a MediaRecorder with a timeslice.

    libavformat's Matroska muxer then writes no Duration and no Cues.
    """

    def __init__(self, target: io.BufferedWriter) -> None:
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        return self._target.write(data)


def picture(index: int, width: int, height: int) -> np.ndarray:
    """An RGB picture with texture, motion, the frame code and the frame number."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(1, width - 1) + 3 * index) % 256
    g = (y * 255 // max(1, height - 1) + 5 * index) % 256
    b = ((x // 8 + y // 8) % 2) * 60 + 80
    rgb = np.stack([r, g, np.broadcast_to(b, r.shape)], axis=-1).astype(np.uint8)
    side = max(8, height // 5)
    x0 = (index * 7) % max(1, width - side)
    y0 = height // 2 - side // 2
    rgb[y0 : y0 + side, x0 : x0 + side] = (250, 250, 40)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    draw.rectangle([4, int(height * 0.7), 90, int(height * 0.7) + 16], fill=(0, 0, 0))
    draw.text((8, int(height * 0.7) + 2), f"#{index:04d}", fill=(255, 255, 255))
    rgb = np.asarray(image).copy()
    luma = np.zeros((height, width), dtype=np.uint8)
    framecode.draw(luma, index, black=0, white=255)
    band = max(4, int(height * framecode.BAND_FRACTION))
    rgb[:band] = luma[:band, :, None]
    return rgb


def browser_times_ms(count: int, interval: float, seed: int, drops: Iterable[int] = ()) -> list[int]:
    """Capture timestamps on a 1 ms clock: a short first interval, jitter, dropped frames.

    Jitter does not accumulate: frame k is captured near k * interval, as a
    camera or canvas clock paces it, and stamped with rounding to 1 ms.
    """
    rng = np.random.default_rng(seed)
    dropped = set(drops)
    times, slot = [0, 7], 0
    while len(times) < count:
        slot += 2 if len(times) in dropped else 1  # a dropped frame leaves its slot empty
        times.append(int(round(slot * interval + float(rng.uniform(-1.2, 1.2)))))
    return times[:count]


def raf_times_ms(count: int, seed: int) -> list[int]:
    """requestAnimationFrame pacing: ~60 fps with irregular stalls of 10-600 ms."""
    rng = np.random.default_rng(seed)
    times, t = [0], 0.0
    while len(times) < count:
        t += 16.7 + float(rng.normal(0, 0.8))
        if rng.random() < 0.08:
            t += float(rng.uniform(10, 600))
        times.append(int(round(t)))
    return times


def irregular_times_ms(count: int, seed: int) -> list[int]:
    """A canvas redrawn only when something changes: intervals of 5-125 ms and two stalls of 300-500 ms."""
    rng = np.random.default_rng(seed)
    stalls = {count // 3, 2 * count // 3}
    times = [0]
    while len(times) < count:
        gap = float(rng.uniform(300, 500)) if len(times) in stalls else float(rng.uniform(5, 125))
        times.append(times[-1] + max(1, int(round(gap))))
    return times


def _video_stream(container, codec: str, width: int, height: int, options: dict[str, str],
                  pix_fmt: str = "yuv420p", full_range: bool = True, cfr: int | None = None):
    stream = container.add_stream(codec, rate=30, options=options)
    stream.width, stream.height = width, height
    stream.pix_fmt = pix_fmt
    stream.time_base = MS
    cc = stream.codec_context
    # a constant-rate clip states its rate in the H.264 VUI as a camera's encoder does; the
    # browser-like clips keep the 1 ms clock (x264 then writes 1000 fps timing, never used)
    cc.time_base = Fraction(1, cfr) if cfr else MS
    if cfr:
        cc.framerate = cfr
    cc.color_range = 2 if full_range else 1  # AVCOL_RANGE_JPEG / MPEG
    cc.colorspace = 1  # BT.709
    cc.color_primaries = 1
    cc.color_trc = 1
    return stream


def _frames(times: list[int], width: int, height: int, full_range: bool,
            pix_fmt: str = "yuv420p", first_index: int = 0) -> Iterator[av.VideoFrame]:
    for index, ms in enumerate(times, first_index):
        rgb = av.VideoFrame.from_ndarray(picture(index, width, height), format="rgb24")
        frame = rgb.reformat(format=pix_fmt, dst_colorspace="ITU709",
                             dst_color_range=2 if full_range else 1)
        frame.pts = ms
        frame.time_base = MS
        frame.color_range = 2 if full_range else 1
        yield frame


def write_single(path: Path, fmt: str, codec: str, width: int, height: int, times: list[int],
                 options: dict[str, str], audio: str | None = None, unseekable: bool = True,
                 full_range: bool = True, container_options: dict[str, str] | None = None,
                 pix_fmt: str = "yuv420p", cfr: int | None = None) -> None:
    """One encoder, one video track, optional audio as track 0; `cfr`: a constant rate, stated in-stream."""
    with open(path, "wb") as raw:
        target = _Unseekable(raw) if unseekable else raw
        with av.open(target, "w", format=fmt, options=container_options or {}) as out:
            audio_stream = _add_audio(out, audio) if audio else None
            video = _video_stream(out, codec, width, height, options, pix_fmt, full_range, cfr)
            for frame in _frames(times, width, height, full_range, pix_fmt):
                if cfr:
                    frame.pts, frame.time_base = round(frame.pts * cfr / 1000), Fraction(1, cfr)
                for packet in video.encode(frame):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
            if audio_stream is not None:
                _write_audio(out, audio_stream, times[-1] / 1000)


def _add_audio(out, codec: str):
    stream = out.add_stream(codec, rate=48000)
    stream.layout = "mono"
    return stream


def _write_audio(out, stream, seconds: float) -> None:
    rate, chunk = 48000, 960
    total = int(seconds * rate)
    fmt = "fltp" if stream.codec_context.name in ("opus", "libopus") else "s16"
    for start in range(0, total, chunk):
        t = (np.arange(start, start + chunk) / rate).astype(np.float32)
        tone = 0.2 * np.sin(2 * np.pi * 440 * t)
        data = tone[None, :] if fmt == "fltp" else (tone * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def write_segments(path: Path, fmt: str, codec: str, segments: list[tuple[int, int, list[int]]],
                   options: dict[str, str], stale_parameter_sets: bool,
                   container_options: dict[str, str] | None = None) -> None:
    """One track whose canvas size changes between segments, as a resized canvas does.

    The first segment is encoded by the track's own encoder (parameter sets in
    the container header). Each later segment gets a fresh encoder at its new
    size; with `stale_parameter_sets` that encoder keeps its SPS/PPS out of band
    and they are lost, which is what Chrome's fragmented MP4 muxer does.
    """
    with open(path, "wb") as raw:
        with av.open(_Unseekable(raw), "w", format=fmt, options=container_options or {}) as out:
            width, height, times = segments[0]
            video = _video_stream(out, codec, width, height, options)
            offset = 0
            for number, (width, height, times) in enumerate(segments):
                if number == 0:
                    encoder = video.codec_context
                else:
                    encoder = av.CodecContext.create(codec, "w")
                    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
                    encoder.time_base, encoder.framerate = MS, Fraction(30)
                    encoder.color_range = 2
                    encoder.options = dict(options)
                    if stale_parameter_sets:
                        encoder.flags |= av.codec.context.Flags.global_header
                    encoder.open()
                for frame in _frames(times, width, height, True, first_index=offset):
                    for packet in encoder.encode(frame):
                        packet.stream = video
                        out.mux(packet)
                for packet in encoder.encode(None):
                    packet.stream = video
                    out.mux(packet)
                offset += len(times)


def main(outdir: Path, only: set[str]) -> None:
    """Write every clip, or only those named (so that adding a clip leaves the others' bytes alone)."""
    outdir.mkdir(parents=True, exist_ok=True)
    single = _only(write_single, only) if only else write_single
    segments = _only(write_segments, only) if only else write_segments
    vp9 = {"deadline": "good", "cpu-used": "8", "crf": "32", "b": "0", "row-mt": "1"}
    vp8 = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "1M"}
    x264 = {"preset": "veryfast", "crf": "20"}
    frag = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}

    single(outdir / "vp9_vfr.webm", "webm", "libvpx-vp9", 320, 240,
                 browser_times_ms(120, 1000 / 30, seed=1, drops=(40, 41, 77)), vp9)
    single(outdir / "h264_fullrange_opus.webm", "matroska", "libx264", 320, 240,
                 browser_times_ms(90, 1000 / 30, seed=2), {**x264, "profile": "high"},
                 audio="libopus", pix_fmt="yuv420p")
    single(outdir / "vp8_irregular.webm", "webm", "libvpx", 320, 240, irregular_times_ms(50, seed=8), vp8)
    single(outdir / "av1_raf_pcm.mkv", "matroska", "libsvtav1", 320, 240,
                 raf_times_ms(150, seed=3), {"preset": "10", "crf": "35"}, audio="pcm_s16le")
    single(outdir / "vp9_frag.mp4", "mp4", "libvpx-vp9", 320, 240,
                 browser_times_ms(60, 1000 / 30, seed=4), vp9, container_options=frag)
    single(outdir / "av1_frag.mp4", "mp4", "libsvtav1", 320, 240,
                 browser_times_ms(60, 1000 / 30, seed=5), {"preset": "10", "crf": "35"},
                 container_options=frag)
    single(outdir / "h264_frag.mp4", "mp4", "libx264", 320, 240,
                 browser_times_ms(60, 1000 / 30, seed=6), {**x264, "profile": "baseline"},
                 container_options=frag)
    cfr = [round(i * 1000 / 30) for i in range(90)]
    single(outdir / "h264_cfr_high.mkv", "matroska", "libx264", 320, 240, cfr,
                 {**x264, "profile": "high", "x264-params": "level=3.0:keyint=30"}, unseekable=False,
                 full_range=False, cfr=30)
    single(outdir / "h264_cb42.mkv", "matroska", "libx264", 320, 240, cfr,
                 {**x264, "profile": "baseline", "x264-params": "level=4.2:keyint=30"},
                 unseekable=False, full_range=False, cfr=30)

    half = browser_times_ms(120, 1000 / 30, seed=7)
    segments(outdir / "vp8_size_change.webm", "webm", "libvpx",
                   [(320, 240, half[:60]), (240, 180, half[60:])], vp8, stale_parameter_sets=False)
    segments(outdir / "h264_size_change.webm", "matroska", "libx264",
                   [(320, 240, half[:60]), (256, 192, half[60:])],
                   {**x264, "profile": "high"}, stale_parameter_sets=False)
    segments(outdir / "h264_stale_sps.mp4", "mp4", "libx264",
                   [(320, 240, half[:60]), (256, 192, half[60:])],
                   {**x264, "profile": "baseline"}, stale_parameter_sets=True,
                   container_options=frag)

    if only and "audio_only.webm" not in only:
        return
    with open(outdir / "audio_only.webm", "wb") as raw:
        with av.open(_Unseekable(raw), "w", format="webm") as out:
            stream = _add_audio(out, "libopus")
            _write_audio(out, stream, 2.0)


def _only(write, names: set[str]):
    def maybe(path: Path, *args, **kwargs) -> None:
        if path.name in names:
            write(path, *args, **kwargs)
    return maybe


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "synthetic",
         set(sys.argv[2:]))
